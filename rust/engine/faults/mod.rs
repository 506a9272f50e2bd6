//! Fault injection: the rule table the workers consult as they fetch, what
//! they hold back (completions delayed or never posted, interrupts dropped
//! or late), and the controller-level faults (CSTS.CFS, power loss).
//!
//! With no rule the hot path pays one relaxed load per pass (`armed`) and
//! two empty-vector checks; the table itself is read only while armed.

pub mod rules;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::trace::{Fetched, Trace};
use super::worker::Signals;
use super::{lock, Engine, Queues, Shared};
use crate::cmd::io::Failure;
use crate::cmd::segment::{Segment, Target};
use crate::mem::MemoryMap;
use crate::spec::{Cqe, Sqe, Status};
pub use rules::{Action, Firing, Match, QueueMatch, Rule, RuleError};

/// SQE byte offset of the data pointer (Parameter Error Location).
const DPTR: u16 = 24;

/// The rule table and the power state.
pub(super) struct Faults {
    /// Some rule is installed (read once per pass, relaxed).
    armed: AtomicBool,
    rules: ArcSwap<Vec<Arc<Rule>>>,
    next_id: AtomicU64,
    /// Serialises edits; readers never wait for it.
    edit: Mutex<()>,
    /// The controller lost power and is off until powered on.
    off: AtomicBool,
    /// A rule fired a power loss: the worker powers off after its pass.
    power_pending: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            armed: AtomicBool::new(false),
            rules: ArcSwap::from_pointee(Vec::new()),
            next_id: AtomicU64::new(1),
            edit: Mutex::new(()),
            off: AtomicBool::new(false),
            power_pending: AtomicBool::new(false),
        }
    }
}

impl Faults {
    /// True while some rule is installed. Relaxed: a worker that misses a
    /// rule added this instant applies it from its next pass.
    #[inline]
    pub(super) fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Takes a pending power loss (set by a rule that fired).
    pub(super) fn take_power_loss(&self) -> bool {
        self.power_pending.load(Ordering::Relaxed)
            && self.power_pending.swap(false, Ordering::SeqCst)
    }

    fn replace(&self, f: impl FnOnce(&mut Vec<Arc<Rule>>)) {
        let _edit = lock(&self.edit);
        let mut v = Vec::clone(&self.rules.load());
        f(&mut v);
        self.armed.store(!v.is_empty(), Ordering::SeqCst);
        self.rules.store(Arc::new(v));
    }
}

/// What an interrupt fault does to the next signal of its CQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IrqFault {
    Drop,
    Delay(Duration),
}

/// A completion held back: delayed (`due`) or never posted (`due` None).
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    due: Option<Instant>,
    gen: u64,
    pub(super) qid: u16,
    cqid: u16,
    cid: u16,
    status: Status,
    dw0: u64,
    abortable: bool,
    fetch: Option<Fetched>,
}

/// What one worker holds back, under its queue lock.
#[derive(Default)]
pub(super) struct Pending {
    held: Vec<Held>,
    /// Interrupts to send late: (when, vector).
    late_irqs: Vec<(Instant, u16)>,
    /// The next signal of these CQs is dropped or delayed.
    irq: Vec<(u16, IrqFault)>,
    /// Admin commands whose completion is held once the handler returns:
    /// (CID, delay, abortable).
    admin_delays: Vec<(u16, Duration, bool)>,
}

