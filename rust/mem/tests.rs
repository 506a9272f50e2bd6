//! Tests of guest memory: mapping, bounds, remote regions.

use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) fn memfd(size: u64) -> OwnedFd {
    // SAFETY: memfd_create with a valid C string; we own the returned fd.
    let fd = unsafe { libc::memfd_create(c"nvmefast-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh memfd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own fd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) }, 0);
    fd
}

#[test]
fn map_translate_bounds() {
    let m = GuestMemory::new();
    let fd = memfd(0x10000);
    m.map(0x1_0000_0000, 0x4000, fd.as_raw_fd(), 0x1000, true)
        .unwrap();
    let s = m.snapshot();
    assert!(s.translate(0x1_0000_0000, 0x4000, true).is_ok());
    assert!(s.translate(0x1_0000_3fff, 1, true).is_ok());
    assert_eq!(
        s.translate(0x1_0000_3fff, 2, false),
        Err(MemError::Unmapped {
            iova: 0x1_0000_3fff,
            len: 2
        })
    );
    assert!(s.translate(0xffff_ffff, 1, false).is_err());
    assert!(s.translate(u64::MAX, 2, false).is_err());
    s.write(0x1_0000_0010, b"hello").unwrap();
    let mut b = [0u8; 5];
    s.read(0x1_0000_0010, &mut b).unwrap();
    assert_eq!(&b, b"hello");
}

#[test]
fn offset_is_honoured_and_unaligned_offsets_work() {
    let m = GuestMemory::new();
    let fd = memfd(0x3000);
    m.map(0, 0x1000, fd.as_raw_fd(), 0x1000, true).unwrap();
    m.map(0x10000, 0x100, fd.as_raw_fd(), 0x1008, true).unwrap();
    let s = m.snapshot();
    s.write(0x8, &[0xab; 4]).unwrap();
    let mut b = [0u8; 4];
    s.read(0x10000, &mut b).unwrap();
    assert_eq!(b, [0xab; 4], "both mappings see the same file bytes");
}

#[test]
fn overlap_unmap_and_errors() {
    let m = GuestMemory::new();
    let fd = memfd(0x4000);
    m.map(0x2000, 0x2000, fd.as_raw_fd(), 0, true).unwrap();
    assert!(matches!(
        m.map(0x3000, 0x2000, fd.as_raw_fd(), 0, true),
        Err(MemError::Overlap { .. })
    ));
    assert!(matches!(
        m.map(0x1000, 0x1001, fd.as_raw_fd(), 0, true),
        Err(MemError::Overlap { .. })
    ));
    m.map(0x1000, 0x1000, fd.as_raw_fd(), 0, true).unwrap();
    assert_eq!(
        m.map(0x9000, 0, fd.as_raw_fd(), 0, true),
        Err(MemError::ZeroSize)
    );
    assert!(matches!(
        m.map(0x9000, 0x1000, fd.as_raw_fd(), 0x3800, true),
        Err(MemError::PastEnd { .. })
    ));
    assert!(matches!(
        m.map(0x9000, 0x1000, -1, 0, true),
        Err(MemError::BadFd { .. })
    ));
    assert!(matches!(
        m.map(u64::MAX, 2, fd.as_raw_fd(), 0, true),
        Err(MemError::Overflow { .. })
    ));
    assert_eq!(
        m.unmap(0x2000, 0x1000),
        Err(MemError::NotMapped {
            iova: 0x2000,
            size: 0x1000
        })
    );
    let held = m.snapshot();
    m.unmap(0x2000, 0x2000).unwrap();
    // A snapshot taken before unmap still reads safely; a new one does not see it.
    let mut b = [0u8; 8];
    held.read(0x2000, &mut b).unwrap();
    assert!(m.snapshot().read(0x2000, &mut b).is_err());
    assert_eq!(m.snapshot().regions(), vec![(0x1000, 0x1000, true)]);
}

/// A client's memory behind the transport: `base`-relative bytes, a log
/// of (is_write, iova, len) calls, and a switch that makes calls fail.
pub(crate) struct FakeClient {
    pub base: u64,
    pub bytes: Mutex<Vec<u8>>,
    pub log: Mutex<Vec<(bool, u64, usize)>>,
    pub fail: std::sync::atomic::AtomicBool,
}

impl FakeClient {
    pub(crate) fn new(base: u64, size: usize) -> Arc<FakeClient> {
        Arc::new(FakeClient {
            base,
            bytes: Mutex::new(vec![0; size]),
            log: Mutex::new(Vec::new()),
            fail: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn range(&self, iova: u64, len: usize) -> Result<std::ops::Range<usize>, String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("client went away".into());
        }
        let at = iova
            .checked_sub(self.base)
            .ok_or("below the client's memory")? as usize;
        Ok(at..at + len)
    }
}

impl DmaTransport for FakeClient {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String> {
        self.log.lock().unwrap().push((false, iova, buf.len()));
        let r = self.range(iova, buf.len())?;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String> {
        self.log.lock().unwrap().push((true, iova, data.len()));
        let r = self.range(iova, data.len())?;
        self.bytes.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn remote_regions_go_through_the_transport() {
    let m = GuestMemory::new();
    m.map_remote(0x10_0000, 0x2000, true).unwrap();
    let s = m.snapshot();
    let mut b = [0u8; 4];
    assert_eq!(
        s.read(0x10_0000, &mut b),
        Err(MemError::NoTransport {
            iova: 0x10_0000,
            len: 4
        })
    );
    let c = FakeClient::new(0x10_0000, 0x2000);
    m.set_transport(Some(c.clone()));
    let s = m.snapshot();
    s.write(0x10_0010, b"abcd").unwrap();
    assert_eq!(&c.bytes.lock().unwrap()[0x10..0x14], b"abcd");
    c.bytes.lock().unwrap()[0x100..0x108].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(s.read_u64(0x10_0100).unwrap(), 0x1122_3344_5566_7788);
    s.read(0x10_0010, &mut b).unwrap();
    assert_eq!(&b, b"abcd");
    assert_eq!(
        *c.log.lock().unwrap(),
        vec![
            (true, 0x10_0010, 4),
            (false, 0x10_0100, 8),
            (false, 0x10_0010, 4)
        ]
    );
    // No host address, and no atomics: callers fall back to copies.
    assert_eq!(
        s.translate(0x10_0000, 16, true),
        Err(MemError::Remote {
            iova: 0x10_0000,
            len: 16
        })
    );
    assert!(matches!(s.atomic_u64(0x10_0000, true), Ok(None)));
    assert!(matches!(s.atomic_u32(0x10_0000, false), Ok(None)));
    // Bounds are the region's, as for fd regions: the transport never
    // sees a range that leaves it.
    assert_eq!(
        s.read(0x10_1ffc, &mut [0u8; 8]),
        Err(MemError::Unmapped {
            iova: 0x10_1ffc,
            len: 8
        })
    );
    assert!(s.atomic_u64(0x10_1ffc, false).is_err());
    c.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        s.write(0x10_0000, b"x"),
        Err(MemError::Transport {
            iova: 0x10_0000,
            len: 1,
            ..
        })
    ));
    m.set_transport(None);
    assert!(matches!(
        m.snapshot().read_u64(0x10_0000),
        Err(MemError::NoTransport { .. })
    ));
}

#[test]
fn remote_regions_are_read_only_when_mapped_so() {
    let m = GuestMemory::new();
    let c = FakeClient::new(0, 0x1000);
    m.set_transport(Some(c.clone()));
    m.map_remote(0, 0x1000, false).unwrap();
    let s = m.snapshot();
    assert_eq!(s.write(0, b"x"), Err(MemError::ReadOnly { iova: 0 }));
    assert!(matches!(
        s.atomic_u64(0, true),
        Err(MemError::ReadOnly { iova: 0 })
    ));
    s.read(0, &mut [0u8; 1]).unwrap();
    assert_eq!(
        c.log.lock().unwrap().len(),
        1,
        "the refused write sent nothing"
    );
}

#[test]
fn remote_and_fd_regions_share_overlap_and_unmap_rules() {
    let m = GuestMemory::new();
    let fd = memfd(0x4000);
    m.map(0x2000, 0x2000, fd.as_raw_fd(), 0, true).unwrap();
    assert!(matches!(
        m.map_remote(0x3000, 0x2000, true),
        Err(MemError::Overlap { other: 0x2000, .. })
    ));
    assert_eq!(m.map_remote(0x9000, 0, true), Err(MemError::ZeroSize));
    assert!(matches!(
        m.map_remote(u64::MAX, 2, true),
        Err(MemError::Overflow { .. })
    ));
    m.map_remote(0x4000, 0x1000, false).unwrap();
    assert!(matches!(
        m.map(0x4800, 0x1000, fd.as_raw_fd(), 0, true),
        Err(MemError::Overlap { other: 0x4000, .. })
    ));
    m.map_remote(0x1000, 0x1000, true).unwrap();
    assert_eq!(
        m.snapshot().regions(),
        vec![
            (0x1000, 0x1000, true),
            (0x2000, 0x2000, true),
            (0x4000, 0x1000, false)
        ]
    );
    // A range spanning an fd region and a remote one is in no one region.
    assert!(matches!(
        m.snapshot().translate(0x3ff8, 16, false),
        Err(MemError::Unmapped { .. })
    ));
    assert_eq!(
        m.unmap(0x4000, 0x800),
        Err(MemError::NotMapped {
            iova: 0x4000,
            size: 0x800
        })
    );
    m.unmap(0x4000, 0x1000).unwrap();
    assert!(matches!(
        m.snapshot().read(0x4000, &mut [0u8; 1]),
        Err(MemError::Unmapped { .. })
    ));
    // Unmapping keeps the transport; clear keeps it too.
    let c = FakeClient::new(0x1000, 0x1000);
    m.set_transport(Some(c.clone()));
    m.unmap(0x2000, 0x2000).unwrap();
    m.snapshot().write(0x1000, b"y").unwrap();
    m.clear();
    m.map_remote(0x1000, 0x1000, true).unwrap();
    m.snapshot().write(0x1001, b"z").unwrap();
    assert_eq!(&c.bytes.lock().unwrap()[..2], b"yz");
}

#[test]
fn read_only_regions_refuse_device_writes() {
    let m = GuestMemory::new();
    let fd = memfd(0x1000);
    m.map(0, 0x1000, fd.as_raw_fd(), 0, false).unwrap();
    let s = m.snapshot();
    assert_eq!(s.write(0, b"x"), Err(MemError::ReadOnly { iova: 0 }));
    let mut b = [0u8; 1];
    s.read(0, &mut b).unwrap();
}
