//! Namespace storage backends. An enum rather than a trait object: the hot
//! path dispatches with one match and the copies inline.

pub mod custom;
pub mod file;
pub mod null;
pub mod ram;
pub mod volatile;

pub use custom::{CustomBackend, Storage};
pub use file::{CacheMode, FileBackend, FileSpec};
pub use null::NullBackend;
pub use ram::RamBackend;
pub use volatile::VolatileCache;

/// Errors of backend creation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend kind is not one we know.
    #[error("unknown backend {0:?}; use \"ram\", \"null\", \"file\" or a storage object")]
    UnknownKind(String),
    /// The host could not provide the memory.
    #[error("cannot allocate {size} bytes for a RAM namespace: {reason}")]
    Alloc { size: u64, reason: String },
    /// A file namespace without a path, or a path for a memory one.
    #[error("{0}")]
    Spec(String),
    /// The file cannot serve as a namespace; `reason` says what to change.
    #[error("namespace file {path}: {reason}")]
    File { path: String, reason: String },
}

/// An I/O error from the backing file: the errno.
pub type Errno = i32;

/// The embedder's [`Storage`] of a namespace (Debug for configs).
#[derive(Clone)]
pub struct StorageRef(pub std::sync::Arc<dyn Storage>);

impl std::fmt::Debug for StorageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageRef(..)")
    }
}

/// Storage of one namespace.
pub enum Backend {
    Ram(RamBackend),
    Null(NullBackend),
    File(FileBackend),
    Custom(CustomBackend),
}