impl Pending {
    /// Forgets everything (a reset: the queues are gone).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.late_irqs.clear();
        self.irq.clear();
        self.admin_delays.clear();
    }

    /// The earliest moment something held is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let held = self.held.iter().filter_map(|h| h.due);
        let irqs = self.late_irqs.iter().map(|&(t, _)| t);
        held.chain(irqs).min()
    }

    /// Takes the fault on CQ `cqid`'s next signal, if any (cheap when none).
    #[inline]
    pub(super) fn take_irq(&mut self, cqid: u16) -> Option<IrqFault> {
        if self.irq.is_empty() {
            return None;
        }
        let pos = self.irq.iter().position(|&(c, _)| c == cqid)?;
        Some(self.irq.swap_remove(pos).1)
    }

    /// The signal of a CQ on `vector`, hit by `f`: dropped, or sent late.
    pub(super) fn irq_hit(&mut self, f: IrqFault, vector: u16) {
        if let IrqFault::Delay(d) = f {
            self.late_irqs.push((Instant::now() + d, vector));
        }
    }

    /// Holds the completion of command `cid` of SQ `qid` (CQ `cqid`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold(
        &mut self,
        delay: Option<Duration>,
        gen: u64,
        qid: u16,
        cqid: u16,
        cid: u16,
        (status, dw0): (Status, u64),
        abortable: bool,
        fetch: Option<Fetched>,
    ) {
        self.held.push(Held {
            due: delay.map(|d| Instant::now() + d),
            gen,
            qid,
            cqid,
            cid,
            status,
            dw0,
            abortable,
            fetch,
        });
    }

    /// A rule delays admin command `cid`'s completion once its handler returns.
    pub(super) fn delay_admin(&mut self, cid: u16, d: Duration, abortable: bool) {
        self.admin_delays.retain(|&(c, ..)| c != cid);
        self.admin_delays.push((cid, d, abortable));
    }

    /// Takes the delay of admin command `cid`, if a rule set one.
    pub(super) fn take_admin_delay(&mut self, cid: u16) -> Option<(Duration, bool)> {
        if self.admin_delays.is_empty() {
            return None;
        }
        let pos = self.admin_delays.iter().position(|&(c, ..)| c == cid)?;
        let (_, d, a) = self.admin_delays.swap_remove(pos);
        Some((d, a))
    }

    /// Commands held now.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }
}

/// What the worker does with a fetched command before running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Before {
    /// Run it (no fault, or one applied after it ran).
    Run,
    /// Complete it unexecuted with this failure.
    Fail(Failure),
    /// Hold it unexecuted, never completed (`stop`: and fetch no more).
    Hold { abortable: bool, stop: bool },
    /// Drop it and stop: the power is going.
    PowerLoss,
}

impl Before {
    /// The step before running for `action`, a command of `nsid` at `slba`.
    pub(super) fn of(action: Action, nsid: u32, slba: u64) -> Before {
        let fail = |status, param_loc| {
            Before::Fail(Failure {
                status,
                param_loc,
                lba: slba,
                nsid,
            })
        };
        match action {
            Action::Status(s) => fail(s, 0),
            Action::TransferError => fail(Status::DATA_TRANSFER_ERROR, DPTR),
            Action::Never { abortable } => Before::Hold {
                abortable,
                stop: false,
            },
            Action::Cfs => Before::Hold {
                abortable: false,
                stop: true,
            },
            Action::PowerLoss => Before::PowerLoss,
            Action::Zone(_)
            | Action::Delay { .. }
            | Action::Corrupt { .. }
            | Action::CorruptPi { .. }
            | Action::DropIrq
            | Action::DelayIrq { .. } => Before::Run,
        }
    }
}

/// Where byte `offset` of a transfer made of pieces of `lens` lies: (piece,
/// byte in it); past the end, the last byte. None for an empty transfer.
fn locate(lens: impl Iterator<Item = usize>, offset: usize) -> Option<(usize, usize)> {
    let mut last = None;
    let mut at = 0usize;
    for (i, len) in lens.enumerate() {
        if len == 0 {
            continue;
        }
        if offset < at + len {
            return Some((i, offset - at));
        }
        at += len;
        last = Some((i, len - 1));
    }
    last
}

/// XORs byte `offset` of the data a Read moved into `segs` with `xor`.
/// A byte in a bit bucket is not the host's: nothing changes then.
pub(super) fn corrupt_segments(mem: &MemoryMap, segs: &[Segment], offset: u32, xor: u8) {
    let Some((i, at)) = locate(segs.iter().map(|s| s.len), offset as usize) else {
        return;
    };
    match segs[i].target {
        // SAFETY: the segment was translated (writable, s.len bytes)
        // against `mem`, which the caller holds; at < s.len.
        Target::Host(p) => unsafe {
            let b = p.add(at);
            b.write_volatile(b.read_volatile() ^ xor);
        },
        Target::Remote(iova) => {
            let mut b = [0u8; 1];
            if let Some(a) = iova.checked_add(at as u64) {
                if mem.remote_read(a, &mut b).is_ok() {
                    b[0] ^= xor;
                    let _ = mem.remote_write(a, &b);
                }
            }
        }
        Target::BitBucket => {}
    }
}

