//! The device: guest memory, namespaces, doorbells, vectors, and the
//! worker threads that run the hot path.
//!
//! Worker 0 serves the admin queue only, off the I/O path, sleeping until a
//! doorbell: it fetches admin SQEs and hands them to an [`AdminHandler`]
//! (the Python control plane) with its queue lock released, then posts the
//! completion it returns, so a handler may call back into the engine
//! (create a queue, move data, complete a deferred command) without
//! deadlock. Workers 1..=iothreads own the I/O queue pairs: each CQ is
//! assigned to one (round robin, or an explicit affinity) and its SQs go
//! with it, so every queue has exactly one thread touching its ring state.

use std::collections::VecDeque;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use arc_swap::ArcSwap;
use std::thread::JoinHandle;

use crate::cmd::io::{Namespace, Smart};
use crate::cmd::prp::Segment;
use crate::coalesce::Coalescing;
use crate::doorbell::{DoorbellError, Doorbells, ShadowError};
use crate::intx::IntxLine;
use crate::irq::{dup_fd, Vectors};
use crate::mem::GuestMemory;
use crate::queue::{CompletionQueue, QueueError, SubmissionQueue};
use crate::spec::{Sqe, Status};
use crate::waker::Waker;

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
    /// CIDs of admin commands fetched and not yet completed: running in the
    /// handler or deferred. complete_admin accepts any of them, so an event
    /// raised on another thread while the AER handler is still returning
    /// completes it instead of being lost.
    admin_pending: Vec<u16>,
    stats: Stats,
    smart: Smart,
    errors: VecDeque<ErrorEntry>,
    segs: Vec<Segment>,
    scratch: Vec<u8>,
    /// Commands in flight to file namespaces (I/O workers with any file
    /// namespace, while running).
    file: Option<file_io::FileIo>,
    coalesce: Coalescing,
    /// This worker's share of the INTx level (some CQ of its holds
    /// unconsumed entries).
    intx_level: bool,
    /// Completions and interrupts fault rules hold back.
    faults: faults::Pending,
}

impl Queues {
    fn new(n: usize, vectors: u16) -> Self {
        Queues {
            sqs: (0..n).map(|_| None).collect(),
            cqs: (0..n).map(|_| None).collect(),
            active_sqs: Vec::new(),
            active_cqs: Vec::new(),
            admin_pending: Vec::new(),
            stats: Stats::default(),
            smart: Smart::default(),
            errors: VecDeque::with_capacity(ERROR_RING),
            segs: Vec::with_capacity(64),
            scratch: Vec::new(),
            file: None,
            coalesce: Coalescing::new(vectors),
            intx_level: false,
            faults: faults::Pending::default(),
        }
    }
}

/// One worker thread's state.
struct Worker {
    queues: Mutex<Queues>,
    waker: Waker,
}

/// A callback for asynchronous events the worker detects (an invalid value
/// found in the doorbell page or shadow buffer): gets the AER info code.
pub type EventCallback = Arc<dyn Fn(u8) + Send + Sync>;

/// No worker owns this queue ID.
const NO_OWNER: u16 = u16::MAX;
/// No interrupt-enabled CQ with this ID (see `Shared::cq_tails`).
const NO_TAIL: u32 = u32::MAX;

