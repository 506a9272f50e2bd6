//! Segments: the pieces of guest memory a data pointer (PRPs or an SGL)
//! describes, as a walk produces them, and the copies between segments and
//! a host buffer.
//!
//! An fd-backed piece is a host pointer the data moves through directly. A
//! remote piece (a region the client mapped without an fd) has only an
//! IOVA: its bytes move through the memory map's transport, bounced through
//! a buffer. A walk never produces anything else but SGL bit buckets.

use crate::mem::{MemError, MemoryMap};

/// Where a segment's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Host memory mapped from an fd, valid while the snapshot the walk
    /// used is held.
    Host(*mut u8),
    /// Guest memory at this IOVA in a remote region: reached through the
    /// transport only.
    Remote(u64),
    /// An SGL bit bucket: bytes the host does not want.
    BitBucket,
}

/// A contiguous piece of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub target: Target,
    pub len: usize,
}

// SAFETY: a Segment is scratch data valid only while the memory snapshot it
// was translated against is held; the worker keeps a reusable Vec of them
// that moves with the engine's state between threads, never dereferenced
// outside that window.
unsafe impl Send for Segment {}

impl Segment {
    /// True for a piece reached through the transport.
    #[inline]
    pub fn is_remote(&self) -> bool {
        matches!(self.target, Target::Remote(_))
    }

    /// Appends guest range `[iova, iova+len)` (inside one region, writable
    /// when `write`) to `out`, merging it into the last segment when the two
    /// are contiguous: in host memory for fd-backed pieces, in one remote
    /// region for remote ones (a transport message never spans regions).
    #[inline]
    pub fn push(
        mem: &MemoryMap,
        out: &mut Vec<Segment>,
        iova: u64,
        len: u64,
        write: bool,
    ) -> Result<(), MemError> {
        let target = match mem.translate(iova, len, write) {
            Ok(ptr) => Target::Host(ptr),
            Err(MemError::Remote { .. }) => Target::Remote(iova),
            Err(e) => return Err(e),
        };
        // The caller bounds len by a page or an SGL descriptor's u32.
        let len = usize::try_from(len).map_err(|_| MemError::Overflow { iova, len })?;
        if let Some(last) = out.last_mut() {
            let merge = match (last.target, target) {
                (Target::Host(a), Target::Host(b)) => a.wrapping_add(last.len) == b,
                (Target::Remote(a), Target::Remote(b)) => {
                    Self::same_remote(mem, a, last.len, b, len, write)
                }
                _ => false,
            };
            if merge {
                last.len += len;
                return Ok(());
            }
        }
        out.push(Segment { target, len });
        Ok(())
    }

    /// True when remote piece `b` (`blen` bytes) directly follows remote
    /// piece `a` (`alen` bytes) in the same region.
    #[cold]
    fn same_remote(mem: &MemoryMap, a: u64, alen: usize, b: u64, blen: usize, write: bool) -> bool {
        let total = (alen as u64).checked_add(blen as u64);
        a.checked_add(alen as u64) == Some(b)
            && total
                .is_some_and(|t| matches!(mem.translate(a, t, write), Err(MemError::Remote { .. })))
    }
}

/// Copies `data` into the guest memory `segs` describe, in order; bit
/// buckets swallow their bytes. `data` is as long as the segments together.
///
/// # Safety
/// Every `Target::Host` pointer was translated (writable) against `mem`,
/// which the caller holds for the duration of the call.
pub unsafe fn scatter(mem: &MemoryMap, segs: &[Segment], data: &[u8]) -> Result<(), MemError> {
    let mut off = 0usize;
    for s in segs {
        let end = off.checked_add(s.len).filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(MemError::Overflow {
                iova: off as u64,
                len: s.len as u64,
            });
        };
        let piece = &data[off..end];
        match s.target {
            // SAFETY: the caller's contract: s.len writable bytes at p, in a
            // region `mem` keeps mapped; piece is a distinct host buffer.
            Target::Host(p) => unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), p, s.len) },
            Target::Remote(iova) => mem.remote_write(iova, piece)?,
            Target::BitBucket => {}
        }
        off = end;
    }
    Ok(())
}

/// Appends the guest memory `segs` describe to `out`, in order (a bit
/// bucket, never part of a host-to-device walk, reads as zeroes).
///
/// # Safety
/// Every `Target::Host` pointer was translated against `mem`, which the
/// caller holds for the duration of the call.
pub unsafe fn gather(mem: &MemoryMap, segs: &[Segment], out: &mut Vec<u8>) -> Result<(), MemError> {
    for s in segs {
        match s.target {
            // SAFETY: the caller's contract: s.len readable bytes at p.
            Target::Host(p) => {
                out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, s.len) })
            }
            Target::Remote(iova) => {
                let at = out.len();
                out.resize(at + s.len, 0);
                mem.remote_read(iova, &mut out[at..])?;
            }
            Target::BitBucket => out.resize(out.len() + s.len, 0),
        }
    }
    Ok(())
}

/// Reads every remote segment of `segs` into `out` (cleared first), in
/// order: a host-to-device transfer fetches all of its remote data before
/// any of it reaches the namespace, so a failed message leaves the
/// namespace untouched.
#[cold]
pub fn fetch_remote(mem: &MemoryMap, segs: &[Segment], out: &mut Vec<u8>) -> Result<(), MemError> {
    out.clear();
    for s in segs {
        if let Target::Remote(iova) = s.target {
            let at = out.len();
            out.resize(at + s.len, 0);
            mem.remote_read(iova, &mut out[at..])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::tests::{memfd, FakeClient};
    use crate::mem::GuestMemory;
    use std::os::fd::AsRawFd;

    #[test]
    fn remote_pieces_merge_within_a_region_only() {
        let m = GuestMemory::new();
        let fd = memfd(0x2000);
        m.map(0, 0x2000, fd.as_raw_fd(), 0, true).unwrap();
        m.map_remote(0x2000, 0x2000, true).unwrap();
        m.map_remote(0x4000, 0x1000, true).unwrap();
        let c = FakeClient::new(0x2000, 0x3000);
        m.set_transport(Some(c.clone()));
        let s = m.snapshot();
        let mut out = Vec::new();
        for page in 0..5u64 {
            Segment::push(&s, &mut out, page * 0x1000, 0x1000, true).unwrap();
        }
        assert_eq!(
            out.len(),
            3,
            "fd pages, then the first remote region, then the second"
        );
        assert!(matches!(out[0].target, Target::Host(_)));
        assert_eq!(out[0].len, 0x2000);
        assert_eq!(
            out[1],
            Segment {
                target: Target::Remote(0x2000),
                len: 0x2000
            }
        );
        assert_eq!(
            out[2],
            Segment {
                target: Target::Remote(0x4000),
                len: 0x1000
            }
        );
        let data: Vec<u8> = (0..0x5000u32).map(|i| (i % 251) as u8).collect();
        // SAFETY: out was walked against s, held here.
        unsafe { scatter(&s, &out, &data) }.unwrap();
        assert_eq!(c.bytes.lock().unwrap()[..], data[0x2000..]);
        assert_eq!(
            c.log.lock().unwrap().len(),
            2,
            "one message per remote segment"
        );
        let mut back = Vec::new();
        // SAFETY: as above.
        unsafe { gather(&s, &out, &mut back) }.unwrap();
        assert_eq!(back, data);
        fetch_remote(&s, &out, &mut back).unwrap();
        assert_eq!(back[..], data[0x2000..]);
        c.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            fetch_remote(&s, &out, &mut back),
            Err(MemError::Transport { .. })
        ));
    }
}
