//! The workers: one pass fetches and executes what every SQ of this worker
//! holds, posts the completions, then decides interrupts (coalescing, the
//! INTx level) under the worker's queue lock; deliveries run after the lock
//! is dropped, so a callback notifier (Python) can never deadlock against an
//! API call that takes it.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use super::faults::{self, Action, Before};
use super::file_io::{record, FileIo};
use super::ns_table::{NsTable, TableCache};
use super::poll::{self, Contention, PollWindow};
use super::trace::Trace;
use super::{lock, memloss, AdminOutcome, Polling, Queues, Shared, NO_TAIL, SQ_BURST};
use crate::cmd::io::{self, IoContext, Started};
use crate::doorbell::Shadow;
use crate::intx::LevelCallback;
use crate::irq::IrqMode;
use crate::mem::MemoryMap;
use crate::spec::{Cqe, Sqe, Status};

/// Synchronous (inline) file commands a pass serves before it ends and
/// signals what it completed, or, past `DEEP_BACKLOG` more waiting, hands
/// the rest to io_uring.
const INLINE_PASS: u32 = 8;
/// Commands still waiting in an SQ above which a pass's excess of inline
/// commands goes to io_uring (its io-wq threads copy on every core); below
/// it the worker serves them itself in the next passes.
const DEEP_BACKLOG: u32 = 16;

/// What a pass leaves to deliver once the queue lock is dropped.
#[derive(Default)]
pub(super) struct Signals {
    vectors: Vec<u16>,
    intx: Option<(LevelCallback, bool)>,
    /// Events for the control plane (rare: one empty check per delivery).
    pub(super) events: Vec<Event>,
}

/// What a pass tells the control plane once its locks are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// An invalid value found in the doorbell page or shadow buffer: the
    /// AER info code.
    Doorbell(u8),
    /// The controller changed zones of this NSID by itself (a fault rule).
    Zones(u32),
    /// Guest memory was lost: report what `GuestMemory` queued.
    MemoryLost,
}

/// Info code of "Invalid Doorbell Write Value" (NVMe Base 2.0, Figure 150).
const INVALID_DOORBELL_VALUE: u8 = 0x01;

impl Signals {
    /// Reports the guest memory lost (already retired) once the lock is
    /// dropped: no cost on the hot path, which delivers events anyway.
    #[cold]
    pub(super) fn memory_lost(&mut self) {
        self.events.push(Event::MemoryLost);
    }

    /// Signals `vector` once this pass.
    pub(super) fn push_vector(&mut self, v: u16) {
        if !self.vectors.contains(&v) {
            self.vectors.push(v);
        }
    }
}

/// True when namespace `nsid` is a file served inline (synchronous calls
/// on the worker).
#[inline]
fn is_inline(table: &NsTable, nsid: u32) -> bool {
    table
        .get(nsid)
        .and_then(|ns| ns.backend.as_file())
        .is_some_and(|f| f.io_path() == crate::aio::IoPath::Inline)
}

impl Shared {
    /// Wakes every worker (stop, mode changes, shadow reconfiguration).
    pub(super) fn wake_all(&self) {
        for w in self.workers.iter() {
            w.waker.wake();
        }
    }

    /// The SQ tail the host published, checked against the queue size. A
    /// value written straight into the doorbell page or the shadow buffer
    /// was never validated by an MMIO write: out of range, it is reported
    /// once (an Error event, Invalid Doorbell Write Value) and ignored.
    #[inline]
    fn sq_tail(
        &self,
        mem: &MemoryMap,
        shadow: Option<Shadow>,
        q: &mut Queues,
        qid: u16,
        out: &mut Signals,
    ) -> u32 {
        let Some(sq) = q.sqs[usize::from(qid)].as_mut() else {
            return 0;
        };
        let raw = self.doorbells.read(mem, shadow, usize::from(qid) * 2);
        self.accept(raw, sq.size, &mut sq.tail, &mut sq.bad_tail, out)
    }

    /// The CQ head the host published, checked like `sq_tail`.
    #[inline]
    fn cq_head(
        &self,
        mem: &MemoryMap,
        shadow: Option<Shadow>,
        q: &mut Queues,
        cqid: u16,
        out: &mut Signals,
    ) -> u32 {
        let Some(cq) = q.cqs[usize::from(cqid)].as_mut() else {
            return 0;
        };
        let raw = self.doorbells.read(mem, shadow, usize::from(cqid) * 2 + 1);
        self.accept(raw, cq.size, &mut cq.head, &mut cq.bad_head, out)
    }

