//! Where a namespace keeps its metadata: a second mapping beside a RAM
//! namespace's data, a companion file beside a file namespace's image (so
//! the image stays a raw disk image), or the embedder's storage object.
//!
//! Memory and file stores keep each block's metadata at `LBA * MS`, its
//! protection information bit-inverted and the other bytes as they are:
//! memory never written, a file hole and a punched range all read back as
//! what a deallocated block's metadata reads as (NVM Command Set 1.0
//! Figure 97, DLFEAT 001b with bit 4 clear): 00h outside the PI, and PI all
//! FFh, which escapes every check (application tag FFFFh, reference tag all
//! ones, guard FFFFh). Deallocating is dropping pages or punching holes, as
//! for the data.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Format;
use crate::backend::{Backend, Errno, RamBackend, Storage};

/// A store's failure as errno (a storage object's failure is EPROTO, as
/// for its data).
const STORAGE_FAILED: Errno = crate::backend::custom::STORAGE_FAILED;

thread_local! {
    /// Inverted bytes on their way to a store (no allocation once warm).
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The companion file of a file namespace.
pub struct MetaFile {
    file: File,
    path: String,
    /// Volatile Write Cache on: writes wait for Flush; off, each is
    /// written with RWF_DSYNC.
    write_cache: AtomicBool,
}

impl MetaFile {
    fn flags(&self) -> i32 {
        if self.write_cache.load(Ordering::Relaxed) {
            0
        } else {
            libc::RWF_DSYNC
        }
    }

    /// The companion's path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A namespace's metadata store.
pub enum Store {
    Ram(RamBackend),
    File(MetaFile),
    /// The embedder's storage object (metadata as-is, not inverted).
    Custom(Arc<dyn Storage>),
    /// Nothing is kept (a null namespace, a read-only file namespace with
    /// no companion): every block reads back deallocated.
    Nowhere,
}

/// The path of a file namespace's metadata.
pub fn companion_path(data_path: &str) -> String {
    format!("{data_path}.md")
}

fn open_companion(path: &str, readonly: bool, len: u64) -> Result<MetaFile, String> {
    let err = |why: String| format!("metadata file {path}: {why}");
    let exists = std::path::Path::new(path).exists();
    let mut flags = if readonly {
        libc::O_RDONLY
    } else {
        libc::O_RDWR | libc::O_CREAT
    };
    flags |= libc::O_CLOEXEC;
    let c = std::ffi::CString::new(path).map_err(|_| err("the path has a NUL byte".into()))?;
    // SAFETY: a valid NUL-terminated path; open returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return Err(err(format!(
            "cannot be opened: {}; fix its permissions or remove it",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let op = if readonly {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
        return Err(err(
            "is in use: another process holds a lock on it; stop it or serve a copy".into(),
        ));
    }
    let size = file
        .metadata()
        .map_err(|e| err(format!("cannot stat it: {e}")))?
        .len();
    if exists && size > len {
        return Err(err(format!(
            "is {size} bytes, more than the {len} this namespace's metadata takes (LBAs x metadata_size): \
             it was written with another format; configure that format, or remove the file to start \
             with every block deallocated"
        )));
    }
    if size < len {
        if readonly {
            return Err(err(format!(
                "is {size} bytes, less than the {len} this namespace's metadata takes, and the namespace \
                 is read-only; serve it writable once, or remove the file"
            )));
        }
        // Sparse: the new range reads back deallocated.
        file.set_len(len)
            .map_err(|e| err(format!("cannot be extended to {len} bytes: {e}")))?;
    }
    Ok(MetaFile {
        file,
        path: path.to_string(),
        write_cache: AtomicBool::new(true),
    })
}

impl Store {
    /// The store for `fmt` on a namespace of `lbas` blocks kept by
    /// `backend` (None without metadata). `storage` is the embedder's
    /// object of a custom namespace. Err says what to change.
    pub fn open(fmt: Format, lbas: u64, backend: &Backend) -> Result<Option<Arc<Store>>, String> {
        if !fmt.has_metadata() {
            return Ok(None);
        }
        let len = lbas
            .checked_mul(u64::from(fmt.ms))
            .ok_or_else(|| "the namespace is too large for metadata".to_string())?;
        let store = match backend {
            Backend::Ram(_) => Store::Ram(RamBackend::new(len).map_err(|e| e.to_string())?),
            Backend::Null(_) => Store::Nowhere,
            Backend::Custom(c) => {
                let s = c.storage();
                if !s.has_metadata() {
                    return Err("metadata_size needs a storage object with read_metadata(lba, nlb) and \
                                write_metadata(lba, data) methods (see nvmefast.Storage); add them, or \
                                drop metadata_size"
                        .into());
                }
                Store::Custom(s)
            }
            Backend::File(f) => {
                let meta = std::fs::metadata(f.path()).map_err(|e| e.to_string())?;
                if !meta.file_type().is_file() {
                    return Err(format!(
                        "{}: metadata needs a companion file beside the image, and a device has no \
                         place for one; serve an image file, or drop metadata_size",
                        f.path()
                    ));
                }
                let path = companion_path(f.path());
                if f.readonly() && !std::path::Path::new(&path).exists() {
                    Store::Nowhere
                } else {
                    Store::File(open_companion(&path, f.readonly(), len)?)
                }
            }
        };
        Ok(Some(Arc::new(store)))
    }

    /// The store after Format NVM to `fmt` with `lbas` blocks: every
    /// block's metadata deallocated. A file store is truncated and kept (it
    /// holds the companion's lock); others are made anew.
    pub fn reformat(
        old: Option<Arc<Store>>,
        fmt: Format,
        lbas: u64,
        backend: &Backend,
    ) -> Result<Option<Arc<Store>>, String> {
        if let (Some(old), true) = (&old, fmt.has_metadata()) {
            if let Store::File(f) = &**old {
                let len = lbas * u64::from(fmt.ms);
                f.file
                    .set_len(0)
                    .and_then(|()| f.file.set_len(len))
                    .map_err(|e| format!("metadata file {}: cannot be reformatted: {e}", f.path))?;
                return Ok(Some(old.clone()));
            }
        }
        // Let go of an old companion (its lock) before opening anew.
        drop(old);
        let store = Store::open(fmt, lbas, backend)?;
        if let Some(s) = &store {
            // A storage object's metadata reads back as it kept it: make
            // every block deallocated.
            if let Store::Custom(_) = &**s {
                s.deallocate(0, lbas, fmt).map_err(|e| {
                    format!("the storage object failed to deallocate metadata ({e})")
                })?;
            }
        }
        Ok(store)
    }

    /// The namespace now has `lbas` blocks: the store follows (blocks added
    /// read back deallocated).
    ///
    /// # Safety
    /// As [`Backend::resize`]: nothing touches the store meanwhile, nor
    /// past the new end afterwards.
    pub unsafe fn resize(&self, lbas: u64, fmt: Format) -> Result<(), Errno> {
        let len = lbas.checked_mul(u64::from(fmt.ms)).ok_or(libc::EOVERFLOW)?;
        match self {
            // SAFETY: forwarded contract.
            Store::Ram(r) => unsafe { r.resize(len) },
            Store::File(f) => f
                .file
                .set_len(len)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
            // The embedder's object keeps what it keeps; nothing kept.
            Store::Custom(_) | Store::Nowhere => Ok(()),
        }
    }

    /// Starts bringing the metadata of block `lba` into the cache (a
    /// memory store; nothing otherwise), so a command that reads or writes
    /// it later finds it there rather than waiting for it after its data
    /// copy. A hint: no effect on what is read or written.
    #[inline]
    pub fn prefetch(&self, lba: u64, fmt: Format) {
        if let Store::Ram(r) = self {
            r.prefetch(lba.wrapping_mul(u64::from(fmt.ms)));
        }
    }

    /// Reads the metadata of `nlb` blocks from `lba` (`fmt.ms` bytes each)
    /// into `out` (exactly `nlb * ms` bytes).
    pub fn read(&self, lba: u64, fmt: Format, out: &mut [u8]) -> Result<(), Errno> {
        let ms = u32::from(fmt.ms);
        let off = lba * u64::from(ms);
        match self {
            Store::Ram(r) => {
                // SAFETY: out holds out.len() bytes; the caller's LBA range
                // check keeps off + len inside the LBAs x MS mapping.
                unsafe { r.read(off, out.as_mut_ptr(), out.len()) };
                invert_pi(out, fmt);
            }
            Store::File(f) => {
                let iov = [libc::iovec {
                    iov_base: out.as_mut_ptr().cast(),
                    iov_len: out.len(),
                }];
                // SAFETY: iov names out, valid for its length.
                unsafe { crate::aio::transfer_all(f.file.as_raw_fd(), false, off, &iov, 0)? };
                invert_pi(out, fmt);
            }
            Store::Custom(s) => {
                let nlb = (out.len() / ms.max(1) as usize) as u64;
                s.read_metadata(lba, nlb, ms, out)
                    .map_err(|_| STORAGE_FAILED)?;
            }
            Store::Nowhere => {
                out.fill(0);
                invert_pi(out, fmt);
            }
        }
        Ok(())
    }

    /// Stores `data` (whole blocks' metadata, `fmt.ms` bytes each) at `lba`.
    pub fn write(&self, lba: u64, fmt: Format, data: &[u8]) -> Result<(), Errno> {
        let ms = u32::from(fmt.ms);
        let off = lba * u64::from(ms);
        match self {
            Store::Ram(r) if data.len() <= 256 => {
                // One 4 KiB command's worth: inverted on the stack.
                let mut tmp = [0u8; 256];
                tmp[..data.len()].copy_from_slice(data);
                invert_pi(&mut tmp[..data.len()], fmt);
                // SAFETY: tmp holds data.len() bytes; the caller's range
                // check keeps off + len inside the mapping.
                unsafe { r.write(off, tmp.as_ptr(), data.len()) };
                Ok(())
            }
            Store::Ram(_) | Store::File(_) => BOUNCE.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                b.extend_from_slice(data);
                invert_pi(&mut b, fmt);
                match self {
                    // SAFETY: b holds data.len() bytes; the caller's range
                    // check keeps off + len inside the mapping.
                    Store::Ram(r) => unsafe { r.write(off, b.as_ptr(), b.len()) },
                    Store::File(f) => {
                        let iov = [libc::iovec {
                            iov_base: b.as_mut_ptr().cast(),
                            iov_len: b.len(),
                        }];
                        // SAFETY: iov names b, valid for its length.
                        unsafe {
                            crate::aio::transfer_all(
                                f.file.as_raw_fd(),
                                true,
                                off,
                                &iov,
                                f.flags(),
                            )?
                        };
                    }
                    _ => {}
                }
                Ok(())
            }),
            Store::Custom(s) => s.write_metadata(lba, data, ms).map_err(|_| STORAGE_FAILED),
            Store::Nowhere => Ok(()),
        }
    }

    /// Deallocates the metadata of `nlb` blocks at `lba`: reads back 00h,
    /// its PI FFh.
    pub fn deallocate(&self, lba: u64, nlb: u64, fmt: Format) -> Result<(), Errno> {
        let ms = u32::from(fmt.ms);
        let (off, len) = (lba * u64::from(ms), nlb * u64::from(ms));
        match self {
            // SAFETY: the caller's range check keeps it inside the mapping.
            Store::Ram(r) => unsafe { r.zero(off, len) },
            Store::File(f) => {
                let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
                    return Err(libc::EINVAL);
                };
                // SAFETY: fallocate on an fd we own.
                let r = unsafe {
                    libc::fallocate(
                        f.file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        o,
                        l,
                    )
                };
                if r != 0 {
                    // No holes here: write what a hole holds (zeroes).
                    let zeros = vec![0u8; usize::try_from(len).map_err(|_| libc::EINVAL)?];
                    let iov = [libc::iovec {
                        iov_base: zeros.as_ptr().cast_mut().cast(),
                        iov_len: zeros.len(),
                    }];
                    // SAFETY: iov names zeros, valid for its length.
                    unsafe {
                        crate::aio::transfer_all(f.file.as_raw_fd(), true, off, &iov, f.flags())?
                    };
                } else if f.flags() != 0 {
                    self.flush()?;
                }
            }
            Store::Custom(_) => {
                const CHUNK: u64 = 4096;
                let mut at = 0;
                while at < nlb {
                    let n = CHUNK.min(nlb - at);
                    let mut d =
                        vec![0u8; usize::try_from(n * u64::from(ms)).map_err(|_| libc::EINVAL)?];
                    invert_pi(&mut d, fmt);
                    self.write(lba + at, fmt, &d)?;
                    at += n;
                }
            }
            Store::Nowhere => {}
        }
        Ok(())
    }

    /// Makes what was stored durable (Flush, FUA, shutdown).
    pub fn flush(&self) -> Result<(), Errno> {
        if let Store::File(f) = self {
            // SAFETY: fdatasync on an fd we own.
            if unsafe { libc::fdatasync(f.file.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO));
            }
        }
        Ok(())
    }

    /// Follows the Volatile Write Cache setting.
    pub fn set_write_cache(&self, on: bool) {
        if let Store::File(f) = self {
            f.write_cache.store(on, Ordering::Relaxed);
        }
    }

    /// "memory", "file", "storage" or "none": where it is kept.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Ram(_) => "memory",
            Store::File(_) => "file",
            Store::Custom(_) => "storage",
            Store::Nowhere => "none",
        }
    }
}

