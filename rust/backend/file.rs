//! The file backend: a raw image file or a block device.
//!
//! Opening decides everything the hot path then only reads: the size (from
//! the file, or a sparse file created or extended to `size_bytes` as
//! `qemu-img create -f raw` would), O_DIRECT or the page cache, and io_uring
//! or the thread-pool fallback (`crate::aio`). Two descriptors are kept: the
//! one I/O goes through (O_DIRECT when chosen) and a buffered one for
//! requests O_DIRECT cannot take (guest buffers that are not aligned, the
//! bounced paths of Compare and Copy). Linux keeps them coherent: a direct
//! read writes back dirty cached pages of its range first, a direct write
//! invalidates them.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{BackendError, Errno};
use crate::aio::{self, IoPath};

/// `_IOR(0x12, 114, size_t)`: a block device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// Memory alignment asked of O_DIRECT buffers (the common logical block).
const DIRECT_MEM_ALIGN: usize = 512;

/// How data reaches the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// O_DIRECT when the file takes it with this LBA size, else buffered.
    Auto,
    /// O_DIRECT, or the open fails.
    Direct,
    /// Through the page cache.
    Buffered,
}

impl CacheMode {
    /// Parses "auto", "direct" or "buffered".
    pub fn parse(s: &str) -> Option<CacheMode> {
        match s {
            "auto" => Some(CacheMode::Auto),
            "direct" => Some(CacheMode::Direct),
            "buffered" => Some(CacheMode::Buffered),
            _ => None,
        }
    }
}

/// How a file namespace is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub readonly: bool,
    pub cache: CacheMode,
    pub io: aio::Choice,
}

/// A namespace kept in a file or block device.
pub struct FileBackend {
    /// The descriptor I/O goes through (O_DIRECT when `direct`).
    file: File,
    /// A buffered descriptor of the same file, for what O_DIRECT refuses.
    buffered: File,
    path: String,
    /// Bytes; changed only by [`FileBackend::resize`].
    size: AtomicU64,
    /// A regular file (not a block or character device): it can be resized.
    regular: bool,
    readonly: bool,
    direct: bool,
    io: IoPath,
    /// Volatile write cache enabled (Set Features 06h); off: every write is
    /// durable before its completion (RWF_DSYNC).
    write_cache: AtomicBool,
    /// Hole punching works on this file (cleared at its first refusal).
    punch: AtomicBool,
    /// `release` ran: the descriptors name /dev/null.
    released: AtomicBool,
    /// Requests sent to the file and the ones that failed.
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn open_raw(path: &str, flags: i32) -> std::io::Result<File> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path; open returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn device_size(f: &File) -> std::io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// An aligned heap buffer for probing O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Option<Aligned> {
        let layout = std::alloc::Layout::from_size_align(len, 4096).ok()?;
        // SAFETY: a non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Aligned { ptr, layout })
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// True when the file takes RWF_NOWAIT reads: the kernel has a way to
/// serve it without blocking, which io_uring uses to complete requests
/// inline. tmpfs and character devices refuse it (EOPNOTSUPP).
fn takes_nowait(f: &File) -> bool {
    let mut b = [0u8; 1];
    let iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a 1-byte buffer we own.
    let r = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP)
}

