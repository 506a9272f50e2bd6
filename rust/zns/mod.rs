//! Zoned namespaces (NVMe Zoned Namespace Command Set 1.1): a command set
//! of its own beside `cmd/`, so every backend (RAM, file, null, a storage
//! object) gets zones unchanged.
//!
//! - `state`: the zone state machine with its resources (MOR/MAR) and
//!   implicit open/close, pure data, no locks;
//! - `table`: a namespace's zones: the machine under a short lock, a
//!   lock-free snapshot per zone for reads, write reservations, the
//!   durable write pointers and the Changed Zone List;
//! - `io`: the zone rules inside Read, Write, Write Zeroes, Copy, Compare,
//!   Verify and Dataset Management, and Zone Append;
//! - `mgmt`: Zone Management Send and Receive;
//! - `persist`: the companion file that keeps a file namespace's zones.
//!
//! A conventional namespace pays one well-predicted branch per command
//! (`Namespace::zones` is None).

pub mod io;
pub mod mgmt;
pub mod persist;
pub mod state;
pub mod table;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use state::{ZoneError, ZoneState};
pub use table::{Geometry, ZoneAction, Zones};

/// Zone attribute bits (ZA, Zone Descriptor byte 2; ZNS 1.1 Figure 37).
pub mod za {
    /// Zone Finished by Controller.
    pub const ZFC: u8 = 1 << 0;
    /// Finish Zone Recommended.
    pub const FZR: u8 = 1 << 1;
    /// Reset Zone Recommended.
    pub const RZR: u8 = 1 << 2;
    /// Zone Descriptor Extension Valid.
    pub const ZDEV: u8 = 1 << 7;
}

/// Zone Descriptor Extension sizes are multiples of this (ZDES units).
pub const ZDE_UNIT: u32 = 64;
/// The largest Zone Descriptor Extension (ZDES is one byte of 64-byte units).
pub const ZDE_MAX: u32 = 255 * ZDE_UNIT;
/// Entries of the Changed Zone List log page (ZNS 1.1, 4.1.4.1).
pub const CHANGED_ZONES_MAX: usize = 511;
/// Zone Append size limits are powers of two of this (CAP.MPSMIN).
pub const ZASL_UNIT: u64 = 4096;

/// A namespace's zone configuration, as the embedder gives it (bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Zone size (ZSZE) in bytes: a power of two of LBAs dividing the namespace.
    pub size_bytes: u64,
    /// Writable bytes of each zone (ZCAP); 0 means the zone size.
    pub capacity_bytes: u64,
    /// Most zones open at once (MOR + 1); 0 for no limit.
    pub max_open: u32,
    /// Most zones active at once (MAR + 1); 0 for no limit.
    pub max_active: u32,
    /// Largest Zone Append in bytes (ZASL); 0 means MDTS.
    pub append_size_limit: u64,
    /// Zone Descriptor Extension bytes (ZDES * 64); 0 for none.
    pub descriptor_extension_bytes: u32,
    /// Read Across Zone Boundaries (OZCS bit 0).
    pub cross_read: bool,
}

/// Errors of zone configuration and of a file namespace's zone state
/// (embedder input; each message says what to change).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZnsError {
    /// The zone geometry does not fit the namespace.
    #[error("zones: {0}")]
    Config(String),
    /// The companion file that keeps the zones cannot be used.
    #[error("zone state file {path}: {reason}")]
    Companion { path: String, reason: String },
}

impl ZoneSpec {
    /// Checks the spec against a namespace of `size_bytes` in `lba_size`
    /// blocks and returns the geometry in LBAs.
    pub fn geometry(&self, size_bytes: u64, lba_size: u32) -> Result<Geometry, ZnsError> {
        let bad = |m: String| Err(ZnsError::Config(m));
        let lba = u64::from(lba_size);
        if self.size_bytes == 0 || self.size_bytes % lba != 0 {
            return bad(format!(
                "zone size {} bytes must be a positive multiple of the LBA size {lba}",
                self.size_bytes
            ));
        }
        let zone_lbas = self.size_bytes / lba;
        if !zone_lbas.is_power_of_two() {
            let lower = 1u64 << (63 - zone_lbas.leading_zeros());
            return bad(format!(
                "zone size {} bytes is {zone_lbas} LBAs, not a power of two (Linux needs one); use {} bytes",
                self.size_bytes,
                lower * lba
            ));
        }
        if size_bytes == 0 || size_bytes % self.size_bytes != 0 {
            let whole = size_bytes / self.size_bytes * self.size_bytes;
            return bad(format!(
                "zone size {} bytes does not divide the namespace size {size_bytes} bytes; make the namespace a \
                 multiple of the zone size (e.g. {} bytes) or pick a zone size that divides it",
                self.size_bytes,
                whole.max(self.size_bytes)
            ));
        }
        let cap = if self.capacity_bytes == 0 {
            self.size_bytes
        } else {
            self.capacity_bytes
        };
        if cap > self.size_bytes || cap % lba != 0 {
            return bad(format!(
                "zone capacity {cap} bytes must be a positive multiple of the LBA size {lba} no larger than \
                 the zone size {} bytes",
                self.size_bytes
            ));
        }
        let zones = size_bytes / self.size_bytes;
        let Ok(zones) = u32::try_from(zones) else {
            return bad(format!(
                "{zones} zones are too many (at most {}); use a larger zone size",
                u32::MAX
            ));
        };
        for (name, v) in [("max_open", self.max_open), ("max_active", self.max_active)] {
            if v > zones {
                return bad(format!(
                    "{name} {v} is above the zone count {zones}; use 0 (no limit) or at most {zones}"
                ));
            }
        }
        if self.max_open != 0 && self.max_active != 0 && self.max_open > self.max_active {
            return bad(format!(
                "max_open {} is above max_active {} (MOR must not exceed MAR); lower max_open or raise max_active",
                self.max_open, self.max_active
            ));
        }
        let zasl = self.append_size_limit;
        // ZASL is 2^n units of CAP.MPSMIN and ZASL 0 means "MDTS applies",
        // so the smallest limit Identify can report is two units.
        if zasl != 0 && (!zasl.is_power_of_two() || zasl < 2 * ZASL_UNIT) {
            return bad(format!(
                "append_size_limit {zasl} bytes must be a power-of-two multiple of 4096 of at least 8192 \
                 (8K, 16K, ... 128K): ZASL 0 means MDTS, so 4K cannot be reported; or None for MDTS"
            ));
        }
        let zde = self.descriptor_extension_bytes;
        if zde % ZDE_UNIT != 0 || zde > ZDE_MAX {
            return bad(format!(
                "descriptor_extension_bytes {zde} must be a multiple of 64 up to {ZDE_MAX} (0 for none)"
            ));
        }
        Ok(Geometry {
            lba_shift: lba_size.trailing_zeros(),
            zone_shift: zone_lbas.trailing_zeros(),
            zones,
            zcap: cap / lba,
            max_open: self.max_open,
            max_active: self.max_active,
            zasl_bytes: zasl,
            zde_bytes: zde,
            cross_read: self.cross_read,
        })
    }
}
