//! The volatile write cache, as a power loss sees it: which blocks hold
//! data no Flush has made durable, and what they held before.
//!
//! Off (the default) it costs a write one relaxed load. On (fault
//! injection asked for it), every write keeps the pre-image of each block
//! it is first to change since the last Flush; a durable write (FUA, or
//! the Volatile Write Cache disabled) and a Flush drop the pre-images of
//! what they made durable; a power loss writes the pre-images back, so the
//! namespace holds exactly what was durable. Memory and file namespaces
//! only: a storage object keeps its own durability, and the null backend
//! keeps nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Backend, Errno};

/// A namespace's unflushed writes (see the module documentation).
#[derive(Debug)]
pub struct VolatileCache {
    tracking: AtomicBool,
    /// Volatile Write Cache enabled (Set Features 06h): off, every write
    /// is durable when it completes.
    enabled: AtomicBool,
    /// Pre-images by byte offset of the block, `block` bytes each.
    blocks: Mutex<HashMap<u64, Box<[u8]>>>,
}

impl Default for VolatileCache {
    fn default() -> Self {
        VolatileCache {
            tracking: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            blocks: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VolatileCache {
    /// True while unflushed writes are tracked (one relaxed load: the
    /// write path's whole cost when off).
    #[inline]
    pub fn tracking(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    /// Starts or stops tracking (stopping forgets what was tracked).
    /// Returns false for a backend whose blocks cannot be tracked.
    pub fn set_tracking(&self, backend: &Backend, on: bool) -> bool {
        if on && !matches!(backend, Backend::Ram(_) | Backend::File(_)) {
            return false;
        }
        let mut b = lock(&self.blocks);
        if !on {
            b.clear();
        }
        self.tracking.store(on, Ordering::Relaxed);
        true
    }

    /// Mirrors the Volatile Write Cache feature.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The Volatile Write Cache feature as last set (off: every write is
    /// durable when it completes).
    pub fn write_cache(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Blocks holding unflushed data.
    pub fn unflushed_blocks(&self) -> usize {
        lock(&self.blocks).len()
    }

    /// `len` bytes at `off` are about to change, in `block`-byte blocks
    /// (commands move whole LBAs); `fua`: the write is durable at
    /// completion. A pre-image that cannot be read is skipped (the write
    /// itself will report the error).
    pub fn will_write(&self, backend: &Backend, off: u64, len: u64, block: u32, fua: bool) {
        let block = u64::from(block.max(1));
        let Some(end) = off.checked_add(len).map(|e| e.div_ceil(block) * block) else {
            return;
        };
        let first = off / block * block;
        let mut b = lock(&self.blocks);
        let durable = fua || !self.enabled.load(Ordering::Relaxed);
        let mut at = first;
        while at < end {
            if durable {
                // Its new contents survive: nothing to roll back to.
                b.remove(&at);
            } else if let std::collections::hash_map::Entry::Vacant(e) = b.entry(at) {
                let mut pre = vec![0u8; block as usize].into_boxed_slice();
                // SAFETY: pre holds `block` bytes; the caller's range check
                // keeps [off, off + len) inside the namespace, and whole
                // LBAs around it are inside too.
                if unsafe { backend.read(at, pre.as_mut_ptr(), pre.len()) }.is_ok() {
                    e.insert(pre);
                }
            }
            at += block;
        }
    }

    /// A Flush completed: everything written so far is durable.
    pub fn flushed(&self) {
        if self.tracking() {
            lock(&self.blocks).clear();
        }
    }

    /// The namespace shrank to `size` bytes: the pre-images past it go (a
    /// power loss must not write where the namespace no longer is).
    pub fn truncate(&self, size: u64) {
        lock(&self.blocks).retain(|&off, pre| off + pre.len() as u64 <= size);
    }

    /// The power went: writes back every pre-image (then makes a file
    /// durable). Returns the blocks rolled back.
    pub fn power_loss(&self, backend: &Backend) -> Result<usize, Errno> {
        let blocks = std::mem::take(&mut *lock(&self.blocks));
        let n = blocks.len();
        for (off, pre) in blocks {
            // SAFETY: each pre-image was read from inside the namespace at
            // `off`, `pre.len()` bytes.
            unsafe { backend.write(off, pre.as_ptr(), pre.len())? };
        }
        backend.flush()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> Backend {
        Backend::new("ram", 1 << 20, 512, None, None).unwrap()
    }

    fn put(b: &Backend, off: u64, byte: u8, len: usize) {
        let data = vec![byte; len];
        // SAFETY: inside the 1 MiB namespace.
        unsafe { b.write(off, data.as_ptr(), len).unwrap() };
    }

    fn get(b: &Backend, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: as above.
        unsafe { b.read(off, v.as_mut_ptr(), len).unwrap() };
        v
    }

    fn write(c: &VolatileCache, b: &Backend, off: u64, byte: u8, len: usize, fua: bool) {
        c.will_write(b, off, len as u64, 512, fua);
        put(b, off, byte, len);
    }

    #[test]
    fn a_power_loss_keeps_exactly_what_was_durable() {
        let b = ram();
        let c = VolatileCache::default();
        put(&b, 0, 1, 4096);
        assert!(c.set_tracking(&b, true));
        write(&c, &b, 0, 2, 1024, false); // blocks 0-1: unflushed
        write(&c, &b, 0, 3, 512, false); // block 0 again: pre-image stays 1
        c.flushed();
        write(&c, &b, 1024, 4, 512, false); // block 2: unflushed
        write(&c, &b, 2048, 5, 512, false); // block 4: unflushed ...
        write(&c, &b, 2048, 6, 512, true); // ... then overwritten with FUA
        write(&c, &b, 3072, 7, 512, true); // block 6: FUA only
        assert_eq!(c.unflushed_blocks(), 1);
        assert_eq!(c.power_loss(&b).unwrap(), 1);
        assert_eq!(get(&b, 0, 512), vec![3; 512], "flushed");
        assert_eq!(get(&b, 512, 512), vec![2; 512], "flushed");
        assert_eq!(get(&b, 1024, 512), vec![1; 512], "unflushed: rolled back");
        assert_eq!(get(&b, 2048, 512), vec![6; 512], "FUA survives");
        assert_eq!(get(&b, 3072, 512), vec![7; 512], "FUA survives");
        assert_eq!(c.unflushed_blocks(), 0);
    }

    #[test]
    fn with_the_write_cache_off_every_write_is_durable() {
        let b = ram();
        let c = VolatileCache::default();
        c.set_tracking(&b, true);
        c.set_enabled(false);
        write(&c, &b, 0, 9, 512, false);
        assert_eq!(c.power_loss(&b).unwrap(), 0);
        assert_eq!(get(&b, 0, 512), vec![9; 512]);
    }

    #[test]
    fn untracked_writes_and_untrackable_backends_keep_nothing() {
        let b = ram();
        let c = VolatileCache::default();
        assert!(!c.tracking());
        put(&b, 0, 1, 512);
        assert_eq!(c.power_loss(&b).unwrap(), 0);
        let null = Backend::new("null", 1 << 20, 512, None, None).unwrap();
        assert!(!c.set_tracking(&null, true));
        assert!(!c.tracking());
        assert!(c.set_tracking(&b, true));
        write(&c, &b, 0, 2, 512, false);
        c.set_tracking(&b, false);
        assert_eq!(c.unflushed_blocks(), 0, "stopping forgets");
    }
}
