//! End-to-end data protection (NVM Command Set 1.0, 5.2): LBA formats with
//! metadata, protection information tuples, their guards (CRC-16 T10-DIF,
//! CRC-64/NVME), the checks PRCHK asks for and the insertion PRACT asks
//! for, and where a namespace keeps its metadata.
//!
//! The commands that move metadata are in `cmd/protect.rs`; this module is
//! the arithmetic and the storage, free of guest memory.

pub mod check;
pub mod crc;
pub mod store;
pub mod tuple;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

pub use check::{Checks, PiError, Tags};
pub use store::Store;

/// The guard a protection information format carries (ELBAF.PIF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Guard {
    /// 16b Guard PI: CRC-16 T10-DIF, 8-byte tuple (PIF 00b).
    #[default]
    Crc16,
    /// 64b Guard PI: CRC-64/NVME, 16-byte tuple (PIF 10b).
    Crc64,
}

impl Guard {
    /// "crc16" or "crc64".
    pub fn name(self) -> &'static str {
        match self {
            Guard::Crc16 => "crc16",
            Guard::Crc64 => "crc64",
        }
    }

    /// Parses "crc16" or "crc64".
    pub fn parse(s: &str) -> Option<Guard> {
        match s {
            "crc16" => Some(Guard::Crc16),
            "crc64" => Some(Guard::Crc64),
            _ => None,
        }
    }

    /// Bytes of the tuple.
    pub fn tuple_size(self) -> usize {
        match self {
            Guard::Crc16 => 8,
            Guard::Crc64 => 16,
        }
    }
}

/// A namespace's metadata format: what Format NVM (LBAF, MSET, PI, PIL)
/// and the configuration choose. `ms == 0`: no metadata (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Format {
    /// Metadata bytes per logical block (LBAF.MS).
    pub ms: u16,
    /// Metadata interleaved with the data (FLBAS bit 4, MSET 1).
    pub extended: bool,
    /// Protection information type 0 (none), 1, 2 or 3 (DPS bits 2:0).
    pub pi: u8,
    /// PI in the first bytes of the metadata (DPS bit 3, PIL 1).
    pub first: bool,
    pub guard: Guard,
}

/// The (LBA data size, metadata size) pairs the controller supports: the
/// LBA formats of Identify Namespace (index 0 and 1 as before metadata).
pub const LBA_FORMATS: [(u32, u16); 7] = [
    (512, 0),
    (4096, 0),
    (512, 8),
    (512, 16),
    (4096, 8),
    (4096, 16),
    (4096, 64),
];

impl Format {
    /// No metadata.
    pub const NONE: Format = Format {
        ms: 0,
        extended: false,
        pi: 0,
        first: false,
        guard: Guard::Crc16,
    };

    /// True when blocks carry metadata.
    #[inline]
    pub fn has_metadata(self) -> bool {
        self.ms != 0
    }

    /// Bytes of protection information per block (0 without PI).
    #[inline]
    pub fn pi_size(self) -> usize {
        if self.pi == 0 {
            0
        } else {
            self.guard.tuple_size()
        }
    }

    /// Byte offset of the PI inside a block's metadata.
    #[inline]
    pub fn pi_offset(self) -> usize {
        if self.first {
            0
        } else {
            usize::from(self.ms).saturating_sub(self.pi_size())
        }
    }

    /// Checks the format against an LBA data size; Err says what to change
    /// (in the configuration's words).
    pub fn validate(self, lba_size: u32) -> Result<(), String> {
        if !LBA_FORMATS.contains(&(lba_size, self.ms)) {
            let sizes: Vec<String> = LBA_FORMATS
                .iter()
                .filter(|f| f.0 == lba_size)
                .map(|f| f.1.to_string())
                .collect();
            return Err(format!(
                "metadata_size {} is not an LBA format with lba_size {lba_size}; use one of {}",
                self.ms,
                sizes.join(", ")
            ));
        }
        if self.pi > 3 {
            return Err(format!("pi_type {} must be 0 (none), 1, 2 or 3", self.pi));
        }
        if self.pi == 0 {
            if self.first {
                return Err("pi_first needs protection information: set pi_type 1, 2 or 3, or drop pi_first".into());
            }
            if self.guard != Guard::Crc16 {
                return Err("guard=\"crc64\" needs protection information: set pi_type 1, 2 or 3, or drop guard".into());
            }
        }
        if self.extended && self.ms == 0 {
            return Err(
                "extended_lba needs metadata: set metadata_size, or drop extended_lba".into(),
            );
        }
        if self.guard == Guard::Crc64 {
            if lba_size < 4096 {
                return Err(format!(
                    "guard=\"crc64\" needs lba_size 4096 (64b guard formats are for LBAs of 4 KiB and more), not {lba_size}"
                ));
            }
            if self.ms < 16 {
                return Err(format!(
                    "guard=\"crc64\" needs metadata_size 16 or more for its 16-byte tuple, not {}",
                    self.ms
                ));
            }
        }
        if self.pi != 0 && usize::from(self.ms) < self.pi_size() {
            return Err(format!(
                "pi_type {} needs metadata_size {} or more for its tuple, not {}",
                self.pi,
                self.pi_size(),
                self.ms
            ));
        }
        Ok(())
    }

