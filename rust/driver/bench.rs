//! The benchmark's host loop: random reads at a fixed queue depth on one
//! queue pair, completions taken by interrupt (eventfd) or by polling the
//! CQ phase tag, latency per command into a histogram.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::ring::Mmio;
use super::{HostMemory, HostQueue, Rng};
use crate::spec::opcode::io;
use crate::spec::Sqe;

/// How the host learns of completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Block on the CQ's vector eventfd, then drain the CQ.
    Irq,
    /// Spin on the CQ phase tag.
    Poll,
}

/// What the host submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads of random block-aligned LBAs until the time is up.
    RandRead,
    /// Writes of random block-aligned LBAs until the time is up.
    RandWrite,
    /// Writes of every block once, in order (fills a RAM namespace so later
    /// reads touch real pages, not the shared zero page).
    Fill,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    pub workload: Workload,
    pub nsid: u32,
    pub ns_lbas: u64,
    pub lba_size: u32,
    /// Bytes per read: 4096 or 8192 (PRP1 and PRP2, no list).
    pub block_size: u32,
    pub qd: u32,
    pub seconds: f64,
    pub mode: Mode,
    pub eventfd: Option<RawFd>,
    /// `qd * block_size` bytes of buffers, page aligned.
    pub buf_iova: u64,
    /// Ring the SQ doorbell after every command (as a guest driver without
    /// batching does) instead of once per batch of reaped completions.
    pub ring_each: bool,
    /// PRINFO (CDW12 bits 29:26) of every command, with ILBRT (CDW14) the
    /// SLBA (type 1 reference tags); 0 for none.
    pub prinfo: u32,
}

/// What came out.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub ios: u64,
    pub errors: u64,
    pub seconds: f64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// Eventfd reads that returned a count (interrupts seen by the host).
    pub interrupts: u64,
    /// Doorbell updates the host made (ring calls, whatever the method).
    pub doorbells: u64,
    /// Of those, MMIO writes (what costs a VM exit).
    pub mmio_doorbells: u64,
    /// ioeventfd writes.
    pub eventfd_doorbells: u64,
    /// Zones reset (`bench_zoned`), and the time the resets took.
    pub zone_resets: u64,
    pub zone_reset_ns: u64,
    /// Zones finished (`bench_zoned`'s management loop), and the time.
    pub zone_finishes: u64,
    pub zone_finish_ns: u64,
}

/// Log-linear latency histogram: 32 sub-buckets per power of two (~3% error).
pub struct Histogram {
    counts: Vec<u64>,
    sum: u128,
    n: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 60 * 32],
            sum: 0,
            n: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 32 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros() as usize; // >= 5
        let sub = ((v >> (exp - 5)) & 31) as usize;
        (exp - 4) * 32 + sub
    }

    fn lower(i: usize) -> u64 {
        if i < 32 {
            return i as u64;
        }
        let exp = i / 32 + 4;
        let sub = (i % 32) as u64;
        (32 + sub) << (exp - 5)
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let i = Self::index(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.sum += u128::from(v);
        self.n += 1;
    }

    /// Mean of recorded values.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }

    /// Value at quantile `q` (lower bound of its bucket).
    pub fn quantile(&self, q: f64) -> f64 {
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return Self::lower(i) as f64;
            }
        }
        0.0
    }
}

/// Waits up to `timeout` for eventfd `fd` and reads its count.
pub(crate) fn wait_eventfd(fd: RawFd, timeout: Duration) -> Result<u64, String> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    if r == 0 {
        return Err(format!("no interrupt within {timeout:?}"));
    }
    if r < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut v: u64 = 0;
    // SAFETY: 8-byte read into a valid u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        Ok(v)
    } else {
        Ok(0)
    }
}

impl Outcome {
    /// Mean, p50 and p99 latency from `h`.
    pub fn set_latencies(&mut self, h: &Histogram) {
        self.mean_ns = h.mean();
        self.p50_ns = h.quantile(0.50);
        self.p99_ns = h.quantile(0.99);
    }
}