impl FileBackend {
    /// Opens `spec.path` for a namespace of `lba_size`-byte LBAs; `want` is
    /// the size asked for (0: the file's own size).
    pub fn open(spec: &FileSpec, want: u64, lba_size: u32) -> Result<FileBackend, BackendError> {
        let path = spec.path.as_str();
        let err = |reason: String| BackendError::File {
            path: path.to_string(),
            reason,
        };
        if path.is_empty() {
            return Err(err(
                "the path is empty; give the image file or block device to serve".into(),
            ));
        }
        let meta = std::fs::metadata(path);
        let exists = meta.is_ok();
        let kind = match &meta {
            Ok(m) => Some(m.file_type()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(format!("cannot look at it: {e}"))),
        };
        if kind.is_some_and(|k| k.is_dir()) {
            return Err(err(
                "is a directory; give an image file inside it (e.g. disk.img) or a block device"
                    .into(),
            ));
        }
        let block = kind.is_some_and(|k| k.is_block_device());
        let regular = kind.is_none_or(|k| k.is_file());
        if !exists && (want == 0 || spec.readonly) {
            return Err(err(if spec.readonly {
                "does not exist, and a read-only namespace cannot create it; create it first (truncate -s 1G PATH)".into()
            } else {
                "does not exist; create it (truncate -s 1G PATH) or give size_bytes to create a sparse one".into()
            }));
        }
        let mut flags = if spec.readonly {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        if !exists {
            flags |= libc::O_CREAT;
        }
        if block && !spec.readonly {
            // Exclusive: fails while the device is mounted or another
            // process opened it exclusively.
            flags |= libc::O_EXCL;
        }
        let buffered = open_raw(path, flags).map_err(|e| match errno_of(&e) {
            // Opening read-only is a way out only for a writable open.
            libc::EACCES | libc::EPERM | libc::EROFS if spec.readonly => err(format!(
                "cannot be opened for reading: {e}; fix its permissions or run as a user who may read it"
            )),
            libc::EACCES | libc::EPERM | libc::EROFS => err(format!(
                "cannot be opened for reading and writing: {e}; fix its permissions, run as a user who may, \
                 or open it read-only"
            )),
            libc::EBUSY => err(format!(
                "is in use ({e}): mounted or opened exclusively by another process; unmount it or stop that process"
            )),
            _ => err(format!("cannot be opened: {e}")),
        })?;
        if regular {
            // One writer per image (QEMU locks images too): two servers
            // writing one file would corrupt it.
            let op = if spec.readonly {
                libc::LOCK_SH
            } else {
                libc::LOCK_EX
            };
            // A killed server's lock can outlive it by a moment (its file
            // stays open until the kernel tears its io_uring down): a
            // restart right after a crash waits up to a second for it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            let locked = loop {
                // SAFETY: flock on an fd we own.
                if unsafe { libc::flock(buffered.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                    break Ok(());
                }
                let e = std::io::Error::last_os_error();
                if errno_of(&e) != libc::EWOULDBLOCK || std::time::Instant::now() >= deadline {
                    break Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            if let Err(e) = locked {
                return Err(err(if errno_of(&e) == libc::EWOULDBLOCK {
                    "is in use: another process (an nvmefast server, a VM) holds a lock on it; stop it or serve a copy".into()
                } else {
                    format!("cannot be locked: {e}")
                }));
            }
        }
        let lba = u64::from(lba_size);
        let mut size = if block {
            device_size(&buffered).map_err(|e| err(format!("cannot read the device size: {e}")))?
        } else if regular {
            buffered
                .metadata()
                .map_err(|e| err(format!("cannot stat it: {e}")))?
                .len()
        } else {
            // A character device (/dev/zero, /dev/full): no size of its own.
            if want == 0 {
                return Err(err(
                    "has no size of its own (a character device); give size_bytes".into(),
                ));
            }
            want
        };
        if want > 0 && want != size {
            if !regular || want < size {
                return Err(err(format!(
                    "is {size} bytes, not the {want} bytes size_bytes asks for; omit size_bytes to use the whole {}",
                    if block { "device" } else { "file" }
                )));
            }
            if spec.readonly {
                return Err(err(format!(
                    "is {size} bytes, smaller than size_bytes {want}, and read-only; extend it (truncate -s {want} PATH) or omit size_bytes"
                )));
            }
            buffered
                .set_len(want)
                .map_err(|e| err(format!("cannot be extended to {want} bytes: {e}")))?;
            size = want;
        }
        if size == 0 {
            return Err(err("is empty; give size_bytes to extend it, or extend it yourself (truncate -s 1G PATH)".into()));
        }
        if size % lba != 0 {
            let fixed = size.div_ceil(lba) * lba;
            return Err(err(format!(
                "is {size} bytes, not a multiple of the LBA size {lba}; extend it (truncate -s {fixed} PATH) or use lba_size=512"
            )));
        }
        // A file refusing RWF_NOWAIT is memory (tmpfs) or a character
        // device: there is no cache to bypass, and no asynchronous path.
        let nowait = takes_nowait(&buffered);
        let (file, direct) = match spec.cache {
            CacheMode::Buffered => (None, false),
            CacheMode::Auto if !nowait => (None, false),
            CacheMode::Auto | CacheMode::Direct if !regular && !block => (None, false),
            mode => match Self::open_direct(path, flags & !(libc::O_CREAT | libc::O_EXCL), lba) {
                Ok(f) => (Some(f), true),
                Err(e) if mode == CacheMode::Direct => {
                    return Err(err(format!(
                        "refuses O_DIRECT with {lba}-byte LBAs ({e}; tmpfs always does); use cache=\"buffered\""
                    )))
                }
                Err(_) => (None, false),
            },
        };
        let io = aio::choose(spec.io, nowait).map_err(|e| err(e.to_string()))?;
        let file = match file {
            Some(f) => f,
            None => buffered
                .try_clone()
                .map_err(|e| err(format!("cannot duplicate its descriptor: {e}")))?,
        };
        Ok(FileBackend {
            file,
            buffered,
            path: path.to_string(),
            size: AtomicU64::new(size),
            regular,
            readonly: spec.readonly,
            direct,
            io,
            write_cache: AtomicBool::new(true),
            punch: AtomicBool::new(true),
            released: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Opens with O_DIRECT and proves it with one LBA-sized read.
    fn open_direct(path: &str, flags: i32, lba: u64) -> std::io::Result<File> {
        let f = open_raw(path, flags | libc::O_DIRECT)?;
        let buf = Aligned::new(4096).ok_or(std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: buf holds 4096 >= lba bytes, aligned to 4096.
        let n = unsafe { libc::pread(f.as_raw_fd(), buf.ptr.cast(), lba as usize, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f)
    }

    /// The namespace size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Why the file cannot be resized (a device, read-only), if it cannot.
    pub fn fixed_size(&self) -> Option<&'static str> {
        if !self.regular {
            Some("a device has the size it has")
        } else if self.readonly {
            Some("the namespace is read-only")
        } else {
            None
        }
    }

    /// Extends (sparse: the new blocks read as zero) or truncates the
    /// image to `size` bytes. The caller holds every command to it off,
    /// and waited for those in flight: a write in flight past the new end
    /// would extend the file again.
    pub fn resize(&self, size: u64) -> Result<(), Errno> {
        if self.fixed_size().is_some() {
            return Err(libc::EPERM);
        }
        self.buffered.set_len(size).map_err(|e| errno_of(&e))?;
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// The path as configured.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Opened read-only: the namespace is write protected.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// O_DIRECT in use.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// io_uring or the thread pool.
    pub fn io_path(&self) -> IoPath {
        self.io
    }

    /// Volatile write cache on (Flush makes writes durable) or off (every
    /// write is durable before it completes).
    pub fn set_write_cache(&self, on: bool) {
        self.write_cache.store(on, Ordering::Relaxed);
    }

    /// True while writes may sit in a volatile cache until Flush.
    pub fn write_cache(&self) -> bool {
        self.write_cache.load(Ordering::Relaxed)
    }

    /// The descriptor for a transfer through `iov`: the O_DIRECT one when
    /// every buffer is aligned for it, else the buffered one.
    pub fn fd_for(&self, iov: &[libc::iovec]) -> RawFd {
        if self.direct
            && iov
                .iter()
                .all(|v| (v.iov_base as usize | v.iov_len) % DIRECT_MEM_ALIGN == 0)
        {
            self.file.as_raw_fd()
        } else {
            self.buffered.as_raw_fd()
        }
    }

    /// The descriptor Flush syncs.
    pub fn sync_fd(&self) -> RawFd {
        self.buffered.as_raw_fd()
    }

    /// RWF_* flags of a write: DSYNC for FUA or with the write cache off.
    pub fn write_flags(&self, fua: bool) -> i32 {
        if fua || !self.write_cache() {
            libc::RWF_DSYNC
        } else {
            0
        }
    }

    /// Counts one request and, when `r` failed, one error.
    pub fn count<T>(&self, r: &Result<T, i32>) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads `len` bytes at `offset` into `dst`, through the buffered
    /// descriptor. Errors are errno values.
    ///
    /// # Safety
    /// `dst` valid for `len` writes.
    pub unsafe fn read(&self, offset: u64, dst: *mut u8, len: usize) -> Result<(), i32> {
        let iov = [libc::iovec {
            iov_base: dst.cast(),
            iov_len: len,
        }];
        // SAFETY: forwarded contract.
        let r = unsafe { aio::transfer_all(self.buffered.as_raw_fd(), false, offset, &iov, 0) };
        self.count(&r);
        r
    }

    /// Writes `len` bytes from `src` at `offset`.
    ///
    /// # Safety
    /// `src` valid for `len` reads.
    pub unsafe fn write(&self, offset: u64, src: *const u8, len: usize) -> Result<(), i32> {
        if self.readonly {
            return Err(libc::EROFS);
        }
        let iov = [libc::iovec {
            iov_base: src.cast_mut().cast(),
            iov_len: len,
        }];
        let flags = self.write_flags(false);
        // SAFETY: forwarded contract.
        let r = unsafe { aio::transfer_all(self.buffered.as_raw_fd(), true, offset, &iov, flags) };
        self.count(&r);
        r
    }

    /// Deallocates `len` bytes at `offset`: a punched hole reads as zeroes
    /// (DLFEAT 001b). Where the file refuses holes, zeroes are written.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), i32> {
        if self.readonly {
            return Err(libc::EROFS);
        }
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(libc::EINVAL);
        };
        if self.punch.load(Ordering::Relaxed) {
            // SAFETY: fallocate on an fd we own; no memory involved.
            let r = unsafe {
                libc::fallocate(
                    self.buffered.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    l,
                )
            };
            if r == 0 {
                self.ops.fetch_add(1, Ordering::Relaxed);
                if !self.write_cache() {
                    return self.datasync();
                }
                return Ok(());
            }
            let e = errno_of(&std::io::Error::last_os_error());
            if !matches!(
                e,
                libc::EOPNOTSUPP | libc::ENODEV | libc::ENOSYS | libc::EINVAL
            ) {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            self.punch.store(false, Ordering::Relaxed);
        }
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            // SAFETY: zeros holds n readable bytes.
            unsafe { self.write(offset + done, zeros.as_ptr(), n)? };
            done += n as u64;
        }
        Ok(())
    }

    /// Lets go of the file while this value lives on (the engine was
    /// closed, and Python may keep the object a while): both descriptors
    /// are pointed at /dev/null, which drops the image lock and a block
    /// device's exclusive claim, so the same file can be opened again at
    /// once. Only called with no I/O in flight (the workers are stopped).
    pub fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(null) = open_raw("/dev/null", libc::O_RDWR) else {
            return;
        };
        // Written back first: closing must not lose what a Flush would keep.
        // SAFETY: fdatasync on an fd we own.
        unsafe { libc::fdatasync(self.buffered.as_raw_fd()) };
        for fd in [self.file.as_raw_fd(), self.buffered.as_raw_fd()] {
            // SAFETY: dup2 onto descriptors this value owns: the numbers stay
            // valid (and are closed by the Files' drop), only what they name
            // changes.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }

    /// Makes completed writes durable (Flush).
    pub fn datasync(&self) -> Result<(), i32> {
        // SAFETY: fdatasync on an fd we own.
        let r = if unsafe { libc::fdatasync(self.sync_fd()) } == 0 {
            Ok(())
        } else {
            Err(errno_of(&std::io::Error::last_os_error()))
        };
        self.count(&r);
        r
    }
}