    fn pack(self) -> u32 {
        u32::from(self.ms)
            | u32::from(self.extended) << 16
            | u32::from(self.pi & 3) << 17
            | u32::from(self.first) << 19
            | u32::from(self.guard == Guard::Crc64) << 20
    }

    fn unpack(w: u32) -> Format {
        Format {
            ms: w as u16,
            extended: w & 1 << 16 != 0,
            pi: ((w >> 17) & 3) as u8,
            first: w & 1 << 19 != 0,
            guard: if w & 1 << 20 != 0 {
                Guard::Crc64
            } else {
                Guard::Crc16
            },
        }
    }
}

/// A namespace's metadata: its current format and where it is kept.
/// Changed only by Format NVM, with every worker held off.
#[derive(Default)]
pub struct Meta {
    format: AtomicU32,
    store: ArcSwapOption<Store>,
    /// While a power loss is tracked (the data's `VolatileCache`): the
    /// metadata each block held before its first unflushed write, by LBA,
    /// so a power loss rolls it back with the data.
    unflushed: Mutex<HashMap<u64, Box<[u8]>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Meta {
    /// The current format (one relaxed load: all a namespace without
    /// metadata pays per command).
    #[inline]
    pub fn format(&self) -> Format {
        Format::unpack(self.format.load(Ordering::Relaxed))
    }

    /// True when blocks carry metadata.
    #[inline]
    pub fn active(&self) -> bool {
        self.format.load(Ordering::Relaxed) as u16 != 0
    }

    /// Where the metadata is kept (None without metadata).
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.load_full()
    }

    /// The store for one command: no reference count taken (the hot path).
    #[inline]
    pub fn store_guard(&self) -> arc_swap::Guard<Option<Arc<Store>>> {
        self.store.load()
    }

    /// Installs a format and its store.
    pub fn set(&self, format: Format, store: Option<Arc<Store>>) {
        lock(&self.unflushed).clear();
        self.store.store(store);
        self.format.store(format.pack(), Ordering::Relaxed);
    }

    /// The metadata of `nlb` blocks at `lba` is about to change (see
    /// `VolatileCache::will_write`, which `cache` is): keeps the pre-image
    /// of each block's metadata first written since the last Flush, while a
    /// power loss is tracked; `fua` or the write cache off: durable.
    pub fn will_write(&self, cache: &crate::backend::VolatileCache, lba: u64, nlb: u64, fua: bool) {
        if !cache.tracking() {
            return;
        }
        let (Some(store), fmt) = (self.store(), self.format()) else {
            return;
        };
        let mut m = lock(&self.unflushed);
        let durable = fua || !cache.write_cache();
        for b in lba..lba.saturating_add(nlb) {
            if durable {
                m.remove(&b);
            } else if let std::collections::hash_map::Entry::Vacant(e) = m.entry(b) {
                let mut pre = vec![0u8; usize::from(fmt.ms)].into_boxed_slice();
                if store.read(b, fmt, &mut pre).is_ok() {
                    e.insert(pre);
                }
            }
        }
    }

    /// The namespace shrank to `lbas` blocks: the metadata pre-images past
    /// it go.
    pub fn truncate(&self, lbas: u64) {
        lock(&self.unflushed).retain(|&lba, _| lba < lbas);
    }

    /// A Flush completed (or tracking stopped): nothing to roll back.
    pub fn flushed(&self) {
        lock(&self.unflushed).clear();
    }

    /// The power went: the metadata of every unflushed block goes back to
    /// what it was, and is made durable.
    pub fn power_loss(&self) {
        let pre = std::mem::take(&mut *lock(&self.unflushed));
        let (Some(store), fmt) = (self.store(), self.format()) else {
            return;
        };
        for (lba, md) in pre {
            let _ = store.write(lba, fmt, &md);
        }
        let _ = store.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_pack_and_validate() {
        let f = Format {
            ms: 64,
            extended: true,
            pi: 3,
            first: true,
            guard: Guard::Crc64,
        };
        assert_eq!(Format::unpack(f.pack()), f);
        assert!(f.validate(4096).is_ok());
        assert!(f.validate(512).unwrap_err().contains("use one of 0, 8, 16"));
        let crc64_512 = Format { ms: 16, ..f };
        assert!(crc64_512
            .validate(512)
            .unwrap_err()
            .contains("lba_size 4096"));
        let small = Format { ms: 8, ..f };
        assert!(small
            .validate(4096)
            .unwrap_err()
            .contains("metadata_size 16"));
        let no_room = Format {
            ms: 0,
            pi: 1,
            extended: false,
            first: false,
            guard: Guard::Crc16,
        };
        assert!(no_room
            .validate(512)
            .unwrap_err()
            .contains("needs metadata_size 8"));
        assert_eq!(
            Format {
                ms: 16,
                pi: 1,
                first: false,
                ..Format::NONE
            }
            .pi_offset(),
            8,
            "PI last: the final 8 bytes"
        );
        assert_eq!(
            Format {
                ms: 64,
                pi: 1,
                first: true,
                ..Format::NONE
            }
            .pi_offset(),
            0
        );
        assert!(Format::NONE.validate(512).is_ok() && Format::NONE.validate(4096).is_ok());
        assert!(Format {
            pi: 4,
            ms: 8,
            ..Format::NONE
        }
        .validate(512)
        .is_err());
    }
}
