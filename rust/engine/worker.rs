//! The worker: one pass fetches and executes what every SQ holds, posts the
//! completions, then decides interrupts (coalescing, INTx level) under the
//! queue lock; deliveries run after the lock is dropped, so a callback
//! notifier (Python) can never deadlock against an API call that takes it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, AdminOutcome, ErrorEntry, Queues, Shared, ERROR_RING, SQ_BURST};
use crate::cmd::io::{self, IoContext};
use crate::intx::LevelCallback;
use crate::irq::IrqMode;
use crate::spec::{Cqe, Sqe, Status};

/// What a pass leaves to deliver once the queue lock is dropped.
#[derive(Default)]
pub(super) struct Signals {
    vectors: Vec<u16>,
    intx: Option<(LevelCallback, bool)>,
}

impl Shared {
    /// Posts an admin completion to CQ 0 unless a reset intervened.
    pub(super) fn post_admin(&self, q: &mut Queues, gen: u64, cid: u16, status: Status, dw0: u32) {
        if gen != q.generation {
            return;
        }
        let sqhd = q.sqs[0].as_ref().map_or(0, |s| s.head as u16);
        let Some(cq) = q.cqs[0].as_mut() else {
            return;
        };
        let mem = self.mem.snapshot();
        if cq.post(&mem, Cqe::new(0, cid, status, dw0), sqhd).is_err() {
            q.stats.cqe_post_errors += 1;
            self.fatal.store(true, Ordering::SeqCst);
        }
    }

    /// Turns the entries posted since the last call into interrupt
    /// decisions: one per CQ per pass, through coalescing, or the INTx level.
    pub(super) fn decide_signals(&self, q: &mut Queues, out: &mut Signals) {
        let mode = self.vectors.mode();
        let mut fresh = false;
        for &cqid in &q.active_cqs {
            let Some(cq) = q.cqs[usize::from(cqid)].as_mut() else {
                continue;
            };
            if cq.unsignalled == 0 {
                continue;
            }
            let n = cq.unsignalled;
            cq.unsignalled = 0;
            // IEN = 0: this CQ never signals (a polled queue).
            if !cq.ien {
                continue;
            }
            fresh = true;
            if mode != IrqMode::Intx
                && q.coalesce.on_post(cq.vector, n)
                && !out.vectors.contains(&cq.vector)
            {
                out.vectors.push(cq.vector);
            }
        }
        q.coalesce.expire(&mut out.vectors);
        if mode == IrqMode::Intx {
            let level = self.vectors.intms() & 1 == 0
                && q.active_cqs.iter().any(|&cqid| {
                    q.cqs[usize::from(cqid)].as_ref().is_some_and(|cq| {
                        cq.ien
                            && cq.tail != self.doorbells.value(usize::from(cqid) * 2 + 1) % cq.size
                    })
                });
            out.intx = q.intx.update(level, fresh);
            q.intx.poll_resample();
        }
    }

    /// Performs the deliveries decided under the lock.
    pub(super) fn deliver(&self, out: &mut Signals) {
        for v in out.vectors.drain(..) {
            self.vectors.notify(v);
        }
        if let Some((cb, level)) = out.intx.take() {
            cb(level);
        }
    }

    /// One pass over every SQ. Returns the number of commands fetched.
    fn process(&self, admin: &mut Vec<Sqe>, out: &mut Signals) -> (usize, u64) {
        let mut guard = lock(&self.queues);
        let q = &mut *guard;
        let gen = q.generation;
        if self.fatal.load(Ordering::Relaxed) || q.active_sqs.is_empty() {
            return (0, gen);
        }
        let mem = self.mem.snapshot();
        let mut done = 0usize;
        let mut failed = false;
        for k in 0..q.active_sqs.len() {
            let qid = q.active_sqs[k];
            let Some(sq) = q.sqs[usize::from(qid)].as_mut() else {
                continue;
            };
            let tail = self.doorbells.value(usize::from(qid) * 2);
            let mut burst = 0;
            while burst < SQ_BURST && sq.available(tail) > 0 {
                let cqid = sq.cqid;
                let Some(cq) = q.cqs[usize::from(cqid)].as_mut() else {
                    break;
                };
                // Flow control on the submission side (as SPDK does): a
                // command is fetched only with a CQ slot promised to it, so
                // the CQ can never overflow, whatever the host does.
                if !cq.reserve(self.doorbells.value(usize::from(cqid) * 2 + 1)) {
                    q.stats.cq_full_stalls += 1;
                    break;
                }
                let mut raw = [0u8; 64];
                if mem.read(sq.head_iova(), &mut raw).is_err() {
                    // QEMU does the same: an SQ that cannot be read is fatal.
                    cq.reserved -= 1;
                    q.stats.sqe_fetch_errors += 1;
                    failed = true;
                    break;
                }
                let sqe = Sqe::from_bytes(&raw);
                sq.advance();
                burst += 1;
                done += 1;
                if qid == 0 {
                    // The slot stays reserved until the handler completes it.
                    q.admin_pending.push(sqe.cid());
                    admin.push(sqe);
                    continue;
                }
                let mut ctx = IoContext {
                    mem: &mem,
                    namespaces: &self.namespaces,
                    page_size: q.page_size,
                    mdts_bytes: self.cfg.mdts_bytes,
                    segs: &mut q.segs,
                    smart: &mut q.smart,
                };
                let (status, dw0) = match io::execute(&mut ctx, &sqe) {
                    Ok(dw0) => (Status::SUCCESS, dw0),
                    Err(failure) => {
                        q.stats.io_errors += 1;
                        if q.errors.len() == ERROR_RING {
                            q.errors.pop_front();
                        }
                        q.errors.push_back(ErrorEntry {
                            sqid: qid,
                            cid: sqe.cid(),
                            failure,
                        });
                        (failure.status, 0)
                    }
                };
                q.stats.io_commands += 1;
                if cq
                    .post(&mem, Cqe::new(qid, sqe.cid(), status, dw0), sq.head as u16)
                    .is_err()
                {
                    q.stats.cqe_post_errors += 1;
                    failed = true;
                    break;
                }
            }
            if failed {
                break;
            }
        }
        self.decide_signals(q, out);
        if failed {
            self.fatal.store(true, Ordering::SeqCst);
        }
        if done > 0 {
            q.stats.batches += 1;
        }
        (done, gen)
    }

