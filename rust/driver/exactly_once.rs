//! The exactly-once oracle: a host faster and meaner than a real driver,
//! checking that the queue path runs every submitted command once.
//!
//! One host thread per queue pair keeps `qd` reads in flight and checks
//! every completion against what it submitted:
//!
//! - each CQE's CID is one the host has outstanding on that queue (a
//!   replayed old command or a never-written slot is a [`Fault::Stray`]);
//! - each succeeds (a zeroed slot fetched past the tail completes with
//!   Invalid Namespace: still a stray, caught by its CID or its status);
//! - SQHD never passes the tail the host wrote ([`Fault::HeadPastTail`]);
//! - every command completes ([`Fault::Lost`] when nothing arrives within
//!   the timeout).
//!
//! Slots the device reports consumed (by SQHD) are overwritten with a
//! poison entry (CID [`POISON_CID`]) so a re-fetch is seen even when the
//! old CID happens to be in flight again. Random pauses (`Plan::pause_*`)
//! land between every step, inside the doorbell ring too (between the
//! shadow store and the EventIdx load), so the workers fall asleep and wake
//! at every point of the EventIdx protocol.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::ring::{Ring, Ringer};
use super::{HostMemory, HostQueue, MockHost, Rng};
use crate::engine::{Engine, EngineConfig, NamespaceSpec, Polling};
use crate::spec::opcode::io;
use crate::spec::{Cqe, Sqe, Status};

/// The CID of the entry written over consumed slots.
pub const POISON_CID: u16 = 0xFFFF;

/// How the host rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// An MMIO write per ring.
    Mmio,
    /// Doorbell Buffer Config before the queues exist (as Linux), then the
    /// shadow buffer with Linux's EventIdx check.
    Shadow,
    /// Stores into the doorbell page; idle workers find them by scanning.
    Page,
    /// Stores into the page, then the doorbell's ioeventfd.
    Ioeventfd,
}

impl Doorbell {
    /// Every mode.
    pub const ALL: [Doorbell; 4] = [
        Doorbell::Mmio,
        Doorbell::Shadow,
        Doorbell::Page,
        Doorbell::Ioeventfd,
    ];
}

/// How the host learns of completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reap {
    /// Spin on the phase tag (IEN = 0).
    Poll,
    /// Wait for the vector's eventfd, then drain (IEN = 1).
    Irq,
}

/// One run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub doorbell: Doorbell,
    pub polling: Polling,
    pub iothreads: u16,
    /// Commands kept in flight per queue pair: 1..entries.
    pub qd: u32,
    /// Ring size of each SQ and CQ.
    pub entries: u32,
    /// Commands per queue pair.
    pub commands: u64,
    /// Chance in 1000 of a pause at each step.
    pub pause_per_mille: u32,
    /// Longest pause; short ones spin, long ones sleep (and so let the
    /// device's workers fall asleep).
    pub max_pause_us: u32,
    pub seed: u64,
    pub reap: Reap,
    /// Give up on a command after this long without any completion.
    pub timeout: Duration,
    /// With [`Doorbell::Page`] and a worker that sleeps: how often it looks
    /// at the page (0: never, so page stores are lost on a sleeping worker).
    pub page_scan_us: u64,
    /// Where the namespace keeps its data: RAM (commands complete in the
    /// pass that fetched them) or a file through an asynchronous path
    /// (they complete later, in any order).
    pub storage: Storage,
    /// The host pushes and never rings the SQ doorbell (a model of lost
    /// doorbell writes): every command must come out as Lost.
    pub mute: bool,
    /// Fault rules armed on the engine (see [`INJECTED`]): completions
    /// delayed (so they come out of order), interrupts dropped or late,
    /// reads corrupted, and some commands failed with [`INJECTED`], which
    /// the oracle accepts. Exactly once must hold all the same.
    pub faults: bool,
    /// The namespace carries 8 bytes of metadata with type 1 protection
    /// information, and every read asks for PRACT with the guard and
    /// reference tag checked (ILBRT = SLBA): the PI path under the oracle.
    pub pi: bool,
    /// While the host runs, another thread changes the namespace table
    /// over and over (see [`churn`]): namespaces 2 and 3 added (RAM and a
    /// file), resized, detached, attached and removed under a device
    /// self-test reading them, and namespace 1, the one being read, grown
    /// and shrunk back under the reads.
    pub churn: bool,
}

