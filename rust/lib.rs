//! nvmefast's core: the hot path of an emulated NVMe controller.
//!
//! Pure Rust and testable with plain `cargo test`; the Python bindings live
//! in `py/` behind the `python` feature. The modules follow the spec's
//! concepts: wire formats (`spec`), guest memory (`mem`), rings (`queue`),
//! doorbells, interrupt vectors (`irq`), data pointers and I/O commands
//! (`cmd`), storage (`backend`), and the device with its worker (`engine`).
//! `driver` is the host side, shared by tests and benchmarks.

pub mod aio;
pub mod backend;
pub mod cmd;
pub mod coalesce;
pub mod doorbell;
pub mod driver;
pub mod engine;
pub mod intx;
pub mod irq;
pub mod mem;
pub mod nsmgmt;
pub mod pi;
pub mod queue;
pub mod shm;
pub mod spec;
pub mod waker;
pub mod zns;

#[cfg(feature = "python")]
mod py;

pub use engine::{
    AdminHandler, AdminOutcome, Engine, EngineConfig, EngineError, NamespaceSpec, Polling,
};
