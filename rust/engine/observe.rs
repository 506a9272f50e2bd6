//! What the engine tells about itself: event counters, SMART counters and
//! the failed commands for the Error Information log, summed over workers.

use std::sync::atomic::Ordering;

use super::{lock, Engine, ErrorEntry, Stats};
use crate::aio::IoPath;
use crate::cmd::io::Smart;

impl Engine {
    // ---- observation -----------------------------------------------------

    /// Event counters by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        // A loss no access has looked at yet is counted now.
        self.settle_losses(&self.shared.mem.snapshot());
        let mut st = Stats::default();
        let (mut deferred, mut expired) = (0, 0);
        for w in self.shared.workers.iter() {
            let q = lock(&w.queues);
            let s = q.stats;
            st.io_commands += s.io_commands;
            st.admin_commands += s.admin_commands;
            st.io_errors += s.io_errors;
            st.batches += s.batches;
            st.cq_full_stalls += s.cq_full_stalls;
            st.sqe_fetch_errors += s.sqe_fetch_errors;
            st.cqe_post_errors += s.cqe_post_errors;
            st.sleeps += s.sleeps;
            deferred += q.coalesce.deferred;
            expired += q.coalesce.expired;
        }
        let (asserts, deasserts) = {
            let l = lock(&self.shared.intx);
            (l.assertions, l.deassertions)
        };
        let wakeups: u64 = self
            .shared
            .workers
            .iter()
            .map(|w| w.waker.wakeups.load(Ordering::Relaxed))
            .sum();
        let (mut file_ops, mut file_errors) = (0, 0);
        let (mut storage_calls, mut storage_errors) = (0, 0);
        // Requests by the path that served them: which one is in use.
        let mut by_path = [0u64; 3];
        for (_, ns) in self.table().iter() {
            if let crate::backend::Backend::Custom(c) = &ns.backend {
                storage_calls += c.calls.load(Ordering::Relaxed);
                storage_errors += c.errors.load(Ordering::Relaxed);
            }
            if let Some(f) = ns.backend.as_file() {
                let ops = f.ops.load(Ordering::Relaxed);
                file_ops += ops;
                file_errors += f.errors.load(Ordering::Relaxed);
                by_path[match f.io_path() {
                    IoPath::IoUring => 0,
                    IoPath::Threads => 1,
                    IoPath::Inline => 2,
                }] += ops;
            }
        }
        let d = &self.shared.doorbells;
        let v = &self.shared.vectors;
        vec![
            ("io_commands", st.io_commands),
            ("storage_calls", storage_calls),
            ("storage_errors", storage_errors),
            ("admin_commands", st.admin_commands),
            ("io_errors", st.io_errors),
            ("batches", st.batches),
            ("cq_full_stalls", st.cq_full_stalls),
            ("sqe_fetch_errors", st.sqe_fetch_errors),
            ("cqe_post_errors", st.cqe_post_errors),
            ("worker_sleeps", st.sleeps),
            ("doorbell_writes", d.writes.load(Ordering::Relaxed)),
            (
                "invalid_doorbell_writes",
                d.invalid_writes.load(Ordering::Relaxed),
            ),
            ("worker_wakeups", wakeups),
            ("interrupts", v.signals()),
            ("dma_regions_lost", self.shared.mem.lost_regions()),
            ("masked_notifications", v.masked_notifications()),
            ("unrouted_notifications", v.unrouted()),
            ("notify_errors", v.notify_errors()),
            ("coalesced_completions", deferred),
            ("coalescing_timeouts", expired),
            ("intx_assertions", asserts),
            ("intx_deassertions", deasserts),
            ("file_ops", file_ops),
            ("file_errors", file_errors),
            ("file_ops_io_uring", by_path[0]),
            ("file_ops_threads", by_path[1]),
            ("file_ops_inline", by_path[2]),
        ]
    }

    /// SMART / Health counters, summed over the workers.
    pub fn smart(&self) -> Smart {
        let mut t = Smart::default();
        for w in self.shared.workers.iter() {
            let s = lock(&w.queues).smart;
            t.bytes_read += s.bytes_read;
            t.bytes_written += s.bytes_written;
            t.host_read_commands += s.host_read_commands;
            t.host_write_commands += s.host_write_commands;
            t.media_errors += s.media_errors;
        }
        t
    }

    /// Failed I/O commands since the last call.
    pub fn take_errors(&self) -> Vec<ErrorEntry> {
        let mut out = Vec::new();
        for w in self.shared.workers.iter() {
            out.extend(lock(&w.queues).errors.drain(..));
        }
        out
    }
}
