//! What Device Self-test (Base 2.0, 8.1.8) and Sanitize (8.1.26) do to a
//! namespace's storage, one chunk at a time, and how far they are. The
//! engine (`engine/maintenance.rs`) runs them on a thread of their own and
//! keeps every command off the storage while a sanitize writes it.
//!
//! Progress is work done over work to do, held back by the time asked
//! for: an operation given `min` takes at least that long and its progress
//! rises with the clock, so a host polling once a second sees it between
//! 0 and 100% (nvme-cli `device-self-test --wait` needs one such poll).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::Errno;
use crate::cmd::io::Namespace;

/// Bytes one step reads or writes.
pub const CHUNK: u64 = 1 << 20;
/// Bytes a short self-test reads of a namespace, spread over it.
pub const SHORT_BYTES: u64 = 64 << 20;

/// Self-test segments reported (Base 2.0, Figure 643's informative list):
/// the marks Write Uncorrectable left (NVM integrity) and the read of the
/// data (media check).
pub const SEGMENT_INTEGRITY: u8 = 5;
pub const SEGMENT_MEDIA: u8 = 7;

/// How an operation ended, or that it has not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    #[default]
    None,
    Passed,
    /// The first failing block: its NSID, LBA and segment.
    Failed {
        nsid: u32,
        lba: u64,
        segment: u8,
    },
    Aborted,
}

/// What a sanitize writes over every block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Erase {
    /// Block Erase: zeroes (or deallocated).
    Block,
    /// Overwrite `passes` times with the 32-bit `pattern` (little endian),
    /// inverted on every other pass with `invert`.
    Overwrite {
        pattern: u32,
        passes: u8,
        invert: bool,
    },
}

impl Erase {
    /// Passes over the storage (Block Erase: one).
    pub fn passes(self) -> u8 {
        match self {
            Erase::Block => 1,
            Erase::Overwrite { passes, .. } => passes,
        }
    }

    /// The pattern of pass `pass` (0-based), or None for zeroes.
    pub fn pattern(self, pass: u8) -> Option<u32> {
        match self {
            Erase::Block => None,
            Erase::Overwrite {
                pattern, invert, ..
            } => Some(if invert && pass % 2 == 1 {
                !pattern
            } else {
                pattern
            }),
        }
    }
}

/// An operation's progress, and its request to stop.
pub struct Progress {
    started: Instant,
    min: Duration,
    done: AtomicU64,
    total: AtomicU64,
    /// Stop at the next step (an abort, the engine going away).
    pub cancel: AtomicBool,
}

impl Progress {
    /// Progress of an operation that takes at least `min`.
    pub fn new(min: Duration) -> Progress {
        Progress {
            started: Instant::now(),
            min,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        }
    }