/// Flips the PI bytes of each block's metadata in `b` (nothing without PI).
#[inline]
fn invert_pi(b: &mut [u8], fmt: Format) {
    let (ms, off, n) = (usize::from(fmt.ms), fmt.pi_offset(), fmt.pi_size());
    if n == 0 || ms == 0 {
        return;
    }
    for block in b.chunks_exact_mut(ms) {
        // A tuple is 8 or 16 bytes: whole words, not a byte loop.
        for w in block[off..off + n].chunks_exact_mut(8) {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            w.copy_from_slice(&(!u64::from_ne_bytes(x)).to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt8() -> Format {
        Format {
            ms: 8,
            pi: 1,
            ..Format::NONE
        }
    }

    #[test]
    fn never_written_metadata_reads_deallocated_then_as_written() {
        let ram = Backend::new("ram", 1 << 20, 512, None, None).unwrap();
        let s = Store::open(fmt8(), 2048, &ram).unwrap().unwrap();
        let mut out = [0u8; 16];
        s.read(5, fmt8(), &mut out).unwrap();
        assert_eq!(out, [0xFF; 16], "deallocated: PI all FFh");
        let data: Vec<u8> = (0..16).collect();
        s.write(5, fmt8(), &data).unwrap();
        s.read(5, fmt8(), &mut out).unwrap();
        assert_eq!(out[..], data[..]);
        s.deallocate(6, 1, fmt8()).unwrap();
        s.read(5, fmt8(), &mut out).unwrap();
        assert_eq!(out[..8], data[..8]);
        assert_eq!(out[8..], [0xFF; 8]);
        // 16 bytes with the PI last: the first 8 are not PI and read 00h.
        let last = Format { ms: 16, ..fmt8() };
        let s = Store::open(last, 2048, &ram).unwrap().unwrap();
        let mut out = [1u8; 16];
        s.read(0, last, &mut out).unwrap();
        assert_eq!(
            out[..8],
            [0; 8],
            "DLFEAT 001b: metadata outside the PI reads 00h"
        );
        assert_eq!(out[8..], [0xFF; 8], "DLFEAT bit 4 clear: PI all FFh");
        let no_pi = Format { pi: 0, ..last };
        let s = Store::open(no_pi, 2048, &ram).unwrap().unwrap();
        s.read(0, no_pi, &mut out).unwrap();
        assert_eq!(out, [0; 16], "without PI: all 00h");
        assert!(Store::open(Format::NONE, 2048, &ram).unwrap().is_none());
    }

    #[test]
    fn a_file_namespace_keeps_metadata_in_a_companion_across_reopen() {
        let path = format!("/dev/shm/nvmefast-pi-store-{}.img", std::process::id());
        let spec = crate::backend::FileSpec {
            path: path.clone(),
            readonly: false,
            cache: crate::backend::CacheMode::Buffered,
            io: crate::aio::Choice::Threads,
        };
        let md = companion_path(&path);
        let _ = std::fs::remove_file(&md);
        {
            let b = Backend::new("file", 1 << 20, 512, Some(&spec), None).unwrap();
            let s = Store::open(fmt8(), 2048, &b).unwrap().unwrap();
            assert_eq!(s.kind(), "file");
            s.write(2047, fmt8(), &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(std::fs::metadata(&md).unwrap().len(), 2048 * 8);
        let raw = std::fs::read(&md).unwrap();
        assert_eq!(
            &raw[2047 * 8..],
            &[!1u8, !2, !3, !4, !5, !6, !7, !8],
            "stored inverted"
        );
        let b = Backend::new("file", 1 << 20, 512, Some(&spec), None).unwrap();
        let s = Store::open(fmt8(), 2048, &b).unwrap().unwrap();
        let mut out = [0u8; 16];
        s.read(2046, fmt8(), &mut out).unwrap();
        assert_eq!(
            out,
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        // Another format's companion is refused with what to do.
        let e = Store::open(fmt8(), 1024, &b).err().unwrap();
        assert!(
            e.contains("is in use") || e.contains("another format"),
            "{e}"
        );
        drop(s);
        let e = Store::open(fmt8(), 1024, &b).err().unwrap();
        assert!(e.contains("another format"), "{e}");
        let s = Store::open(fmt8(), 2048, &b).unwrap();
        let s = Store::reformat(s, Format { ms: 16, ..fmt8() }, 2048, &b)
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::metadata(&md).unwrap().len(), 2048 * 16);
        let mut out = [0u8; 16];
        s.read(2047, Format { ms: 16, ..fmt8() }, &mut out).unwrap();
        assert_eq!(
            out[..8],
            [0; 8],
            "reformatted: deallocated, 00h outside the PI"
        );
        assert_eq!(out[8..], [0xFF; 8], "reformatted: deallocated, PI all FFh");
        drop(s);
        let _ = std::fs::remove_file(&md);
        let _ = std::fs::remove_file(&path);
    }
}
