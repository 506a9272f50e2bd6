//! Scatter Gather Lists (NVMe Base 2.0, 4.3.2), translated to host pointers
//! (or remote IOVAs) against one guest memory snapshot. Data Block, Bit Bucket, Segment and
//! Last Segment descriptors; keyed and transport descriptors are refused
//! (Identify SGLS advertises neither). Every descriptor is checked before
//! any data moves, like the PRP walk.

use super::segment::{Segment, Target};
use crate::mem::{MemError, MemoryMap};
use crate::spec::Status;

/// Descriptor types (SGL identifier bits 7:4).
const DATA_BLOCK: u8 = 0x0;
const BIT_BUCKET: u8 = 0x1;
const SEGMENT: u8 = 0x2;
const LAST_SEGMENT: u8 = 0x3;

/// A descriptor list cannot hold more than this many entries in all: a
/// chain of Segment descriptors pointing back at itself must end.
const MAX_DESCRIPTORS: usize = 65536;

/// Why an SGL walk failed, each with the status the spec names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SglError {
    /// A type or subtype we do not support (keyed, transport, offset): SGL Descriptor Type Invalid.
    #[error("SGL descriptor type {0:#04x} is not supported")]
    TypeInvalid(u8),
    /// A segment descriptor whose length is zero or not a multiple of 16,
    /// or one following a Last Segment list: Invalid SGL Segment Descriptor
    /// (as QEMU's nvme_map_sgl).
    #[error("invalid SGL segment descriptor")]
    SegmentInvalid,
    /// A segment descriptor that is not the last of its list, or a chain too
    /// long to be real: Invalid Number of SGL Descriptors.
    #[error("invalid number of SGL descriptors")]
    NumberInvalid,
    /// The data descriptors describe less, or more, than the command
    /// transfers (SGLS bit 18, longer SGLs allowed, is clear).
    #[error("SGL describes {have} bytes, the command needs {need}")]
    LengthInvalid { have: u64, need: u64 },
    /// A descriptor or data address outside mapped memory.
    #[error("SGL touched unmapped guest memory: {0}")]
    Transfer(#[from] MemError),
}

impl SglError {
    /// The completion status for this failure.
    pub fn status(&self) -> Status {
        match self {
            SglError::TypeInvalid(_) => Status::SGL_TYPE_INVALID.dnr(),
            SglError::SegmentInvalid => Status::INVALID_SGL_DESCRIPTOR.dnr(),
            SglError::NumberInvalid => Status::INVALID_NUM_SGL_DESCRIPTORS.dnr(),
            SglError::LengthInvalid { .. } => Status::DATA_SGL_LENGTH_INVALID.dnr(),
            SglError::Transfer(_) => Status::DATA_TRANSFER_ERROR.dnr(),
        }
    }
}

#[derive(Clone, Copy)]
struct Descriptor {
    addr: u64,
    len: u32,
    kind: u8,
}

impl Descriptor {
    fn parse(b: &[u8; 16]) -> Result<Descriptor, SglError> {
        let id = b[15];
        let (kind, subtype) = (id >> 4, id & 0xf);
        // Subtype 0h is "Address"; the offset subtypes belong to fabrics.
        let supported = matches!(kind, DATA_BLOCK | BIT_BUCKET | SEGMENT | LAST_SEGMENT);
        if !supported || subtype != 0 {
            return Err(SglError::TypeInvalid(id));
        }
        Ok(Descriptor {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            kind,
        })
    }
}

struct Walk<'a> {
    mem: &'a MemoryMap,
    out: &'a mut Vec<Segment>,
    write: bool,
    need: u64,
    have: u64,
}

impl Walk<'_> {
    /// A data-carrying descriptor: takes what the command still needs.
    fn data(&mut self, d: Descriptor) -> Result<(), SglError> {
        // Bytes the host does not want: only a read can drop them.
        if d.kind == BIT_BUCKET && !self.write {
            return Err(SglError::TypeInvalid(BIT_BUCKET << 4));
        }
        let take = u64::from(d.len);
        if take > self.need - self.have {
            // More than the command transfers: SGLS bit 18 is clear.
            return Err(SglError::LengthInvalid {
                have: self.have + take,
                need: self.need,
            });
        }
        if take == 0 {
            return Ok(());
        }
        if d.kind == BIT_BUCKET {
            self.out.push(Segment {
                target: Target::BitBucket,
                len: take as usize, // from a u32
            });
        } else {
            Segment::push(self.mem, self.out, d.addr, take, self.write)?;
        }
        self.have += take;
        Ok(())
    }
}

