//! The blocks behind the `sqe` rig's `"custom"` namespace: the embedder's
//! own storage (`nvmefast::backend::Storage`), here a byte vector that
//! takes any call outside the namespace, or with a buffer that is not
//! exactly the blocks asked for, as a finding (a panic; under libFuzzer a
//! panic on a worker thread aborts the process, so it is reported).
//!
//! It implements Write Zeroes itself and leaves deallocation to the core
//! (which then writes zero blocks), so both of the backend's paths run.

use std::ops::Range;
use std::sync::Mutex;

use nvmefast::backend::Storage;

pub struct Blocks {
    bytes: Mutex<Vec<u8>>,
    lba_size: u32,
}

impl Blocks {
    /// `size` bytes of `lba_size`-byte blocks, zeroed.
    pub fn new(size: usize, lba_size: u32) -> Blocks {
        Blocks {
            bytes: Mutex::new(vec![0; size]),
            lba_size,
        }
    }

    /// The bytes of `nlb` blocks at `lba`, which must hold `len` bytes.
    fn span(&self, lba: u64, nlb: u64, lba_size: u32, len: usize) -> Range<usize> {
        assert_eq!(
            lba_size, self.lba_size,
            "storage called with another LBA size"
        );
        let lbs = u64::from(lba_size);
        let bytes = nlb.checked_mul(lbs);
        assert_eq!(
            bytes,
            Some(len as u64),
            "storage buffer of {len} bytes for {nlb} blocks"
        );
        let size = self.bytes.lock().unwrap().len() as u64;
        let start = lba.checked_mul(lbs);
        let end = start.and_then(|s| s.checked_add(len as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= size => s as usize..e as usize,
            _ => panic!("storage asked for LBAs {lba:#x}+{nlb:#x}, past the namespace"),
        }
    }
}

impl Storage for Blocks {
    fn read(&self, lba: u64, nlb: u64, lba_size: u32, buf: &mut [u8]) -> Result<(), String> {
        let r = self.span(lba, nlb, lba_size, buf.len());
        buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
        Ok(())
    }

    fn write(&self, lba: u64, data: &[u8], lba_size: u32) -> Result<(), String> {
        assert!(
            data.len().is_multiple_of(lba_size as usize),
            "storage write of {} bytes, not whole blocks",
            data.len()
        );
        let nlb = (data.len() / lba_size as usize) as u64;
        let r = self.span(lba, nlb, lba_size, data.len());
        self.bytes.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        Ok(())
    }

    fn write_zeroes(&self, lba: u64, nlb: u64, lba_size: u32) -> Result<bool, String> {
        let len = nlb
            .checked_mul(u64::from(lba_size))
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| panic!("storage asked to zero {nlb:#x} blocks"));
        let r = self.span(lba, nlb, lba_size, len);
        self.bytes.lock().unwrap()[r].fill(0);
        Ok(true)
    }

    fn deallocate(&self, _lba: u64, _nlb: u64, _lba_size: u32) -> Result<bool, String> {
        Ok(false)
    }
}
