//! Guest memory: DMA regions mapped from file descriptors, as vfio-user's
//! DMA_MAP hands them over, with bounds-checked access by IOVA; and remote
//! regions a client mapped without an fd, reached through a [`DmaTransport`]
//! (vfio-user DMA_READ/DMA_WRITE messages).
//!
//! The map is swapped RCU-style: readers (workers) load an `Arc` snapshot
//! once per batch and translate against it without locks; `map`/`unmap`
//! build a new snapshot and swap it in. An unmapped region is `munmap`ed
//! only when the last snapshot holding it is dropped, so unmapping while I/O
//! runs can make later commands fail with a Data Transfer Error but can never
//! make a worker touch unmapped host memory.
//!
//! A region can also shrink under the device: whoever shares the memory can
//! truncate its file, and touching a page past the end raises SIGBUS. Every
//! fd-backed region but a memfd sealed against shrinking is guarded by
//! [`guard`]: a fault in it turns the region into zero pages and marks it
//! lost, the access that faulted (and any other that ran meanwhile) learns
//! it from [`MemoryMap::lost`], and the next snapshot has the region as
//! [`Kind::Lost`], which fails every access as an unmapped range does.
//!
//! vm-memory offers the same shape (`GuestMemoryAtomic`); this module stays
//! hand-written because the hot path wants one binary search and a raw
//! pointer per PRP segment, and IOVA regions here may sit anywhere in a
//! 64-bit space with holes, as vfio-user clients place them.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub mod guard;

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
    /// The range lies in a remote region: it has no host address and is
    /// reached through the transport only (`read`/`write`, not `translate`).
    #[error("guest range {iova:#x}+{len:#x} is remote (no host mapping)")]
    Remote { iova: u64, len: u64 },
    /// A remote region was accessed with no transport set.
    #[error("guest range {iova:#x}+{len:#x} is remote and no DMA transport is set")]
    NoTransport { iova: u64, len: u64 },
    /// The transport failed to move the bytes of a remote range.
    #[error("DMA transport failed for {iova:#x}+{len:#x}: {reason}")]
    Transport { iova: u64, len: u64, reason: String },
    /// The range is in a region whose memory was lost under the device
    /// (its file shrank): it stays mapped, but no access reaches it.
    #[error("guest range {iova:#x}+{len:#x} is in a region whose memory was lost (its file shrank under the device); unmap it")]
    Lost { iova: u64, len: u64 },
    /// The mapping would extend past the end of the file, where access faults.
    #[error("fd {fd} is {file_size:#x} bytes long; offset {offset:#x} + size {size:#x} goes past its end")]
    PastEnd {
        fd: RawFd,
        offset: u64,
        size: u64,
        file_size: u64,
    },
}

/// Moves the bytes of remote regions: a vfio-user server sends DMA_READ and
/// DMA_WRITE messages to its client. Called from worker threads, with the
/// range always inside one remote region.
pub trait DmaTransport: Send + Sync {
    /// Fills `buf` from guest memory at `iova`.
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Stores `data` into guest memory at `iova`.
    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String>;
}

/// Where a region's bytes live.
enum Backing {
    /// An fd mapped into this process.
    Fd {
        /// Host address of the region's `iova`.
        host: *mut u8,
        /// The page-aligned mapping as returned by mmap, for munmap.
        map_base: *mut libc::c_void,
        map_len: usize,
    },
    /// In the client only: every access is a transport message.
    Remote,
    /// An fd region whose file shrank under the device: the region it
    /// wraps stays mapped (zero pages) until this one is dropped, and
    /// every access fails.
    Lost { _mapping: Arc<Region> },
}

/// What a region is, as [`MemoryMap::region_info`] tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A memfd sealed against shrinking: trusted, not guarded.
    Sealed,
    /// Any other fd: guarded against the file shrinking (SIGBUS).
    Guarded,
    /// No fd: reached through the transport.
    Remote,
    /// Guarded, and its file shrank: every access fails.
    Lost,
}

