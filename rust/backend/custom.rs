//! A namespace whose blocks come from the embedder's code: a [`Storage`]
//! (in the Python bindings, any object with `read(lba, nlb) -> bytes` and
//! `write(lba, data)`). Called on the worker thread that runs the command,
//! one call per command for Read and Write.
//!
//! A failing call (an error, a wrong length) is counted, and the command
//! completes with Internal Error: the backend's error is never the guest's
//! media error.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::Errno;

/// Blocks of one namespace, addressed in LBAs of the namespace's current
/// size (`lba_size` passed to each call, as Format NVM may change it).
pub trait Storage: Send + Sync {
    /// Fills `buf` (exactly `nlb` blocks) from LBA `lba`.
    fn read(&self, lba: u64, nlb: u64, lba_size: u32, buf: &mut [u8]) -> Result<(), String>;
    /// Stores `data` (whole blocks) at LBA `lba`.
    fn write(&self, lba: u64, data: &[u8], lba_size: u32) -> Result<(), String>;
    /// Makes completed writes durable.
    fn flush(&self) -> Result<(), String>;
    /// Zeroes `nlb` blocks at `lba`; `Ok(false)`: not implemented, the
    /// caller writes zero blocks instead.
    fn write_zeroes(&self, lba: u64, nlb: u64, lba_size: u32) -> Result<bool, String>;
    /// Deallocates `nlb` blocks at `lba` (they must read back as zeroes:
    /// DLFEAT 001b); `Ok(false)`: not implemented, the caller zeroes them.
    fn deallocate(&self, lba: u64, nlb: u64, lba_size: u32) -> Result<bool, String>;
    /// True when the storage keeps metadata (`read_metadata` and
    /// `write_metadata`); without it a namespace cannot have metadata.
    fn has_metadata(&self) -> bool {
        false
    }
    /// Fills `buf` (exactly `nlb` blocks of `ms` bytes) with the metadata
    /// of the blocks from `lba`.
    fn read_metadata(&self, _lba: u64, _nlb: u64, _ms: u32, _buf: &mut [u8]) -> Result<(), String> {
        Err("this storage keeps no metadata".into())
    }
    /// Stores `data` (whole blocks' metadata, `ms` bytes each) at `lba`.
    fn write_metadata(&self, _lba: u64, _data: &[u8], _ms: u32) -> Result<(), String> {
        Err("this storage keeps no metadata".into())
    }
}

/// Errno a failed [`Storage`] call maps to (Internal Error, see
/// `cmd::io::file_failure`).
pub const STORAGE_FAILED: Errno = libc::EPROTO;

/// Largest zero buffer written per call when the storage has no
/// `write_zeroes`.
const ZERO_CHUNK: u64 = 1 << 20;

/// The backend around a [`Storage`].
pub struct CustomBackend {
    storage: Arc<dyn Storage>,
    lba_shift: AtomicU32,
    /// Calls made and calls that failed.
    pub calls: AtomicU64,
    pub errors: AtomicU64,
}

impl CustomBackend {
    /// A backend of `lba_size`-byte blocks over `storage`.
    pub fn new(storage: Arc<dyn Storage>, lba_size: u32) -> CustomBackend {
        CustomBackend {
            storage,
            lba_shift: AtomicU32::new(lba_size.trailing_zeros()),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The storage object (its metadata methods serve the namespace's
    /// metadata).
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Format NVM changed the LBA size.
    pub fn set_lba_size(&self, lba_size: u32) {
        self.lba_shift
            .store(lba_size.trailing_zeros(), Ordering::Relaxed);
    }

    fn shift(&self) -> u32 {
        self.lba_shift.load(Ordering::Relaxed)
    }

    fn counted<T>(&self, r: Result<T, String>) -> Result<T, Errno> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        r.map_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
            STORAGE_FAILED
        })
    }

    /// The whole blocks covering `len` bytes at byte `offset`: (first LBA,
    /// count, byte offset of `offset` inside the first block).
    fn cover(&self, offset: u64, len: usize) -> Result<(u64, u64, usize), Errno> {
        let shift = self.shift();
        let end = offset.checked_add(len as u64).ok_or(libc::EINVAL)?;
        let first = offset >> shift;
        let last = end.div_ceil(1 << shift);
        let skip = usize::try_from(offset - (first << shift)).map_err(|_| libc::EINVAL)?;
        Ok((first, last - first, skip))
    }

    /// Reads `len` bytes at byte `offset` into `out` (resized to fit).
    pub fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<(), Errno> {
        let (lba, nlb, skip) = self.cover(offset, len)?;
        let bytes = usize::try_from(nlb << self.shift()).map_err(|_| libc::EINVAL)?;
        out.clear();
        out.resize(bytes, 0);
        let lba_size = 1 << self.shift();
        self.counted(self.storage.read(lba, nlb, lba_size, out))?;
        if skip != 0 {
            out.drain(..skip);
        }
        out.truncate(len);
        Ok(())
    }

    /// Writes `data` at byte `offset`; partial blocks are read, patched and
    /// written back.
    pub fn write_from(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let shift = self.shift();
        let lba_size = 1u32 << shift;
        let mask = u64::from(lba_size) - 1;
        if offset & mask == 0 && data.len() as u64 & mask == 0 {
            return self.counted(self.storage.write(offset >> shift, data, lba_size));
        }
        let (lba, nlb, skip) = self.cover(offset, data.len())?;
        let mut whole = Vec::new();
        // cover() checked offset + len; nlb whole blocks hold it.
        let span = usize::try_from(nlb << shift).map_err(|_| libc::EINVAL)?;
        self.read_into(lba << shift, span, &mut whole)?;
        whole[skip..skip + data.len()].copy_from_slice(data);
        self.counted(self.storage.write(lba, &whole, lba_size))
    }