    /// `n` more units of work to do.
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` units done.
    pub fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// All the work is done (what is left was skipped): only the time
    /// holds the progress back.
    pub fn finish(&self) {
        self.done
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// True once stopping was asked for.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// How far it is, 0.0..=1.0: the smaller of the work and the time.
    pub fn fraction(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed);
        let work = if total == 0 {
            1.0
        } else {
            self.done.load(Ordering::Relaxed) as f64 / total as f64
        };
        let time = if self.min.is_zero() {
            1.0
        } else {
            self.started.elapsed().as_secs_f64() / self.min.as_secs_f64()
        };
        work.min(time).clamp(0.0, 1.0)
    }

    /// Waits out what is left of `min` (false: cancelled meanwhile).
    pub fn pace(&self) -> bool {
        while self.started.elapsed() < self.min {
            if self.cancelled() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        !self.cancelled()
    }
}

/// The byte ranges a self-test reads of a namespace of `size` bytes: all
/// of it (extended), or up to [`SHORT_BYTES`] in chunks spread evenly.
pub fn test_chunks(size: u64, extended: bool) -> Vec<(u64, u64)> {
    let whole = size.div_ceil(CHUNK);
    let count = if extended {
        whole
    } else {
        whole.min(SHORT_BYTES / CHUNK)
    };
    (0..count)
        .map(|i| {
            // Spread: chunk i of `count` starts at i/count of the chunks.
            let at = if count == whole { i } else { i * whole / count } * CHUNK;
            (at, CHUNK.min(size - at))
        })
        .collect()
}

/// One self-test step: reads bytes `[off, off + len)` of `ns` (whose
/// size the caller checked under the storage gate) into `buf`; the first
/// failing LBA (a mark of Write Uncorrectable, an error from the storage).
pub fn test_chunk(ns: &Namespace, off: u64, len: u64, buf: &mut Vec<u8>) -> Option<(u64, u8)> {
    let shift = ns.lba_shift();
    let slba = off >> shift;
    if let Some(lba) = ns.uncorrectable.first_marked(slba, len >> shift) {
        return Some((lba, SEGMENT_MEDIA));
    }
    if !ns.backend.transfers_data() {
        return None;
    }
    buf.resize(len as usize, 0);
    // SAFETY: buf holds len bytes; the caller keeps [off, off + len)
    // inside the namespace and its storage in place (the storage gate).
    match unsafe { ns.backend.read(off, buf.as_mut_ptr(), len as usize) } {
        Ok(()) => None,
        Err(_) => Some((slba, SEGMENT_MEDIA)),
    }
}

/// One sanitize step: bytes `[off, off + len)` of `ns` zeroed or filled
/// with `pattern` (little endian) from `buf`. The caller keeps every
/// command off the namespace and the range inside it.
pub fn erase_chunk(
    ns: &Namespace,
    off: u64,
    len: u64,
    pattern: Option<u32>,
    buf: &mut Vec<u8>,
) -> Result<(), Errno> {
    match pattern {
        // SAFETY: the caller keeps the range inside the namespace and the
        // storage in place.
        None => unsafe { ns.backend.zero(off, len) },
        Some(p) => {
            let bytes = p.to_le_bytes();
            buf.clear();
            buf.extend((0..len as usize).map(|i| bytes[i % 4]));
            // SAFETY: as above; buf holds len bytes.
            unsafe { ns.backend.write(off, buf.as_ptr(), len as usize) }
        }
    }
}

/// The end of a sanitize on `ns`: deallocated (`deallocate`), every mark
/// of Write Uncorrectable gone, metadata deallocated (all FFh: the PI
/// escape), zones Empty, all of it durable. The caller keeps every
/// command off the namespace.
pub fn sanitized(ns: &Namespace, deallocate: bool) -> Result<(), Errno> {
    let size = ns.size_bytes();
    if deallocate {
        // SAFETY: the whole namespace; the caller keeps the storage in place.
        unsafe { ns.backend.deallocate(0, size)? };
    }
    ns.uncorrectable.clear_all();
    crate::cmd::protect::deallocated(ns, 0, ns.lbas())?;
    if let Some(z) = &ns.zones {
        z.sanitize()?;
    }
    ns.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_test_reads_at_most_its_share_spread_over_the_namespace() {
        let mib = CHUNK;
        assert_eq!(test_chunks(3 * mib + 512, true).len(), 4);
        assert_eq!(test_chunks(3 * mib + 512, true)[3], (3 * mib, 512));
        assert_eq!(test_chunks(3 * mib, false), test_chunks(3 * mib, true));
        let short = test_chunks(1024 * mib, false);
        assert_eq!(short.len() as u64, SHORT_BYTES / mib);
        assert_eq!(short[0].0, 0);
        assert_eq!(short[1].0, 16 * mib, "every 16th MiB of 1 GiB");
        assert!(short.iter().all(|&(at, len)| at + len <= 1024 * mib));
    }

    #[test]
    fn overwrite_patterns_invert_on_odd_passes() {
        let o = Erase::Overwrite {
            pattern: 0x1234_5678,
            passes: 3,
            invert: true,
        };
        assert_eq!(
            (o.pattern(0), o.pattern(1), o.pattern(2)),
            (Some(0x1234_5678), Some(0xEDCB_A987), Some(0x1234_5678))
        );
        assert_eq!(Erase::Block.pattern(0), None);
        assert_eq!(Erase::Block.passes(), 1);
    }

    #[test]
    fn progress_is_held_back_by_the_time_asked_for() {
        let p = Progress::new(Duration::from_secs(3600));
        p.add_total(10);
        p.advance(10);
        assert!(p.fraction() < 0.01, "done, but an hour was asked for");
        let q = Progress::new(Duration::ZERO);
        q.add_total(4);
        q.advance(1);
        assert_eq!(q.fraction(), 0.25);
        assert!(q.pace());
        p.cancel.store(true, Ordering::Relaxed);
        assert!(!p.pace());
    }
}