    /// Takes `raw` (None: unreadable, keep the last value) as the queue's
    /// new doorbell value when it is below `size`; an out-of-range value is
    /// reported once (`bad` remembers it) and ignored. Returns the value in
    /// force. (A shadow buffer whose memory was lost made the controller
    /// fatal when the loss was found: see `memloss`.)
    #[inline]
    fn accept(
        &self,
        raw: Option<u32>,
        size: u32,
        value: &mut u32,
        bad: &mut Option<u32>,
        out: &mut Signals,
    ) -> u32 {
        match raw {
            Some(v) if v < size => {
                *value = v;
                // Repaired: the same bad value written again is a new event.
                *bad = None;
            }
            Some(v) if *bad != Some(v) => {
                *bad = Some(v);
                self.doorbells
                    .invalid_writes
                    .fetch_add(1, Ordering::Relaxed);
                out.events.push(Event::Doorbell(INVALID_DOORBELL_VALUE));
            }
            _ => {}
        }
        *value
    }

    /// Posts an admin completion to CQ 0 unless a reset intervened.
    pub(super) fn post_admin(
        &self,
        q: &mut Queues,
        gen: u64,
        cid: u16,
        status: Status,
        result: u64,
    ) {
        if gen != self.generation.load(Ordering::SeqCst) {
            return;
        }
        let sqhd = q.sqs[0].as_ref().map_or(0, |s| s.head as u16);
        let Some(cq) = q.cqs[0].as_mut() else {
            return;
        };
        let mem = self.mem.snapshot();
        if cq
            .post(&mem, Cqe::with_result(0, cid, status, result), sqhd)
            .is_err()
        {
            q.stats.cqe_post_errors += 1;
            self.fatal.store(true, Ordering::SeqCst);
        } else if mem.lost() {
            self.rings_lost(&mem, &[memloss::cq_ring(cq)], None);
            self.mem.refresh();
        }
        if self.trace.on() {
            self.trace.admin_done(cid, status.field(), result);
        }
    }

