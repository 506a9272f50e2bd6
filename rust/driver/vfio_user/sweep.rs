//! The benchmark through a vfio-user server: one point is a fresh I/O queue
//! pair driven by the same host loop as the in-process bench
//! ([`crate::driver::bench::run`]), its doorbells rung by the doorbell page,
//! by shadow doorbells whose MMIO rings are messages, or by a message each.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::nvme::NvmeHost;
use super::Error;
use crate::driver::bench::{self, Mode, Outcome, Params, Workload};
use crate::driver::Rng;
use crate::spec::opcode::io;
use crate::spec::Sqe;

/// The I/O queue every point uses (created and deleted around it).
const QID: u16 = 1;
/// Largest queue depth a point may ask for.
pub const MAX_QD: u32 = 1023;
/// Bytes per I/O.
pub const BLOCK: u32 = 4096;

/// What one point measured.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub outcome: Outcome,
    /// vfio-user messages on the socket during the point (both directions).
    pub messages: u64,
}

/// A benchmark client connected to a server, controller up.
pub struct VfioBench {
    pub host: NvmeHost,
    buf: u64,
}

impl VfioBench {
    /// Connects to `socket` with `mem_bytes` of host memory (queues and
    /// buffers for up to [`MAX_QD`] reads of 8 KiB must fit).
    pub fn connect(socket: &Path, mem_bytes: usize) -> Result<Self, Error> {
        let mut host = NvmeHost::connect(socket, mem_bytes, 2)?;
        let buf = host.alloc((MAX_QD as usize + 1) * 8192)?;
        Ok(VfioBench { host, buf })
    }

    /// Namespace 1's (LBAs, LBA size).
    pub fn namespace(&self) -> (u64, u32) {
        self.host.ns
    }

    /// One point: `workload` at `qd` for `seconds`, completions by `mode`,
    /// doorbells by `ring` ("page", "shadow" or "trap").
    pub fn point(
        &mut self,
        workload: Workload,
        qd: u32,
        mode: Mode,
        ring: &str,
        seconds: f64,
    ) -> Result<Point, Error> {
        if qd == 0 || qd > MAX_QD {
            return Err(Error::Nvme(format!("qd {qd} must be in 1..={MAX_QD}")));
        }
        if ring == "shadow" {
            self.host.enable_shadow_doorbells()?;
        } else if self.host.shadow_enabled() {
            // With shadow doorbells on, the controller reads the shadow page,
            // not the registers: only a controller reset turns them off.
            self.host.reset()?;
        }
        // The in-process bench's queue size: room for the QD, at least 16.
        let entries = (2 * qd).max(16).min(self.host.max_entries);
        if qd >= entries {
            return Err(Error::Nvme(format!(
                "qd {qd} needs a queue of more than {} entries",
                self.host.max_entries
            )));
        }
        let mut q = self
            .host
            .create_pair(QID, entries, mode == Mode::Irq, ring)?;
        let efd = self.host.eventfds[usize::from(QID)].as_raw_fd();
        drain(efd);
        let (lbas, lba_size) = self.host.ns;
        let p = Params {
            workload,
            nsid: 1,
            ns_lbas: lbas,
            lba_size,
            block_size: BLOCK,
            qd,
            seconds,
            mode,
            eventfd: Some(efd),
            buf_iova: self.buf,
            ring_each: false,
            prinfo: 0,
        };
        let before = self.host.client.messages();
        let mmio = self.host.mmio();
        let run = bench::run(&mmio, &self.host.mem, &mut q, &p);
        let messages = self.host.client.messages() - before;
        if let Some(why) = mmio.failure() {
            return Err(Error::Protocol(why));
        }
        // Delete the pair even when the run failed, so the next point starts clean.
        let deleted = self.host.delete_pair(QID);
        let outcome = run.map_err(Error::Nvme)?;
        deleted?;
        Ok(Point { outcome, messages })
    }

    /// Writes every block once (so reads touch real pages, as the
    /// in-process bench's fill does), by polling and the page when offered.
    pub fn fill(&mut self) -> Result<Point, Error> {
        let ring = if self.host.has_doorbell_page() {
            "page"
        } else {
            "trap"
        };
        self.point(Workload::Fill, 64, Mode::Poll, ring, 3600.0)
    }

    /// Writes `blocks` random blocks with a pattern of their LBA and a
    /// seed, reads them back and compares: the number that differ.
    pub fn verify(&mut self, blocks: u32, seed: u64) -> Result<u32, Error> {
        let ring = if self.host.has_doorbell_page() {
            "page"
        } else {
            "trap"
        };
        if self.host.shadow_enabled() {
            self.host.reset()?;
        }
        let mut q = self.host.create_pair(QID, 16, false, ring)?;
        let (lbas, lba_size) = self.host.ns;
        let per = u64::from(BLOCK / lba_size);
        let mut rng = Rng::seeded(seed);
        let mut bad = 0;
        let pattern = |lba: u64, i: usize| -> u8 {
            (lba.wrapping_mul(31) as usize + i * 7) as u8 ^ seed as u8
        };
        let mut result = Ok(());
        for n in 0..blocks {
            let lba = rng.below(lbas / per) * per;
            let out: Vec<u8> = (0..BLOCK as usize).map(|i| pattern(lba, i)).collect();
            self.host.mem.write(self.buf, &out);
            let back = self.buf + u64::from(BLOCK);
            self.host.mem.write(back, &vec![0u8; BLOCK as usize]);
            let mmio = self.host.mmio();
            for (k, (op, buf)) in [(io::WRITE, self.buf), (io::READ, back)]
                .into_iter()
                .enumerate()
            {
                let mut s = Sqe::new(op, (n * 2 + k as u32) as u16, 1);
                s.set_prps(buf, 0);
                s.set_lba_range(lba, per as u32);
                q.push(&s);
                q.ring_sq(&mmio);
                match q.wait(Duration::from_secs(5)) {
                    Some(c) if c.status().is_success() => {}
                    Some(c) => {
                        result = Err(Error::Nvme(format!(
                            "opcode {op:#x} at LBA {lba}: SCT {:#x} SC {:#x}",
                            c.status().sct(),
                            c.status().sc()
                        )));
                    }
                    None => {
                        result = Err(Error::Nvme(format!(
                            "opcode {op:#x} at LBA {lba}: no completion"
                        )))
                    }
                }
                q.ring_cq(&mmio);
                if result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            let mut got = vec![0u8; BLOCK as usize];
            self.host.mem.read(back, &mut got);
            if got != out {
                bad += 1;
            }
        }
        let deleted = self.host.delete_pair(QID);
        result?;
        deleted?;
        Ok(bad)
    }
}

fn drain(fd: i32) {
    let mut v = 0u64;
    // SAFETY: 8-byte read into a valid u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}