/// The same for a file Read's iovecs.
///
/// # Safety
/// Every iovec names host memory valid for writes of its length.
pub(super) unsafe fn corrupt_iovecs(iov: &[libc::iovec], offset: u32, xor: u8) {
    if let Some((i, at)) = locate(iov.iter().map(|v| v.iov_len), offset as usize) {
        // SAFETY: the caller's contract; at < iov_len.
        unsafe {
            let b = iov[i].iov_base.cast::<u8>().add(at);
            b.write_volatile(b.read_volatile() ^ xor);
        }
    }
}

impl Shared {
    /// The fault a rule fires on command `sqe` of SQ `qid`, if any, with
    /// the command's starting LBA (only called while armed).
    #[cold]
    pub(super) fn fault_for(
        &self,
        sqe: &Sqe,
        qid: u16,
        fetch: Option<Fetched>,
        w: usize,
        out: &mut Signals,
    ) -> Option<(Action, u64)> {
        let cmd = fetch.unwrap_or_else(|| Trace::fetched(sqe, qid, 0, w as u16));
        let zones = if qid == 0 {
            None
        } else {
            self.zone_span(sqe, &cmd)
        };
        let (_, action, zone) = rules::first_firing(&self.faults.rules.load(), &cmd, zones)?;
        if let (Action::Zone(a), Some((first, _))) = (action, zones) {
            // The controller's own transition, before the command runs.
            if self.zone_fault(cmd.nsid, zone.unwrap_or(first), a) {
                out.events.push(super::worker::Event::Zones(cmd.nsid));
            }
        }
        if action == Action::Cfs {
            self.fatal.store(true, Ordering::SeqCst);
        }
        if action == Action::PowerLoss {
            // Nothing more is fetched or posted; the worker powers off
            // once its pass has let go of its queue lock.
            self.fatal.store(true, Ordering::SeqCst);
            self.faults.off.store(true, Ordering::SeqCst);
            self.faults.power_pending.store(true, Ordering::SeqCst);
        }
        Some((action, cmd.slba))
    }

    /// After a command a rule fired on ran: holds its completion (true) for
    /// a delay, or arms the interrupt fault of its CQ.
    pub(super) fn after_run(
        q: &mut Pending,
        action: Action,
        gen: u64,
        (qid, cqid, cid): (u16, u16, u16),
        result: (Status, u64),
        fetch: Option<Fetched>,
    ) -> bool {
        match action {
            Action::Delay { ns, abortable } => {
                let d = Some(Duration::from_nanos(ns));
                q.hold(d, gen, qid, cqid, cid, result, abortable, fetch);
                return true;
            }
            Action::DropIrq => q.irq.push((cqid, IrqFault::Drop)),
            Action::DelayIrq { ns } => q
                .irq
                .push((cqid, IrqFault::Delay(Duration::from_nanos(ns)))),
            _ => {}
        }
        false
    }

    /// Posts held completions that are due and queues late interrupts that
    /// are due. Returns the completions posted.
    pub(super) fn release_due(&self, q: &mut Queues, out: &mut Signals) -> usize {
        if q.faults.held.is_empty() && q.faults.late_irqs.is_empty() {
            return 0;
        }
        let now = Instant::now();
        q.faults.late_irqs.retain(|&(t, v)| {
            if t > now {
                return true;
            }
            out.push_vector(v);
            false
        });
        self.post_held(q, |h| h.due.is_some_and(|t| t <= now), None)
    }

