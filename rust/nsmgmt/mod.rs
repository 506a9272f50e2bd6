//! Namespace management beyond the command sets' data paths: the blocks
//! Write Uncorrectable marked, and the background work a drive does on its
//! own storage (Device Self-test, Sanitize). The namespace table itself
//! lives with the engine (`engine/ns_table.rs`), which owns the workers a
//! table change has to wait for.

pub mod background;
pub mod uncorrectable;

pub use uncorrectable::Uncorrectable;
