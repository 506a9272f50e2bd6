//! The companion file that keeps a file namespace's zones across a
//! restart, beside the image (`disk.img.zones`), so the image itself stays
//! a raw image.
//!
//! Layout (little endian). A 4096-byte header: magic `NVMEFAST-ZONES\0\0`,
//! version, the geometry it was written for (LBA size, zone size and
//! capacity in LBAs, zone count, extension bytes), the slot size, and an
//! FNV-1a checksum of the bytes before it. Then two slots per zone, so a
//! torn write of one leaves the other: zone `z` at `4096 + z * 2 * slot`.
//! A slot is a sequence number (0: never written), the zone state (ZS),
//! attributes (ZA), the write pointer (data frontier, an offset in the
//! zone), a checksum, then the Zone Descriptor Extension. A record goes to
//! the slot with the older sequence number; loading takes the newest slot
//! whose checksum holds. Records are written at durability points only
//! (see `table.rs`), then the file is fdatasync'd once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::state::{Zone, ZoneState};
use super::table::Geometry;
use super::{za, ZnsError};
use crate::backend::Errno;

const MAGIC: &[u8; 16] = b"NVMEFAST-ZONES\0\0";
const VERSION: u32 = 1;
const HEADER: u64 = 4096;
/// Bytes of a slot before the extension.
const SLOT_HEAD: usize = 64;

/// FNV-1a, 64-bit: catches a torn or stale slot (not an adversary).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The zone state file of one namespace.
pub struct Companion {
    file: File,
    path: String,
    geo: Geometry,
    slot: usize,
    /// Per zone: the sequence numbers of its two slots.
    seqs: Mutex<Vec<[u64; 2]>>,
    existed: bool,
}

impl Companion {
    /// The companion of image `image`: `image.zones`.
    pub fn path_for(image: &str) -> String {
        format!("{image}.zones")
    }