    /// Posts the held completions `pick` selects, with `status` (None:
    /// their own). Returns how many were posted.
    pub(super) fn post_held(
        &self,
        q: &mut Queues,
        pick: impl Fn(&Held) -> bool,
        status: Option<Status>,
    ) -> usize {
        if !q.faults.held.iter().any(&pick) {
            return 0;
        }
        let gen = self.generation.load(Ordering::SeqCst);
        let mem = self.mem.snapshot();
        let mut posted = 0;
        let mut k = 0;
        while k < q.faults.held.len() {
            if !pick(&q.faults.held[k]) {
                k += 1;
                continue;
            }
            let h = q.faults.held.swap_remove(k);
            if h.gen != gen {
                continue;
            }
            let st = status.unwrap_or(h.status);
            let dw0 = if status.is_some() { 0 } else { h.dw0 };
            let sqhd = q.sqs[usize::from(h.qid)]
                .as_ref()
                .map_or(0, |s| s.head as u16);
            let Some(cq) = q.cqs[usize::from(h.cqid)].as_mut() else {
                continue;
            };
            if let Some(f) = h.fetch {
                self.trace.completed(f, st.field(), dw0);
            } else if h.qid == 0 && self.trace.on() {
                // A delayed admin command: the trace has it by CID.
                self.trace.admin_done(h.cid, st.field(), dw0);
            }
            if cq
                .post(&mem, Cqe::with_result(h.qid, h.cid, st, dw0), sqhd)
                .is_err()
            {
                q.stats.cqe_post_errors += 1;
                self.fatal.store(true, Ordering::SeqCst);
            }
            posted += 1;
        }
        posted
    }

    /// Everything a reset drops, under every worker's lock: queues,
    /// deferred and held commands, doorbells; the generation moves on.
    pub(super) fn clear_queues(&self) {
        // Every worker's table at once (taken in index order, the only
        // order anyone takes more than one), so no worker sees half a reset.
        let mut guards: Vec<_> = self.workers.iter().map(|w| lock(&w.queues)).collect();
        for q in guards.iter_mut() {
            for s in q.sqs.iter_mut() {
                *s = None;
            }
            for c in q.cqs.iter_mut() {
                *c = None;
            }
            q.active_sqs.clear();
            q.active_cqs.clear();
            q.admin_pending.clear();
            q.coalesce.reset();
            q.intx_level = false;
            q.faults.clear();
        }
        for t in self.cq_tails.iter() {
            t.store(super::NO_TAIL, Ordering::SeqCst);
        }
        for o in self.owner.iter() {
            o.store(super::NO_OWNER, Ordering::SeqCst);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.doorbells.clear();
    }

    /// The power goes: every command is dropped (those in flight to a file
    /// finish first, unposted), then the writes no Flush made durable are
    /// rolled back. `own`: the calling worker, which reaps its own file
    /// commands while it waits. Returns the blocks rolled back.
    pub(super) fn power_off(&self, own: Option<usize>) -> usize {
        let _gate = lock(&self.handler_gate);
        self.faults.off.store(true, Ordering::SeqCst);
        self.fatal.store(true, Ordering::SeqCst);
        self.clear_queues();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut busy = 0;
            for (i, w) in self.workers.iter().enumerate() {
                let mut q = lock(&w.queues);
                if own == Some(i) {
                    // The generation moved on: nothing is posted.
                    self.reap_files(&mut q);
                }
                busy += q.file.as_ref().map_or(0, |f| f.inflight);
            }
            if busy == 0 || Instant::now() >= deadline {
                break;
            }
            self.wake_all();
            std::thread::sleep(Duration::from_micros(20));
        }
        let _storage = self.storage_gate.read().unwrap_or_else(|e| e.into_inner());
        self.namespaces
            .load()
            .iter()
            .map(|(_, ns)| {
                // The metadata of the blocks rolled back goes back with them.
                ns.meta.power_loss();
                if let Some(z) = &ns.zones {
                    // The write pointers go back to their durable values too.
                    z.power_loss();
                }
                ns.cache.power_loss(&ns.backend).unwrap_or(0)
            })
            .sum()
    }
}

/// A rule as the embedder sees it.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    pub id: u64,
    pub matcher: Match,
    pub action: Action,
    pub firing: Firing,
    pub matched: u64,
    pub hits: u64,
}

