//! Doorbell value sequences from a fuzzer, against the exactly-once oracle.
//!
//! The input is a program for a host on one 8-entry queue pair: when to
//! push, when to ring (by the mode's method), when to reap and move the CQ
//! head, pauses, and doorbell writes the device must survive without
//! losing or replaying anything:
//!
//! - out-of-range values by MMIO or straight into the doorbell's memory (the
//!   shadow slot or the page): Invalid Doorbell Write Value, ignored;
//! - under shadow doorbells, *any* in-range MMIO value: an I/O queue's
//!   register write is only a wake-up there (a late posted write carries a
//!   stale value), so it must never move the tail or the head.
//!
//! A memory slot left holding garbage is re-published truthfully by the
//! next ring. Whatever the program, every command submitted completes
//! exactly once, nothing else completes, and the run ends by itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::exactly_once::{Doorbell, Oracle, Plan, Report, Rig};
use crate::engine::Polling;

const ENTRIES: u32 = 8;

/// Longest program run; fuzz inputs beyond it are ignored.
pub const MAX_OPS: usize = 256;

/// Where the device reads the doorbells from memory (the shadow buffer or
/// the page), as a host pointer; None with plain MMIO doorbells.
fn slots(rig: &Rig) -> Option<*mut u8> {
    match (rig.shadow, &rig.page) {
        (Some((db, _)), _) => Some(db),
        (None, Some(p)) => Some(p.ptr(0, 16)),
        (None, None) => None,
    }
}

/// Stores `value` into doorbell `index` (2 or 3) at `base`.
fn store_slot(base: *mut u8, index: u32, value: u32) {
    debug_assert!(index < 4);
    // SAFETY: `base` covers the doorbells of queue pair 1 (indexes 0..=3,
    // stride 4; see `slots`), page aligned, so the u32 is aligned; the rig
    // that maps it outlives every call.
    let slot = unsafe { AtomicU32::from_ptr(base.add(index as usize * 4).cast()) };
    slot.store(value.to_le(), Ordering::SeqCst);
}

/// Runs the program `input` encodes; the report holds any fault.
pub fn run(input: &[u8]) -> Report {
    let Some((&head, ops)) = input.split_first() else {
        return Report::default();
    };
    let doorbell = Doorbell::ALL[usize::from(head & 3)];
    let polling =
        [Polling::Adaptive, Polling::Interrupt, Polling::Poll][usize::from(head >> 2) % 3];
    let mut plan = Plan::new(doorbell, polling, 1, ENTRIES - 1);
    plan.entries = ENTRIES;
    plan.page_scan_us = 10;
    let mut rig = match Rig::new(&plan) {
        Ok(r) => r,
        Err(e) => {
            let mut r = Report::default();
            r.faults.push(super::exactly_once::Fault::Setup(e));
            return r;
        }
    };
    let memory = slots(&rig);
    let e = &rig.engine;
    let shadow = rig.shadow.is_some();
    let (q, _, bufs) = &mut rig.queues[0];
    let mut o = Oracle::new(ENTRIES - 1, *bufs);
    let mut ops = ops.iter().take(MAX_OPS);
    while let Some(&op) = ops.next() {
        let arg = u32::from(ops.next().copied().unwrap_or(0));
        match op >> 5 {
            0 | 1 => {
                for _ in 0..=(op & 7) {
                    if !o.submit(q, u64::from(arg)) {
                        break;
                    }
                }
            }
            2 => q.ring_sq(e),
            3 => {
                o.reap(q);
                if op & 1 == 1 {
                    q.ring_cq(e);
                }
            }
            4 | 5 => {
                let index = 2 + u32::from(op >> 5 == 5);
                let value = if shadow && op & 1 == 1 {
                    arg % ENTRIES
                } else {
                    ENTRIES + arg
                };
                // Refused or ignored: never a fault, never a state change.
                let _ = e.doorbell_write(index, value);
            }
            6 => {
                // Garbage where the device reads the doorbell from memory.
                if let Some(base) = memory {
                    store_slot(base, 2 + u32::from(op & 1), ENTRIES + arg);
                }
            }
            _ => {
                let us = u64::from(op & 31) * 10;
                if op & 1 == 0 {
                    std::thread::sleep(Duration::from_micros(us));
                } else {
                    let until = Instant::now() + Duration::from_nanos(us * 20);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        if !o.report.faults.is_empty() {
            break;
        }
    }
    // The truthful end: publish both doorbells (repairing any garbage the
    // program left in memory), reap until everything came.
    q.ring_sq(e);
    q.ring_cq(e);
    let deadline = Instant::now() + Duration::from_secs(5);
    while o.outstanding() > 0 && o.report.faults.is_empty() {
        if o.reap(q) > 0 {
            q.ring_cq(e);
            continue;
        }
        if Instant::now() > deadline {
            o.lost(q.qid);
            break;
        }
        std::thread::yield_now();
    }
    q.ring_cq(e);
    e.stop();
    o.report
}
