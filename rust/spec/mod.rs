//! Wire formats from the NVMe Base and NVM Command Set specifications.
//!
//! Everything here is plain data: sizes are checked at compile time, fields
//! are little endian on the wire, and nothing here touches guest memory.

pub mod cqe;
pub mod opcode;
pub mod sqe;
pub mod status;

pub use cqe::Cqe;
pub use sqe::Sqe;
pub use status::Status;
