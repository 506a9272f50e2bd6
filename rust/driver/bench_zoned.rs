//! `nvmefast bench --zoned`'s host loops: sequential writes on a
//! conventional namespace (the baseline), sequential writes through the
//! zones of a zoned one (each zone written from its start to its
//! capacity, the next zone after it), Zone Appends (each zone filled by
//! appends at the queue depth, then the next), and the rate of Zone
//! Management Send Finish and Reset. When the zones are used up the host
//! drains its queue, resets every zone (Select All) and goes on; that time
//! is counted apart (`zone_reset_ns`), not in the writes' figures.

use std::time::{Duration, Instant};

use super::bench::{wait_eventfd, Histogram, Mode, Outcome, Params};
use super::ring::Mmio;
use super::HostQueue;
use crate::spec::opcode::io as op;
use crate::spec::{Cqe, Sqe, Status};

/// What the host submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Sequential writes over a conventional namespace, wrapping at its end.
    SeqWrite,
    /// Sequential writes through the zones, each at its write pointer.
    ZoneWrite,
    /// Zone Appends, one zone at a time.
    ZoneAppend,
    /// QD 1: a block written to a zone, Finish, Reset; zone by zone.
    ZoneMgmt,
    /// Every block of every zone written once, then stop (so later runs
    /// touch memory that is there, as `bench`'s fill does).
    ZoneFill,
}

/// A zoned namespace's geometry in LBAs: (zone size, capacity, zones).
pub type Zones = (u64, u64, u64);

/// Where the next write or append goes, zone by zone.
struct Cursor {
    zone: u64,
    /// Blocks handed out in the zone.
    used: u64,
}

impl Cursor {
    /// The LBA (a write) or zone start (an append) for `nlb` more blocks;
    /// None when every zone is used up.
    fn next(&mut self, (size, cap, zones): Zones, nlb: u64, append: bool) -> Option<u64> {
        if self.used + nlb > cap {
            self.zone += 1;
            self.used = 0;
        }
        if self.zone >= zones {
            return None;
        }
        let zslba = self.zone * size;
        let lba = if append { zslba } else { zslba + self.used };
        self.used += nlb;
        Some(lba)
    }
}

/// Submits `sqe` alone and waits for its completion.
fn one<M: Mmio + ?Sized>(e: &M, q: &mut HostQueue, p: &Params, sqe: &Sqe) -> Result<Cqe, String> {
    q.push(sqe);
    q.ring_sq(e);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = q.pop() {
            q.ring_cq(e);
            return Ok(c);
        }
        if Instant::now() > deadline {
            return Err(format!("no completion for opcode {:#04x}", sqe.opcode()));
        }
        match (p.mode, p.eventfd) {
            (Mode::Irq, Some(fd)) => {
                wait_eventfd(fd, Duration::from_millis(100)).ok();
            }
            _ => std::thread::yield_now(),
        }
    }
}

/// Zone Management Send `action` (`all`: Select All) on the zone at `slba`.
fn zms(nsid: u32, cid: u16, slba: u64, action: u32, all: bool) -> Sqe {
    let mut s = Sqe::new(op::ZONE_MGMT_SEND, cid, nsid);
    s.set_lba_range(slba, 1);
    s.dw[12] = 0;
    s.dw[13] = action | if all { 1 << 8 } else { 0 };
    s
}

