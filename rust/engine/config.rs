//! What the engine is built with and what it answers: its configuration,
//! its errors, the admin hand-off types.

use std::sync::Arc;

use crate::backend::{BackendError, FileSpec, StorageRef};
use crate::cmd::io::Failure;
use crate::irq::IrqError;
use crate::mem::MemError;
use crate::queue::QueueError;
use crate::spec::{Sqe, Status};
use crate::waker::WakerError;

/// Errors of the engine's API (embedder misuse, not guest input).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Mem(#[from] MemError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Irq(#[from] IrqError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// complete_admin for a command that is not outstanding.
    #[error("admin command {cid} is not outstanding (never fetched, or already completed)")]
    NotDeferred { cid: u16 },
    /// The worker thread could not be started.
    #[error("cannot start the worker thread: {0}")]
    Spawn(String),
    #[error(transparent)]
    Waker(#[from] WakerError),
    /// The doorbell index is not one the controller has.
    #[error("doorbell {index} is out of range (controller has {count})")]
    BadDoorbell { index: u32, count: usize },
    /// A namespace table change that cannot be made (NSID taken, out of
    /// range, not allocated, none free); the message says which.
    #[error("{0}")]
    Namespace(String),
    /// Not enough unallocated NVM capacity (Namespace Insufficient Capacity).
    #[error(
        "the namespace needs {needed} bytes of NVM capacity but only {available} of {total} are \
         unallocated; raise capacity_bytes, make it smaller, or remove another namespace"
    )]
    Capacity {
        needed: u64,
        available: u64,
        total: u64,
    },
    /// A background operation (self-test, sanitize) is already running,
    /// or the call does not fit the one running.
    #[error("{0}")]
    Busy(String),
}

/// One namespace as configured. Build one with `..NamespaceSpec::default()`
/// after the fields you set, so a field added later (a command set's own
/// settings) does not break every initializer.
#[derive(Clone, Debug, Default)]
pub struct NamespaceSpec {
    /// Bytes; for a file, 0 means the file's own size.
    pub size_bytes: u64,
    pub lba_size: u32,
    pub backend: String,
    /// The file of a `"file"` namespace.
    pub file: Option<FileSpec>,
    /// The embedder's blocks of a `"custom"` namespace.
    pub storage: Option<StorageRef>,
    /// Metadata and protection information (default: none).
    pub metadata: crate::pi::Format,
    /// Zones: a zoned namespace (Zoned Namespace Command Set).
    pub zones: Option<crate::zns::ZoneSpec>,
}

/// What a namespace turned out to be once opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub backend: &'static str,
    pub size_bytes: u64,
    pub path: Option<String>,
    /// "io_uring", "threads", or "memory".
    pub io: &'static str,
    /// "direct", "buffered", or "memory".
    pub cache: &'static str,
    pub readonly: bool,
}

/// What the engine is built with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// NSIDs 1.. in order; more may be added later (up to `nn`).
    pub namespaces: Vec<NamespaceSpec>,
    /// NN, the highest NSID (`ns_table::MAX_NN` at most); 0: as many as
    /// `namespaces` holds.
    pub nn: u32,
    /// TNVMCAP in bytes, what every namespace together may take; 0:
    /// exactly what `namespaces` take.
    pub capacity_bytes: u64,
    pub msix_vectors: u16,
    /// Highest queue ID, admin queue 0 included.
    pub max_qid: u16,
    /// Largest I/O queue (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// Largest data transfer in bytes; 0 = unlimited.
    pub mdts_bytes: u64,
    /// How long an I/O worker keeps polling after its last work.
    pub poll_us: u64,
    /// When I/O workers sleep: see [`Polling`].
    pub polling: Polling,
    /// Number of I/O worker threads (iothreads), at least 1.
    pub iothreads: u16,
    /// Explicit CQ-to-iothread assignment: `affinity[i]` is the iothread
    /// (0-based) of CQ `i + 1`; CQs past its end go round robin.
    pub affinity: Vec<u16>,
    /// Bytes between doorbells (4 << CAP.DSTRD).
    pub doorbell_stride: u32,
    /// The embedder owns the MSI-X capability and table (a vfio-user
    /// client, a test): vectors start enabled and unmasked. Otherwise the
    /// device emulates the table and starts in the PCI reset state.
    pub msix_embedder_managed: bool,
}

/// When an I/O worker sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polling {
    /// Poll after the last work for `poll_us`, or while work keeps arriving
    /// for a few times the recent gap between arrivals (up to 1 ms, see
    /// `engine/poll.rs`), then sleep until a doorbell.
    Adaptive,
    /// Never poll: sleep as soon as there is no work (every doorbell wakes).
    Interrupt,
    /// Never sleep (benchmarks, doorbell pages written with no ioeventfd).
    Poll,
}

/// What an admin handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Post a completion now.
    Complete { status: Status, dw0: u32 },
    /// Completed later through [`Engine::complete_admin`] (AER).
    Deferred,
}

/// Runs a worker's body (see [`Engine::start_with`]); called once per worker thread.
pub type WorkerWrapper = Arc<dyn Fn(Box<dyn FnOnce() + Send>) + Send + Sync>;

/// Executes admin commands; called on the worker thread, queue lock released.
pub trait AdminHandler: Send + Sync {
    fn handle(&self, sqe: &Sqe) -> AdminOutcome;
}

/// A failed I/O command, for the Error Information log page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    pub sqid: u16,
    pub cid: u16,
    pub failure: Failure,
}