impl Engine {
    /// Adds a rule at the end of the table (tried after the others);
    /// returns its id.
    pub fn add_fault(&self, m: Match, action: Action, firing: Firing) -> Result<u64, RuleError> {
        let f = &self.shared.faults;
        let id = f.next_id.fetch_add(1, Ordering::Relaxed);
        let rule = Arc::new(Rule::new(id, m, action, firing)?);
        f.replace(|v| v.push(rule));
        Ok(id)
    }

    /// Removes rule `id`; false when there is none.
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut found = false;
        self.shared.faults.replace(|v| {
            let before = v.len();
            v.retain(|r| r.id != id);
            found = v.len() != before;
        });
        found
    }

    /// Removes every rule. Commands already held stay held.
    pub fn clear_faults(&self) {
        self.shared.faults.replace(Vec::clear);
    }

    /// The rules in order, with their counters.
    pub fn faults(&self) -> Vec<RuleInfo> {
        self.shared
            .faults
            .rules
            .load()
            .iter()
            .map(|r| RuleInfo {
                id: r.id,
                matcher: r.matcher,
                action: r.action,
                firing: r.firing,
                matched: r.matched(),
                hits: r.hits(),
            })
            .collect()
    }

    /// Commands whose completion a rule holds back now (delayed or never).
    pub fn faults_held(&self) -> usize {
        self.shared
            .workers
            .iter()
            .map(|w| lock(&w.queues).faults.held())
            .sum()
    }

    /// Aborts a held command `cid` of SQ `sqid`: Some(true) when it was
    /// held and abortable (posted now with Command Abort Requested),
    /// Some(false) when held and not abortable, None when not held.
    pub(super) fn abort_held(&self, w: usize, sqid: u16, cid: u16) -> Option<bool> {
        let s = &self.shared;
        let mut q = lock(&s.workers[w].queues);
        let h = q
            .faults
            .held
            .iter()
            .find(|h| h.qid == sqid && h.cid == cid)?;
        if !h.abortable {
            return Some(false);
        }
        s.post_held(
            &mut q,
            |h| h.qid == sqid && h.cid == cid,
            Some(Status::ABORT_REQUESTED),
        );
        let mut out = Signals::default();
        s.decide_signals(w, &mut q, &mut out);
        drop(q);
        s.deliver(&mut out);
        Some(true)
    }

    /// Starts (or stops) keeping the pre-images of unflushed writes, so
    /// [`Engine::power_loss`] can drop them. Returns the namespaces (1-based)
    /// that cannot be tracked (null and storage-object namespaces).
    pub fn track_unflushed(&self, on: bool) -> Vec<u32> {
        let wc = self.write_cache();
        let mut untracked = Vec::new();
        for (nsid, ns) in self.table().iter() {
            ns.cache.set_enabled(wc);
            if !ns.cache.set_tracking(&ns.backend, on) {
                untracked.push(nsid);
            } else if let Some(z) = &ns.zones {
                z.track(on);
            }
            ns.meta.flushed();
        }
        untracked
    }

    /// Blocks holding writes no Flush has made durable (while tracked).
    pub fn unflushed_blocks(&self) -> usize {
        self.table()
            .iter()
            .map(|(_, ns)| ns.cache.unflushed_blocks())
            .sum()
    }

    /// Surprise power loss now: every command is dropped, unflushed writes
    /// are rolled back (see [`Engine::track_unflushed`]) and the controller
    /// is off (CSTS.CFS, nothing fetched) until [`Engine::power_on`].
    /// Returns the blocks rolled back.
    pub fn power_loss(&self) -> usize {
        self.shared
            .faults
            .power_pending
            .store(false, Ordering::SeqCst);
        self.shared.power_off(None)
    }

    /// True while the controller is off after a power loss.
    pub fn powered_off(&self) -> bool {
        self.shared.faults.off.load(Ordering::SeqCst)
    }

    /// Powers the controller back on after a power loss, in its reset state.
    pub fn power_on(&self) {
        self.reset();
        self.shared.faults.off.store(false, Ordering::SeqCst);
    }
}