impl Kind {
    /// The kind's name, as the Python API reports it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sealed => "sealed",
            Kind::Guarded => "guarded",
            Kind::Remote => "remote",
            Kind::Lost => "lost",
        }
    }
}

/// One DMA region. Owns its host mapping, if it has one.
pub struct Region {
    iova: u64,
    len: u64,
    backing: Backing,
    writable: bool,
    /// Registered with the SIGBUS guard (fd regions that can shrink).
    guard: Option<guard::Guard>,
}

// SAFETY: a Region is an owned shared mapping (or none); its pointers are
// only dereferenced through bounds-checked accessors, and concurrent access
// to guest memory is inherent (the guest itself writes it concurrently), so
// the type carries no thread-affine state.
unsafe impl Send for Region {}
// SAFETY: as for Send: all access goes through raw-pointer copies and atomics.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // Unregistered before munmap: once the range can be reused by
        // another mapping, a fault there must not be taken for ours.
        drop(self.guard.take());
        if let Backing::Fd {
            map_base, map_len, ..
        } = self.backing
        {
            // SAFETY: map_base/map_len are exactly what mmap returned in
            // Region::map, and no snapshot references this region any more
            // (we are in its last Arc's drop).
            unsafe {
                libc::munmap(map_base, map_len);
            }
        }
    }
}

/// False for a memfd sealed against shrinking (`F_SEAL_SHRINK`), whose
/// pages cannot go away under a mapping; true for every other fd. A sealed
/// hugetlbfs memfd still can: a hole punched in it is refilled from the
/// huge page pool on the next touch, and an empty pool raises SIGBUS.
fn can_shrink(fd: RawFd) -> bool {
    // SAFETY: fcntl F_GET_SEALS takes no pointer; an fd that is not a
    // memfd fails with EINVAL.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return true;
    }
    // SAFETY: fstatfs writes only into the buffer we pass.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid, writable statfs buffer.
    if unsafe { libc::fstatfs(fd, &mut fs) } != 0 {
        return true;
    }
    fs.f_type == libc::HUGETLBFS_MAGIC
}

/// The host's page size (what mmap offsets and madvise ranges align to).
pub(crate) fn page_size() -> u64 {
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
        let guard = if can_shrink(fd) {
            match guard::Guard::register(base, map_len, prot) {
                Ok(g) => Some(g),
                Err(reason) => {
                    // SAFETY: the mapping made above, used by nobody yet.
                    unsafe { libc::munmap(base, map_len) };
                    return Err(bad(reason));
                }
            }
        } else {
            None
        };
        Ok(Region {
            iova,
            len: size,
            backing: Backing::Fd {
                // SAFETY: delta < page <= map_len, so the result is inside the mapping.
                host: unsafe { (base as *mut u8).add(delta as usize) },
                map_base: base,
                map_len,
            },
            writable,
            guard,
        })
    }

    /// What the region is.
    fn kind(&self) -> Kind {
        match (&self.backing, &self.guard) {
            (Backing::Fd { .. }, None) => Kind::Sealed,
            (Backing::Fd { .. }, Some(_)) => Kind::Guarded,
            (Backing::Remote, _) => Kind::Remote,
            (Backing::Lost { .. }, _) => Kind::Lost,
        }
    }

    /// True for a guarded fd region the SIGBUS handler found shrunk (still
    /// `Backing::Fd` in snapshots taken before the loss was noticed).
    #[inline]
    fn faulted(&self) -> bool {
        self.guard.as_ref().is_some_and(guard::Guard::lost)
    }

    /// True when host range `[p, p + len)` overlaps this fd region's mapping.
    fn holds(&self, p: usize, len: usize) -> bool {
        match self.backing {
            Backing::Fd { host, .. } => {
                let start = host as usize;
                p < start.saturating_add(self.len as usize) && start < p.saturating_add(len)
            }
            _ => false,
        }
    }

    /// A remote region of `size` bytes at `iova`: no host mapping.
    fn remote(iova: u64, size: u64, writable: bool) -> Result<Region, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize);
        }
        iova.checked_add(size - 1)
            .ok_or(MemError::Overflow { iova, len: size })?;
        Ok(Region {
            iova,
            len: size,
            backing: Backing::Remote,
            writable,
            guard: None,
        })
    }

    fn end(&self) -> u64 {
        // Cannot overflow: checked in Region::map.
        self.iova + (self.len - 1)
    }
}

