//! The RAM backend: an anonymous private mapping (huge pages where the
//! kernel gives them), zero until written.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::{BackendError, Errno};

/// A namespace held in process memory.
pub struct RamBackend {
    /// The mapping; moved only by [`RamBackend::resize`], with every
    /// accessor held off (so Relaxed loads: a plain load on the hot path).
    base: AtomicPtr<u8>,
    size: AtomicUsize,
}

// SAFETY: the mapping is owned by this value and only accessed through
// bounds-checked (by the caller, see Backend::read/write) raw copies; the
// NVMe model lets concurrent commands on overlapping LBAs race, exactly as a
// real device does.
unsafe impl Send for RamBackend {}
// SAFETY: as for Send.
unsafe impl Sync for RamBackend {}

impl RamBackend {
    /// Reserves `size` bytes; pages are allocated on first write
    /// (MAP_NORESERVE), and read as zero before that.
    pub fn new(size: u64) -> Result<Self, BackendError> {
        let err = |reason: String| BackendError::Alloc { size, reason };
        let len = usize::try_from(size).map_err(|_| err("too large for this host".into()))?;
        if len == 0 {
            return Err(err("size is zero".into()));
        }
        // SAFETY: a fresh anonymous mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error().to_string()));
        }
        // Huge pages where the kernel has them (THP "madvise" or "always"):
        // random 4 KiB reads across a large namespace otherwise take a TLB
        // miss each (the QD64 in-process poll bench: about 1.2 M -> 1.8 M
        // IOPS). The price is memory: a first write allocates 2 MiB, not 4 KiB.
        // Advice only: refused (THP off, an old kernel), nothing changes.
        // SAFETY: advice on the mapping just made, which nothing else uses.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        Ok(RamBackend {
            base: AtomicPtr::new(p as *mut u8),
            size: AtomicUsize::new(len),
        })
    }

    #[inline]
    fn base(&self) -> *mut u8 {
        self.base.load(Ordering::Relaxed)
    }

    #[inline]
    fn len(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Grows or shrinks the mapping to `size` bytes: what stays keeps its
    /// data, what is added reads as zero, what goes is given back. The
    /// mapping may move (mremap), so no other thread may touch it during
    /// the call.
    ///
    /// # Safety
    /// The caller holds off every accessor of this backend until it
    /// returns (the engine's quiesce), and no pointer into the mapping
    /// taken before it is used after it.
    pub unsafe fn resize(&self, size: u64) -> Result<(), Errno> {
        let len = usize::try_from(size).map_err(|_| libc::ENOMEM)?;
        if len == 0 {
            return Err(libc::EINVAL);
        }
        let (old, old_len) = (self.base(), self.len());
        if len == old_len {
            return Ok(());
        }
        // SAFETY: old/old_len are the mapping this value owns; the caller
        // guarantees nobody uses it meanwhile. MREMAP_MAYMOVE keeps the
        // contents (and MAP_NORESERVE); new pages read as zero.
        let p = unsafe { libc::mremap(old.cast(), old_len, len, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM));
        }
        // SAFETY: advice on the mapping just made, which nothing else uses.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        self.base.store(p.cast(), Ordering::Relaxed);
        self.size.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// A hint that the byte at `offset` is wanted soon: its cache line is
    /// fetched in the background. Any offset is harmless (a prefetch never
    /// faults and changes nothing).
    #[inline]
    pub fn prefetch(&self, offset: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // wrapping_add: no pointer arithmetic past the mapping's end is
            // claimed valid; the address is only a hint to the CPU.
            let p = self.base().wrapping_add(offset as usize);
            // SAFETY: SSE is part of x86_64's baseline; a prefetch reads
            // nothing the program sees and cannot fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast_const().cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// # Safety
    /// `dst` valid for `len` writes; `offset + len <= size`.
    #[inline]
    pub unsafe fn read(&self, offset: u64, dst: *mut u8, len: usize) {
        debug_assert!(offset as usize + len <= self.len());
        // SAFETY: the caller guarantees both ranges; they cannot overlap
        // (guest memory is a different mapping).
        unsafe { std::ptr::copy_nonoverlapping(self.base().add(offset as usize), dst, len) }
    }

    /// # Safety
    /// `src` valid for `len` reads; `offset + len <= size`.
    #[inline]
    pub unsafe fn write(&self, offset: u64, src: *const u8, len: usize) {
        debug_assert!(offset as usize + len <= self.len());
        // SAFETY: as in read.
        unsafe { std::ptr::copy_nonoverlapping(src, self.base().add(offset as usize), len) }
    }
}

impl RamBackend {
    /// # Safety
    /// `offset + len <= size`.
    pub unsafe fn zero(&self, offset: u64, len: u64) {
        let (off, len) = (offset as usize, len as usize);
        debug_assert!(off + len <= self.len());
        let base = self.base();
        // Whole pages go back to the kernel (they read as zero again and stop
        // costing memory); the ragged edges are cleared by hand.
        // The host's page: madvise refuses a range not aligned to it (16 or
        // 64 KiB on some arm64 hosts), and a refusal would leave data behind.
        let page = crate::mem::page_size() as usize;
        let first = off.div_ceil(page) * page;
        let last = (off + len) / page * page;
        // SAFETY: every range below is inside [off, off + len), which the
        // caller guarantees is inside the mapping.
        unsafe {
            if first < last {
                std::ptr::write_bytes(base.add(off), 0, first - off);
                let dropped =
                    libc::madvise(base.add(first).cast(), last - first, libc::MADV_DONTNEED);
                if dropped != 0 {
                    std::ptr::write_bytes(base.add(first), 0, last - first);
                }
                std::ptr::write_bytes(base.add(last), 0, off + len - last);
            } else {
                std::ptr::write_bytes(base.add(off), 0, len);
            }
        }
    }

    /// # Safety
    /// `src` valid for `len` reads; `offset + len <= size`.
    pub unsafe fn compare(&self, offset: u64, src: *const u8, len: usize) -> bool {
        // SAFETY: both ranges are valid for len bytes (caller); guest memory
        // may change under us, which only changes the answer.
        unsafe {
            let a = std::slice::from_raw_parts(self.base().add(offset as usize), len);
            let b = std::slice::from_raw_parts(src, len);
            a == b
        }
    }

    /// # Safety
    /// Both ranges inside the mapping.
    pub unsafe fn copy(&self, src: u64, dst: u64, len: u64) {
        // SAFETY: the caller checked both ranges; ptr::copy handles overlap.
        unsafe {
            std::ptr::copy(
                self.base().add(src as usize),
                self.base().add(dst as usize),
                len as usize,
            )
        }
    }
}

impl Drop for RamBackend {
    fn drop(&mut self) {
        // SAFETY: base/size are what mmap returned; no references remain.
        unsafe {
            libc::munmap(self.base().cast(), self.len());
        }
    }
}
