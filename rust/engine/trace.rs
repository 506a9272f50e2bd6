//! The command trace: an opt-in, bounded ring of per-command records (I/O
//! and admin commands, and the register writes the embedder reports), for
//! a test to see what a driver actually did.
//!
//! Off, it costs a worker one relaxed load per pass. On, each command takes
//! the ring's lock once, at completion. A full ring drops its oldest
//! records and counts them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::lock;
use crate::spec::opcode::io;
use crate::spec::Sqe;

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Io,
    Admin,
    /// A BAR0 write: `slba` is the offset, `value` what was written.
    Register,
}

impl Kind {
    /// The name records carry.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Io => "io",
            Kind::Admin => "admin",
            Kind::Register => "register",
        }
    }
}

/// One traced event: what was fetched, and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// The command as fetched (a register write: its time, and the offset
    /// in `slba`).
    pub cmd: Fetched,
    /// Nanoseconds since the trace started (a register write: its time).
    pub done_ns: u64,
    /// The CQE status field (15 bits); 0 for a register write.
    pub status: u16,
    /// A register write's value; an I/O or admin command's DW0.
    pub value: u64,
}

/// A command as fetched (admin commands then wait for the handler).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Nanoseconds since the trace started.
    pub fetch_ns: u64,
    /// The worker that fetched it (0 admin).
    pub worker: u16,
    pub qid: u16,
    pub cid: u16,
    pub opcode: u8,
    pub nsid: u32,
    /// Starting LBA (CDW10-11) of an I/O command with an LBA range.
    pub slba: u64,
    /// Blocks (NLB + 1) of an I/O command with an LBA range, else 0.
    pub nlb: u32,
}

/// Write Uncorrectable: an LBA range too.
const WRITE_UNCORRECTABLE: u8 = 0x04;

/// Opcodes whose CDW10-12 are an LBA range (Flush, DSM and Copy have none).
fn has_lba_range(opcode: u8) -> bool {
    matches!(
        opcode,
        io::READ
            | io::WRITE
            | WRITE_UNCORRECTABLE
            | io::COMPARE
            | io::WRITE_ZEROES
            | io::VERIFY
            | io::ZONE_APPEND
    )
}

struct Ring {
    records: VecDeque<Record>,
    capacity: usize,
    dropped: u64,
    /// Admin commands handed to the handler, by CID.
    admin: Vec<Fetched>,
}

/// The engine's trace.
pub struct Trace {
    on: AtomicBool,
    /// Clock base; the trace's epoch is `epoch_ns` after it.
    base: Instant,
    epoch_ns: AtomicU64,
    ring: Mutex<Ring>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            on: AtomicBool::new(false),
            base: Instant::now(),
            epoch_ns: AtomicU64::new(0),
            ring: Mutex::new(Ring {
                records: VecDeque::new(),
                capacity: 0,
                dropped: 0,
                admin: Vec::new(),
            }),
        }
    }
}

impl Trace {
    /// Whether tracing is on (one relaxed load: a pass checks it once;
    /// a record racing a stop is harmless).
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Starts (or restarts) tracing into a ring of `capacity` records,
    /// clearing what was there.
    pub fn start(&self, capacity: usize) {
        let mut r = lock(&self.ring);
        r.records = VecDeque::with_capacity(capacity.min(1 << 16));
        r.capacity = capacity;
        r.dropped = 0;
        r.admin.clear();
        self.epoch_ns
            .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // Relaxed: no data is published through it; a record racing start
        // only carries a timestamp from just before the epoch (saturated to 0).
        self.on.store(true, Ordering::Relaxed);
    }