    /// Turns the entries posted since the last call into interrupt
    /// decisions: one per CQ per pass, through coalescing, or the INTx level.
    pub(super) fn decide_signals(&self, _w: usize, q: &mut Queues, out: &mut Signals) {
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
            if let Some(f) = q.faults.take_irq(cqid) {
                // A fault rule drops this signal, or sends it late.
                q.faults.irq_hit(f, cq.vector);
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
            // INTMS before the CQ heads: a host that consumed entries and then
            // wrote INTMC has its head update visible once INTMC is (both
            // SeqCst), so the line never rises for entries already consumed.
            let unmasked = self.vectors.intms() & 1 == 0;
            // Publish this worker's interrupt-enabled CQ tails, then judge
            // the line from every worker's published tails against the
            // host's heads: a share computed on another worker's last pass
            // could be stale (the host may have consumed since).
            for &cqid in &q.active_cqs {
                if let Some(cq) = q.cqs[usize::from(cqid)].as_ref() {
                    if cq.ien {
                        // SeqCst: a later evaluator on any worker sees it.
                        self.cq_tails[usize::from(cqid)].store(cq.tail, Ordering::SeqCst);
                    }
                }
            }
            let mem = self.mem.snapshot();
            let shadow = self.doorbells.shadow();
            let level = self.cq_tails.iter().enumerate().any(|(cqid, t)| {
                let t = t.load(Ordering::SeqCst);
                t != NO_TAIL
                    && self
                        .doorbells
                        .read(&mem, shadow, cqid * 2 + 1)
                        .is_some_and(|head| head != t)
            });
            q.intx_level = level;
            let line = unmasked && level;
            let mut intx = lock(&self.intx);
            out.intx = intx.update(line, fresh);
            intx.poll_resample();
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
        if !out.events.is_empty() {
            let handler = lock(&self.events).clone();
            for e in out.events.drain(..) {
                match e {
                    Event::Doorbell(info) => {
                        if let Some(h) = &handler {
                            h(info);
                        }
                    }
                    Event::Zones(nsid) => self.zone_event(nsid),
                    Event::MemoryLost => self.report_losses(),
                }
            }
        }
    }

    /// One pass over every SQ of worker `w`. Returns the number of commands fetched.
    fn process(
        &self,
        w: usize,
        admin: &mut Vec<Sqe>,
        out: &mut Signals,
        tables: &mut TableCache,
    ) -> usize {
        let mut guard = lock(&self.workers[w].queues);
        let q = &mut *guard;
        // The namespace table for this pass, looked up under the queue lock:
        // a change published before it is seen, and one published after it
        // waits for this pass to end (`Engine::grace`).
        let table = self.pass_table(tables);
        if table.files && q.file.is_none() && w > 0 {
            // A file namespace was added: asynchronous file I/O from now on.
            q.file = FileIo::new(&table.slots, &self.workers[w].waker);
        }
        // Completions of file commands first: they free CQ slots, and an SQ
        // being deleted (no longer in active_sqs) still waits for them.
        let reaped = self.reap_files(q) + self.release_due(q, out);
        if self.fatal.load(Ordering::Relaxed) || q.active_sqs.is_empty() {
            // Nothing to fetch, but an interrupt held by coalescing is still
            // due (its SQ may have been deleted since): send it, or the
            // deadline sleep_plan sleeps towards stays in the past.
            if reaped > 0 {
                self.decide_signals(w, q, out);
            }
            q.coalesce.expire(&mut out.vectors);
            return reaped;
        }
        // A region of it can shrink under us: accesses are followed by a
        // look at the loss epoch (mem.lost(): one branch for a map of
        // sealed memfds).
        let mut mem = self.mem.snapshot();
        let shadow = self.doorbells.shadow();
        let page_size = self.page_size.load(Ordering::Relaxed);
        // Read under the queue lock, which reset takes to bump it: stable
        // for this pass.
        let gen = self.generation.load(Ordering::SeqCst);
        let files = q.file.is_some();
        // Once per pass: with the trace off, the only cost it has.
        let traced = self.trace.on();
        // The same for fault rules: with none, the only cost they have.
        let faulty = self.faults.armed();
        // Commands served by a synchronous call on this worker this pass.
        let mut inline = 0u32;
        let mut done = 0usize;
        let mut failed = false;
        'queues: for k in 0..q.active_sqs.len() {
            let qid = q.active_sqs[k];
            let tail = self.sq_tail(&mem, shadow, q, qid, out);
            let Some(cqid) = q.sqs[usize::from(qid)].as_ref().map(|s| s.cqid) else {
                continue;
            };
            let head = self.cq_head(&mem, shadow, q, cqid, out);
            let Some(sq) = q.sqs[usize::from(qid)].as_mut() else {
                continue;
            };
            let mut burst = 0;
            while burst < SQ_BURST && sq.available(tail) > 0 {
                if files && q.file.as_ref().is_some_and(FileIo::full) {
                    break 'queues;
                }
                if inline >= INLINE_PASS && (q.file.is_none() || sq.available(tail) <= DEEP_BACKLOG)
                {
                    // A pass of synchronous file calls ends early: its
                    // completions are signalled now, so the host reaps and
                    // resubmits while this worker serves the rest (a
                    // pipeline, instead of the whole queue's calls before
                    // the first interrupt). A deep backlog, with
                    // asynchronous I/O at hand, goes there instead.
                    break 'queues;
                }
                let Some(cq) = q.cqs[usize::from(cqid)].as_mut() else {
                    break;
                };
                // Flow control on the submission side (as SPDK does): a
                // command is fetched only with a CQ slot promised to it, so
                // the CQ can never overflow, whatever the host does.
                if !cq.reserve(head) {
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
                let fetch =
                    traced.then(|| Trace::fetched(&sqe, qid, self.trace.now_ns(), w as u16));
                let slot = sq.head;
                sq.advance();
                burst += 1;
                done += 1;
                if !sq.aborts.is_empty() {
                    if let Some(pos) = sq.aborts.iter().position(|&s| s == slot) {
                        // Aborted while still queued: complete it unexecuted.
                        sq.aborts.swap_remove(pos);
                        if let Some(f) = fetch {
                            self.trace.completed(f, Status::ABORT_REQUESTED.field(), 0);
                        }
                        let cqe = Cqe::new(qid, sqe.cid(), Status::ABORT_REQUESTED, 0);
                        if cq.post(&mem, cqe, sq.head as u16).is_err() {
                            q.stats.cqe_post_errors += 1;
                            failed = true;
                            break;
                        }
                        continue;
                    }
                }
                let fault = if faulty {
                    self.fault_for(&sqe, qid, fetch, w, out)
                } else {
                    None
                };
                let before = fault.map_or(Before::Run, |(a, slba)| Before::of(a, sqe.nsid(), slba));
                let fault = fault.map(|(a, _)| a);
                match before {
                    Before::Run => {}
                    Before::Fail(f) if qid == 0 => {
                        // An admin command failed by a rule: the handler
                        // never sees it.
                        if let Some(t) = fetch {
                            self.trace.completed(t, f.status.field(), 0);
                        }
                        let cqe = Cqe::new(0, sqe.cid(), f.status, 0);
                        if cq.post(&mem, cqe, sq.head as u16).is_err() {
                            q.stats.cqe_post_errors += 1;
                            failed = true;
                            break;
                        }
                        continue;
                    }
                    // An I/O command: completed below, in the error log.
                    Before::Fail(_) => {}
                    Before::Hold { abortable, stop } => {
                        // Its CQ slot stays reserved: a lost command still
                        // holds the device's resources until a reset.
                        let result = (Status::SUCCESS, 0u64);
                        let ids = (qid, cqid, sqe.cid());
                        q.faults
                            .hold(None, gen, ids.0, ids.1, ids.2, result, abortable, fetch);
                        if stop {
                            break 'queues;
                        }
                        continue;
                    }
                    Before::PowerLoss => break 'queues,
                }
                if qid == 0 {
                    if let Some(Action::Delay { ns, abortable }) = fault {
                        let d = Duration::from_nanos(ns);
                        q.faults.delay_admin(sqe.cid(), d, abortable);
                    } else if let Some(a) = fault {
                        Self::after_run(
                            &mut q.faults,
                            a,
                            gen,
                            (0, 0, sqe.cid()),
                            (Status::SUCCESS, 0u64),
                            None,
                        );
                    }
                    // The slot stays reserved until the handler completes it.
                    q.admin_pending.push(sqe.cid());
                    if let Some(f) = fetch {
                        self.trace.admin_fetched(f);
                    }
                    admin.push(sqe);
                    continue;
                }
                let mut ctx = IoContext {
                    mem: &mem,
                    namespaces: &table.slots,
                    page_size,
                    mdts_bytes: self.cfg.mdts_bytes,
                    segs: &mut q.segs,
                    scratch: &mut q.scratch,
                    smart: &mut q.smart,
                    // Past its share of synchronous calls, a pass hands
                    // inline files' commands to io_uring: the worker
                    // signals what it served while io-wq threads (on every
                    // core) copy the rest, as fio's io_uring does.
                    offload_inline: inline >= INLINE_PASS,
                    corrupt_pi: fault.and_then(Action::pi_corruption),
                };
                let mut started = match before {
                    Before::Fail(f) => Err(f),
                    _ if files => io::start(&mut ctx, &sqe),
                    _ => io::execute(&mut ctx, &sqe).map(Started::Done),
                };
                if mem.lost() {
                    // Memory shrank since the pass began: what the command
                    // read or wrote may be zero pages. Data Transfer Error
                    // (and no file transfer through those buffers); fatal
                    // if the queues went with it: then the SQE itself may
                    // have been read from zero pages (harmless: the host
                    // can submit any command anyway), and nothing is
                    // posted. A loss during an admin command's fetch is
                    // found at the end of the pass.
                    if self.lost_during_command(&mut mem, sq, cq, shadow, out) {
                        failed = true;
                        break;
                    }
                    started = Err(io::transfer_failure(0, sqe.nsid()));
                }
                if table.inline
                    && matches!(started, Ok(Started::Done(_)))
                    && is_inline(table, sqe.nsid())
                {
                    inline += 1;
                }
                let result = match started {
                    Ok(Started::Done(dw0)) => Ok(dw0),
                    Err(failure) => Err(failure),
                    Ok(Started::File(op)) => {
                        let begun = match q.file.as_mut() {
                            Some(f) => f.begin(
                                &table.slots,
                                &mem,
                                &q.segs,
                                op,
                                gen,
                                qid,
                                cqid,
                                sqe.cid(),
                                fetch,
                                fault.filter(|a| a.executes()),
                            ),
                            None => unreachable_file(op),
                        };
                        match begun {
                            // Its CQ slot stays reserved until it completes.
                            Ok(()) => {
                                sq.inflight += 1;
                                continue;
                            }
                            Err(failure) => Err(failure),
                        }
                    }
                };
                let (status, dw0) = record(&mut q.stats, &mut q.errors, qid, sqe.cid(), result);
                if let Some(a) = fault.filter(|a| a.executes()) {
                    if let (Action::Corrupt { offset, xor }, true) = (a, status.is_success()) {
                        faults::corrupt_segments(&mem, &q.segs, offset, xor);
                    }
                    let ids = (qid, cqid, sqe.cid());
                    if Self::after_run(&mut q.faults, a, gen, ids, (status, dw0), fetch) {
                        // Held: posted when its delay is over.
                        continue;
                    }
                }
                if let Some(f) = fetch {
                    self.trace.completed(f, status.field(), dw0);
                }
                if cq
                    .post(
                        &mem,
                        Cqe::with_result(qid, sqe.cid(), status, dw0),
                        sq.head as u16,
                    )
                    .is_err()
                {
                    q.stats.cqe_post_errors += 1;
                    failed = true;
                    break;
                }
            }
            if let (Some(sh), true) = (shadow, burst > 0) {
                // Awake, keep EventIdx half a ring ahead of what we have
                // seen. The host rings when its update passes EventIdx
                // (new - EventIdx - 1 < new - old): a stale EventIdx is
                // passed once a lap (a ring every `size` commands, each a
                // message or a VM exit), and one just behind the value we
                // saw is passed by the very update that wrote it. Half a
                // ring ahead is passed only by a host more than half a
                // ring ahead of us. sleep_plan sets EventIdx to the values
                // seen before sleeping, and the host rings again.
                let sq_size = sq.size;
                self.doorbells.set_event_idx(
                    &mem,
                    sh,
                    usize::from(qid) * 2,
                    (tail + sq_size / 2) % sq_size,
                );
                if let Some(cq) = q.cqs[usize::from(cqid)].as_ref() {
                    self.doorbells.set_event_idx(
                        &mem,
                        sh,
                        usize::from(cqid) * 2 + 1,
                        (head + cq.size / 2) % cq.size,
                    );
                }
            }
            if failed {
                break;
            }
        }
        if let Some(f) = q.file.as_mut() {
            // One io_uring_enter for the pass; a file in the page cache is
            // served inline, so the reap below often finds it done.
            f.submit();
            done += self.reap_files(q);
        }
        done += reaped;
        if mem.lost() {
            // The last CQEs or EventIdx writes of the pass went to memory
            // that shrank (the host will never see them), or the loss
            // came between passes.
            failed |= self.lost_during_pass(&mem, q, shadow, out);
        }
        self.decide_signals(w, q, out);
        if failed {
            self.fatal.store(true, Ordering::SeqCst);
        }
        if done > 0 {
            q.stats.batches += 1;
        }
        done
    }

    /// Completes every file command still in flight (the worker is
    /// stopping), then drops the worker's rings.
    fn drain_files(&self, w: usize, out: &mut Signals) {
        loop {
            let mut guard = lock(&self.workers[w].queues);
            let q = &mut *guard;
            if self.reap_files(q) > 0 {
                self.decide_signals(w, q, out);
            }
            match q.file.as_mut() {
                Some(f) if f.inflight > 0 => f.wait(),
                _ => {
                    q.file = None;
                    break;
                }
            }
            drop(guard);
            self.deliver(out);
        }
        self.deliver(out);
    }

    /// Before sleeping: publish EventIdx (so the host's next doorbell write
    /// rings MMIO or its ioeventfd), then look again for work, and say how
    /// long the worker may sleep.
    fn sleep_plan(&self, w: usize, out: &mut Signals) -> (bool, Duration) {
        let mut guard = lock(&self.workers[w].queues);
        let q = &mut *guard;
        let mem = self.mem.snapshot();
        let shadow = self.doorbells.shadow();
        if let Some(sh) = shadow {
            // EventIdx = the value we have seen: the host rings for the next
            // one (its check is new - EventIdx - 1 < new - old). While we
            // poll, process() keeps it half a ring ahead instead, where the
            // host does not ring: the point of shadow doorbells.
            for &qid in &q.active_sqs {
                if let Some(sq) = q.sqs[usize::from(qid)].as_ref() {
                    self.doorbells
                        .set_event_idx(&mem, sh, usize::from(qid) * 2, sq.tail);
                }
            }
            // The CQ side too: with a full CQ we wait for the host's head
            // update, and it must ring for it (QEMU once missed this and
            // hung guests).
            for &cqid in &q.active_cqs {
                if let Some(cq) = q.cqs[usize::from(cqid)].as_ref() {
                    self.doorbells
                        .set_event_idx(&mem, sh, usize::from(cqid) * 2 + 1, cq.head);
                }
            }
            if mem.lost() {
                // EventIdx in memory that shrank: the host may never ring
                // again.
                self.lost_during_pass(&mem, q, shadow, out);
            }
            // SeqCst fence: the EventIdx stores above are ordered before the
            // doorbell re-reads below, pairing with the host's "write
            // doorbell; mb(); read EventIdx" (Linux nvme_dbbuf_update_and_check_event):
            // either the host sees our EventIdx and rings, or we see its value.
            fence(Ordering::SeqCst);
        }
        let mut work = false;
        for k in 0..q.active_sqs.len() {
            let qid = q.active_sqs[k];
            let tail = self.sq_tail(&mem, shadow, q, qid, out);
            let Some(cqid) = q.sqs[usize::from(qid)].as_ref().map(|s| s.cqid) else {
                continue;
            };
            let head = self.cq_head(&mem, shadow, q, cqid, out);
            let has = q.sqs[usize::from(qid)]
                .as_ref()
                .is_some_and(|sq| sq.available(tail) > 0);
            let room = q.cqs[usize::from(cqid)]
                .as_ref()
                .is_some_and(|cq| cq.free_slots(head) > 0);
            if has && room {
                work = true;
            }
        }
        let mut nap = Duration::from_millis(500);
        if let Some(d) = q.coalesce.next_deadline() {
            nap = nap.min(d.saturating_duration_since(Instant::now()));
        }
        if let Some(d) = q.faults.next_due() {
            nap = nap.min(d.saturating_duration_since(Instant::now()));
        }
        if q.intx_level && lock(&self.intx).has_resample() {
            // The resample eventfd has no wake-up path into the epoll set
            // (KVM owns it): look at it every millisecond while the line is high.
            nap = nap.min(Duration::from_millis(1));
        }
        (work, nap)
    }

    fn run_admin(&self, batch: &mut Vec<Sqe>, gen: u64, out: &mut Signals) {
        let handler = lock(&self.admin).clone();
        for sqe in batch.drain(..) {
            let outcome = {
                let _gate = lock(&self.handler_gate);
                if self.generation.load(Ordering::SeqCst) != gen {
                    // A reset dropped this command: nothing to run or post.
                    continue;
                }
                match &handler {
                    Some(h) => h.handle(&sqe),
                    None => AdminOutcome::Complete {
                        status: Status::INVALID_OPCODE.dnr(),
                        dw0: 0,
                    },
                }
            };
            {
                let mut q = lock(&self.workers[0].queues);
                q.stats.admin_commands += 1;
                if let AdminOutcome::Complete { status, dw0 } = outcome {
                    // Absent when complete_admin already posted it, or a reset
                    // dropped it: post nothing then.
                    if let Some(pos) = q.admin_pending.iter().position(|&c| c == sqe.cid()) {
                        q.admin_pending.swap_remove(pos);
                        if let Some((d, abortable)) = q.faults.take_admin_delay(sqe.cid()) {
                            // A fault rule delays this completion.
                            let r = (status, u64::from(dw0));
                            q.faults
                                .hold(Some(d), gen, 0, 0, sqe.cid(), r, abortable, None);
                        } else {
                            self.post_admin(&mut q, gen, sqe.cid(), status, u64::from(dw0));
                        }
                    }
                }
                self.decide_signals(0, &mut q, out);
            }
            self.deliver(out);
        }
    }
}

/// The loop of worker `w` (0: admin, never polls; others: I/O, per `Polling`).
pub(super) fn worker_loop(s: &Shared, w: usize) {
    let polling = if w == 0 {
        Polling::Interrupt
    } else {
        s.cfg.polling
    };
    let mut window = PollWindow::new(Duration::from_micros(s.cfg.poll_us));
    let mut contention = Contention::default();
    if polling == Polling::Adaptive {
        poll::tight_timer_slack();
    }
    let waker = &s.workers[w].waker;
    // The namespace table the passes use; gone with the worker, so a
    // stopped worker holds no namespace (a removal waits for none).
    let mut tables = TableCache::default();
    let mut admin = Vec::new();
    let mut out = Signals::default();
    // When the worker last ran out of work (None: it has work, or has not
    // looked at the clock yet since it ran out).
    let mut idle_since: Option<Instant> = None;
    let mut idle_spins = 0u32;
    // Scans in a row that found nothing: the scan interval doubles with each.
    let mut empty_scans = 0u32;
    // An I/O worker's asynchronous file I/O is made by its first pass that
    // finds a file namespace (`Shared::process`).
    while !s.stop.load(Ordering::Relaxed) {
        let gen = s.generation.load(Ordering::SeqCst);
        let n = s.process(w, &mut admin, &mut out, &mut tables);
        s.deliver(&mut out);
        if s.faults.take_power_loss() {
            // A rule cut the power: nothing this pass fetched runs.
            admin.clear();
            s.power_off(Some(w));
            continue;
        }
        if !admin.is_empty() {
            // The handler may remove a namespace (Namespace Management
            // Delete), which waits until no worker holds it: not this one.
            tables.release();
            s.run_admin(&mut admin, gen, &mut out);
        }
        if n > 0 {
            contention.reset();
            if let Some(t) = idle_since.take() {
                window.arrival(t.elapsed());
            }
            idle_spins = 0;
            empty_scans = 0;
            continue;
        }
        idle_spins += 1;
        match polling {
            Polling::Interrupt => {}
            Polling::Poll | Polling::Adaptive => {
                // Reading the clock costs more than a pass over idle queues:
                // look at it every 64 empty passes.
                if idle_spins % 64 != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                // Idle since about now, unless a sleep came between (then
                // since before it: a wake-up that finds nothing does not
                // restart the window).
                let since = *idle_since.get_or_insert_with(Instant::now);
                window.set_scanned(s.doorbell_scan_us.load(Ordering::Relaxed) > 0);
                if polling == Polling::Poll || since.elapsed() < window.window() {
                    if polling == Polling::Adaptive {
                        let now = Instant::now();
                        if contention.napping(now) {
                            // Preempted while spinning: the core is wanted
                            // (by the host itself, often). Look every NAP.
                            std::thread::sleep(poll::NAP);
                            contention.reset();
                            continue;
                        }
                        if idle_spins % 1024 == 0 {
                            contention.sample(poll::thread_cpu_ns(), now);
                        }
                    }
                    if idle_spins % 256 == 0 {
                        // A poller sharing its core with the thread that
                        // produces its work (the host, on an oversubscribed
                        // machine) must not burn that thread's time slice.
                        std::thread::yield_now();
                    }
                    // A coalescing deadline or INTx resample still needs
                    // passes while we poll: process() runs them.
                    continue;
                }
            }
        }
        // Sleep until a doorbell write, an ioeventfd, a coalescing deadline
        // or an INTx resample check.
        if s.mem.losses_due() {
            // Found lost outside a pass of ours (an admin completion, a
            // file completion, another thread): reported before sleeping.
            s.report_losses();
        }
        waker.prepare_sleep();
        let (work, mut nap) = s.sleep_plan(w, &mut out);
        s.deliver(&mut out);
        let scan = s.doorbell_scan_us.load(Ordering::Relaxed);
        if scan > 0 {
            nap = nap.min(Duration::from_micros(scan << empty_scans.min(4)));
        }
        if work || s.stop.load(Ordering::SeqCst) {
            waker.cancel_sleep();
            empty_scans = 0;
        } else {
            lock(&s.workers[w].queues).stats.sleeps += 1;
            contention.reset();
            waker.sleep(nap);
            empty_scans = empty_scans.saturating_add(1);
        }
        idle_spins = 0;
    }
    s.drain_files(w, &mut out);
}

/// A file command on a worker without file I/O: cannot happen (start()
/// returns File only for a file namespace, and every I/O worker of an
/// engine with one has a FileIo); completes with Internal Error if it did.
#[cold]
fn unreachable_file(op: io::FileOp) -> Result<(), io::Failure> {
    Err(io::Failure {
        status: Status::INTERNAL_ERROR,
        param_loc: 0,
        lba: op.slba,
        nsid: op.ns as u32 + 1,
    })
}
