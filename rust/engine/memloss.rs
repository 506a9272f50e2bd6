//! Guest memory that shrank under the device (`mem::guard`): what a loss
//! costs the controller, and how it is reported.
//!
//! A command whose guest accesses ran while a region of its memory
//! snapshot was lost completes with Data Transfer Error (`MemoryMap::lost`
//! after the accesses; conservative: a command running at the moment of
//! the loss fails even if it touched only healthy memory). Queue memory
//! that is lost (an SQ or CQ ring, the shadow doorbell or EventIdx buffer)
//! is fatal, as any queue the controller cannot read or write: CSTS.CFS.
//! Each lost region is counted and reported once, from a worker, outside
//! every lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::worker::Signals;
use super::{lock, Engine, Queues, Shared};
use crate::doorbell::Shadow;
use crate::mem::MemoryMap;
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::spec::{Cqe, Sqe};

/// Told of each guest memory region lost under the device, once: (iova, size).
pub type LossCallback = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// An SQ's ring as (iova, bytes).
fn sq_ring(sq: &SubmissionQueue) -> (u64, u64) {
    (sq.iova, u64::from(sq.size) * Sqe::SIZE as u64)
}

/// A CQ's ring as (iova, bytes).
pub(super) fn cq_ring(cq: &CompletionQueue) -> (u64, u64) {
    (cq.iova, u64::from(cq.size) * Cqe::SIZE as u64)
}

impl Shared {
    /// True, with CSTS.CFS set, when a ring of `rings` (iova, bytes) or the
    /// shadow buffers lie in memory `mem` has lost.
    #[cold]
    pub(super) fn rings_lost(
        &self,
        mem: &MemoryMap,
        rings: &[(u64, u64)],
        shadow: Option<Shadow>,
    ) -> bool {
        let lost = rings.iter().any(|&(iova, len)| mem.range_lost(iova, len))
            || self.shadow_lost(mem, shadow);
        if lost {
            self.fatal.store(true, Ordering::SeqCst);
        }
        lost
    }

    /// After a command whose snapshot `mem` lost memory: `mem` becomes a
    /// snapshot with the loss retired (reported once the lock is dropped),
    /// and true (CSTS.CFS set) when the command's queue pair went with it.
    /// Out of line: the hot path keeps only the check that leads here.
    #[cold]
    #[inline(never)]
    pub(super) fn lost_during_command(
        &self,
        mem: &mut arc_swap::Guard<Arc<MemoryMap>>,
        sq: &SubmissionQueue,
        cq: &CompletionQueue,
        shadow: Option<Shadow>,
        out: &mut Signals,
    ) -> bool {
        let fatal = self.pair_lost(mem, sq, cq, shadow);
        *mem = self.mem.refresh();
        out.memory_lost();
        fatal
    }

    /// At the end of a pass whose snapshot `mem` lost memory: retires it
    /// (reported once the lock is dropped); true (CSTS.CFS set) when any
    /// ring of `q` or the shadow buffers went with it.
    #[cold]
    #[inline(never)]
    pub(super) fn lost_during_pass(
        &self,
        mem: &MemoryMap,
        q: &Queues,
        shadow: Option<Shadow>,
        out: &mut Signals,
    ) -> bool {
        let fatal = self.queues_lost(mem, q, shadow);
        self.mem.refresh();
        out.memory_lost();
        fatal
    }

    /// [`Shared::rings_lost`] for one queue pair.
    #[cold]
    pub(super) fn pair_lost(
        &self,
        mem: &MemoryMap,
        sq: &SubmissionQueue,
        cq: &CompletionQueue,
        shadow: Option<Shadow>,
    ) -> bool {
        self.rings_lost(mem, &[sq_ring(sq), cq_ring(cq)], shadow)
    }

    /// [`Shared::rings_lost`] for every ring of worker queues `q`.
    #[cold]
    pub(super) fn queues_lost(&self, mem: &MemoryMap, q: &Queues, shadow: Option<Shadow>) -> bool {
        let sqs = q.sqs.iter().flatten().map(sq_ring);
        let cqs = q.cqs.iter().flatten().map(cq_ring);
        let rings: Vec<(u64, u64)> = sqs.chain(cqs).collect();
        self.rings_lost(mem, &rings, shadow)
    }

    /// True when the shadow doorbell or EventIdx buffer in force lies in
    /// lost memory.
    fn shadow_lost(&self, mem: &MemoryMap, shadow: Option<Shadow>) -> bool {
        let span = self.doorbells.span();
        shadow.is_some_and(|s| mem.range_lost(s.db, span) || mem.range_lost(s.ei, span))
    }

    /// Fatal when the shadow doorbell or EventIdx buffer lies in memory
    /// `mem` lost (after that, reads of it fail and keep the last value,
    /// as for an unmapped buffer).
    #[cold]
    pub(super) fn shadow_unusable(&self, mem: &MemoryMap, shadow: Option<Shadow>) {
        if self.shadow_lost(mem, shadow) {
            self.fatal.store(true, Ordering::SeqCst);
        }
    }

    /// Hands the regions lost since the last call to the loss handler.
    /// Called outside every lock (the handler may be Python).
    #[cold]
    pub(super) fn report_losses(&self) {
        let lost = self.mem.take_losses();
        let handler = lock(&self.loss_handler).clone();
        if let Some(h) = handler {
            for (iova, size) in lost {
                h(iova, size);
            }
        }
    }
}

impl Engine {
    /// After an API call's guest accesses through `mem`: a region lost
    /// meanwhile is retired and reported now (the caller holds no lock).
    pub(super) fn settle_losses(&self, mem: &MemoryMap) {
        if mem.lost() {
            // Queue rings in lost memory fail the worker's next access to
            // them; the shadow buffers are read and written without one.
            self.shared
                .shadow_unusable(mem, self.shared.doorbells.shadow());
            self.shared.mem.refresh();
        }
        if self.shared.mem.losses_due() {
            self.shared.report_losses();
        }
    }

    /// Sets (Some) or removes (None) the callback told of each guest memory
    /// region lost under the device (its file shrank), once per region, from
    /// a worker thread holding no lock of the engine.
    pub fn set_memory_loss_handler(&self, h: Option<LossCallback>) {
        *lock(&self.shared.loss_handler) = h;
    }
}
