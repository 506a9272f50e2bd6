//! Guest memory: DMA regions mapped from file descriptors, as vfio-user's
//! DMA_MAP hands them over, with bounds-checked access by IOVA.
//!
//! The map is swapped RCU-style: readers (workers) load an `Arc` snapshot
//! once per batch and translate against it without locks; `map`/`unmap`
//! build a new snapshot and swap it in. An unmapped region is `munmap`ed
//! only when the last snapshot holding it is dropped, so unmapping while I/O
//! runs can make later commands fail with a Data Transfer Error but can never
//! make a worker touch unmapped host memory.
//!
//! vm-memory offers the same shape (`GuestMemoryAtomic`); this module stays
//! hand-written because the hot path wants one binary search and a raw
//! pointer per PRP segment, and IOVA regions here may sit anywhere in a
//! 64-bit space with holes, as vfio-user clients place them.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Errors of guest memory mapping and access.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemError {
    /// The requested guest range is not inside one mapped region.
    #[error("guest range {iova:#x}+{len:#x} is not mapped")]
    Unmapped { iova: u64, len: u64 },
    /// A device write hit a region mapped read-only.
    #[error("guest range at {iova:#x} is mapped read-only")]
    ReadOnly { iova: u64 },
    /// Address arithmetic overflowed 64 bits.
    #[error("guest address {iova:#x}+{len:#x} overflows")]
    Overflow { iova: u64, len: u64 },
    /// A DMA mapping of zero bytes was requested.
    #[error("DMA mapping size must be greater than zero")]
    ZeroSize,
    /// The new mapping overlaps an existing one.
    #[error("DMA range {iova:#x}+{size:#x} overlaps the mapping at {other:#x}+{other_size:#x}; unmap it first")]
    Overlap {
        iova: u64,
        size: u64,
        other: u64,
        other_size: u64,
    },
    /// No mapping covers exactly the range to unmap.
    #[error(
        "no DMA mapping is exactly {iova:#x}+{size:#x}; unmap whole mappings as they were mapped"
    )]
    NotMapped { iova: u64, size: u64 },
    /// The file descriptor cannot back guest memory.
    #[error("fd {fd} cannot be mapped: {reason}")]
    BadFd { fd: RawFd, reason: String },
    /// The mapping would extend past the end of the file, where access faults.
    #[error("fd {fd} is {file_size:#x} bytes long; offset {offset:#x} + size {size:#x} goes past its end")]
    PastEnd {
        fd: RawFd,
        offset: u64,
        size: u64,
        file_size: u64,
    },
}

/// One mapped DMA region. Owns its host mapping.
pub struct Region {
    iova: u64,
    len: u64,
    /// Host address of `iova`.
    host: *mut u8,
    /// The page-aligned mapping as returned by mmap, for munmap.
    map_base: *mut libc::c_void,
    map_len: usize,
    writable: bool,
}

// SAFETY: a Region is an owned shared mapping; its pointers are only
// dereferenced through bounds-checked accessors, and concurrent access to
// guest memory is inherent (the guest itself writes it concurrently), so the
// type carries no thread-affine state.
unsafe impl Send for Region {}
// SAFETY: as for Send: all access goes through raw-pointer copies and atomics.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: map_base/map_len are exactly what mmap returned in
        // Region::map, and no snapshot references this region any more (we
        // are in its last Arc's drop).
        unsafe {
            libc::munmap(self.map_base, self.map_len);
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

impl Region {
    /// Maps `size` bytes of `fd` at `offset` for guest range `iova`.
    ///
    /// mmap wants a page-aligned file offset, so the offset is aligned down and
    /// the host pointer adjusted, as libvfio-user does.
    fn map(
        iova: u64,
        size: u64,
        fd: RawFd,
        offset: u64,
        writable: bool,
    ) -> Result<Region, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize);
        }
        iova.checked_add(size - 1)
            .ok_or(MemError::Overflow { iova, len: size })?;
        let bad = |reason: String| MemError::BadFd { fd, reason };
        // SAFETY: fstat writes only into the stat buffer we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable stat buffer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(bad(std::io::Error::last_os_error().to_string()));
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            // Touching a shared mapping past the end of a file raises SIGBUS:
            // refuse such a mapping up front.
            let file_size = st.st_size as u64;
            let end = offset.checked_add(size).ok_or(MemError::Overflow {
                iova: offset,
                len: size,
            })?;
            if end > file_size {
                return Err(MemError::PastEnd {
                    fd,
                    offset,
                    size,
                    file_size,
                });
            }
        }
        let page = page_size();
        let delta = offset % page;
        let map_off = offset - delta;
        let map_len = usize::try_from(
            size.checked_add(delta)
                .ok_or(MemError::Overflow { iova, len: size })?,
        )
        .map_err(|_| bad("size does not fit the host address space".into()))?;
        let off = libc::off_t::try_from(map_off)
            .map_err(|_| bad(format!("offset {offset:#x} too large")))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping chosen by the kernel (no MAP_FIXED),
        // so it cannot clobber existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(bad(std::io::Error::last_os_error().to_string()));
        }
        Ok(Region {
            iova,
            len: size,
            // SAFETY: delta < page <= map_len, so the result is inside the mapping.
            host: unsafe { (base as *mut u8).add(delta as usize) },
            map_base: base,
            map_len,
            writable,
        })
    }

    fn end(&self) -> u64 {
        // Cannot overflow: checked in Region::map.
        self.iova + (self.len - 1)
    }
}

/// An immutable snapshot of the DMA map, sorted by IOVA, non-overlapping.
#[derive(Default)]
pub struct MemoryMap {
    regions: Vec<Arc<Region>>,
}

