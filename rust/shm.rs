//! Shared memory the device creates or maps: a memfd mapped MAP_SHARED.
//! Used for the doorbell page (shared with vfio-user clients) and, on the
//! driver side, for the host's view of guest memory.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An owned shared mapping of a memory fd.
pub struct SharedMemory {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    /// Where the mapping starts in the fd.
    offset: usize,
}

// SAFETY: an owned shared mapping; users access it through raw copies and
// atomics only, as guest memory is accessed.
unsafe impl Send for SharedMemory {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// A new zeroed memfd named `name` of `len` bytes, mapped.
    pub fn new(name: &CStr, len: usize) -> std::io::Result<Self> {
        Self::create(name, 0, len, false)
    }

    /// A new zeroed memfd of `offset + len` bytes of which `len` bytes from
    /// `offset` (page aligned) are mapped: the leading hole lets file
    /// offsets mirror a BAR's offsets (the doorbell page at BAR0 1000h). A
    /// hole that is never touched costs no memory. The memfd is sealed
    /// against any size change: whoever it is shared with (a vfio-user
    /// client maps the doorbell page) cannot truncate it under the device,
    /// whose accesses would then raise SIGBUS.
    pub fn new_at(name: &CStr, offset: usize, len: usize) -> std::io::Result<Self> {
        Self::create(name, offset, len, true)
    }

    fn create(name: &CStr, offset: usize, len: usize, seal: bool) -> std::io::Result<Self> {
        if offset % 4096 != 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let total = offset
            .checked_add(len)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = if seal {
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
        } else {
            libc::MFD_CLOEXEC
        };
        // SAFETY: memfd_create with a valid C string; we own the result.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(total)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own fd, no pointers.
        if seal && unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd, offset, len)
    }

    /// Maps `len` bytes of an existing memory fd (duplicated: the caller
    /// keeps theirs).
    pub fn from_fd(fd: RawFd, len: usize) -> std::io::Result<Self> {
        Self::from_fd_at(fd, 0, len)
    }

    /// Maps `len` bytes from file offset `offset` (page aligned) of an
    /// existing memory fd (duplicated: the caller keeps theirs).
    pub fn from_fd_at(fd: RawFd, offset: usize, len: usize) -> std::io::Result<Self> {
        // SAFETY: the caller keeps fd open during this call; we duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Self::map(fd, offset, len)
    }

    fn map(fd: OwnedFd, offset: usize, len: usize) -> std::io::Result<Self> {
        let file_offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no MAP_FIXED).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedMemory {
            fd,
            base: p.cast(),
            len,
            offset,
        })
    }

    /// The fd (borrowed).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Where the mapping starts in the fd.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping's first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: base/len are what mmap returned; the owner guarantees no
        // reference into the mapping outlives this value.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}
