//! The device: guest memory, namespaces, the queue table, doorbells,
//! vectors, and the worker thread that runs the hot path.
//!
//! Admin SQEs flow through the same rings as I/O: the worker fetches them
//! and hands them to an [`AdminHandler`] (the Python control plane) with the
//! queue lock released, then posts the completion it returns. The handler
//! may call back into the engine (create a queue, move data, complete a
//! deferred command) without deadlocking.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::backend::{Backend, BackendError};
use crate::cmd::io::{Failure, Namespace, Smart};
use crate::cmd::prp::{self, Segment};
use crate::coalesce::Coalescing;
use crate::doorbell::{DoorbellError, Doorbells};
use crate::intx::{IntxLine, LevelCallback};
use crate::irq::{dup_fd, IrqError, IrqMode, Notifier, Vectors};
use crate::mem::{GuestMemory, MemError};
use crate::queue::{CompletionQueue, QueueError, SubmissionQueue};
use crate::spec::{Sqe, Status};

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
}

/// One namespace as configured.
#[derive(Clone, Debug)]
pub struct NamespaceSpec {
    pub size_bytes: u64,
    pub lba_size: u32,
    pub backend: String,
}

/// What the engine is built with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub namespaces: Vec<NamespaceSpec>,
    pub msix_vectors: u16,
    /// Highest queue ID, admin queue 0 included.
    pub max_qid: u16,
    /// Largest I/O queue (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// Largest data transfer in bytes; 0 = unlimited.
    pub mdts_bytes: u64,
    /// How long the worker keeps polling after its last work.
    pub poll_us: u64,
    /// The embedder owns the MSI-X capability and table (a vfio-user
    /// client, a test): vectors start enabled and unmasked. Otherwise the
    /// device emulates the table and starts in the PCI reset state.
    pub msix_embedder_managed: bool,
}

/// What an admin handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Post a completion now.
    Complete { status: Status, dw0: u32 },
    /// Completed later through [`Engine::complete_admin`] (AER).
    Deferred,
}

/// Runs the worker's body (see [`Engine::start_with`]).
pub type WorkerWrapper = Box<dyn FnOnce(Box<dyn FnOnce() + Send>) + Send>;

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

/// Worker-side counters: plain integers under the queue lock, so the hot
/// path pays no atomic per command.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    io_commands: u64,
    admin_commands: u64,
    io_errors: u64,
    batches: u64,
    cq_full_stalls: u64,
    sqe_fetch_errors: u64,
    cqe_post_errors: u64,
    sleeps: u64,
}

const ERROR_RING: usize = 256;
/// Commands taken from one SQ per pass, so one busy queue cannot starve the others.
const SQ_BURST: u32 = 64;

/// The queue table and everything the worker mutates, under one lock.
struct Queues {
    sqs: Vec<Option<SubmissionQueue>>,
    cqs: Vec<Option<CompletionQueue>>,
    /// Existing SQ IDs in creation order (admin first): the worker's scan list.
    active_sqs: Vec<u16>,
    active_cqs: Vec<u16>,
    page_size: u64,
    /// Bumped by reset, so completions of commands fetched before a reset are dropped.
    generation: u64,
    /// CIDs of admin commands fetched and not yet completed: running in the
    /// handler or deferred. complete_admin accepts any of them, so an event
    /// raised on another thread while the AER handler is still returning
    /// completes it instead of being lost.
    admin_pending: Vec<u16>,
    stats: Stats,
    smart: Smart,
    errors: VecDeque<ErrorEntry>,
    segs: Vec<Segment>,
    coalesce: Coalescing,
    intx: IntxLine,
}

/// State shared by the API and the worker.
struct Shared {
    cfg: EngineConfig,
    mem: GuestMemory,
    doorbells: Doorbells,
    vectors: Vectors,
    namespaces: Vec<Namespace>,
    queues: Mutex<Queues>,
    stop: AtomicBool,
    fatal: AtomicBool,
    admin: Mutex<Option<Arc<dyn AdminHandler>>>,
}