/// An immutable snapshot of the DMA map, sorted by IOVA, non-overlapping,
/// with the transport that reaches its remote regions.
#[derive(Default)]
pub struct MemoryMap {
    regions: Vec<Arc<Region>>,
    transport: Option<Arc<dyn DmaTransport>>,
    /// Some region is guarded: accesses must check [`MemoryMap::lost`].
    /// False for a map of sealed memfds and remote regions only, which
    /// pays nothing for the guard.
    guarded: bool,
    /// The loss epoch up to which every loss of a region of this map is
    /// known: none of its `Backing::Fd` regions had faulted then.
    epoch: AtomicU64,
}

impl MemoryMap {
    fn new(
        regions: Vec<Arc<Region>>,
        transport: Option<Arc<dyn DmaTransport>>,
        epoch: u64,
    ) -> MemoryMap {
        let guarded = regions.iter().any(|r| r.kind() == Kind::Guarded);
        MemoryMap {
            regions,
            transport,
            guarded,
            epoch: AtomicU64::new(epoch),
        }
    }

    /// True when this map has guarded regions (and so accesses through it
    /// must be followed by [`MemoryMap::lost`]).
    #[inline]
    pub fn guarded(&self) -> bool {
        self.guarded
    }

    /// True when a region of this snapshot lost its memory (its file
    /// shrank) since the snapshot was taken: an access through it since
    /// then may have faulted, or read and written zero pages, and must be
    /// treated as failed. Call it after a sequence of accesses, before
    /// their result counts (a completion, a status). Costs a branch for a
    /// map with no guarded region, two loads otherwise.
    #[inline]
    pub fn lost(&self) -> bool {
        self.guarded && guard::epoch() != self.epoch.load(Ordering::Relaxed) && self.scan_lost()
    }

    /// The slow part of [`MemoryMap::lost`]: the epoch moved (a fault in
    /// some guarded region of the process); is it one of ours?
    #[cold]
    fn scan_lost(&self) -> bool {
        let e = guard::epoch();
        if self.regions.iter().any(|r| r.faulted()) {
            return true;
        }
        // Every loss up to `e` is visible (epoch() is Acquire) and none is
        // ours: later calls need not look again until the epoch moves.
        self.epoch.fetch_max(e, Ordering::Relaxed);
        false
    }

    /// True when guest range `[iova, iova + len)` overlaps a region whose
    /// memory was lost (retired or faulted since this snapshot).
    pub fn range_lost(&self, iova: u64, len: u64) -> bool {
        let last = iova.saturating_add(len.max(1) - 1);
        self.regions
            .iter()
            .any(|r| iova <= r.end() && r.iova <= last && (r.faulted() || r.kind() == Kind::Lost))
    }

    /// True when host range `[p, p + len)` (a buffer translated against
    /// this snapshot) lies in a region whose memory was lost since.
    pub fn host_lost(&self, p: *const u8, len: usize) -> bool {
        self.regions
            .iter()
            .any(|r| r.faulted() && r.holds(p as usize, len))
    }