/// The status the fault rules of [`Plan::faults`] fail commands with
/// (Unrecovered Read Error): a completion with it is expected, not a fault.
pub const INJECTED: Status = Status::UNRECOVERED_READ_ERROR;

/// The namespace of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Ram,
    /// A file in /dev/shm served by this path.
    File(crate::aio::Choice),
}

impl Plan {
    /// A plan with everything but the axes the caller sets at defaults.
    pub fn new(doorbell: Doorbell, polling: Polling, iothreads: u16, qd: u32) -> Self {
        Plan {
            doorbell,
            polling,
            iothreads,
            qd,
            entries: 32,
            commands: 2000,
            pause_per_mille: 0,
            max_pause_us: 200,
            seed: 1,
            reap: Reap::Poll,
            timeout: Duration::from_secs(5),
            page_scan_us: 20,
            storage: Storage::Ram,
            mute: false,
            faults: false,
            pi: false,
            churn: false,
        }
    }
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A completion for a CID not in flight on this queue (a replay, or a
    /// slot fetched that the host never filled).
    Stray {
        qid: u16,
        cid: u16,
        status: u16,
        sqhd: u16,
        after: u64,
    },
    /// A completion for a command in flight, with an error status.
    Failed { qid: u16, cid: u16, status: u16 },
    /// The completion names another SQ.
    WrongSq { qid: u16, cid: u16, sqid: u16 },
    /// SQHD moved past the tail the host wrote.
    HeadPastTail {
        qid: u16,
        sqhd: u16,
        consumed: u32,
        tail: u32,
    },
    /// Nothing arrived within the timeout for these CIDs.
    Lost {
        qid: u16,
        cids: Vec<u16>,
        after: u64,
    },
    /// The run could not be set up (not a device fault; a harness error).
    Setup(String),
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub submitted: u64,
    pub completed: u64,
    pub mmio_doorbells: u64,
    pub pauses: u64,
    /// Completions with [`INJECTED`] (with [`Plan::faults`]).
    pub injected: u64,
    /// Namespace table changes made while the host ran ([`Plan::churn`]).
    pub churned: u64,
    pub faults: Vec<Fault>,
}

impl Report {
    fn merge(&mut self, o: Report) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.mmio_doorbells += o.mmio_doorbells;
        self.pauses += o.pauses;
        self.injected += o.injected;
        self.churned += o.churned;
        self.faults.extend(o.faults);
    }
}

/// Pauses at random: mostly a short spin, sometimes a sleep long enough for
/// an adaptive worker to stop polling.
pub struct Pauser {
    rng: Rng,
    per_mille: u32,
    max_us: u32,
    pub count: u64,
}

impl Pauser {
    /// A pauser pausing `per_mille` times in 1000 for up to `max_us`.
    pub fn new(seed: u64, per_mille: u32, max_us: u32) -> Self {
        Pauser {
            rng: Rng::seeded(seed),
            per_mille,
            max_us,
            count: 0,
        }
    }