impl Backend {
    /// Builds a backend of `kind` with `size` bytes (for a file, 0: the
    /// file's size) of `lba_size`-byte LBAs.
    pub fn new(
        kind: &str,
        size: u64,
        lba_size: u32,
        file: Option<&FileSpec>,
        storage: Option<&StorageRef>,
    ) -> Result<Backend, BackendError> {
        match (kind, storage) {
            ("custom", Some(s)) if file.is_none() => {
                return Ok(Backend::Custom(CustomBackend::new(s.0.clone(), lba_size)))
            }
            ("custom", _) => {
                return Err(BackendError::Spec(
                    "a custom namespace takes a storage object and no path".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(BackendError::Spec(format!(
                    "a {kind} namespace takes no storage object"
                )))
            }
            _ => {}
        }
        match (kind, file) {
            ("file", Some(spec)) => Ok(Backend::File(FileBackend::open(spec, size, lba_size)?)),
            ("file", None) => Err(BackendError::Spec(
                "a file namespace needs a path (the image file or block device)".into(),
            )),
            ("ram" | "null", Some(_)) => Err(BackendError::Spec(format!(
                "a {kind} namespace takes no path; use backend \"file\" to serve a file"
            ))),
            ("ram", None) => Ok(Backend::Ram(RamBackend::new(size)?)),
            ("null", None) => Ok(Backend::Null(NullBackend::new(size))),
            (other, _) => Err(BackendError::UnknownKind(other.to_string())),
        }
    }

    /// The size in bytes (a file's as opened).
    pub fn size(&self, configured: u64) -> u64 {
        match self {
            Backend::File(f) => f.size(),
            _ => configured,
        }
    }

    /// The file backend, when this is one.
    #[inline]
    pub fn as_file(&self) -> Option<&FileBackend> {
        match self {
            Backend::File(f) => Some(f),
            _ => None,
        }
    }

    /// Writes are refused: Namespace Is Write Protected.
    #[inline]
    pub fn readonly(&self) -> bool {
        matches!(self, Backend::File(f) if f.readonly())
    }

    /// Copies `len` bytes at byte `offset` into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes; `offset + len` must be
    /// within the namespace (the caller checked the LBA range).
    #[inline]
    pub unsafe fn read(&self, offset: u64, dst: *mut u8, len: usize) -> Result<(), Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.read(offset, dst, len) },
            Backend::Null(_) => {}
            // SAFETY: forwarded contract.
            Backend::File(f) => return unsafe { f.read(offset, dst, len) },
            // SAFETY: forwarded contract.
            Backend::Custom(c) => return unsafe { c.read(offset, dst, len) },
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to byte `offset`.
    ///
    /// # Safety
    /// `src` must be valid for `len` bytes of reads; `offset + len` within
    /// the namespace.
    #[inline]
    pub unsafe fn write(&self, offset: u64, src: *const u8, len: usize) -> Result<(), Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.write(offset, src, len) },
            Backend::Null(_) => {}
            // SAFETY: forwarded contract.
            Backend::File(f) => return unsafe { f.write(offset, src, len) },
            // SAFETY: forwarded contract.
            Backend::Custom(c) => return unsafe { c.write(offset, src, len) },
        }
        Ok(())
    }

    /// Zeroes (deallocates) `len` bytes at `offset`: Write Zeroes, Dataset
    /// Management deallocate, Format NVM. Deallocated blocks read as zeroes
    /// (DLFEAT 001b).
    ///
    /// # Safety
    /// `offset + len` within the namespace.
    pub unsafe fn zero(&self, offset: u64, len: u64) -> Result<(), Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.zero(offset, len) },
            Backend::Null(_) => {}
            Backend::File(f) => return f.zero(offset, len),
            Backend::Custom(c) => return c.zero(offset, len, false),
        }
        Ok(())
    }

    /// Deallocates `len` bytes at `offset` (Dataset Management AD, Write
    /// Zeroes DEAC): zeroes them, or lets a custom storage deallocate them
    /// (reading back as zeroes all the same).
    ///
    /// # Safety
    /// `offset + len` within the namespace.
    pub unsafe fn deallocate(&self, offset: u64, len: u64) -> Result<(), Errno> {
        match self {
            Backend::Custom(c) => c.zero(offset, len, true),
            // SAFETY: forwarded contract.
            _ => unsafe { self.zero(offset, len) },
        }
    }

    /// True when the `len` bytes at `src` equal the namespace at `offset`.
    ///
    /// # Safety
    /// `src` valid for `len` reads; `offset + len` within the namespace.
    pub unsafe fn compare(&self, offset: u64, src: *const u8, len: usize) -> Result<bool, Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => Ok(unsafe { r.compare(offset, src, len) }),
            // Nothing is stored: every compare of the null backend matches.
            Backend::Null(_) => Ok(true),
            Backend::Custom(c) => {
                let mut buf = Vec::new();
                c.read_into(offset, len, &mut buf)?;
                // SAFETY: as below.
                Ok(buf.as_slice() == unsafe { std::slice::from_raw_parts(src, len) })
            }
            Backend::File(f) => {
                let mut buf = vec![0u8; len];
                // SAFETY: buf holds len writable bytes.
                unsafe { f.read(offset, buf.as_mut_ptr(), len)? };
                // SAFETY: the caller vouches for src; guest memory may change
                // under us, which only changes the answer.
                Ok(buf.as_slice() == unsafe { std::slice::from_raw_parts(src, len) })
            }
        }
    }

    /// Copies `len` bytes from `src` to `dst` inside the namespace
    /// (overlap allowed; the spec leaves overlapping Copy undefined).
    ///
    /// # Safety
    /// Both ranges within the namespace.
    pub unsafe fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.copy(src, dst, len) },
            Backend::Null(_) => {}
            Backend::Custom(c) => {
                let n = usize::try_from(len).map_err(|_| libc::EINVAL)?;
                let mut buf = Vec::new();
                c.read_into(src, n, &mut buf)?;
                c.write_from(dst, &buf)?;
            }
            Backend::File(f) => {
                let n = usize::try_from(len).map_err(|_| libc::EINVAL)?;
                let mut buf = vec![0u8; n];
                // SAFETY: buf holds n bytes for both transfers.
                unsafe {
                    f.read(src, buf.as_mut_ptr(), n)?;
                    f.write(dst, buf.as_ptr(), n)?;
                }
            }
        }
        Ok(())
    }

    /// Makes completed writes durable. RAM and null have nothing to do: a
    /// completed write is already visible to every later read.
    pub fn flush(&self) -> Result<(), Errno> {
        match self {
            Backend::File(f) => f.datasync(),
            Backend::Custom(c) => c.flush(),
            _ => Ok(()),
        }
    }

    /// Why the storage cannot be resized, if it cannot: a device, a
    /// read-only file, a storage object (its size is the embedder's).
    pub fn fixed_size(&self) -> Option<&'static str> {
        match self {
            Backend::File(f) => f.fixed_size(),
            Backend::Custom(_) => Some("a storage object's size is its own"),
            Backend::Ram(_) | Backend::Null(_) => None,
        }
    }

    /// Resizes the storage to `size` bytes (see [`Backend::fixed_size`]):
    /// what stays keeps its data, what is added reads as zero.
    ///
    /// # Safety
    /// No other thread touches the storage during the call, and nothing
    /// past the new size afterwards (the engine's quiesce, with the
    /// commands in flight to it completed).
    pub unsafe fn resize(&self, size: u64) -> Result<(), Errno> {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.resize(size) },
            Backend::File(f) => f.resize(size),
            Backend::Null(_) => Ok(()),
            Backend::Custom(_) => Err(libc::EPERM),
        }
    }

    /// True when reads transfer data (not the null backend).
    pub fn transfers_data(&self) -> bool {
        !matches!(self, Backend::Null(_))
    }
}