    /// Touches one byte in each page of host range `[p, p + len)` (a buffer
    /// translated against this snapshot) that lies in a guarded region.
    /// For a transfer the kernel failed with EFAULT (a file namespace's
    /// read or write through the buffer): the kernel does not raise SIGBUS
    /// for its own accesses, so a page past the file's end faults here
    /// instead, and the guard turns it into a lost region, counted and
    /// reported, as if the device had copied the data itself.
    /// [`MemoryMap::lost`] says so afterwards.
    #[cold]
    pub fn touch_guarded(&self, p: *const u8, len: usize) {
        let page = page_size() as usize;
        let (lo, hi) = (p as usize, (p as usize).saturating_add(len));
        for r in &self.regions {
            let (Backing::Fd { host, .. }, Some(_)) = (&r.backing, &r.guard) else {
                continue;
            };
            let base = *host as usize;
            let end = base.saturating_add(r.len as usize);
            let mut at = lo.max(base);
            while at < hi.min(end) {
                // SAFETY: `at` lies inside the region's mapping, which this
                // snapshot keeps mapped; a page past the file's end raises
                // SIGBUS, which the guard (the region is registered) turns
                // into a zero page, so the read completes.
                unsafe { std::ptr::read_volatile(at as *const u8) };
                at = (at / page + 1) * page;
            }
        }
    }