    /// Maybe pause here.
    pub fn maybe(&mut self) {
        if self.per_mille == 0 || self.rng.below(1000) >= u64::from(self.per_mille) {
            return;
        }
        self.count += 1;
        let us = self.rng.below(u64::from(self.max_us.max(1)) + 1);
        if self.rng.below(2) == 0 {
            let until = Instant::now() + Duration::from_nanos(us * 50);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

const NS_BYTES: u64 = 1 << 20;
const LBA: u32 = 512;

fn eventfd() -> Result<OwnedFd, String> {
    // SAFETY: eventfd returns a new fd we own, or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is fresh and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `timeout` for `fd` to be readable and drains it.
fn wait_irq(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r <= 0 {
        return false;
    }
    let mut v: u64 = 0;
    // SAFETY: 8-byte read into a valid u64 from a non-blocking eventfd.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    true
}

/// The engine a plan runs on: one 1 MiB namespace (RAM, or a file in
/// /dev/shm, unlinked once open), one vector per queue pair.
pub fn engine_for(plan: &Plan) -> Result<Engine, String> {
    static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (backend, file, path) = match plan.storage {
        Storage::Ram => ("ram", None, None),
        Storage::File(io) => {
            let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = format!("/dev/shm/nvmefast-eo-{}-{n}.img", std::process::id());
            let spec = crate::backend::FileSpec {
                path: path.clone(),
                readonly: false,
                cache: crate::backend::CacheMode::Buffered,
                io,
            };
            ("file", Some(spec), Some(path))
        }
    };
    let e = Engine::new(EngineConfig {
        namespaces: vec![NamespaceSpec {
            size_bytes: NS_BYTES,
            lba_size: LBA,
            backend: backend.into(),
            file,
            metadata: if plan.pi {
                crate::pi::Format {
                    ms: 8,
                    pi: 1,
                    ..crate::pi::Format::NONE
                }
            } else {
                crate::pi::Format::NONE
            },
            ..NamespaceSpec::default()
        }],
        msix_vectors: plan.iothreads + 1,
        max_qid: plan.iothreads,
        max_queue_entries: 4096,
        mdts_bytes: 0,
        poll_us: 50,
        msix_embedder_managed: true,
        polling: plan.polling,
        iothreads: plan.iothreads,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn: if plan.churn { 3 } else { 0 },
        capacity_bytes: if plan.churn { 64 << 20 } else { 0 },
    });
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
    let e = e.map_err(|e| e.to_string())?;
    if plan.faults {
        arm_faults(&e, plan.seed).map_err(|x| x.to_string())?;
    }
    Ok(e)
}

/// The rules of [`Plan::faults`]: each fires on about one command in 20 (a
/// seeded draw), a dropped interrupt on one in 200.
fn arm_faults(e: &Engine, seed: u64) -> Result<(), crate::engine::faults::RuleError> {
    use crate::engine::faults::{Action, Firing, Match, QueueMatch};
    let io = Match {
        queue: QueueMatch::Io,
        opcode: None,
        nsid: None,
        lba: None,
        zone: None,
    };
    let rules = [
        (Action::Status(INJECTED), 0.05),
        (
            Action::Delay {
                ns: 300_000,
                abortable: false,
            },
            0.05,
        ),
        (Action::DelayIrq { ns: 200_000 }, 0.05),
        (Action::Corrupt { offset: 0, xor: 1 }, 0.05),
        (Action::DropIrq, 0.005),
    ];
    for (i, (action, probability)) in rules.into_iter().enumerate() {
        let firing = Firing {
            probability,
            seed: seed.wrapping_add(i as u64),
            ..Firing::default()
        };
        e.add_fault(io, action, firing)?;
    }
    Ok(())
}

/// Runs `plan` on a fresh engine; every fault found is in the report.
pub fn run(plan: &Plan) -> Report {
    let mut report = Report::default();
    if let Err(e) = run_into(plan, &mut report) {
        report.faults.push(Fault::Setup(e));
    }
    report
}

/// A started engine with the plan's queue pairs, and the host side of each.
pub struct Rig {
    pub engine: Engine,
    pub host: MockHost,
    /// (host queue, its vector's eventfd when reaping by interrupt, its
    /// buffers' IOVA) per queue pair, qid 1 first.
    pub queues: Vec<(HostQueue, Option<OwnedFd>, u64)>,
    /// Shadow buffers' host pointers (db, ei), with [`Doorbell::Shadow`].
    pub shadow: Option<(*mut u8, *mut u8)>,
    /// The doorbell page mapped by the host, with the page modes.
    pub page: Option<HostMemory>,
    _fds: Vec<OwnedFd>,
}

impl Rig {
    /// Builds and starts the engine `plan` describes.
    pub fn new(plan: &Plan) -> Result<Rig, String> {
        if plan.qd == 0 || plan.qd >= plan.entries || plan.iothreads == 0 {
            return Err(format!(
                "qd {} must be in 1..{} and iothreads at least 1",
                plan.qd, plan.entries
            ));
        }
        let e = engine_for(plan)?;
        e.start().map_err(|x| x.to_string())?;
        let pairs = usize::from(plan.iothreads);
        let mem_bytes =
            0x4000 + pairs * (plan.entries as usize * 80 + 8192 + plan.qd as usize * 4096);
        let mut host = MockHost::new(&e, mem_bytes.div_ceil(4096) * 4096 + 0x4000)
            .map_err(|x| x.to_string())?;
        let stride = 4usize;
        let span = 2 * (pairs + 1) * stride;
        let shadow = if plan.doorbell == Doorbell::Shadow {
            let (db, ei) = (host.alloc(4096), host.alloc(4096));
            let st = e.set_shadow_doorbells(db, ei);
            if st != Status::SUCCESS {
                return Err(format!("Doorbell Buffer Config refused: {st:?}"));
            }
            Some((host.mem.ptr(db, span), host.mem.ptr(ei, span)))
        } else {
            None
        };
        let page = match plan.doorbell {
            Doorbell::Page | Doorbell::Ioeventfd => {
                let (fd, off, len) = e.doorbell_page();
                Some(HostMemory::from_fd_at(fd, off, len, 0).map_err(|x| x.to_string())?)
            }
            _ => None,
        };
        if plan.doorbell == Doorbell::Page && plan.polling != Polling::Poll {
            // Nothing wakes a worker for a page store: it must look.
            e.set_doorbell_scan(plan.page_scan_us);
        }
        let mut fds = Vec::new();
        let mut queues = Vec::new();
        for k in 0..pairs {
            let qid = k as u16 + 1;
            let irq = if plan.reap == Reap::Irq {
                let fd = eventfd()?;
                e.set_vector_eventfd(u32::from(qid), Some(fd.as_raw_fd()))
                    .map_err(|x| x.to_string())?;
                Some(fd)
            } else {
                None
            };
            let mut q = host
                .create_queue_pair(&e, qid, plan.entries, qid, irq.is_some())
                .map_err(|x| x.to_string())?;
            let ring = match (plan.doorbell, shadow, &page) {
                (Doorbell::Shadow, Some((db, ei)), _) => Ring::Shadow { db, ei, stride },
                (Doorbell::Page, _, Some(p)) => Ring::Page {
                    page: p.ptr(0, span),
                    stride,
                },
                (Doorbell::Ioeventfd, _, Some(p)) => {
                    let (sq_fd, cq_fd) = (eventfd()?, eventfd()?);
                    let i = u32::from(qid) * 2;
                    e.set_doorbell_eventfd(i, Some(sq_fd.as_raw_fd()))
                        .map_err(|x| x.to_string())?;
                    e.set_doorbell_eventfd(i + 1, Some(cq_fd.as_raw_fd()))
                        .map_err(|x| x.to_string())?;
                    let r = Ring::Ioeventfd {
                        page: p.ptr(0, span),
                        stride,
                        sq_fd: sq_fd.as_raw_fd(),
                        cq_fd: cq_fd.as_raw_fd(),
                    };
                    fds.push(sq_fd);
                    fds.push(cq_fd);
                    r
                }
                _ => Ring::Mmio,
            };
            q.ringer = Ringer::new(ring);
            let bufs = host.alloc(plan.qd as usize * 4096);
            queues.push((q, irq, bufs));
        }
        Ok(Rig {
            engine: e,
            host,
            queues,
            shadow,
            page,
            _fds: fds,
        })
    }
}

fn run_into(plan: &Plan, report: &mut Report) -> Result<(), String> {
    let mut rig = Rig::new(plan)?;
    let e = &rig.engine;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (results, churned) = std::thread::scope(|s| {
        let churner = plan.churn.then(|| s.spawn(|| churn(e, &stop, plan.seed)));
        let handles: Vec<_> = rig
            .queues
            .iter_mut()
            .enumerate()
            .map(|(k, (q, irq, bufs))| {
                let seed = plan.seed.wrapping_add(k as u64 * 0x1000_0001);
                s.spawn(move || drive(e, q, irq.as_ref(), *bufs, plan, seed))
            })
            .collect();
        let results: Vec<Report> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let churned = churner.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("the churn thread panicked".into()))
        });
        (results, churned)
    });
    for r in results {
        report.merge(r);
    }
    match churned {
        Some(Ok(n)) => report.churned = n,
        Some(Err(why)) => report.faults.push(Fault::Setup(why)),
        None => {}
    }
    e.stop();
    Ok(())
}

/// [`Plan::churn`]: changes the namespace table until `stop`; returns the
/// changes made (Err: a change the engine refused).
fn churn(e: &Engine, stop: &std::sync::atomic::AtomicBool, seed: u64) -> Result<u64, String> {
    let path = format!(
        "/dev/shm/nvmefast-eo-churn-{}-{seed}.img",
        std::process::id()
    );
    let ram = NamespaceSpec {
        size_bytes: 2 << 20,
        lba_size: LBA,
        backend: "ram".into(),
        ..NamespaceSpec::default()
    };
    let file = NamespaceSpec {
        size_bytes: 1 << 20,
        lba_size: LBA,
        backend: "file".into(),
        file: Some(crate::backend::FileSpec {
            path: path.clone(),
            readonly: false,
            cache: crate::backend::CacheMode::Buffered,
            io: crate::aio::Choice::Threads,
        }),
        ..NamespaceSpec::default()
    };
    let mut n = 0u64;
    let step = |r: Result<(), crate::engine::EngineError>, what: &str| {
        r.map_err(|x| format!("churn: {what}: {x}"))
    };
    let r = (|| {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            step(e.add_namespace(&ram, Some(2), true).map(drop), "add 2")?;
            step(e.add_namespace(&file, Some(3), false).map(drop), "add 3")?;
            step(e.resize_namespace(1, NS_BYTES * 2), "grow 1")?;
            step(e.resize_namespace(2, 4 << 20), "grow 2")?;
            step(e.set_namespace_attached(3, true).map(drop), "attach 3")?;
            // A self-test reads 2 and 3 while they change and go (one
            // still running from the last round is busy: that is fine).
            match e.self_test_start(&[2, 3], true, std::time::Duration::ZERO) {
                Ok(()) | Err(crate::engine::EngineError::Busy(_)) => {}
                Err(x) => return Err(format!("churn: self-test: {x}")),
            }
            step(e.resize_namespace(3, 2 << 20), "grow 3")?;
            step(e.set_namespace_attached(2, false).map(drop), "detach 2")?;
            step(e.resize_namespace(1, NS_BYTES), "shrink 1")?;
            step(e.resize_namespace(3, 512 << 10), "shrink 3")?;
            step(e.remove_namespace(2), "remove 2")?;
            step(e.remove_namespace(3), "remove 3")?;
            e.self_test_abort();
            n += 12;
        }
        Ok(n)
    })();
    let _ = std::fs::remove_file(&path);
    r
}