    /// Copies `len` bytes at `offset` into `dst`.
    ///
    /// # Safety
    /// `dst` valid for `len` bytes of writes.
    pub unsafe fn read(&self, offset: u64, dst: *mut u8, len: usize) -> Result<(), Errno> {
        let mut buf = Vec::new();
        self.read_into(offset, len, &mut buf)?;
        // SAFETY: buf holds len bytes (read_into truncated it to len); the
        // caller vouches for dst.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, len) };
        Ok(())
    }

    /// Stores `len` bytes from `src` at `offset`.
    ///
    /// # Safety
    /// `src` valid for `len` bytes of reads.
    pub unsafe fn write(&self, offset: u64, src: *const u8, len: usize) -> Result<(), Errno> {
        // SAFETY: the caller vouches for src (guest memory may change under
        // us, which only changes the data written).
        let data = unsafe { std::slice::from_raw_parts(src, len) }.to_vec();
        self.write_from(offset, &data)
    }

    /// Zeroes `len` bytes at `offset` (whole blocks: every caller's range
    /// is in LBAs); `dealloc` asks the storage to deallocate them.
    pub fn zero(&self, offset: u64, len: u64, dealloc: bool) -> Result<(), Errno> {
        let shift = self.shift();
        let lba_size = 1u32 << shift;
        let (lba, nlb) = (offset >> shift, len >> shift);
        if nlb == 0 {
            return Ok(());
        }
        let done = if dealloc {
            self.counted(self.storage.deallocate(lba, nlb, lba_size))?
        } else {
            false
        };
        if done || self.counted(self.storage.write_zeroes(lba, nlb, lba_size))? {
            return Ok(());
        }
        let per = (ZERO_CHUNK >> shift).max(1);
        let zeros = vec![0u8; usize::try_from(per << shift).map_err(|_| libc::EINVAL)?];
        let mut at = 0;
        while at < nlb {
            let n = per.min(nlb - at);
            let bytes = usize::try_from(n << shift).map_err(|_| libc::EINVAL)?;
            self.counted(self.storage.write(lba + at, &zeros[..bytes], lba_size))?;
            at += n;
        }
        Ok(())
    }

    /// Makes completed writes durable.
    pub fn flush(&self) -> Result<(), Errno> {
        self.counted(self.storage.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Blocks in a Vec, recording calls.
    struct Blocks {
        data: Mutex<Vec<u8>>,
        calls: Mutex<Vec<String>>,
        zeroes: bool,
    }

    impl Storage for Blocks {
        fn read(&self, lba: u64, nlb: u64, lbs: u32, buf: &mut [u8]) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("read {lba} {nlb}"));
            let d = self.data.lock().unwrap();
            let at = (lba * u64::from(lbs)) as usize;
            buf.copy_from_slice(&d[at..at + buf.len()]);
            Ok(())
        }
        fn write(&self, lba: u64, data: &[u8], lbs: u32) -> Result<(), String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("write {lba} {}", data.len() / lbs as usize));
            let mut d = self.data.lock().unwrap();
            let at = (lba * u64::from(lbs)) as usize;
            d[at..at + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn flush(&self) -> Result<(), String> {
            Err("no flush today".into())
        }
        fn write_zeroes(&self, lba: u64, nlb: u64, _lbs: u32) -> Result<bool, String> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("zeroes {lba} {nlb}"));
            Ok(self.zeroes && {
                let mut d = self.data.lock().unwrap();
                let at = (lba * 512) as usize;
                d[at..at + (nlb * 512) as usize].fill(0);
                true
            })
        }
        fn deallocate(&self, _lba: u64, _nlb: u64, _lbs: u32) -> Result<bool, String> {
            Ok(false)
        }
    }

    fn backend(zeroes: bool) -> (Arc<Blocks>, CustomBackend) {
        let b = Arc::new(Blocks {
            data: Mutex::new((0..8192u32).map(|i| i as u8).collect()),
            calls: Mutex::new(Vec::new()),
            zeroes,
        });
        let c = CustomBackend::new(b.clone(), 512);
        (b, c)
    }

    #[test]
    fn unaligned_pieces_read_and_patch_whole_blocks() {
        let (b, c) = backend(true);
        let mut out = Vec::new();
        c.read_into(510, 4, &mut out).unwrap();
        assert_eq!(out, vec![254, 255, 0, 1]);
        assert_eq!(b.calls.lock().unwrap().pop().unwrap(), "read 0 2");
        c.write_from(1022, &[9, 9, 9, 9]).unwrap();
        let d = b.data.lock().unwrap().clone();
        assert_eq!(&d[1020..1028], &[252, 253, 9, 9, 9, 9, 2, 3]);
        assert_eq!(b.calls.lock().unwrap().last().unwrap(), "write 1 2");
    }

    #[test]
    fn zero_falls_back_to_writes_and_errors_are_counted() {
        let (b, c) = backend(false);
        c.zero(512, 1024, true).unwrap();
        assert!(b.data.lock().unwrap()[512..1536].iter().all(|&x| x == 0));
        assert_eq!(b.data.lock().unwrap()[511], 255);
        assert_eq!(c.flush(), Err(STORAGE_FAILED));
        assert_eq!(c.errors.load(Ordering::Relaxed), 1);
        assert!(c.calls.load(Ordering::Relaxed) >= 3);
    }
}