/// Runs random reads on `q` for `p.seconds`.
pub fn run<M: Mmio + ?Sized>(
    engine: &M,
    _mem: &HostMemory,
    q: &mut HostQueue,
    p: &Params,
) -> Result<Outcome, String> {
    if p.qd == 0 || p.qd >= q.size {
        return Err(format!(
            "qd {} must be in 1..{} (queue size {})",
            p.qd, q.size, q.size
        ));
    }
    if !matches!(p.block_size, 4096 | 8192) || p.block_size % p.lba_size != 0 {
        return Err(format!("block_size {} must be 4096 or 8192", p.block_size));
    }
    if p.mode == Mode::Irq && p.eventfd.is_none() {
        return Err("irq mode needs the CQ vector's eventfd".into());
    }
    let lbas_per_block = u64::from(p.block_size / p.lba_size);
    let blocks = p.ns_lbas / lbas_per_block;
    if blocks == 0 {
        return Err("namespace smaller than one block".into());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut hist = Histogram::default();
    let mut out = Outcome::default();
    let mut submitted = vec![Instant::now(); p.qd as usize];
    let mut next_block = 0u64;
    let opcode = match p.workload {
        Workload::RandRead => io::READ,
        Workload::RandWrite | Workload::Fill => io::WRITE,
    };
    let mut make = |cid: u16, rng: &mut Rng| {
        let mut s = Sqe::new(opcode, cid, p.nsid);
        let buf = p.buf_iova + u64::from(cid) * u64::from(p.block_size);
        let prp2 = if p.block_size > 4096 { buf + 4096 } else { 0 };
        s.set_prps(buf, prp2);
        let block = match p.workload {
            Workload::RandRead | Workload::RandWrite => rng.next_u64() % blocks,
            Workload::Fill => {
                next_block += 1;
                next_block - 1
            }
        };
        let lba = block * lbas_per_block;
        s.set_lba_range(lba, lbas_per_block as u32);
        s.dw[12] |= (p.prinfo & 0xf) << 26;
        s.dw[14] = lba as u32;
        s
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.seconds);
    // Fill issues each block once: at most `blocks` commands in all.
    let budget = match p.workload {
        Workload::RandRead | Workload::RandWrite => u64::MAX,
        Workload::Fill => blocks,
    };
    let first = u64::from(p.qd).min(budget) as u32;
    for cid in 0..first as u16 {
        q.push(&make(cid, &mut rng));
        submitted[usize::from(cid)] = Instant::now();
    }
    let mut issued = u64::from(first);
    q.ring_sq(engine);
    out.doorbells += 1;
    let mut outstanding = first;
    let mut draining = false;
    let mut idle_since = Instant::now();
    let mut empty_polls = 0u64;
    while outstanding > 0 {
        if p.mode == Mode::Irq && wait_eventfd(p.eventfd.unwrap_or(-1), Duration::from_secs(5))? > 0
        {
            out.interrupts += 1;
        }
        let mut reaped = 0;
        let mut resubmitted = 0;
        while let Some(c) = q.pop() {
            let now = Instant::now();
            reaped += 1;
            let cid = c.cid;
            if !c.status().is_success() {
                out.errors += 1;
            }
            let t0 = submitted
                .get(usize::from(cid))
                .ok_or("device returned an unknown CID")?;
            hist.record(now.duration_since(*t0).as_nanos() as u64);
            out.ios += 1;
            if !draining && (issued >= budget || (p.workload != Workload::Fill && now >= deadline))
            {
                draining = true;
            }
            if draining {
                outstanding -= 1;
            } else {
                q.push(&make(cid, &mut rng));
                submitted[usize::from(cid)] = now;
                issued += 1;
                if p.ring_each {
                    q.ring_sq(engine);
                    out.doorbells += 1;
                } else {
                    resubmitted += 1;
                }
            }
        }
        if reaped > 0 {
            q.ring_cq(engine);
            out.doorbells += 1;
            idle_since = Instant::now();
        } else if p.mode == Mode::Poll {
            empty_polls += 1;
            if empty_polls % 256 == 0 {
                // Same reason as the worker's yield: on a shared core, spinning
                // here would starve the device thread we are waiting for.
                std::thread::yield_now();
                if idle_since.elapsed() > Duration::from_secs(5) {
                    return Err("no completion within 5 s".into());
                }
            }
        }
        if resubmitted > 0 {
            q.ring_sq(engine);
            out.doorbells += 1;
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out.mmio_doorbells = q.ringer.mmio;
    out.eventfd_doorbells = q.ringer.eventfd_writes;
    out.set_latencies(&hist);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((480_000.0..=500_000.0).contains(&p50), "{p50}");
        assert!((960_000.0..=990_000.0).contains(&p99), "{p99}");
        assert!((h.mean() - 500_500.0).abs() < 1.0);
        for i in 0..60 * 32 {
            assert_eq!(Histogram::index(Histogram::lower(i)), i);
        }
    }
}
