//! Physical Region Page walking (NVMe Base 2.0, 4.1.1), translated to host
//! pointers (or remote IOVAs) against one guest memory snapshot.
//!
//! Every entry is checked before any data moves, so a bad entry half-way
//! through a write never leaves a half-written range behind.

pub use super::segment::{Segment, Target};
use crate::mem::{MemError, MemoryMap};
use crate::spec::Status;

/// Why a PRP walk failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrpError {
    /// An entry has an offset where the spec requires none (or PRP1/the list
    /// pointer is not dword/qword aligned): PRP Offset Invalid.
    #[error("PRP entry {entry:#x} has an invalid offset")]
    InvalidOffset { entry: u64 },
    /// An entry or list points outside mapped guest memory: Data Transfer Error.
    #[error("PRP walk touched unmapped guest memory: {0}")]
    Transfer(#[from] MemError),
}

impl PrpError {
    /// The completion status the spec names for this failure.
    pub fn status(&self) -> Status {
        match self {
            PrpError::InvalidOffset { .. } => Status::INVALID_PRP_OFFSET.dnr(),
            PrpError::Transfer(_) => Status::DATA_TRANSFER_ERROR.dnr(),
        }
    }
}

#[inline]
fn push(
    mem: &MemoryMap,
    out: &mut Vec<Segment>,
    iova: u64,
    len: u64,
    write: bool,
) -> Result<(), PrpError> {
    // Contiguous pages become one copy (or one transport message).
    Ok(Segment::push(mem, out, iova, len, write)?)
}