/// State shared by the API and the workers.
struct Shared {
    cfg: EngineConfig,
    mem: GuestMemory,
    doorbells: Doorbells,
    vectors: Vectors,
    /// The namespace table (`ns_table.rs`): loaded once per pass.
    namespaces: ArcSwap<ns_table::NsTable>,
    /// Serializes changes to the table and to a namespace's size.
    ns_lock: Mutex<()>,
    /// Background jobs (self-test, sanitize) read and write namespaces
    /// under it, shared; [`Engine::quiesce`] takes it exclusively.
    storage_gate: RwLock<()>,
    /// TNVMCAP: bytes the namespaces may take in all.
    capacity: u64,
    /// I/O command sets enabled (CC.CSS): bit 0 NVM, bit 1 zoned.
    css: AtomicU8,
    /// Worker 0: admin; 1..=iothreads: I/O.
    workers: Box<[Worker]>,
    /// Worker index serving each doorbell's queue: `2y` SQ y, `2y + 1` CQ y
    /// (SQ and CQ IDs are separate namespaces; an SQ lives with its CQ).
    owner: Box<[AtomicU16]>,
    next_iothread: AtomicUsize,
    /// Memory page size from CC.MPS.
    page_size: AtomicU64,
    /// Bumped by reset, so completions of commands fetched before a reset are dropped.
    generation: AtomicU64,
    intx: Mutex<IntxLine>,
    /// The tail of each interrupt-enabled CQ as its worker last posted it
    /// (NO_TAIL: none): what the INTx level is judged from, by any worker.
    cq_tails: Box<[AtomicU32]>,
    events: Mutex<Option<EventCallback>>,
    /// Told of guest memory regions lost under the device.
    loss_handler: Mutex<Option<memloss::LossCallback>>,
    zone_events: Mutex<Option<zoned::ZoneEventCallback>>,
    /// ioeventfds by doorbell index (kept to unwatch them).
    ioeventfds: Mutex<Vec<Option<OwnedFd>>>,
    stop: AtomicBool,
    fatal: AtomicBool,
    /// Microseconds between looks at the doorbells while a worker sleeps
    /// (0: sleep until woken): for doorbells that change with no wake-up,
    /// such as a doorbell page a vfio-user client has mapped.
    doorbell_scan_us: AtomicU64,
    admin: Mutex<Option<Arc<dyn AdminHandler>>>,
    /// Held by the admin worker around each handler call and by reset: a
    /// command fetched before a reset never reaches the handler after it
    /// (its side effects, such as an AER the control plane starts waiting
    /// on, would outlive the reset that dropped it).
    handler_gate: Mutex<()>,
    /// Volatile Write Cache enabled (mirrored into every file backend).
    write_cache: AtomicBool,
    /// Bumped after each new namespace table is published: a worker
    /// reloads its copy only when it moved (`ns_table.rs`).
    table_gen: AtomicU64,
    /// The opt-in command trace.
    trace: trace::Trace,
    /// Fault rules and the power state.
    faults: faults::Faults,
    /// Device Self-test and Sanitize (`maintenance.rs`).
    background: maintenance::Background,
}

