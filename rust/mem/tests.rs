//! Tests of guest memory: mapping, bounds, remote regions.

use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) fn memfd(size: u64) -> OwnedFd {
    memfd_with(size, libc::MFD_CLOEXEC)
}

/// A memfd that allows sealing, `size` bytes long.
pub(crate) fn sealable_memfd(size: u64) -> OwnedFd {
    memfd_with(size, libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
}

fn memfd_with(size: u64, flags: libc::c_uint) -> OwnedFd {
    // SAFETY: memfd_create with a valid C string; we own the returned fd.
    let fd = unsafe { libc::memfd_create(c"nvmefast-test".as_ptr(), flags) };
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

/// Shrinks `fd` to `size` bytes; the errno on failure.
pub(crate) fn truncate(fd: &OwnedFd, size: u64) -> Result<(), i32> {
    // SAFETY: ftruncate on an fd we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn kinds(m: &GuestMemory) -> Vec<Kind> {
    m.snapshot()
        .region_info()
        .into_iter()
        .map(|r| r.3)
        .collect()
}

#[test]
fn a_truncated_region_faults_into_zero_pages_and_is_retired_once() {
    let m = GuestMemory::new();
    let fd = memfd(0x4000);
    let other = memfd(0x1000);
    m.map(0x10000, 0x4000, fd.as_raw_fd(), 0, true).unwrap();
    m.map(0x20000, 0x1000, other.as_raw_fd(), 0, true).unwrap();
    assert_eq!(kinds(&m), vec![Kind::Guarded, Kind::Guarded]);
    let s = m.snapshot();
    s.write(0x13000, b"gone soon").unwrap();
    s.write(0x20000, b"kept").unwrap();
    assert!(!s.lost());
    truncate(&fd, 0x1000).unwrap();
    // Past the new end: the access faults, the guard swaps in zero pages,
    // and the copy completes (with zeroes) instead of killing the process.
    let mut b = [0xffu8; 9];
    s.read(0x13000, &mut b).unwrap();
    assert_eq!(b, [0; 9]);
    assert!(s.lost(), "the snapshot learns its region faulted");
    assert!(s.range_lost(0x13000, 1) && s.range_lost(0x10000, 1));
    assert!(!s.range_lost(0x20000, 0x1000));
    // Until it is refreshed the map still holds the faulted region (its
    // zero pages): new snapshots see the loss too.
    assert!(m.snapshot().lost());
    assert_eq!(m.lost_regions(), 0);
    // Refreshed, the whole region is lost: every access fails without
    // touching memory, the page still in the file included.
    let n = m.refresh();
    assert!(!n.lost(), "nothing new lost since this snapshot");
    assert_eq!(
        n.read(0x10000, &mut [0u8; 4]),
        Err(MemError::Lost {
            iova: 0x10000,
            len: 4
        })
    );
    assert!(matches!(
        n.atomic_u64(0x10008, true),
        Err(MemError::Lost { .. })
    ));
    let mut k = [0u8; 4];
    n.read(0x20000, &mut k).unwrap();
    assert_eq!(&k, b"kept", "the other region is untouched");
    assert_eq!(kinds(&m), vec![Kind::Lost, Kind::Guarded]);
    assert_eq!(m.lost_regions(), 1);
    assert!(m.losses_due());
    assert_eq!(m.take_losses(), vec![(0x10000, 0x4000)]);
    assert!(!m.losses_due());
    // Counted once: more refreshes and accesses find nothing new.
    let _ = m.refresh().read(0x13000, &mut b);
    assert_eq!(m.lost_regions(), 1);
    assert!(m.take_losses().is_empty());
    drop((s, n));
    // Unmapping a lost region unmaps its zero pages and unregisters it.
    let before = guard::registered();
    m.unmap(0x10000, 0x4000).unwrap();
    assert_eq!(guard::registered(), before - 1);
    assert_eq!(kinds(&m), vec![Kind::Guarded]);
}

#[test]
fn a_write_into_a_truncated_region_is_caught_too() {
    let m = GuestMemory::new();
    let fd = memfd(0x2000);
    m.map(0, 0x2000, fd.as_raw_fd(), 0, true).unwrap();
    let s = m.snapshot();
    truncate(&fd, 0).unwrap();
    s.write(0x1ff8, &[1; 8]).unwrap();
    assert!(s.lost());
    // The zero pages are private: the file (now empty) never sees the write.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a valid buffer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    assert_eq!(st.st_size, 0);
}

#[test]
fn a_sealed_memfd_cannot_shrink_and_is_not_guarded() {
    let m = GuestMemory::new();
    let fd = sealable_memfd(0x2000);
    // SAFETY: fcntl on our own fd.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    assert_eq!(
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
        0
    );
    m.map(0, 0x2000, fd.as_raw_fd(), 0, true).unwrap();
    assert_eq!(kinds(&m), vec![Kind::Sealed]);
    assert!(!m.snapshot().guarded());
    assert_eq!(truncate(&fd, 0x1000), Err(libc::EPERM), "the seal is real");
    // Unsealed but sealable: guarded like any other fd.
    let open = sealable_memfd(0x1000);
    m.map(0x10000, 0x1000, open.as_raw_fd(), 0, true).unwrap();
    assert_eq!(kinds(&m), vec![Kind::Sealed, Kind::Guarded]);
    assert!(m.snapshot().guarded());
}

#[test]
fn a_plain_file_truncated_under_the_device_is_caught() {
    let dir = std::env::temp_dir().join(format!("nvmefast-guard-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dir)
        .unwrap();
    let _ = std::fs::remove_file(&dir);
    f.set_len(0x3000).unwrap();
    let fd: OwnedFd = f.into();
    let m = GuestMemory::new();
    m.map(0x1000, 0x3000, fd.as_raw_fd(), 0, false).unwrap();
    assert_eq!(kinds(&m), vec![Kind::Guarded]);
    let s = m.snapshot();
    truncate(&fd, 0).unwrap();
    assert_eq!(s.read_u64(0x1000), Ok(0));
    assert!(s.lost());
    assert_eq!(kinds(&m), vec![Kind::Lost]);
}

#[test]
fn another_maps_loss_costs_this_one_nothing() {
    let a = GuestMemory::new();
    let b = GuestMemory::new();
    let fa = memfd(0x1000);
    let fb = memfd(0x1000);
    a.map(0, 0x1000, fa.as_raw_fd(), 0, true).unwrap();
    b.map(0, 0x1000, fb.as_raw_fd(), 0, true).unwrap();
    let sb = b.snapshot();
    sb.write(0, b"b's").unwrap();
    truncate(&fa, 0).unwrap();
    a.snapshot().read(0, &mut [0u8; 1]).unwrap();
    // The epoch moved (a's fault) but none of b's regions is lost.
    assert!(!sb.lost());
    let mut x = [0u8; 3];
    b.snapshot().read(0, &mut x).unwrap();
    assert_eq!(&x, b"b's");
    assert_eq!(b.lost_regions(), 0);
    assert_eq!(kinds(&b), vec![Kind::Guarded]);
}