/// Walks `prp1`/`prp2` for a transfer of `len` bytes with memory page size
/// `page` (a power of two), filling `out` with segments. `write` is
/// true when the device writes guest memory (a Read command).
pub fn walk(
    mem: &MemoryMap,
    prp1: u64,
    prp2: u64,
    len: u64,
    page: u64,
    write: bool,
    out: &mut Vec<Segment>,
) -> Result<(), PrpError> {
    out.clear();
    if len == 0 {
        return Ok(());
    }
    let mask = page - 1;
    // PRP1 may carry an offset into its page, but it must be dword aligned.
    if prp1 & 3 != 0 {
        return Err(PrpError::InvalidOffset { entry: prp1 });
    }
    let first = len.min(page - (prp1 & mask));
    push(mem, out, prp1, first, write)?;
    let mut rem = len - first;
    if rem == 0 {
        return Ok(());
    }
    if rem <= page {
        // PRP2 is the second data page and has no offset.
        if prp2 & mask != 0 {
            return Err(PrpError::InvalidOffset { entry: prp2 });
        }
        return push(mem, out, prp2, rem, write);
    }
    // PRP2 points to a PRP list; its entries are qwords.
    if prp2 & 7 != 0 {
        return Err(PrpError::InvalidOffset { entry: prp2 });
    }
    let mut list = prp2;
    loop {
        let slots = (page - (list & mask)) / 8;
        let mut i = 0;
        loop {
            let at = list.checked_add(i * 8).ok_or(MemError::Overflow {
                iova: list,
                len: i * 8,
            })?;
            let entry = mem.read_u64(at)?;
            if entry & mask != 0 {
                return Err(PrpError::InvalidOffset { entry });
            }
            if i == slots - 1 && rem > page {
                // The last slot of a list page chains to the next list page.
                // It is page aligned (checked above), so every later list page
                // holds page/8 >= 2 slots and each pass moves data forward:
                // a list pointing at itself cannot loop forever.
                list = entry;
                break;
            }
            let n = rem.min(page);
            push(mem, out, entry, n, write)?;
            rem -= n;
            if rem == 0 {
                return Ok(());
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestMemory;
    use std::os::fd::AsRawFd;

    const P: u64 = 4096;

    fn setup() -> (GuestMemory, std::os::fd::OwnedFd) {
        let m = GuestMemory::new();
        let fd = crate::mem::tests::memfd(64 * P);
        m.map(0x10_0000, 64 * P, fd.as_raw_fd(), 0, true).unwrap();
        (m, fd)
    }

    fn total(s: &[Segment]) -> usize {
        s.iter().map(|s| s.len).sum()
    }

    #[test]
    fn single_page_with_offset() {
        let (m, _f) = setup();
        let s = m.snapshot();
        let mut out = Vec::new();
        walk(&s, 0x10_0200, 0, 512, P, true, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len, 512);
        // Crossing into PRP2.
        walk(&s, 0x10_0e00, 0x10_5000, 1024, P, true, &mut out).unwrap();
        assert_eq!(total(&out), 1024);
        assert_eq!(out.len(), 2);
        assert_eq!(
            walk(&s, 0x10_0e00, 0x10_5008, 1024, P, true, &mut out),
            Err(PrpError::InvalidOffset { entry: 0x10_5008 })
        );
        assert_eq!(
            walk(&s, 0x10_0e02, 0, 16, P, true, &mut out),
            Err(PrpError::InvalidOffset { entry: 0x10_0e02 })
        );
    }

    #[test]
    fn list_and_chained_list() {
        let (m, _f) = setup();
        let s = m.snapshot();
        // A list at page 1 whose last slot chains to a list at page 2.
        let list1: u64 = 0x10_1000;
        let list2: u64 = 0x10_2000;
        let data = |k: u64| 0x10_0000 + (8 + k % 40) * P;
        for i in 0..511u64 {
            s.write(list1 + i * 8, &data(i).to_le_bytes()).unwrap();
        }
        s.write(list1 + 511 * 8, &list2.to_le_bytes()).unwrap();
        for i in 0..10u64 {
            s.write(list2 + i * 8, &data(511 + i).to_le_bytes())
                .unwrap();
        }
        let mut out = Vec::new();
        // 1 page from PRP1 + 511 from list1 + 10 from list2.
        let len = (1 + 511 + 10) * P;
        walk(&s, 0x10_3000, list1, len, P, false, &mut out).unwrap();
        assert_eq!(total(&out) as u64, len);
        // A bad entry anywhere fails the whole walk.
        s.write(list2 + 9 * 8, &(data(3) + 8).to_le_bytes())
            .unwrap();
        assert!(matches!(
            walk(&s, 0x10_3000, list1, len, P, false, &mut out),
            Err(PrpError::InvalidOffset { .. })
        ));
        // An unmapped data page is a transfer error.
        s.write(list2 + 9 * 8, &0x9999_0000u64.to_le_bytes())
            .unwrap();
        let e = walk(&s, 0x10_3000, list1, len, P, false, &mut out).unwrap_err();
        assert_eq!(e.status(), Status::DATA_TRANSFER_ERROR.dnr());
        // An unmapped list is a transfer error too.
        let e = walk(&s, 0x10_3000, 0x7700_0000, 3 * P, P, false, &mut out).unwrap_err();
        assert!(matches!(e, PrpError::Transfer(_)));
    }

    #[test]
    fn self_referencing_list_terminates() {
        let (m, _f) = setup();
        let s = m.snapshot();
        let list: u64 = 0x10_1000;
        for i in 0..512u64 {
            s.write(list + i * 8, &list.to_le_bytes()).unwrap();
        }
        let mut out = Vec::new();
        // Huge length: the walk must end (each pass consumes 511 pages of `rem`).
        walk(&s, 0x10_0000, list, 4000 * P, P, false, &mut out).unwrap();
        assert_eq!(total(&out) as u64, 4000 * P);
    }

    #[test]
    fn contiguous_pages_merge() {
        let (m, _f) = setup();
        let s = m.snapshot();
        let list: u64 = 0x10_1000;
        for i in 0..3u64 {
            s.write(list + i * 8, &(0x10_5000 + i * P).to_le_bytes())
                .unwrap();
        }
        let mut out = Vec::new();
        walk(&s, 0x10_4000, list, 4 * P, P, true, &mut out).unwrap();
        assert_eq!(out.len(), 1, "four adjacent pages are one segment");
        assert_eq!(out[0].len as u64, 4 * P);
    }

    #[test]
    fn remote_lists_and_pages_become_remote_segments() {
        let m = GuestMemory::new();
        m.map_remote(0x10_0000, 16 * P, true).unwrap();
        let c = crate::mem::tests::FakeClient::new(0x10_0000, 16 * P as usize);
        m.set_transport(Some(c.clone()));
        let s = m.snapshot();
        let list: u64 = 0x10_1000;
        for (i, page) in [0x10_5000u64, 0x10_6000, 0x10_9000].iter().enumerate() {
            s.write(list + i as u64 * 8, &page.to_le_bytes()).unwrap();
        }
        let mut out = Vec::new();
        walk(&s, 0x10_4000, list, 4 * P, P, true, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Segment {
                    target: Target::Remote(0x10_4000),
                    len: 3 * P as usize
                },
                Segment {
                    target: Target::Remote(0x10_9000),
                    len: P as usize
                },
            ]
        );
        // A list the client cannot deliver is a transfer error.
        c.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = walk(&s, 0x10_4000, list, 4 * P, P, true, &mut out).unwrap_err();
        assert_eq!(e.status(), Status::DATA_TRANSFER_ERROR.dnr());
    }

    proptest::proptest! {
        #[test]
        fn walk_never_panics_and_covers_len(prp1 in 0u64..0x50_0000, prp2 in 0u64..0x50_0000, len in 0u64..(80 * P)) {
            let (m, _f) = setup();
            let s = m.snapshot();
            let mut out = Vec::new();
            if walk(&s, prp1, prp2, len, P, false, &mut out).is_ok() {
                proptest::prop_assert_eq!(total(&out) as u64, len);
            }
        }
    }
}