impl MemoryMap {
    /// Host pointer for guest range `[iova, iova+len)`, which must lie inside
    /// one region (and a writable one when `write`). `len` may be 0.
    #[inline]
    pub fn translate(&self, iova: u64, len: u64, write: bool) -> Result<*mut u8, MemError> {
        let last = iova
            .checked_add(len.saturating_sub(1))
            .ok_or(MemError::Overflow { iova, len })?;
        // Index of the first region starting above iova; the candidate is the one before.
        let idx = self.regions.partition_point(|r| r.iova <= iova);
        let r = match idx.checked_sub(1) {
            Some(i) => &self.regions[i],
            None => return Err(MemError::Unmapped { iova, len }),
        };
        if last > r.end() {
            return Err(MemError::Unmapped { iova, len });
        }
        if write && !r.writable {
            return Err(MemError::ReadOnly { iova });
        }
        // SAFETY: iova - r.iova < r.len, so the pointer stays inside the mapping.
        Ok(unsafe { r.host.add((iova - r.iova) as usize) })
    }

    /// Copies guest memory at `iova` into `dst`.
    pub fn read(&self, iova: u64, dst: &mut [u8]) -> Result<(), MemError> {
        let p = self.translate(iova, dst.len() as u64, false)?;
        // SAFETY: translate checked that dst.len() bytes at p are mapped;
        // dst is a distinct host buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into guest memory at `iova`.
    pub fn write(&self, iova: u64, src: &[u8]) -> Result<(), MemError> {
        let p = self.translate(iova, src.len() as u64, true)?;
        // SAFETY: translate checked that src.len() writable bytes at p are
        // mapped; src is a distinct host buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Reads a little-endian u64 (a PRP list entry).
    #[inline]
    pub fn read_u64(&self, iova: u64) -> Result<u64, MemError> {
        let p = self.translate(iova, 8, false)?;
        // SAFETY: translate checked that 8 bytes at p are mapped; the read is
        // unaligned-safe because a region may start at any fd offset.
        Ok(u64::from_le(unsafe {
            std::ptr::read_unaligned(p as *const u64)
        }))
    }

    /// An atomic view of a u64 in guest memory for ordered stores (CQEs).
    ///
    /// Returns None when the host address is not 8-byte aligned (a region
    /// mapped at an fd offset that is not 8-aligned): callers then fall back
    /// to plain copies.
    #[inline]
    pub fn atomic_u64(&self, iova: u64, write: bool) -> Result<Option<&AtomicU64>, MemError> {
        let p = self.translate(iova, 8, write)?;
        if (p as usize) % 8 != 0 {
            return Ok(None);
        }
        // SAFETY: 8 mapped, aligned bytes that live as long as this snapshot
        // (the region is kept mapped by the Arc in self.regions); all device
        // accesses to it are atomic or raw copies, never references.
        Ok(Some(unsafe { AtomicU64::from_ptr(p as *mut u64) }))
    }

    /// An atomic view of a u32 in guest memory (shadow doorbells, polling).
    #[inline]
    pub fn atomic_u32(&self, iova: u64, write: bool) -> Result<Option<&AtomicU32>, MemError> {
        let p = self.translate(iova, 4, write)?;
        if (p as usize) % 4 != 0 {
            return Ok(None);
        }
        // SAFETY: as in atomic_u64, for 4 aligned bytes.
        Ok(Some(unsafe { AtomicU32::from_ptr(p as *mut u32) }))
    }

    /// The regions as (iova, size, writable), ascending.
    pub fn regions(&self) -> Vec<(u64, u64, bool)> {
        self.regions
            .iter()
            .map(|r| (r.iova, r.len, r.writable))
            .collect()
    }
}

/// The guest memory of one controller.
pub struct GuestMemory {
    map: ArcSwap<MemoryMap>,
    /// Serialises writers so two concurrent map/unmap calls cannot lose one another.
    writer: Mutex<()>,
}

impl Default for GuestMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestMemory {
    /// Empty guest memory.
    pub fn new() -> Self {
        GuestMemory {
            map: ArcSwap::from_pointee(MemoryMap::default()),
            writer: Mutex::new(()),
        }
    }

    /// The current map; hold it for a batch, not forever (it keeps unmapped
    /// regions alive).
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<MemoryMap>> {
        self.map.load()
    }

    /// Maps `size` bytes of `fd` at `offset` as guest range `iova`.
    pub fn map(
        &self,
        iova: u64,
        size: u64,
        fd: RawFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), MemError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        let end = iova
            .checked_add(size.saturating_sub(1))
            .ok_or(MemError::Overflow { iova, len: size })?;
        for r in &cur.regions {
            if iova <= r.end() && r.iova <= end {
                return Err(MemError::Overlap {
                    iova,
                    size,
                    other: r.iova,
                    other_size: r.len,
                });
            }
        }
        let region = Arc::new(Region::map(iova, size, fd, offset, writable)?);
        let mut regions = cur.regions.clone();
        let at = regions.partition_point(|r| r.iova < iova);
        regions.insert(at, region);
        self.map.store(Arc::new(MemoryMap { regions }));
        Ok(())
    }

    /// Removes the mapping that is exactly `[iova, iova+size)`.
    pub fn unmap(&self, iova: u64, size: u64) -> Result<(), MemError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        let pos = cur
            .regions
            .iter()
            .position(|r| r.iova == iova && r.len == size)
            .ok_or(MemError::NotMapped { iova, size })?;
        let mut regions = cur.regions.clone();
        regions.remove(pos);
        self.map.store(Arc::new(MemoryMap { regions }));
        Ok(())
    }

    /// Drops every mapping.
    pub fn clear(&self) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.map.store(Arc::new(MemoryMap::default()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