/// The emulated controller's hot path.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// CPUs for the I/O workers, round robin (empty: no pinning).
    cpus: Mutex<Vec<usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the device: the state it guards is
    // plain data that stays consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Builds an engine; the worker is not running until [`Engine::start`].
    pub fn new(cfg: EngineConfig) -> Result<Engine, EngineError> {
        if cfg.namespaces.is_empty() && cfg.nn == 0 {
            return Err(EngineError::Config(
                "at least one namespace is required, or nn > 0 for namespaces added later".into(),
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
        let nn = if cfg.nn == 0 {
            cfg.namespaces.len() as u32
        } else {
            cfg.nn
        };
        if nn > ns_table::MAX_NN || (nn as usize) < cfg.namespaces.len() {
            return Err(EngineError::Config(format!(
                "nn {} must be in {}..={} (at least one NSID per configured namespace)",
                cfg.nn,
                cfg.namespaces.len(),
                ns_table::MAX_NN
            )));
        }
        let mut slots: Vec<Option<Arc<Namespace>>> = vec![None; nn as usize];
        for (i, spec) in cfg.namespaces.iter().enumerate() {
            slots[i] = Some(Arc::new(ns_table::build(spec, i as u32 + 1)?));
        }
        let table = ns_table::NsTable::new(slots.into_boxed_slice());
        let allocated: u64 = table.iter().map(|(_, ns)| ns_table::capacity_of(ns)).sum();
        let capacity = if cfg.capacity_bytes == 0 {
            allocated
        } else {
            cfg.capacity_bytes
        };
        if allocated > capacity {
            return Err(EngineError::Config(format!(
                "the namespaces take {allocated} bytes, more than capacity_bytes {capacity}; raise \
                 capacity_bytes or shrink the namespaces"
            )));
        }
        if cfg.iothreads == 0 || cfg.iothreads > 64 {
            return Err(EngineError::Config(format!(
                "iothreads {} must be in 1..=64",
                cfg.iothreads
            )));
        }
        if let Some(bad) = cfg.affinity.iter().find(|&&t| t >= cfg.iothreads) {
            return Err(EngineError::Config(format!(
                "affinity names iothread {bad}, but there are only {} (0..{})",
                cfg.iothreads, cfg.iothreads
            )));
        }
        if !cfg.doorbell_stride.is_power_of_two() || !(4..=(4 << 15)).contains(&cfg.doorbell_stride)
        {
            return Err(EngineError::Config(format!(
                "doorbell_stride {} must be 4 << DSTRD (4..=131072, a power of two)",
                cfg.doorbell_stride
            )));
        }
        let n = usize::from(cfg.max_qid) + 1;
        let doorbells = Doorbells::new(cfg.max_qid, cfg.doorbell_stride as usize)
            .map_err(|e| EngineError::Config(format!("cannot create the doorbell page: {e}")))?;
        let mut workers = Vec::new();
        for _ in 0..=cfg.iothreads {
            workers.push(Worker {
                queues: Mutex::new(Queues::new(n, cfg.msix_vectors)),
                waker: Waker::new()?,
            });
        }
        let shared = Shared {
            doorbells,
            vectors: Vectors::new(cfg.msix_vectors, cfg.msix_embedder_managed),
            mem: GuestMemory::new(),
            namespaces: ArcSwap::from_pointee(table),
            ns_lock: Mutex::new(()),
            storage_gate: RwLock::new(()),
            capacity,
            css: AtomicU8::new(3),
            workers: workers.into_boxed_slice(),
            owner: (0..n * 2).map(|_| AtomicU16::new(NO_OWNER)).collect(),
            next_iothread: AtomicUsize::new(0),
            page_size: AtomicU64::new(4096),
            generation: AtomicU64::new(0),
            intx: Mutex::new(IntxLine::default()),
            cq_tails: (0..n).map(|_| AtomicU32::new(NO_TAIL)).collect(),
            events: Mutex::new(None),
            loss_handler: Mutex::new(None),
            zone_events: Mutex::new(None),
            ioeventfds: Mutex::new((0..n * 2).map(|_| None).collect()),
            stop: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            doorbell_scan_us: AtomicU64::new(0),
            admin: Mutex::new(None),
            handler_gate: Mutex::new(()),
            write_cache: AtomicBool::new(true),
            table_gen: AtomicU64::new(0),
            trace: trace::Trace::default(),
            faults: faults::Faults::default(),
            background: maintenance::Background::default(),
            cfg,
        };
        Ok(Engine {
            shared: Arc::new(shared),
            threads: Mutex::new(Vec::new()),
            cpus: Mutex::new(Vec::new()),
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    // ---- lifecycle -------------------------------------------------------

    /// Pins the I/O workers to `cpus`, round robin, from the next
    /// [`Engine::start`] on (empty: no pinning). Every CPU must be in the
    /// process's affinity mask.
    pub fn set_worker_cpus(&self, cpus: Vec<usize>) -> Result<(), EngineError> {
        placement::check(&cpus)?;
        *lock(&self.cpus) = cpus;
        Ok(())
    }

    /// Starts the worker thread (no-op when running).
    pub fn start(&self) -> Result<(), EngineError> {
        self.start_with(None)
    }

    /// Starts every worker inside `wrap`, which must call the closure it is
    /// given exactly once. The Python bindings wrap it in an attach/detach
    /// pair so the thread keeps one interpreter thread state for its life:
    /// handlers and callback notifiers then re-take the GIL cheaply instead
    /// of building and tearing down a thread state per call.
    pub fn start_with(&self, wrap: Option<WorkerWrapper>) -> Result<(), EngineError> {
        let mut threads = lock(&self.threads);
        if !threads.is_empty() {
            return Ok(());
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        for index in 0..self.shared.workers.len() {
            let s = self.shared.clone();
            let name = if index == 0 {
                "nvmefast-admin".to_string()
            } else {
                format!("nvmefast-io{}", index - 1)
            };
            let cpu = index
                .checked_sub(1)
                .and_then(|io| placement::cpu_of(&lock(&self.cpus), io));
            let body: Box<dyn FnOnce() + Send> = Box::new(move || {
                if let Some(c) = cpu {
                    placement::pin_current(c);
                }
                worker::worker_loop(&s, index)
            });
            let w = wrap.clone();
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || match w {
                    Some(w) => w(body),
                    None => body(),
                });
            match h {
                Ok(h) => threads.push(h),
                Err(e) => {
                    drop(threads);
                    self.stop();
                    return Err(EngineError::Spawn(e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Stops and joins every worker (no-op when stopped). Commands already
    /// fetched are completed first: workers only check the stop flag
    /// between passes.
    pub fn stop(&self) {
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        if threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        for h in threads {
            let _ = h.join();
        }
    }

    /// True while the workers run.
    pub fn running(&self) -> bool {
        !lock(&self.threads).is_empty()
    }

    /// Installs (or removes) the admin command handler.
    pub fn set_admin_handler(&self, h: Option<Arc<dyn AdminHandler>>) {
        *lock(&self.shared.admin) = h;
    }

    // ---- controller state ------------------------------------------------

    /// Memory page size from CC.MPS (4 KiB to 64 KiB, CAP.MPSMIN..MPSMAX).
    pub fn set_page_size(&self, page: u64) -> Result<(), EngineError> {
        if !page.is_power_of_two() || !(4096..=65536).contains(&page) {
            return Err(EngineError::Config(format!(
                "page size {page} must be a power of two from 4096 to 65536"
            )));
        }
        self.shared.page_size.store(page, Ordering::SeqCst);
        Ok(())
    }

    /// Controller reset (CC.EN 1 -> 0): every queue, doorbell and deferred
    /// command is dropped and CSTS.CFS cleared. Guest memory, vectors and
    /// counters stay (they belong to the PCI function, not the controller).
    pub fn reset(&self) {
        let _gate = lock(&self.shared.handler_gate);
        self.shared.clear_queues();
        self.shared.fatal.store(false, Ordering::SeqCst);
        // Commands still in flight to a file write guest memory until the
        // kernel completes them: the reset completes after they do (their
        // completions are dropped: the generation moved on).
        self.wait_files(|q| q.file.as_ref().map_or(0, |f| f.inflight));
        let intx = lock(&self.shared.intx).reset();
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

    /// The worker a new CQ goes to: 0 for the admin queue, else the
    /// configured affinity or the next iothread round robin.
    fn pick_worker(&self, qid: u16) -> usize {
        if qid == 0 {
            return 0;
        }
        let cfg = &self.shared.cfg;
        let t = match cfg.affinity.get(usize::from(qid) - 1) {
            Some(&t) => usize::from(t),
            None => {
                self.shared.next_iothread.fetch_add(1, Ordering::Relaxed)
                    % usize::from(cfg.iothreads)
            }
        };
        1 + t
    }

    /// The worker serving doorbell `index`'s queue, if any.
    fn owner_of(&self, index: usize) -> Option<usize> {
        let o = self.shared.owner.get(index)?.load(Ordering::SeqCst);
        (o != NO_OWNER).then_some(usize::from(o))
    }

    fn sq_owner(&self, qid: u16) -> Option<usize> {
        self.owner_of(usize::from(qid) * 2)
    }

    fn cq_owner(&self, qid: u16) -> Option<usize> {
        self.owner_of(usize::from(qid) * 2 + 1)
    }

    /// The iothread (0-based) serving queue `qid` (its CQ, else its SQ);
    /// None for the admin queue or a queue that does not exist.
    pub fn iothread_of(&self, qid: u16) -> Option<usize> {
        self.cq_owner(qid)
            .or_else(|| self.sq_owner(qid))
            .and_then(|w| w.checked_sub(1))
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
        if self.cq_owner(qid).is_some() {
            return Err(QueueError::Exists { qid }.into());
        }
        let w = self.pick_worker(qid);
        let mut q = lock(&self.shared.workers[w].queues);
        if self.shared.owner[usize::from(qid) * 2 + 1]
            .compare_exchange(NO_OWNER, w as u16, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(QueueError::Exists { qid }.into());
        }
        q.cqs[usize::from(qid)] = Some(cq);
        q.active_cqs.push(qid);
        self.shared.cq_tails[usize::from(qid)]
            .store(if ien { 0 } else { NO_TAIL }, Ordering::SeqCst);
        self.shared.doorbells.set_queue(
            &self.shared.mem.snapshot(),
            usize::from(qid) * 2 + 1,
            size,
        );
        Ok(())
    }

    /// Creates SQ `qid` of `size` entries at `iova`, posting to CQ `cqid`
    /// (served by CQ `cqid`'s worker).
    pub fn create_sq(&self, qid: u16, iova: u64, size: u32, cqid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        self.check_qid(cqid)?;
        self.check_size(qid, size)?;
        let sq = SubmissionQueue::new(qid, iova, size, cqid)?;
        let w = self
            .cq_owner(cqid)
            .ok_or(QueueError::Missing { qid: cqid })?;
        if self.sq_owner(qid).is_some() {
            return Err(QueueError::Exists { qid }.into());
        }
        let mut q = lock(&self.shared.workers[w].queues);
        if q.sqs[usize::from(qid)].is_some() {
            return Err(QueueError::Exists { qid }.into());
        }
        match q.cqs[usize::from(cqid)].as_mut() {
            Some(cq) => cq.sqs += 1,
            None => return Err(QueueError::Missing { qid: cqid }.into()),
        }
        if self.shared.owner[usize::from(qid) * 2]
            .compare_exchange(NO_OWNER, w as u16, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            if let Some(cq) = q.cqs[usize::from(cqid)].as_mut() {
                cq.sqs -= 1;
            }
            return Err(QueueError::Exists { qid }.into());
        }
        q.sqs[usize::from(qid)] = Some(sq);
        q.active_sqs.push(qid);
        self.shared
            .doorbells
            .set_queue(&self.shared.mem.snapshot(), usize::from(qid) * 2, size);
        Ok(())
    }

    /// Deletes SQ `qid`. Commands fetched from it complete first: those in
    /// flight to a file are waited for (the SQ stops being fetched from
    /// meanwhile), as the spec asks of Delete I/O Submission Queue.
    pub fn delete_sq(&self, qid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        let w = self.sq_owner(qid).ok_or(QueueError::Missing { qid })?;
        {
            let mut q = lock(&self.shared.workers[w].queues);
            if q.sqs[usize::from(qid)].is_none() {
                return Err(QueueError::Missing { qid }.into());
            }
            q.active_sqs.retain(|&x| x != qid);
        }
        let i = usize::from(qid);
        self.wait_files(|q| q.sqs[i].as_ref().map_or(0, |sq| sq.inflight as usize));
        let mut q = lock(&self.shared.workers[w].queues);
        // Held back by a fault rule: aborted with the SQ, as the spec has
        // Delete I/O Submission Queue do to commands still outstanding.
        if self
            .shared
            .post_held(&mut q, |h| h.qid == qid, Some(Status::ABORT_SQ_DELETED))
            > 0
        {
            let mut out = worker::Signals::default();
            self.shared.decide_signals(w, &mut q, &mut out);
            drop(q);
            self.shared.deliver(&mut out);
            q = lock(&self.shared.workers[w].queues);
        }
        let sq = q.sqs[usize::from(qid)]
            .take()
            .ok_or(QueueError::Missing { qid })?;
        q.active_sqs.retain(|&x| x != qid);
        if let Some(cq) = q.cqs[usize::from(sq.cqid)].as_mut() {
            cq.sqs = cq.sqs.saturating_sub(1);
        }
        self.shared.owner[usize::from(qid) * 2].store(NO_OWNER, Ordering::SeqCst);
        self.shared
            .doorbells
            .set_queue(&self.shared.mem.snapshot(), usize::from(qid) * 2, 0);
        Ok(())
    }

    /// Deletes CQ `qid`, which no SQ may use.
    pub fn delete_cq(&self, qid: u16) -> Result<(), EngineError> {
        self.check_qid(qid)?;
        let w = self.cq_owner(qid).ok_or(QueueError::Missing { qid })?;
        let mut q = lock(&self.shared.workers[w].queues);
        match q.cqs[usize::from(qid)].as_ref() {
            None => return Err(QueueError::Missing { qid }.into()),
            Some(cq) if cq.sqs > 0 => return Err(QueueError::InUse { qid, sqs: cq.sqs }.into()),
            Some(_) => {}
        }
        q.cqs[usize::from(qid)] = None;
        q.active_cqs.retain(|&x| x != qid);
        self.shared.cq_tails[usize::from(qid)].store(NO_TAIL, Ordering::SeqCst);
        self.shared.owner[usize::from(qid) * 2 + 1].store(NO_OWNER, Ordering::SeqCst);
        self.shared
            .doorbells
            .set_queue(&self.shared.mem.snapshot(), usize::from(qid) * 2 + 1, 0);
        Ok(())
    }

    /// True when SQ `qid` exists.
    pub fn sq_exists(&self, qid: u16) -> bool {
        self.sq_owner(qid)
            .is_some_and(|w| lock(&self.shared.workers[w].queues).sqs[usize::from(qid)].is_some())
    }

    /// True when CQ `qid` exists.
    pub fn cq_exists(&self, qid: u16) -> bool {
        self.cq_owner(qid)
            .is_some_and(|w| lock(&self.shared.workers[w].queues).cqs[usize::from(qid)].is_some())
    }

    /// True while some SQ posts to CQ `qid`.
    pub fn cq_in_use(&self, qid: u16) -> bool {
        self.cq_owner(qid).is_some_and(|w| {
            lock(&self.shared.workers[w].queues).cqs[usize::from(qid)]
                .as_ref()
                .is_some_and(|c| c.sqs > 0)
        })
    }

    // ---- commands the admin layer drives -----------------------------------

    /// Abort (08h) for an I/O command still queued: if SQ `sqid` holds an
    /// unfetched entry with `cid`, it will complete with Command Abort
    /// Requested instead of running. False when it is not queued (I/O runs
    /// as soon as it is fetched, so a fetched command has completed),
    /// unless a fault rule holds it back and lets it be aborted: then it
    /// completes now with Command Abort Requested (any queue, admin too).
    pub fn abort_command(&self, sqid: u16, cid: u16) -> bool {
        let owner = if sqid == 0 {
            Some(0)
        } else {
            self.sq_owner(sqid)
        };
        let Some(w) = owner else {
            return false;
        };
        // Fetched and held by a fault rule: aborted if the rule allows it.
        if let Some(aborted) = self.abort_held(w, sqid, cid) {
            return aborted;
        }
        if sqid == 0 {
            return false;
        }
        let mut q = lock(&self.shared.workers[w].queues);
        let mem = self.shared.mem.snapshot();
        let shadow = self.shared.doorbells.shadow();
        let raw_tail = self
            .shared
            .doorbells
            .read(&mem, shadow, usize::from(sqid) * 2);
        let Some(sq) = q.sqs[usize::from(sqid)].as_mut() else {
            return false;
        };
        let tail = match raw_tail {
            Some(t) if t < sq.size => t,
            _ => sq.tail,
        };
        let mut i = sq.head;
        while i != tail {
            // Cannot overflow: the ring fits the address space (checked at creation).
            let at = sq.iova + u64::from(i) * Sqe::SIZE as u64;
            let mut b = [0u8; 4];
            if mem.read(at, &mut b).is_ok() && u16::from_le_bytes([b[2], b[3]]) == cid {
                // Once per slot: a second Abort of the same queued command
                // must not outlive it and abort the next use of its CID.
                if !sq.aborts.contains(&i) {
                    sq.aborts.push(i);
                }
                return true;
            }
            i = if i + 1 == sq.size { 0 } else { i + 1 };
        }
        false
    }

    // ---- doorbells ---------------------------------------------------------

    /// The host writes `value` to doorbell `index` (an MMIO write).
    #[inline]
    pub fn doorbell_write(&self, index: u32, value: u32) -> Result<(), DoorbellError> {
        self.shared
            .doorbells
            .write(&self.shared.mem.snapshot(), index, value)?;
        if let Some(w) = self.owner_of(index as usize) {
            self.shared.workers[w].waker.wake_if_sleeping();
        }
        Ok(())
    }

    /// Number of doorbells (two per queue ID).
    pub fn doorbell_count(&self) -> usize {
        self.shared.doorbells.len()
    }

    /// The doorbell page (borrowed fd, file offset of the first doorbell,
    /// length): doorbell `i` at file offset `offset + i * stride`.
    pub fn doorbell_page(&self) -> (RawFd, usize, usize) {
        self.shared.doorbells.page_fd()
    }

    /// Makes sleeping workers look at the doorbells every `us` microseconds
    /// (doubling up to 16x while nothing arrives; 0: sleep until woken). For
    /// doorbells written where nothing wakes a worker: a doorbell page a
    /// vfio-user client maps, with no ioeventfds.
    pub fn set_doorbell_scan(&self, us: u64) {
        self.shared.doorbell_scan_us.store(us, Ordering::Relaxed);
        for w in self.shared.workers.iter() {
            w.waker.wake();
        }
    }

    /// The doorbell scan interval set by [`Engine::set_doorbell_scan`].
    pub fn doorbell_scan(&self) -> u64 {
        self.shared.doorbell_scan_us.load(Ordering::Relaxed)
    }

    /// Attaches (Some) or detaches (None) an ioeventfd for doorbell `index`:
    /// a write to it wakes the worker, which reads the value from the
    /// doorbell page or the shadow buffer.
    pub fn set_doorbell_eventfd(&self, index: u32, fd: Option<RawFd>) -> Result<(), EngineError> {
        let count = self.shared.doorbells.len();
        let i = index as usize;
        if i >= count {
            return Err(EngineError::BadDoorbell { index, count });
        }
        let new = fd.map(dup_fd).transpose()?;
        let mut fds = lock(&self.shared.ioeventfds);
        if let Some(old) = fds[i].take() {
            for w in self.shared.workers.iter() {
                w.waker.unwatch(&old);
            }
        }
        if let Some(fd) = &new {
            // Every worker watches it: the queue behind it may be created
            // (and assigned) later.
            for w in self.shared.workers.iter() {
                w.waker.watch(fd)?;
            }
        }
        fds[i] = new;
        Ok(())
    }

    /// Doorbell Buffer Config (admin 7Ch): shadow doorbells at `db`,
    /// EventIdx at `ei`. Returns the completion status.
    pub fn set_shadow_doorbells(&self, db: u64, ei: u64) -> Status {
        let page = self.shared.page_size.load(Ordering::SeqCst);
        let mem = self.shared.mem.snapshot();
        let r = self.shared.doorbells.set_shadow(&mem, db, ei, page);
        self.settle_losses(&mem);
        match r {
            Ok(()) => {
                self.shared.wake_all();
                Status::SUCCESS
            }
            Err(ShadowError::Unaligned { .. }) => Status::INVALID_FIELD.dnr(),
            Err(ShadowError::Memory(_)) => Status::DATA_TRANSFER_ERROR.dnr(),
        }
    }

    /// (shadow doorbell buffer, EventIdx buffer) in force, if any.
    pub fn shadow_doorbells(&self) -> Option<(u64, u64)> {
        self.shared.doorbells.shadow().map(|s| (s.db, s.ei))
    }

    /// Receives asynchronous events the workers detect (invalid values in
    /// the doorbell page or shadow buffer), as AER info codes.
    pub fn set_event_handler(&self, cb: Option<EventCallback>) {
        *lock(&self.shared.events) = cb;
    }

    // ---- admin data and completions ----------------------------------------

    /// Posts the completion of deferred admin command `cid`.
    pub fn complete_admin(
        &self,
        cid: u16,
        status: Status,
        dw0: u32,
        dw1: u32,
    ) -> Result<(), EngineError> {
        let mut q = lock(&self.shared.workers[0].queues);
        let pos = q
            .admin_pending
            .iter()
            .position(|&c| c == cid)
            .ok_or(EngineError::NotDeferred { cid })?;
        q.admin_pending.swap_remove(pos);
        let gen = self.shared.generation.load(Ordering::SeqCst);
        self.shared.post_admin(
            &mut q,
            gen,
            cid,
            status,
            u64::from(dw0) | u64::from(dw1) << 32,
        );
        let mut out = worker::Signals::default();
        self.shared.decide_signals(0, &mut q, &mut out);
        drop(q);
        self.shared.deliver(&mut out);
        Ok(())
    }

    /// Forgets every deferred admin command; returns how many there were.
    pub fn drop_deferred(&self) -> usize {
        let mut q = lock(&self.shared.workers[0].queues);
        let n = q.admin_pending.len();
        if let Some(cq) = q.cqs[0].as_mut() {
            cq.reserved = cq.reserved.saturating_sub(n as u32);
        }
        q.admin_pending.clear();
        n
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_background();
        self.stop();
    }
}

mod config;
pub use config::{
    AdminHandler, AdminOutcome, EngineConfig, EngineError, ErrorEntry, NamespaceInfo,
    NamespaceSpec, Polling, WorkerWrapper,
};
mod dma;
pub mod faults;
mod file_io;
mod interrupts;
mod maintenance;
pub use maintenance::{
    BackgroundCallback, SanitizeRequest, SanitizeState, SanitizeStatus, SelfTestStatus,
};
mod memloss;
pub use memloss::LossCallback;
mod namespaces;
mod ns_change;
pub use ns_change::Capacity;
pub mod ns_table;
mod observe;
mod placement;
mod poll;
pub mod trace;
mod worker;
mod zoned;
pub use zoned::{ZoneEventCallback, ZoneRow};

#[cfg(test)]
mod file_tests;

#[cfg(test)]
mod irq_tests;

#[cfg(test)]
mod ns_tests;

#[cfg(test)]
mod uncor_tests;

#[cfg(test)]
mod maintenance_tests;

#[cfg(test)]
mod nvm_tests;

#[cfg(test)]
mod pi_tests;

#[cfg(test)]
mod remote_tests;

#[cfg(test)]
mod poll_tests;

#[cfg(test)]
mod tests;