    /// Stops recording; what was recorded stays readable.
    pub fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
        lock(&self.ring).admin.clear();
    }

    /// Nanoseconds since the trace started.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64)
            .saturating_sub(self.epoch_ns.load(Ordering::Relaxed))
    }

    /// What `sqe` is, fetched now (`now_ns` from the caller, so one clock
    /// read covers a command).
    pub fn fetched(sqe: &Sqe, qid: u16, fetch_ns: u64, worker: u16) -> Fetched {
        let opcode = sqe.opcode();
        let (slba, nlb) = if qid != 0 && has_lba_range(opcode) {
            (
                u64::from(sqe.cdw(10)) | u64::from(sqe.cdw(11)) << 32,
                (sqe.cdw(12) & 0xffff) + 1,
            )
        } else {
            (0, 0)
        };
        Fetched {
            fetch_ns,
            worker,
            qid,
            cid: sqe.cid(),
            opcode,
            nsid: sqe.nsid(),
            slba,
            nlb,
        }
    }

    /// Records a completed command.
    pub fn completed(&self, f: Fetched, status: u16, dw0: u64) {
        let done_ns = self.now_ns();
        let mut r = lock(&self.ring);
        let kind = if f.qid == 0 { Kind::Admin } else { Kind::Io };
        r.push(Record {
            kind,
            cmd: f,
            done_ns,
            status,
            value: dw0,
        });
    }

    /// An admin command went to the handler: completed by [`Trace::admin_done`].
    pub fn admin_fetched(&self, f: Fetched) {
        let mut r = lock(&self.ring);
        // Bounded by the admin queue (CIDs are unique while outstanding).
        r.admin.retain(|a| a.cid != f.cid);
        if r.admin.len() < 4096 {
            r.admin.push(f);
        }
    }

    /// The handler completed admin command `cid`.
    pub fn admin_done(&self, cid: u16, status: u16, dw0: u64) {
        let f = {
            let mut r = lock(&self.ring);
            let Some(pos) = r.admin.iter().position(|a| a.cid == cid) else {
                return;
            };
            r.admin.swap_remove(pos)
        };
        self.completed(f, status, dw0);
    }

    /// A register write the embedder reports.
    pub fn register(&self, offset: u64, value: u64) {
        let t = self.now_ns();
        let mut r = lock(&self.ring);
        r.push(Record {
            kind: Kind::Register,
            cmd: Fetched {
                fetch_ns: t,
                slba: offset,
                ..Fetched::default()
            },
            done_ns: t,
            status: 0,
            value,
        });
    }

    /// Takes up to `max` records, oldest first.
    pub fn drain(&self, max: usize) -> Vec<Record> {
        let mut r = lock(&self.ring);
        let n = max.min(r.records.len());
        r.records.drain(..n).collect()
    }

    /// Records dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.ring).dropped
    }
}

impl Ring {
    fn push(&mut self, rec: Record) {
        if self.capacity == 0 {
            return;
        }
        if self.records.len() >= self.capacity {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(rec);
    }
}

impl super::Engine {
    /// The command trace (start, stop, drain; see [`Trace`]).
    pub fn trace(&self) -> &Trace {
        &self.shared.trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_drops_the_oldest_and_counts() {
        let t = Trace::default();
        t.register(0x14, 1);
        assert!(t.drain(10).is_empty(), "nothing is kept before start");
        t.start(2);
        for v in 0..5 {
            t.register(0x14, v);
        }
        assert_eq!(t.dropped(), 3);
        let got: Vec<u64> = t.drain(10).iter().map(|r| r.value).collect();
        assert_eq!(got, vec![3, 4]);
    }

    #[test]
    fn admin_commands_complete_by_cid() {
        let t = Trace::default();
        t.start(16);
        let mut s = Sqe::new(0x06, 7, 0);
        s.dw[10] = 1;
        t.admin_fetched(Trace::fetched(&s, 0, 5, 0));
        t.admin_done(8, 0, 0); // unknown CID: nothing
        t.admin_done(7, 0x2, 9);
        let r = t.drain(10);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].kind, r[0].cmd.opcode, r[0].status, r[0].value),
            (Kind::Admin, 6, 2, 9)
        );
        assert_eq!((r[0].cmd.slba, r[0].cmd.nlb), (0, 0));
    }
}
