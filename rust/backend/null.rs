//! The null backend: accepts every command, stores nothing, transfers no
//! data (like SPDK's null bdev). PRPs are still walked and checked, so it
//! measures the controller's own cost per command.

/// A namespace that discards writes and leaves read buffers untouched.
pub struct NullBackend {
    pub size: u64,
}

impl NullBackend {
    /// A null namespace of `size` bytes.
    pub fn new(size: u64) -> Self {
        NullBackend { size }
    }
}