/// The host's record of one queue pair: what is in flight, what the device
/// has consumed, and every broken promise so far.
pub struct Oracle {
    /// CID -> buffer index of every command in flight.
    inflight: HashMap<u16, u32>,
    free_bufs: Vec<u32>,
    next_cid: u16,
    /// The first slot the device has not yet reported consumed (by SQHD).
    consumed: u32,
    bufs: u64,
    poison: Sqe,
    /// A status rules inject, accepted as a completion (not a fault).
    injected: Option<Status>,
    /// Reads carry PRACT and PRCHK (see [`Oracle::with_pi`]).
    pi: bool,
    pub report: Report,
}

impl Oracle {
    /// Room for `qd` commands, whose 4 KiB buffers start at `bufs`.
    pub fn new(qd: u32, bufs: u64) -> Self {
        let mut poison = Sqe::new(io::READ, POISON_CID, 1);
        poison.set_lba_range(0, 1);
        Oracle {
            inflight: HashMap::new(),
            free_bufs: (0..qd).rev().collect(),
            next_cid: 0,
            consumed: 0,
            bufs,
            poison,
            injected: None,
            pi: false,
            report: Report::default(),
        }
    }

    /// Reads with PRACT and the guard and reference tag checked (the
    /// namespace has type 1 PI with MS = 8, so no metadata moves).
    pub fn with_pi(mut self, on: bool) -> Self {
        self.pi = on;
        self
    }

