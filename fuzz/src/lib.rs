//! Harnesses of nvmefast's fuzz targets, kept in a library so that the
//! libFuzzer binaries in `fuzz_targets/` stay one line each and `cargo test`
//! in this crate can replay the committed corpus without libFuzzer.
//!
//! - [`sqe`]: one guest-written SQE plus guest memory (PRP lists, SGL
//!   segments, data) through the whole I/O path of a running engine; or,
//!   with [`loss`], a few SQEs around guest memory that shrinks under the
//!   device (the SIGBUS guard), checked from below by [`sigbus`]; or, with
//!   [`sanitize`], one SQE while a sanitize runs.

pub mod guard;
pub mod loss;
pub mod model;
pub mod rig;
pub mod sanitize;
pub mod sigbus;
pub mod sqe;
pub mod storage;
