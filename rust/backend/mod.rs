//! Namespace storage backends. An enum rather than a trait object: the hot
//! path dispatches with one match and the copies inline.

pub mod null;
pub mod ram;

pub use null::NullBackend;
pub use ram::RamBackend;

/// Errors of backend creation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend kind is not one we know.
    #[error("unknown backend {0:?}; use \"ram\" or \"null\"")]
    UnknownKind(String),
    /// The host could not provide the memory.
    #[error("cannot allocate {size} bytes for a RAM namespace: {reason}")]
    Alloc { size: u64, reason: String },
}

/// Storage of one namespace.
pub enum Backend {
    Ram(RamBackend),
    Null(NullBackend),
}

impl Backend {
    /// Builds a backend of `kind` with `size` bytes.
    pub fn new(kind: &str, size: u64) -> Result<Backend, BackendError> {
        match kind {
            "ram" => Ok(Backend::Ram(RamBackend::new(size)?)),
            "null" => Ok(Backend::Null(NullBackend::new(size))),
            other => Err(BackendError::UnknownKind(other.to_string())),
        }
    }

    /// Copies `len` bytes at byte `offset` into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes; `offset + len` must be
    /// within the namespace (the caller checked the LBA range).
    #[inline]
    pub unsafe fn read(&self, offset: u64, dst: *mut u8, len: usize) {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.read(offset, dst, len) },
            Backend::Null(_) => {}
        }
    }

    /// Copies `len` bytes from `src` to byte `offset`.
    ///
    /// # Safety
    /// `src` must be valid for `len` bytes of reads; `offset + len` within
    /// the namespace.
    #[inline]
    pub unsafe fn write(&self, offset: u64, src: *const u8, len: usize) {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.write(offset, src, len) },
            Backend::Null(_) => {}
        }
    }

    /// Zeroes (deallocates) `len` bytes at `offset`: Write Zeroes, Dataset
    /// Management deallocate, Format NVM. Deallocated blocks read as zeroes
    /// (DLFEAT 001b).
    ///
    /// # Safety
    /// `offset + len` within the namespace.
    pub unsafe fn zero(&self, offset: u64, len: u64) {
        if let Backend::Ram(r) = self {
            // SAFETY: forwarded contract.
            unsafe { r.zero(offset, len) }
        }
    }

    /// True when the `len` bytes at `src` equal the namespace at `offset`.
    ///
    /// # Safety
    /// `src` valid for `len` reads; `offset + len` within the namespace.
    pub unsafe fn compare(&self, offset: u64, src: *const u8, len: usize) -> bool {
        match self {
            // SAFETY: forwarded contract.
            Backend::Ram(r) => unsafe { r.compare(offset, src, len) },
            // Nothing is stored: every compare of the null backend matches.
            Backend::Null(_) => true,
        }
    }

    /// Copies `len` bytes from `src` to `dst` inside the namespace
    /// (overlap allowed; the spec leaves overlapping Copy undefined).
    ///
    /// # Safety
    /// Both ranges within the namespace.
    pub unsafe fn copy(&self, src: u64, dst: u64, len: u64) {
        if let Backend::Ram(r) = self {
            // SAFETY: forwarded contract.
            unsafe { r.copy(src, dst, len) }
        }
    }

    /// Makes completed writes durable. RAM and null have nothing to do: a
    /// completed write is already visible to every later read.
    pub fn flush(&self) {}

    /// True when reads transfer no data (the null backend).
    pub fn transfers_data(&self) -> bool {
        matches!(self, Backend::Ram(_))
    }
}