/// Walks the SGL whose first descriptor is `sgl1` (SQE bytes 24-39) for a
/// transfer of `len` bytes; `write` is true when the device writes guest
/// memory (a Read). Bit bucket bytes become `Target::BitBucket` segments.
pub fn walk(
    mem: &MemoryMap,
    sgl1: &[u8; 16],
    len: u64,
    write: bool,
    out: &mut Vec<Segment>,
) -> Result<(), SglError> {
    out.clear();
    let mut w = Walk {
        mem,
        out,
        write,
        need: len,
        have: 0,
    };
    let mut d = Descriptor::parse(sgl1)?;
    let mut seen = 0usize;
    let mut in_last = false;
    loop {
        match d.kind {
            DATA_BLOCK | BIT_BUCKET => {
                w.data(d)?;
                break;
            }
            _ => {
                // A segment list: d points to it. No segment may follow a
                // Last Segment list.
                if in_last {
                    return Err(SglError::SegmentInvalid);
                }
                if d.len == 0 || d.len % 16 != 0 {
                    return Err(SglError::SegmentInvalid);
                }
                in_last = d.kind == LAST_SEGMENT;
                let n = (d.len / 16) as usize;
                seen += n;
                if seen > MAX_DESCRIPTORS {
                    return Err(SglError::NumberInvalid);
                }
                let mut next = None;
                for i in 0..n {
                    let at = d
                        .addr
                        .checked_add(i as u64 * 16)
                        .ok_or(MemError::Overflow {
                            iova: d.addr,
                            len: i as u64 * 16,
                        })?;
                    let mut raw = [0u8; 16];
                    mem.read(at, &mut raw)?;
                    let e = Descriptor::parse(&raw)?;
                    match e.kind {
                        SEGMENT | LAST_SEGMENT => {
                            // Only the last descriptor of a list may chain on.
                            if i != n - 1 {
                                return Err(SglError::NumberInvalid);
                            }
                            next = Some(e);
                        }
                        _ => w.data(e)?,
                    }
                }
                match next {
                    Some(e) => d = e,
                    None => break,
                }
            }
        }
    }
    if w.have < w.need {
        return Err(SglError::LengthInvalid {
            have: w.have,
            need: w.need,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestMemory;
    use std::os::fd::AsRawFd;

    fn desc(addr: u64, len: u32, kind: u8) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[15] = kind << 4;
        b
    }

    fn setup() -> (GuestMemory, std::os::fd::OwnedFd) {
        let m = GuestMemory::new();
        let fd = crate::mem::tests::memfd(1 << 20);
        m.map(0x10_0000, 1 << 20, fd.as_raw_fd(), 0, true).unwrap();
        (m, fd)
    }

    #[test]
    fn data_block_and_chained_segments() {
        let (m, _f) = setup();
        let s = m.snapshot();
        let mut out = Vec::new();
        walk(&s, &desc(0x10_0000, 4096, DATA_BLOCK), 4096, true, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        // Segment list of 3 data blocks + a last segment with 2 more.
        let l1 = 0x10_8000;
        let l2 = 0x10_9000;
        s.write(l1, &desc(0x10_0000, 512, DATA_BLOCK)).unwrap();
        s.write(l1 + 16, &desc(0x10_2000, 512, BIT_BUCKET)).unwrap();
        s.write(l1 + 32, &desc(0x10_3000, 1024, DATA_BLOCK))
            .unwrap();
        s.write(l1 + 48, &desc(l2, 32, LAST_SEGMENT)).unwrap();
        s.write(l2, &desc(0x10_4000, 1024, DATA_BLOCK)).unwrap();
        s.write(l2 + 16, &desc(0x10_5000, 1024, DATA_BLOCK))
            .unwrap();
        walk(&s, &desc(l1, 64, SEGMENT), 4096, true, &mut out).unwrap();
        let total: usize = out.iter().map(|x| x.len).sum();
        assert_eq!(total, 4096);
        assert_eq!(out[1].target, Target::BitBucket, "the bit bucket discards");
        // A write may not use a bit bucket.
        assert_eq!(
            walk(&s, &desc(l1, 64, SEGMENT), 4096, false, &mut out),
            Err(SglError::TypeInvalid(0x10))
        );
        // Too short.
        assert_eq!(
            walk(&s, &desc(0x10_0000, 100, DATA_BLOCK), 512, true, &mut out)
                .unwrap_err()
                .status(),
            Status::DATA_SGL_LENGTH_INVALID.dnr()
        );
    }

    #[test]
    fn remote_lists_and_data() {
        let m = GuestMemory::new();
        m.map_remote(0x20_0000, 0x4000, true).unwrap();
        let c = crate::mem::tests::FakeClient::new(0x20_0000, 0x4000);
        m.set_transport(Some(c.clone()));
        let s = m.snapshot();
        let l = 0x20_3000;
        s.write(l, &desc(0x20_0000, 512, DATA_BLOCK)).unwrap();
        s.write(l + 16, &desc(0, 512, BIT_BUCKET)).unwrap();
        s.write(l + 32, &desc(0x20_0200, 1024, DATA_BLOCK)).unwrap();
        let mut out = Vec::new();
        walk(&s, &desc(l, 48, LAST_SEGMENT), 2048, true, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Segment {
                    target: Target::Remote(0x20_0000),
                    len: 512
                },
                Segment {
                    target: Target::BitBucket,
                    len: 512
                },
                Segment {
                    target: Target::Remote(0x20_0200),
                    len: 1024
                },
            ]
        );
        c.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            walk(&s, &desc(l, 48, LAST_SEGMENT), 2048, true, &mut out),
            Err(SglError::Transfer(MemError::Transport { .. }))
        ));
    }

    #[test]
    fn invalid_descriptors_get_their_status() {
        let (m, _f) = setup();
        let s = m.snapshot();
        let mut out = Vec::new();
        let mut keyed = desc(0x10_0000, 512, 4);
        assert_eq!(
            walk(&s, &keyed, 512, true, &mut out),
            Err(SglError::TypeInvalid(0x40))
        );
        keyed[15] = 0x01; // data block, offset subtype
        assert!(matches!(
            walk(&s, &keyed, 512, true, &mut out),
            Err(SglError::TypeInvalid(_))
        ));
        assert_eq!(
            walk(&s, &desc(0x10_8000, 24, SEGMENT), 512, true, &mut out),
            Err(SglError::SegmentInvalid)
        );
        // A segment descriptor in the middle of a list.
        let l = 0x10_8000;
        s.write(l, &desc(0x10_9000, 16, SEGMENT)).unwrap();
        s.write(l + 16, &desc(0x10_0000, 512, DATA_BLOCK)).unwrap();
        assert_eq!(
            walk(&s, &desc(l, 32, SEGMENT), 512, true, &mut out),
            Err(SglError::NumberInvalid)
        );
        // Longer than the transfer (SGLS bit 18 clear).
        assert!(matches!(
            walk(&s, &desc(0x10_0000, 1024, DATA_BLOCK), 512, true, &mut out),
            Err(SglError::LengthInvalid { .. })
        ));
        // A segment after a last segment.
        s.write(l, &desc(0x10_9000, 16, SEGMENT)).unwrap();
        assert_eq!(
            walk(&s, &desc(l, 16, LAST_SEGMENT), 512, true, &mut out),
            Err(SglError::SegmentInvalid)
        );
        // Unmapped data.
        assert!(matches!(
            walk(&s, &desc(0x9000_0000, 512, DATA_BLOCK), 512, true, &mut out),
            Err(SglError::Transfer(_))
        ));
        // A segment pointing at itself ends.
        s.write(l, &desc(l, 16, SEGMENT)).unwrap();
        assert_eq!(
            walk(&s, &desc(l, 16, SEGMENT), 512, true, &mut out),
            Err(SglError::NumberInvalid)
        );
    }
}