    /// Host pointer for guest range `[iova, iova+len)`, which must lie inside
    /// one region (and a writable one when `write`). `len` may be 0. A range
    /// in a remote region is [`MemError::Remote`]: accessible, but only
    /// through [`MemoryMap::read`]/[`MemoryMap::write`] or the `remote_*`
    /// calls.
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
        match r.backing {
            // SAFETY: iova - r.iova < r.len, so the pointer stays inside the mapping.
            Backing::Fd { host, .. } => Ok(unsafe { host.add((iova - r.iova) as usize) }),
            Backing::Remote => Err(MemError::Remote { iova, len }),
            Backing::Lost { .. } => Err(MemError::Lost { iova, len }),
        }
    }

    /// Copies guest memory at `iova` into `dst`.
    pub fn read(&self, iova: u64, dst: &mut [u8]) -> Result<(), MemError> {
        match self.translate(iova, dst.len() as u64, false) {
            Ok(p) => {
                // SAFETY: translate checked that dst.len() bytes at p are
                // mapped; dst is a distinct host buffer, so the ranges do not
                // overlap.
                unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
                Ok(())
            }
            Err(MemError::Remote { .. }) => self.remote_read(iova, dst),
            Err(e) => Err(e),
        }
    }

    /// Copies `src` into guest memory at `iova`.
    pub fn write(&self, iova: u64, src: &[u8]) -> Result<(), MemError> {
        match self.translate(iova, src.len() as u64, true) {
            Ok(p) => {
                // SAFETY: translate checked that src.len() writable bytes at
                // p are mapped; src is a distinct host buffer.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
                Ok(())
            }
            Err(MemError::Remote { .. }) => self.remote_write(iova, src),
            Err(e) => Err(e),
        }
    }

    /// Reads a little-endian u64 (a PRP list entry).
    #[inline]
    pub fn read_u64(&self, iova: u64) -> Result<u64, MemError> {
        match self.translate(iova, 8, false) {
            // SAFETY: translate checked that 8 bytes at p are mapped; the read
            // is unaligned-safe because a region may start at any fd offset.
            Ok(p) => Ok(u64::from_le(unsafe {
                std::ptr::read_unaligned(p as *const u64)
            })),
            Err(MemError::Remote { .. }) => {
                let mut b = [0u8; 8];
                self.remote_read(iova, &mut b)?;
                Ok(u64::from_le_bytes(b))
            }
            Err(e) => Err(e),
        }
    }

    /// Fills `dst` through the transport from a range that
    /// [`MemoryMap::translate`] reported as [`MemError::Remote`].
    #[cold]
    pub fn remote_read(&self, iova: u64, dst: &mut [u8]) -> Result<(), MemError> {
        let len = dst.len() as u64;
        let t = self
            .transport
            .as_ref()
            .ok_or(MemError::NoTransport { iova, len })?;
        t.read(iova, dst)
            .map_err(|reason| MemError::Transport { iova, len, reason })
    }

    /// Stores `src` through the transport into a range that
    /// [`MemoryMap::translate`] reported as [`MemError::Remote`] (for a write).
    #[cold]
    pub fn remote_write(&self, iova: u64, src: &[u8]) -> Result<(), MemError> {
        let len = src.len() as u64;
        let t = self
            .transport
            .as_ref()
            .ok_or(MemError::NoTransport { iova, len })?;
        t.write(iova, src)
            .map_err(|reason| MemError::Transport { iova, len, reason })
    }

    /// An atomic view of a u64 in guest memory for ordered stores (CQEs).
    ///
    /// Returns None when the host address is not 8-byte aligned (a region
    /// mapped at an fd offset that is not 8-aligned) or the range is remote:
    /// callers then fall back to plain copies.
    #[inline]
    pub fn atomic_u64(&self, iova: u64, write: bool) -> Result<Option<&AtomicU64>, MemError> {
        Ok(self.atomic_u64s::<1>(iova, write)?.map(|[a]| a))
    }

    /// `N` adjacent u64s at `iova` translated once (a CQE's two halves), or
    /// None as for [`MemoryMap::atomic_u64`].
    pub fn atomic_u64s<const N: usize>(
        &self,
        iova: u64,
        write: bool,
    ) -> Result<Option<[&AtomicU64; N]>, MemError> {
        let p = match self.translate(iova, 8 * N as u64, write) {
            Ok(p) => p,
            Err(MemError::Remote { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if (p as usize) % 8 != 0 {
            return Ok(None);
        }
        // SAFETY: 8 * N mapped, aligned bytes that live as long as this
        // snapshot (the region is kept mapped by the Arc in self.regions);
        // all device accesses to them are atomic or raw copies, never
        // references.
        Ok(Some(std::array::from_fn(|i| unsafe {
            AtomicU64::from_ptr((p as *mut u64).add(i))
        })))
    }

    /// An atomic view of a u32 in guest memory (shadow doorbells, polling);
    /// None as for [`MemoryMap::atomic_u64`].
    #[inline]
    pub fn atomic_u32(&self, iova: u64, write: bool) -> Result<Option<&AtomicU32>, MemError> {
        let p = match self.translate(iova, 4, write) {
            Ok(p) => p,
            Err(MemError::Remote { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if (p as usize) % 4 != 0 {
            return Ok(None);
        }
        // SAFETY: as in atomic_u64s, for 4 aligned bytes.
        Ok(Some(unsafe { AtomicU32::from_ptr(p as *mut u32) }))
    }

    /// The regions, fd-backed and remote alike, as (iova, size, writable),
    /// ascending.
    pub fn regions(&self) -> Vec<(u64, u64, bool)> {
        self.regions
            .iter()
            .map(|r| (r.iova, r.len, r.writable))
            .collect()
    }

    /// The regions as (iova, size, writable, kind), ascending. A region
    /// that faulted since this snapshot was taken is reported lost.
    pub fn region_info(&self) -> Vec<(u64, u64, bool, Kind)> {
        self.regions
            .iter()
            .map(|r| {
                let kind = if r.faulted() { Kind::Lost } else { r.kind() };
                (r.iova, r.len, r.writable, kind)
            })
            .collect()
    }
}

/// The guest memory of one controller.
pub struct GuestMemory {
    map: ArcSwap<MemoryMap>,
    /// Serialises writers so two concurrent map/unmap calls cannot lose one another.
    writer: Mutex<()>,
    /// Regions whose memory was lost (counted once each).
    lost_regions: AtomicU64,
    /// Lost regions as (iova, size) not yet taken by [`GuestMemory::take_losses`].
    losses: Mutex<Vec<(u64, u64)>>,
    /// `losses` is not empty.
    losses_due: AtomicBool,
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
            lost_regions: AtomicU64::new(0),
            losses: Mutex::new(Vec::new()),
            losses_due: AtomicBool::new(false),
        }
    }

    /// The current map; hold it for a batch, not forever (it keeps unmapped
    /// regions alive). It may hold a region lost since it was published
    /// ([`MemoryMap::lost`] says so after the accesses; then
    /// [`GuestMemory::refresh`]).
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<MemoryMap>> {
        self.map.load()
    }

    /// The current map once every region the SIGBUS guard found shrunk is
    /// replaced with a lost one (which fails every access); each is
    /// counted and queued for [`GuestMemory::take_losses`] once, since a
    /// lost region is not guarded any more. For the cold path after
    /// [`MemoryMap::lost`] said so: the hot path pays nothing for it.
    #[cold]
    pub fn refresh(&self) -> arc_swap::Guard<Arc<MemoryMap>> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        // Read before the flags: every loss up to `e` is visible below.
        let e = guard::epoch();
        if !cur.regions.iter().any(|r| r.faulted()) {
            cur.epoch.fetch_max(e, Ordering::Relaxed);
            return self.map.load();
        }
        let mut lost = Vec::new();
        let regions = cur
            .regions
            .iter()
            .map(|r| {
                if !r.faulted() {
                    return Arc::clone(r);
                }
                lost.push((r.iova, r.len));
                Arc::new(Region {
                    iova: r.iova,
                    len: r.len,
                    backing: Backing::Lost {
                        _mapping: Arc::clone(r),
                    },
                    writable: r.writable,
                    guard: None,
                })
            })
            .collect();
        self.map
            .store(Arc::new(MemoryMap::new(regions, cur.transport.clone(), e)));
        self.lost_regions
            .fetch_add(lost.len() as u64, Ordering::Relaxed);
        self.losses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(lost);
        self.losses_due.store(true, Ordering::Release);
        self.map.load()
    }

    /// Regions whose memory was lost so far (each counted once).
    pub fn lost_regions(&self) -> u64 {
        self.lost_regions.load(Ordering::Relaxed)
    }

    /// True when lost regions wait to be reported.
    #[inline]
    pub fn losses_due(&self) -> bool {
        self.losses_due.load(Ordering::Relaxed)
    }

    /// The lost regions, (iova, size), not taken before.
    #[cold]
    pub fn take_losses(&self) -> Vec<(u64, u64)> {
        let mut l = self.losses.lock().unwrap_or_else(|e| e.into_inner());
        self.losses_due.store(false, Ordering::Relaxed);
        std::mem::take(&mut *l)
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
        self.insert(iova, size, || Region::map(iova, size, fd, offset, writable))
    }

    /// Adds guest range `iova` of `size` bytes as a remote region: the
    /// device reaches it through the transport ([`GuestMemory::set_transport`]).
    pub fn map_remote(&self, iova: u64, size: u64, writable: bool) -> Result<(), MemError> {
        self.insert(iova, size, || Region::remote(iova, size, writable))
    }

    /// Inserts the region `make` builds unless `[iova, iova+size)` overlaps
    /// an existing one (fd-backed and remote regions share one address space).
    fn insert(
        &self,
        iova: u64,
        size: u64,
        make: impl FnOnce() -> Result<Region, MemError>,
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
        let region = Arc::new(make()?);
        let mut regions = cur.regions.clone();
        let at = regions.partition_point(|r| r.iova < iova);
        regions.insert(at, region);
        self.store(&cur, regions, cur.transport.clone());
        Ok(())
    }

    /// Publishes a new map; losses `cur` had not seen are still to be
    /// seen in it (its epoch is `cur`'s).
    fn store(
        &self,
        cur: &MemoryMap,
        regions: Vec<Arc<Region>>,
        transport: Option<Arc<dyn DmaTransport>>,
    ) {
        let epoch = cur.epoch.load(Ordering::Relaxed);
        self.map
            .store(Arc::new(MemoryMap::new(regions, transport, epoch)));
    }

    /// Sets (Some) or removes (None) the transport that reaches remote
    /// regions. Accesses already under way finish with the transport of the
    /// snapshot they started with.
    pub fn set_transport(&self, transport: Option<Arc<dyn DmaTransport>>) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        self.store(&cur, cur.regions.clone(), transport);
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
        self.store(&cur, regions, cur.transport.clone());
        Ok(())
    }

    /// Drops every mapping (the transport stays: it is the embedder's wiring).
    pub fn clear(&self) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        self.store(&cur, Vec::new(), cur.transport.clone());
    }
}

#[cfg(test)]
pub(crate) mod tests;