    fn header(geo: &Geometry, slot: usize) -> Vec<u8> {
        let mut h = vec![0u8; HEADER as usize];
        h[..16].copy_from_slice(MAGIC);
        h[16..20].copy_from_slice(&VERSION.to_le_bytes());
        h[20..24].copy_from_slice(&(1u32 << geo.lba_shift).to_le_bytes());
        h[24..32].copy_from_slice(&geo.zone_lbas().to_le_bytes());
        h[32..40].copy_from_slice(&geo.zcap.to_le_bytes());
        h[40..44].copy_from_slice(&geo.zones.to_le_bytes());
        h[44..48].copy_from_slice(&geo.zde_bytes.to_le_bytes());
        h[48..52].copy_from_slice(&(slot as u32).to_le_bytes());
        let sum = fnv(&h[..56]);
        h[56..64].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// Opens (or, writable, creates) the companion at `path` for `geo`. A
    /// file written for another geometry is an error that names the fix.
    pub fn open(path: &str, geo: Geometry, readonly: bool) -> Result<Companion, ZnsError> {
        let err = |reason: String| ZnsError::Companion {
            path: path.to_string(),
            reason,
        };
        let slot = SLOT_HEAD + geo.zde_bytes as usize;
        let existed = std::path::Path::new(path).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .create(!readonly)
            .truncate(false)
            .open(path);
        let file = match file {
            Ok(f) => f,
            Err(e) if readonly && e.kind() == std::io::ErrorKind::NotFound => {
                // Read-only without a record: the caller makes every zone Full.
                return Ok(Companion {
                    file: File::open("/dev/null").map_err(|e| err(e.to_string()))?,
                    path: path.to_string(),
                    geo,
                    slot,
                    seqs: Mutex::new(vec![[0, 0]; geo.zones as usize]),
                    existed: false,
                });
            }
            Err(e) => {
                return Err(err(format!(
                    "cannot be opened: {e}; fix its permissions or its directory"
                )))
            }
        };
        let want = Self::header(&geo, slot);
        let len = u64::from(geo.zones) * 2 * slot as u64 + HEADER;
        let size = file.metadata().map_err(|e| err(e.to_string()))?.len();
        if !existed || size == 0 {
            if readonly {
                return Err(err(
                    "is empty; remove it or serve the namespace writable once".into(),
                ));
            }
            file.write_all_at(&want, 0)
                .and_then(|()| file.set_len(len))
                .and_then(|()| file.sync_all())
                .map_err(|e| err(format!("cannot be written: {e}")))?;
            if let Some(dir) = std::path::Path::new(path).parent() {
                // The new name is durable too, not only the contents.
                let dir = if dir.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    dir
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        } else {
            let mut have = vec![0u8; HEADER as usize];
            file.read_exact_at(&mut have, 0)
                .map_err(|e| err(format!("cannot read its header: {e}")))?;
            if &have[..16] != MAGIC || fnv(&have[..56]).to_le_bytes() != have[56..64] {
                return Err(err(
                    "is not an nvmefast zone state file (or is damaged); move it away to start with every zone Empty"
                        .into(),
                ));
            }
            if have[..56] != want[..56] {
                let g =
                    |a: usize| u64::from_le_bytes(have[a..a + 8].try_into().unwrap_or_default());
                let u =
                    |a: usize| u32::from_le_bytes(have[a..a + 4].try_into().unwrap_or_default());
                return Err(err(format!(
                    "was written for another zone geometry ({} zones of {} LBAs, capacity {}, {}-byte LBAs, \
                     {}-byte extensions; this namespace has {} zones of {} LBAs, capacity {}, {}-byte LBAs, \
                     {}-byte extensions): configure the namespace as it was, or delete {path} to start with \
                     every zone Empty",
                    u(40),
                    g(24),
                    g(32),
                    u(20),
                    u(44),
                    geo.zones,
                    geo.zone_lbas(),
                    geo.zcap,
                    1u32 << geo.lba_shift,
                    geo.zde_bytes
                )));
            }
            if size < len && !readonly {
                file.set_len(len).map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(Companion {
            file,
            path: path.to_string(),
            geo,
            slot,
            seqs: Mutex::new(vec![[0, 0]; geo.zones as usize]),
            existed,
        })
    }

    /// True when the file was there before this open.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn offset(&self, z: u32, k: usize) -> u64 {
        HEADER + (u64::from(z) * 2 + k as u64) * self.slot as u64
    }

    /// The zones as last stored (Empty where nothing was), and their
    /// extensions.
    #[allow(clippy::type_complexity)]
    pub fn load(&self) -> Result<(Vec<Zone>, HashMap<u32, Box<[u8]>>), ZnsError> {
        let mut zones = Vec::with_capacity(self.geo.zones as usize);
        let mut ext = HashMap::new();
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; self.slot * 2];
        for z in 0..self.geo.zones {
            let empty = Zone {
                state: ZoneState::Empty,
                wp: 0,
                attrs: 0,
            };
            if !self.existed
                || self
                    .file
                    .read_exact_at(&mut buf, self.offset(z, 0))
                    .is_err()
            {
                zones.push(empty);
                continue;
            }
            let mut best: Option<(u64, Zone, &[u8])> = None;
            for k in 0..2 {
                let s = &buf[k * self.slot..(k + 1) * self.slot];
                let seq = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
                let mut body = s.to_vec();
                body[56..64].fill(0);
                let ok = seq != 0 && fnv(&body).to_le_bytes() == s[56..64];
                let state = ZoneState::from_zs(s[8]);
                let wp = u64::from_le_bytes(s[16..24].try_into().unwrap_or_default());
                seqs[z as usize][k] = if ok { seq } else { 0 };
                if let (true, Some(state)) = (ok, state) {
                    if wp <= self.geo.zcap && best.as_ref().is_none_or(|b| seq > b.0) {
                        let zone = Zone {
                            state,
                            wp,
                            attrs: s[9],
                        };
                        best = Some((seq, zone, &s[SLOT_HEAD..]));
                    }
                }
            }
            match best {
                Some((_, zone, e)) => {
                    if zone.attrs & za::ZDEV != 0 && !e.is_empty() {
                        ext.insert(z, e.to_vec().into_boxed_slice());
                    }
                    zones.push(zone);
                }
                None => zones.push(empty),
            }
        }
        Ok((zones, ext))
    }

    /// Writes the records of zones `which` from `zones`, then makes the
    /// file durable.
    pub fn store(
        &self,
        which: &[u32],
        zones: &[Zone],
        ext: &HashMap<u32, Box<[u8]>>,
    ) -> Result<(), Errno> {
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = vec![0u8; self.slot];
        for &z in which {
            let Some(zone) = zones.get(z as usize) else {
                continue;
            };
            let s = seqs[z as usize];
            let k = usize::from(s[1] < s[0]);
            let seq = s[0].max(s[1]) + 1;
            slot.fill(0);
            slot[0..8].copy_from_slice(&seq.to_le_bytes());
            slot[8] = zone.state as u8;
            slot[9] = zone.attrs;
            slot[16..24].copy_from_slice(&zone.wp.to_le_bytes());
            if let Some(e) = ext.get(&z) {
                let n = e.len().min(self.slot - SLOT_HEAD);
                slot[SLOT_HEAD..SLOT_HEAD + n].copy_from_slice(&e[..n]);
            }
            let sum = fnv(&slot);
            slot[56..64].copy_from_slice(&sum.to_le_bytes());
            self.file
                .write_all_at(&slot, self.offset(z, k))
                .map_err(|e| errno(&e))?;
            seqs[z as usize][k] = seq;
        }
        self.file.sync_data().map_err(|e| errno(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        crate::zns::ZoneSpec {
            size_bytes: 64 << 10,
            descriptor_extension_bytes: 64,
            ..Default::default()
        }
        .geometry(1 << 20, 512)
        .unwrap()
    }

    fn zone(state: ZoneState, wp: u64, attrs: u8) -> Zone {
        Zone { state, wp, attrs }
    }

    #[test]
    fn a_torn_newest_slot_leaves_the_older_record() {
        let dir = std::env::temp_dir().join(format!("nvmefast-zones-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.img.zones").to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&path);
        let c = Companion::open(&path, geo(), false).unwrap();
        assert!(!c.existed());
        let mut zones = vec![zone(ZoneState::Empty, 0, 0); 16];
        let mut ext = HashMap::new();
        zones[3] = zone(ZoneState::Closed, 7, za::ZDEV);
        ext.insert(3, vec![0x42u8; 64].into_boxed_slice());
        c.store(&[3], &zones, &ext).unwrap();
        zones[3] = zone(ZoneState::Full, 100, za::ZDEV);
        c.store(&[3], &zones, &ext).unwrap();
        drop(c);
        let c = Companion::open(&path, geo(), false).unwrap();
        let (got, e) = c.load().unwrap();
        assert_eq!(
            got[3],
            zone(ZoneState::Full, 100, za::ZDEV),
            "the newest record"
        );
        assert_eq!(e.get(&3).map(|b| b[0]), Some(0x42));
        // Tear the newest slot (slot 1 of zone 3: sequence 2): the older one stands.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff; 8], c.offset(3, 1) + 16).unwrap();
        let (got, _) = Companion::open(&path, geo(), false)
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(got[3], zone(ZoneState::Closed, 7, za::ZDEV));
        assert_eq!(got[0], zone(ZoneState::Empty, 0, 0), "never written: Empty");
        // Another geometry is refused with the fix named.
        let other = crate::zns::ZoneSpec {
            size_bytes: 128 << 10,
            descriptor_extension_bytes: 64,
            ..Default::default()
        }
        .geometry(1 << 20, 512)
        .unwrap();
        let err = Companion::open(&path, other, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("another zone geometry") && err.contains("delete"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