/// The emulated controller's hot path.
pub struct Engine {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the device: the state it guards is
    // plain data that stays consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Builds an engine; the worker is not running until [`Engine::start`].
    pub fn new(cfg: EngineConfig) -> Result<Engine, EngineError> {
        if cfg.namespaces.is_empty() {
            return Err(EngineError::Config(
                "at least one namespace is required".into(),
            ));
        }
        if cfg.msix_vectors == 0 {
            return Err(EngineError::Config(
                "msix_vectors must be at least 1".into(),
            ));
        }
        if cfg.max_qid == 0 {
            return Err(EngineError::Config(
                "max_qid must be at least 1 (one I/O queue pair)".into(),
            ));
        }
        if !(2..=65536).contains(&cfg.max_queue_entries) {
            return Err(EngineError::Config(format!(
                "max_queue_entries {} must be in 2..=65536",
                cfg.max_queue_entries
            )));
        }
        let mut namespaces = Vec::with_capacity(cfg.namespaces.len());
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            if !matches!(ns.lba_size, 512 | 4096) {
                return Err(EngineError::Config(format!(
                    "namespace {}: lba_size {} must be 512 or 4096",
                    i + 1,
                    ns.lba_size
                )));
            }
            if ns.size_bytes == 0 || ns.size_bytes % u64::from(ns.lba_size) != 0 {
                return Err(EngineError::Config(format!(
                    "namespace {}: size_bytes {} must be a positive multiple of lba_size {}",
                    i + 1,
                    ns.size_bytes,
                    ns.lba_size
                )));
            }
            namespaces.push(Namespace {
                backend: Backend::new(&ns.backend, ns.size_bytes)?,
                lba_shift: ns.lba_size.trailing_zeros(),
                lbas: ns.size_bytes / u64::from(ns.lba_size),
            });
        }
        let n = usize::from(cfg.max_qid) + 1;
        let shared = Shared {
            doorbells: Doorbells::new(cfg.max_qid),
            vectors: Vectors::new(cfg.msix_vectors, cfg.msix_embedder_managed),
            mem: GuestMemory::new(),
            namespaces,
            queues: Mutex::new(Queues {
                sqs: (0..n).map(|_| None).collect(),
                cqs: (0..n).map(|_| None).collect(),
                active_sqs: Vec::new(),
                active_cqs: Vec::new(),
                page_size: 4096,
                generation: 0,
                admin_pending: Vec::new(),
                stats: Stats::default(),
                smart: Smart::default(),
                errors: VecDeque::with_capacity(ERROR_RING),
                segs: Vec::with_capacity(64),
                coalesce: Coalescing::new(cfg.msix_vectors),
                intx: IntxLine::default(),
            }),
            stop: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            admin: Mutex::new(None),
            cfg,
        };
        Ok(Engine {
            shared: Arc::new(shared),
            worker: Mutex::new(None),
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    // ---- lifecycle -------------------------------------------------------

    /// Starts the worker thread (no-op when running).
    pub fn start(&self) -> Result<(), EngineError> {
        self.start_with(None)
    }

    /// Starts the worker inside `wrap`, which must call the closure it is
    /// given exactly once. The Python bindings wrap it in an attach/detach
    /// pair so the thread keeps one interpreter thread state for its life:
    /// handlers and callback notifiers then re-take the GIL cheaply instead
    /// of building and tearing down a thread state per call.
    pub fn start_with(&self, wrap: Option<WorkerWrapper>) -> Result<(), EngineError> {
        let mut w = lock(&self.worker);
        if w.is_some() {
            return Ok(());
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let s = self.shared.clone();
        let h = std::thread::Builder::new()
            .name("nvmefast-worker".into())
            .spawn(move || match wrap {
                Some(w) => w(Box::new(move || worker::worker_loop(&s))),
                None => worker::worker_loop(&s),
            })
            .map_err(|e| EngineError::Spawn(e.to_string()))?;
        self.shared.doorbells.set_worker(Some(h.thread().clone()));
        *w = Some(h);
        Ok(())
    }

    /// Stops and joins the worker (no-op when stopped). Commands already
    /// fetched are completed first: the worker only checks the stop flag
    /// between passes.
    pub fn stop(&self) {
        let h = lock(&self.worker).take();
        if let Some(h) = h {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.doorbells.wake();
            let _ = h.join();
            self.shared.doorbells.set_worker(None);
        }
    }

    /// True while the worker runs.
    pub fn running(&self) -> bool {
        lock(&self.worker).is_some()
    }

    /// Installs (or removes) the admin command handler.
    pub fn set_admin_handler(&self, h: Option<Arc<dyn AdminHandler>>) {
        *lock(&self.shared.admin) = h;
    }

    // ---- guest memory ----------------------------------------------------

    /// Maps `size` bytes of `fd` at `offset` as guest memory at `iova`.
    pub fn map_dma(
        &self,
        iova: u64,
        size: u64,
        fd: RawFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), EngineError> {
        Ok(self.shared.mem.map(iova, size, fd, offset, writable)?)
    }

    /// Removes the mapping that is exactly `[iova, iova+size)`.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<(), EngineError> {
        Ok(self.shared.mem.unmap(iova, size)?)
    }

    /// Drops every mapping.
    pub fn clear_dma(&self) {
        self.shared.mem.clear();
    }

    /// The current mappings.
    pub fn dma_regions(&self) -> Vec<(u64, u64, bool)> {
        self.shared.mem.snapshot().regions()
    }

    // ---- controller state ------------------------------------------------

    /// Memory page size from CC.MPS (4 KiB to 64 KiB, CAP.MPSMIN..MPSMAX).
    pub fn set_page_size(&self, page: u64) -> Result<(), EngineError> {
        if !page.is_power_of_two() || !(4096..=65536).contains(&page) {
            return Err(EngineError::Config(format!(
                "page size {page} must be a power of two from 4096 to 65536"
            )));
        }
        lock(&self.shared.queues).page_size = page;
        Ok(())
    }

    /// Controller reset (CC.EN 1 -> 0): every queue, doorbell and deferred
    /// command is dropped and CSTS.CFS cleared. Guest memory, vectors and
    /// counters stay (they belong to the PCI function, not the controller).
    pub fn reset(&self) {
        let intx = {
            let mut q = lock(&self.shared.queues);
            for s in q.sqs.iter_mut() {
                *s = None;
            }
            for c in q.cqs.iter_mut() {
                *c = None;
            }
            q.active_sqs.clear();
            q.active_cqs.clear();
            q.admin_pending.clear();
            q.generation += 1;
            q.coalesce.reset();
            self.shared.doorbells.clear();
            self.shared.fatal.store(false, Ordering::SeqCst);
            q.intx.reset()
        };
        // INTMS/INTMC are controller registers: a reset clears the mask (as
        // QEMU's nvme_ctrl_reset does); anything it held is delivered.
        self.shared.vectors.set_intms(0);
        // No CQ is left to hold the INTx line up.
        if let Some((cb, level)) = intx {
            cb(level);
        }
    }

    /// CSTS.CFS: the controller failed to fetch an SQE or post a CQE.
    pub fn fatal(&self) -> bool {
        self.shared.fatal.load(Ordering::SeqCst)
    }

    // ---- queues ----------------------------------------------------------

    fn check_qid(&self, qid: u16) -> Result<(), QueueError> {
        if qid > self.shared.cfg.max_qid {
            return Err(QueueError::QidOutOfRange {
                qid,
                max: self.shared.cfg.max_qid,
            });
        }
        Ok(())
    }

    fn check_size(&self, qid: u16, size: u32) -> Result<(), QueueError> {
        // Admin queues are sized by AQA (12 bits); I/O queues by CAP.MQES.
        let max = if qid == 0 {
            4096
        } else {
            self.shared.cfg.max_queue_entries
        };
        if !(2..=max).contains(&size) {
            return Err(QueueError::BadSize { size, max });
        }
        Ok(())
    }

    /// Creates CQ `qid` of `size` entries at `iova`, signalling `vector` when `ien`.
    pub fn create_cq(
        &self,
        qid: u16,
        iova: u64,
        size: u32,
        vector: u16,
        ien: bool,
    ) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        self.check_size(qid, size)?;
        let count = self.shared.vectors.count();
        if vector >= count {
            return Err(QueueError::BadVector { vector, count }.into());
        }
        let cq = CompletionQueue::new(qid, iova, size, vector, ien)?;
        let mut q = lock(&self.shared.queues);
        let slot = &mut q.cqs[usize::from(qid)];
        if slot.is_some() {
            return Err(QueueError::Exists { qid }.into());
        }
        *slot = Some(cq);
        q.active_cqs.push(qid);
        self.shared
            .doorbells
            .set_queue(usize::from(qid) * 2 + 1, size);
        Ok(())
    }

    /// Creates SQ `qid` of `size` entries at `iova`, posting to CQ `cqid`.
    pub fn create_sq(&self, qid: u16, iova: u64, size: u32, cqid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        self.check_qid(cqid)?;
        self.check_size(qid, size)?;
        let sq = SubmissionQueue::new(qid, iova, size, cqid)?;
        let mut q = lock(&self.shared.queues);
        if q.sqs[usize::from(qid)].is_some() {
            return Err(QueueError::Exists { qid }.into());
        }
        match q.cqs[usize::from(cqid)].as_mut() {
            Some(cq) => cq.sqs += 1,
            None => return Err(QueueError::Missing { qid: cqid }.into()),
        }
        q.sqs[usize::from(qid)] = Some(sq);
        q.active_sqs.push(qid);
        self.shared.doorbells.set_queue(usize::from(qid) * 2, size);
        Ok(())
    }

    /// Deletes SQ `qid`. Commands run to completion when fetched, so none is
    /// outstanding and nothing needs aborting.
    pub fn delete_sq(&self, qid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        let mut q = lock(&self.shared.queues);
        let sq = q.sqs[usize::from(qid)]
            .take()
            .ok_or(QueueError::Missing { qid })?;
        q.active_sqs.retain(|&x| x != qid);
        if let Some(cq) = q.cqs[usize::from(sq.cqid)].as_mut() {
            cq.sqs = cq.sqs.saturating_sub(1);
        }
        self.shared.doorbells.set_queue(usize::from(qid) * 2, 0);
        Ok(())
    }

    /// Deletes CQ `qid`, which no SQ may use.
    pub fn delete_cq(&self, qid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        let mut q = lock(&self.shared.queues);
        match q.cqs[usize::from(qid)].as_ref() {
            None => return Err(QueueError::Missing { qid }.into()),
            Some(cq) if cq.sqs > 0 => return Err(QueueError::InUse { qid, sqs: cq.sqs }.into()),
            Some(_) => {}
        }
        q.cqs[usize::from(qid)] = None;
        q.active_cqs.retain(|&x| x != qid);
        self.shared.doorbells.set_queue(usize::from(qid) * 2 + 1, 0);
        Ok(())
    }

    /// True when SQ `qid` exists.
    pub fn sq_exists(&self, qid: u16) -> bool {
        lock(&self.shared.queues)
            .sqs
            .get(usize::from(qid))
            .is_some_and(|s| s.is_some())
    }

    /// True when CQ `qid` exists.
    pub fn cq_exists(&self, qid: u16) -> bool {
        lock(&self.shared.queues)
            .cqs
            .get(usize::from(qid))
            .is_some_and(|s| s.is_some())
    }

    /// True while some SQ posts to CQ `qid`.
    pub fn cq_in_use(&self, qid: u16) -> bool {
        lock(&self.shared.queues)
            .cqs
            .get(usize::from(qid))
            .and_then(|c| c.as_ref())
            .is_some_and(|c| c.sqs > 0)
    }

    // ---- doorbells ---------------------------------------------------------

    /// The host writes `value` to doorbell `index`.
    #[inline]
    pub fn doorbell_write(&self, index: u32, value: u32) -> Result<(), DoorbellError> {
        self.shared.doorbells.write(index, value)
    }

    /// Number of doorbells (two per queue ID).
    pub fn doorbell_count(&self) -> usize {
        self.shared.doorbells.len()
    }

    // ---- admin data and completions ----------------------------------------

    /// Copies `data` into the host buffer PRP1/PRP2 describe.
    pub fn write_prp(&self, prp1: u64, prp2: u64, data: &[u8]) -> Status {
        let page = lock(&self.shared.queues).page_size;
        let mem = self.shared.mem.snapshot();
        let mut segs = Vec::new();
        if let Err(e) = prp::walk(&mem, prp1, prp2, data.len() as u64, page, true, &mut segs) {
            return e.status();
        }
        let mut off = 0;
        for s in segs {
            // SAFETY: the segment was translated (writable) against `mem`,
            // which stays alive across this copy; data[off..off+len] is in
            // bounds because the segments add up to data.len().
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(off), s.ptr, s.len) };
            off += s.len;
        }
        Status::SUCCESS
    }

    /// Copies `len` bytes out of the host buffer PRP1/PRP2 describe.
    pub fn read_prp(&self, prp1: u64, prp2: u64, len: usize) -> (Status, Vec<u8>) {
        let page = lock(&self.shared.queues).page_size;
        let mem = self.shared.mem.snapshot();
        let mut segs = Vec::new();
        if let Err(e) = prp::walk(&mem, prp1, prp2, len as u64, page, false, &mut segs) {
            return (e.status(), Vec::new());
        }
        let mut out = Vec::with_capacity(len);
        for s in segs {
            // SAFETY: translated against `mem`, alive for this copy.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(s.ptr, s.len) });
        }
        (Status::SUCCESS, out)
    }

    /// Posts the completion of deferred admin command `cid`.
    pub fn complete_admin(&self, cid: u16, status: Status, dw0: u32) -> Result<(), EngineError> {
        let mut q = lock(&self.shared.queues);
        let pos = q
            .admin_pending
            .iter()
            .position(|&c| c == cid)
            .ok_or(EngineError::NotDeferred { cid })?;
        q.admin_pending.swap_remove(pos);
        let gen = q.generation;
        self.shared.post_admin(&mut q, gen, cid, status, dw0);
        let mut out = worker::Signals::default();
        self.shared.decide_signals(&mut q, &mut out);
        drop(q);
        self.shared.deliver(&mut out);
        Ok(())
    }

    /// Forgets every deferred admin command; returns how many there were.
    pub fn drop_deferred(&self) -> usize {
        let mut q = lock(&self.shared.queues);
        let n = q.admin_pending.len();
        if let Some(cq) = q.cqs[0].as_mut() {
            cq.reserved = cq.reserved.saturating_sub(n as u32);
        }
        q.admin_pending.clear();
        n
    }

    // ---- interrupts ------------------------------------------------------

    /// Attaches (Some) or detaches (None) the eventfd of `vector`.
    pub fn set_vector_eventfd(&self, vector: u32, fd: Option<RawFd>) -> Result<(), EngineError> {
        Ok(self.shared.vectors.set_eventfd(vector, fd)?)
    }

    /// Routes `vector` to KVM_SIGNAL_MSI on VM fd `vm_fd` (duplicated), with
    /// the message address/data of its MSI-X table entry.
    pub fn set_vector_kvm_msi(&self, vector: u32, vm_fd: RawFd) -> Result<(), EngineError> {
        let vm = dup_fd(vm_fd)?;
        Ok(self
            .shared
            .vectors
            .set_notifier(vector, Some(Notifier::KvmMsi(vm)))?)
    }

    /// Routes `vector` to a callback (run on the worker, no lock held).
    pub fn set_vector_callback(
        &self,
        vector: u32,
        cb: Arc<dyn Fn(u32) + Send + Sync>,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .set_notifier(vector, Some(Notifier::Callback(cb)))?)
    }

    /// Masks or unmasks `vector` (unmask with pending fires once).
    pub fn mask_vector(&self, vector: u32, masked: bool) -> Result<(), EngineError> {
        Ok(self.shared.vectors.set_masked(vector, masked)?)
    }

    /// Vectors with the pending bit set.
    pub fn pending_vectors(&self) -> Vec<u32> {
        self.shared.vectors.pending()
    }

    /// MSI-X table entry `vector`: (address, data, masked).
    pub fn msix_entry(&self, vector: u32) -> Result<(u64, u32, bool), EngineError> {
        Ok(self.shared.vectors.entry(vector)?)
    }

    /// Writes MSI-X table entry `vector`.
    pub fn set_msix_entry(
        &self,
        vector: u32,
        address: u64,
        data: u32,
        masked: bool,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .set_entry(vector, address, data, masked)?)
    }

    /// Dword `field` (0, 4, 8, 12) of MSI-X table entry `vector`.
    pub fn msix_table_dword(&self, vector: u32, field: u32) -> Result<u32, EngineError> {
        Ok(self.shared.vectors.table_dword(vector, field)?)
    }

    /// Writes one dword of a table entry atomically with respect to
    /// `mask_vector` (an unmask with pending delivers once).
    pub fn write_msix_table_dword(
        &self,
        vector: u32,
        field: u32,
        value: u32,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .write_table_dword(vector, field, value)?)
    }

    /// MSI-X Enable and Function Mask.
    pub fn set_msix_control(&self, enabled: bool, function_masked: bool) {
        self.shared.vectors.set_control(enabled, function_masked);
    }

    /// (MSI-X enabled, function masked).
    pub fn msix_control(&self) -> (bool, bool) {
        self.shared.vectors.control()
    }

    /// PCI reset of the MSI-X state (table, PBA, control).
    pub fn msix_reset(&self) {
        self.shared
            .vectors
            .reset(self.shared.cfg.msix_embedder_managed);
    }

    /// MSI-X, MSI or INTx delivery.
    pub fn set_irq_mode(&self, mode: IrqMode) {
        self.shared.vectors.set_mode(mode);
        // The INTx level is computed by the worker: make it look now.
        self.shared.doorbells.wake();
    }

    /// The delivery mode.
    pub fn irq_mode(&self) -> IrqMode {
        self.shared.vectors.mode()
    }

    /// INTMS (set bits mask vectors in MSI mode, the pin in INTx mode).
    pub fn set_interrupt_mask(&self, mask: u32) {
        self.shared.vectors.set_intms(mask);
        self.shared.doorbells.wake();
    }

    /// The INTMS value.
    pub fn interrupt_mask(&self) -> u32 {
        self.shared.vectors.intms()
    }

    /// Wires INTx to a KVM-style eventfd pair (duplicated; None detaches).
    pub fn set_intx_eventfds(
        &self,
        trigger: Option<RawFd>,
        resample: Option<RawFd>,
    ) -> Result<(), EngineError> {
        let t = trigger.map(dup_fd).transpose()?;
        let r = resample.map(dup_fd).transpose()?;
        lock(&self.shared.queues).intx.set_eventfds(t, r);
        Ok(())
    }

    /// Wires INTx level changes to a callback (run on the worker, no lock held).
    pub fn set_intx_callback(&self, cb: Option<LevelCallback>) {
        lock(&self.shared.queues).intx.set_callback(cb);
    }

    /// True while the INTx line is asserted.
    pub fn intx_asserted(&self) -> bool {
        lock(&self.shared.queues).intx.asserted()
    }

    /// Interrupt Coalescing (Feature 08h): THR (0's based) and TIME (100 us).
    pub fn set_coalescing(&self, thr: u8, time: u8) {
        lock(&self.shared.queues).coalesce.set(thr, time);
        self.shared.doorbells.wake();
    }

    /// (THR, TIME).
    pub fn coalescing(&self) -> (u8, u8) {
        lock(&self.shared.queues).coalesce.get()
    }

    /// Coalescing Disable (Feature 09h CD) for `vector`.
    pub fn set_coalescing_disabled(&self, vector: u32, disabled: bool) -> Result<(), EngineError> {
        let count = self.shared.vectors.count();
        let v = u16::try_from(vector)
            .ok()
            .filter(|v| *v < count)
            .ok_or(IrqError::BadVector {
                vector,
                count: u32::from(count),
            })?;
        lock(&self.shared.queues).coalesce.set_disabled(v, disabled);
        Ok(())
    }

    // ---- observation -----------------------------------------------------

    /// Event counters by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let (st, deferred, expired, asserts, deasserts) = {
            let q = lock(&self.shared.queues);
            (
                q.stats,
                q.coalesce.deferred,
                q.coalesce.expired,
                q.intx.assertions,
                q.intx.deassertions,
            )
        };
        let d = &self.shared.doorbells;
        let v = &self.shared.vectors;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("io_commands", st.io_commands),
            ("admin_commands", st.admin_commands),
            ("io_errors", st.io_errors),
            ("batches", st.batches),
            ("cq_full_stalls", st.cq_full_stalls),
            ("sqe_fetch_errors", st.sqe_fetch_errors),
            ("cqe_post_errors", st.cqe_post_errors),
            ("worker_sleeps", st.sleeps),
            ("doorbell_writes", r(&d.writes)),
            ("invalid_doorbell_writes", r(&d.invalid_writes)),
            ("worker_wakeups", r(&d.wakeups)),
            ("interrupts", v.signals()),
            ("masked_notifications", v.masked_notifications()),
            ("unrouted_notifications", v.unrouted()),
            ("notify_errors", v.notify_errors()),
            ("coalesced_completions", deferred),
            ("coalescing_timeouts", expired),
            ("intx_assertions", asserts),
            ("intx_deassertions", deasserts),
        ]
    }

    /// SMART / Health counters.
    pub fn smart(&self) -> Smart {
        lock(&self.shared.queues).smart
    }

    /// Failed I/O commands since the last call, oldest first.
    pub fn take_errors(&self) -> Vec<ErrorEntry> {
        lock(&self.shared.queues).errors.drain(..).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

mod worker;

#[cfg(test)]
mod irq_tests;

#[cfg(test)]
mod tests;