    /// Before sleeping: is there work, and how long may we sleep?
    fn sleep_plan(&self) -> (bool, Duration) {
        let q = lock(&self.queues);
        let work = q.active_sqs.iter().any(|&qid| {
            q.sqs[usize::from(qid)]
                .as_ref()
                .is_some_and(|sq| sq.available(self.doorbells.value(usize::from(qid) * 2)) > 0)
        });
        let mut nap = Duration::from_millis(500);
        if let Some(d) = q.coalesce.next_deadline() {
            nap = nap.min(d.saturating_duration_since(Instant::now()));
        }
        if q.intx.asserted() && q.intx.has_resample() {
            // The resample eventfd has no wake-up path into park(): look at
            // it every millisecond while the line is high.
            nap = nap.min(Duration::from_millis(1));
        }
        (work, nap)
    }

    fn run_admin(&self, batch: &mut Vec<Sqe>, gen: u64, out: &mut Signals) {
        let handler = lock(&self.admin).clone();
        for sqe in batch.drain(..) {
            let outcome = match &handler {
                Some(h) => h.handle(&sqe),
                None => AdminOutcome::Complete {
                    status: Status::INVALID_OPCODE.dnr(),
                    dw0: 0,
                },
            };
            {
                let mut q = lock(&self.queues);
                q.stats.admin_commands += 1;
                if let AdminOutcome::Complete { status, dw0 } = outcome {
                    // Absent when complete_admin already posted it, or a reset
                    // dropped it: post nothing then.
                    if let Some(pos) = q.admin_pending.iter().position(|&c| c == sqe.cid()) {
                        q.admin_pending.swap_remove(pos);
                        self.post_admin(&mut q, gen, sqe.cid(), status, dw0);
                    }
                }
                self.decide_signals(&mut q, out);
            }
            self.deliver(out);
        }
    }
}

pub(super) fn worker_loop(s: &Shared) {
    let poll = Duration::from_micros(s.cfg.poll_us);
    let mut admin = Vec::new();
    let mut out = Signals::default();
    let mut last_work = Instant::now();
    let mut idle_spins = 0u32;
    while !s.stop.load(Ordering::Relaxed) {
        let (n, gen) = s.process(&mut admin, &mut out);
        s.deliver(&mut out);
        if !admin.is_empty() {
            s.run_admin(&mut admin, gen, &mut out);
        }
        if n > 0 {
            idle_spins = 0;
            continue;
        }
        idle_spins += 1;
        // Reading the clock costs more than a pass over idle queues: look at
        // it every 64 empty passes.
        if idle_spins % 64 != 0 {
            std::hint::spin_loop();
            continue;
        }
        if idle_spins == 64 {
            last_work = Instant::now();
        }
        if last_work.elapsed() < poll {
            if idle_spins % 256 == 0 {
                // A poller sharing its core with the thread that produces its
                // work (the host, on an oversubscribed machine) must not burn
                // that thread's time slice: offer the core now and then.
                std::thread::yield_now();
            }
            continue;
        }
        // Adaptive polling ran out: sleep until a doorbell write (or a
        // coalescing deadline, or an INTx resample check).
        s.doorbells.prepare_sleep();
        let (work, nap) = s.sleep_plan();
        if !work && !s.stop.load(Ordering::SeqCst) {
            lock(&s.queues).stats.sleeps += 1;
            std::thread::park_timeout(nap);
        }
        s.doorbells.end_sleep();
        idle_spins = 0;
    }
}