    /// Accepts completions with `status` (injected by fault rules).
    pub fn accepting(mut self, status: Status) -> Self {
        self.injected = Some(status);
        self
    }

    /// True when another command fits.
    pub fn has_room(&self) -> bool {
        !self.free_bufs.is_empty()
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Pushes a one-block read of `lba` (no doorbell); false when full.
    pub fn submit(&mut self, q: &mut HostQueue, lba: u64) -> bool {
        let Some(buf) = self.free_bufs.pop() else {
            return false;
        };
        while self.inflight.contains_key(&self.next_cid) || self.next_cid == POISON_CID {
            self.next_cid = self.next_cid.wrapping_add(1);
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let mut sqe = Sqe::new(io::READ, cid, 1);
        sqe.set_prps(self.bufs + u64::from(buf) * 4096, 0);
        sqe.set_lba_range(lba, 1);
        if self.pi {
            // PRACT, PRCHK guard and reference tag; ILBRT = SLBA (type 1).
            sqe.dw[12] |= 0xd << 26;
            sqe.dw[14] = lba as u32;
        }
        q.push(&sqe);
        self.inflight.insert(cid, buf);
        self.report.submitted += 1;
        true
    }

    /// Takes every completion there is; returns how many.
    pub fn reap(&mut self, q: &mut HostQueue) -> usize {
        let mut got = 0;
        while let Some(c) = q.pop() {
            got += 1;
            self.complete(q, &c);
        }
        got
    }

    /// Checks one completion, and poisons the slots it says are consumed.
    pub fn complete(&mut self, q: &mut HostQueue, c: &Cqe) {
        let (qid, size) = (q.qid, q.size);
        let r = &mut self.report;
        let status = c.status();
        match self.inflight.remove(&c.cid) {
            None => r.faults.push(Fault::Stray {
                qid,
                cid: c.cid,
                status: status.field(),
                sqhd: c.sqhd,
                after: r.completed,
            }),
            Some(buf) => {
                self.free_bufs.push(buf);
                r.completed += 1;
                if c.sqid != qid {
                    r.faults.push(Fault::WrongSq {
                        qid,
                        cid: c.cid,
                        sqid: c.sqid,
                    });
                }
                if Some(status) == self.injected {
                    r.injected += 1;
                } else if status != Status::SUCCESS {
                    r.faults.push(Fault::Failed {
                        qid,
                        cid: c.cid,
                        status: status.field(),
                    });
                }
            }
        }
        let dist = |from: u32, to: u32| (to + size - from) % size;
        let (sqhd, tail) = (u32::from(c.sqhd), q.sq_tail());
        if sqhd >= size || dist(self.consumed, sqhd) > dist(self.consumed, tail) {
            r.faults.push(Fault::HeadPastTail {
                qid,
                sqhd: c.sqhd,
                consumed: self.consumed,
                tail,
            });
            return;
        }
        while self.consumed != sqhd {
            q.write_slot(self.consumed, &self.poison);
            self.consumed = (self.consumed + 1) % size;
        }
    }

    /// Records every command still in flight as lost.
    pub fn lost(&mut self, qid: u16) {
        let mut cids: Vec<u16> = self.inflight.keys().copied().collect();
        cids.sort_unstable();
        self.report.faults.push(Fault::Lost {
            qid,
            cids,
            after: self.report.completed,
        });
    }
}

/// One host thread: keeps `plan.qd` reads in flight on `q`.
fn drive(
    e: &Engine,
    q: &mut HostQueue,
    irq: Option<&OwnedFd>,
    bufs: u64,
    plan: &Plan,
    seed: u64,
) -> Report {
    let mut rng = Rng::seeded(seed);
    let mut pause = Pauser::new(seed ^ 0x5555, plan.pause_per_mille, plan.max_pause_us);
    let mut inner = Pauser::new(seed ^ 0xaaaa, plan.pause_per_mille, plan.max_pause_us);
    q.ringer.between = Some(Box::new(move || inner.maybe()));
    let lbas = NS_BYTES / u64::from(LBA);
    let mut o = Oracle::new(plan.qd, bufs).with_pi(plan.pi);
    if plan.faults {
        o = o.accepting(INJECTED);
    }
    let mut last_progress = Instant::now();
    while o.report.completed < plan.commands && o.report.faults.is_empty() {
        // Submit up to the queue depth, ringing at random within the batch
        // and always at its end.
        let mut pushed = false;
        while o.report.submitted < plan.commands && o.submit(q, rng.below(lbas)) {
            pushed = true;
            pause.maybe();
            if rng.below(4) == 0 && !plan.mute {
                q.ring_sq(e);
                pushed = false;
                pause.maybe();
            }
        }
        if pushed && !plan.mute {
            q.ring_sq(e);
            pause.maybe();
        }
        // Reap what is there; wait for at least one.
        loop {
            if o.reap(q) > 0 {
                last_progress = Instant::now();
                break;
            }
            if last_progress.elapsed() > plan.timeout {
                o.lost(q.qid);
                break;
            }
            match irq {
                Some(fd) => {
                    wait_irq(fd, Duration::from_millis(100));
                }
                None => std::hint::spin_loop(),
            }
        }
        pause.maybe();
        q.ring_cq(e);
        pause.maybe();
    }
    let mut r = o.report;
    r.mmio_doorbells = q.ringer.mmio;
    r.pauses = pause.count;
    q.ringer.between = None;
    r
}