/// Runs `w` on `q` for `p.seconds` (`zones`: the namespace's, for the
/// zoned workloads).
pub fn run<M: Mmio + ?Sized>(
    e: &M,
    q: &mut HostQueue,
    p: &Params,
    w: Workload,
    zones: Option<Zones>,
) -> Result<Outcome, String> {
    if p.qd == 0 || p.qd >= q.size {
        return Err(format!("qd {} must be in 1..{}", p.qd, q.size));
    }
    let nlb = u64::from(p.block_size / p.lba_size);
    let z = match (w, zones) {
        (Workload::SeqWrite, _) => (p.ns_lbas, p.ns_lbas / nlb * nlb, 1),
        (_, Some(z)) if z.1 >= nlb => z,
        _ => return Err("a zoned workload needs a zoned namespace with room for a block".into()),
    };
    if w != Workload::SeqWrite {
        // Every zone Empty first, whatever an earlier run left.
        let c = one(e, q, p, &zms(p.nsid, 0, 0, 0x04, true))?;
        if !c.status().is_success() {
            return Err(format!("Reset of every zone failed: {:?}", c.status()));
        }
    }
    if w == Workload::ZoneMgmt {
        return mgmt(e, q, p, z);
    }
    let append = w == Workload::ZoneAppend;
    let opcode = if append { op::ZONE_APPEND } else { op::WRITE };
    let mut cur = Cursor { zone: 0, used: 0 };
    let mut hist = Histogram::default();
    let mut out = Outcome::default();
    let mut submitted = vec![Instant::now(); p.qd as usize];
    let mut free: Vec<u16> = (0..p.qd as u16).rev().collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.seconds);
    let mut outstanding = 0u32;
    let mut wrapped = false;
    let mut done = false;
    let mut idle = Instant::now();
    loop {
        // Fill the queue; past the last zone, drain it and reset them all.
        let mut pushed = false;
        while !wrapped && Instant::now() < deadline {
            let Some(&cid) = free.last() else { break };
            let Some(lba) = cur.next(z, nlb, append) else {
                if w == Workload::SeqWrite {
                    // A conventional namespace wraps around as it is.
                    cur = Cursor { zone: 0, used: 0 };
                    continue;
                }
                wrapped = true;
                done = w == Workload::ZoneFill;
                break;
            };
            free.pop();
            let mut s = Sqe::new(opcode, cid, p.nsid);
            let buf = p.buf_iova + u64::from(cid) * u64::from(p.block_size);
            s.set_prps(buf, if p.block_size > 4096 { buf + 4096 } else { 0 });
            s.set_lba_range(lba, nlb as u32);
            q.push(&s);
            submitted[usize::from(cid)] = Instant::now();
            outstanding += 1;
            pushed = true;
        }
        if pushed {
            q.ring_sq(e);
            out.doorbells += 1;
        }
        if outstanding == 0 {
            if !wrapped || done || Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            let c = one(e, q, p, &zms(p.nsid, 0, 0, 0x04, true))?;
            if !c.status().is_success() {
                return Err(format!("Reset of every zone failed: {:?}", c.status()));
            }
            out.zone_resets += z.2;
            out.zone_reset_ns += t.elapsed().as_nanos() as u64;
            cur = Cursor { zone: 0, used: 0 };
            wrapped = false;
            continue;
        }
        if p.mode == Mode::Irq && wait_eventfd(p.eventfd.unwrap_or(-1), Duration::from_secs(5))? > 0
        {
            out.interrupts += 1;
        }
        let mut reaped = 0;
        while let Some(c) = q.pop() {
            reaped += 1;
            let t0 = submitted
                .get(usize::from(c.cid))
                .ok_or("device returned an unknown CID")?;
            hist.record(t0.elapsed().as_nanos() as u64);
            if c.status() != Status::SUCCESS {
                out.errors += 1;
            }
            out.ios += 1;
            outstanding -= 1;
            free.push(c.cid);
        }
        if reaped > 0 {
            q.ring_cq(e);
            out.doorbells += 1;
            idle = Instant::now();
        } else if idle.elapsed() > Duration::from_secs(5) {
            return Err("no completion within 5 s".into());
        } else if p.mode == Mode::Poll {
            std::thread::yield_now();
        }
    }
    out.seconds = start.elapsed().as_secs_f64() - out.zone_reset_ns as f64 * 1e-9;
    out.mmio_doorbells = q.ringer.mmio;
    out.set_latencies(&hist);
    Ok(out)
}

/// Finish and Reset rates: zone by zone, a block written, Finish, Reset.
fn mgmt<M: Mmio + ?Sized>(
    e: &M,
    q: &mut HostQueue,
    p: &Params,
    z: Zones,
) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let mut hist = Histogram::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.seconds);
    let mut zone = 0u64;
    while Instant::now() < deadline {
        let zslba = (zone % z.2) * z.0;
        let mut w = Sqe::new(op::WRITE, 1, p.nsid);
        w.set_prps(p.buf_iova, 0);
        w.set_lba_range(zslba, p.block_size / p.lba_size);
        let steps = [
            (w, 0u8),
            (zms(p.nsid, 2, zslba, 0x02, false), 1),
            (zms(p.nsid, 3, zslba, 0x04, false), 2),
        ];
        for (s, kind) in steps {
            let t = Instant::now();
            let c = one(e, q, p, &s)?;
            let ns = t.elapsed().as_nanos() as u64;
            if !c.status().is_success() {
                out.errors += 1;
            }
            match kind {
                1 => {
                    out.zone_finishes += 1;
                    out.zone_finish_ns += ns;
                }
                2 => {
                    out.zone_resets += 1;
                    out.zone_reset_ns += ns;
                    hist.record(ns);
                    out.ios += 1;
                }
                _ => {}
            }
        }
        zone += 1;
    }
    out.seconds = start.elapsed().as_secs_f64();
    out.set_latencies(&hist);
    Ok(out)
}
