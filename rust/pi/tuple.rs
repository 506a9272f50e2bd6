//! Protection information tuples (NVM Command Set 1.0, 5.2.1): where the
//! guard, application tag and reference tag sit, all big-endian.
//!
//! | format | guard | application tag | reference tag |
//! |---|---|---|---|
//! | 16b Guard (8 bytes, Figure 114) | bytes 1:0 | 3:2 | 7:4 (32 bits) |
//! | 64b Guard (16 bytes, Figure 118) | bytes 7:0 | 9:8 | 15:10 (48 bits, STS 0) |

use super::Guard;

/// One tuple's fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    /// CRC (16 bits in the low half for the 16b guard).
    pub guard: u64,
    pub app: u16,
    /// 32 bits (16b guard) or 48 bits (64b guard).
    pub reftag: u64,
}

/// A field of the tuple (fault injection names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Guard,
    App,
    Ref,
}

/// The reference tag's width as a mask: 32 or 48 bits.
#[inline]
pub fn ref_mask(guard: Guard) -> u64 {
    match guard {
        Guard::Crc16 => 0xFFFF_FFFF,
        Guard::Crc64 => 0xFFFF_FFFF_FFFF,
    }
}

/// Byte ranges of (guard, app, ref) in a tuple.
fn layout(guard: Guard) -> [(usize, usize); 3] {
    match guard {
        Guard::Crc16 => [(0, 2), (2, 4), (4, 8)],
        Guard::Crc64 => [(0, 8), (8, 10), (10, 16)],
    }
}

/// The first `N` bytes of `b` (panics if shorter, as indexing would).
#[inline]
fn head<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Reads the tuple at the start of `pi` (at least the tuple's size).
///
/// Fixed-width big-endian loads (one check of `pi`'s length, no byte
/// loop): this runs once per block on every checked command.
#[inline]
pub fn read(guard: Guard, pi: &[u8]) -> Tuple {
    match guard {
        Guard::Crc16 => {
            let v = u64::from_be_bytes(head::<8>(pi));
            Tuple {
                guard: v >> 48,
                app: (v >> 32) as u16,
                reftag: v & 0xFFFF_FFFF,
            }
        }
        Guard::Crc64 => {
            let t: [u8; 16] = head(pi);
            let lo = u64::from_be_bytes(head::<8>(&t[8..]));
            Tuple {
                guard: u64::from_be_bytes(head::<8>(&t)),
                app: (lo >> 48) as u16,
                reftag: lo & 0xFFFF_FFFF_FFFF,
            }
        }
    }
}

/// Writes `t` at the start of `pi` (the reference tag's bits above the
/// field's width are dropped; the guard's too for the 16b guard).
#[inline]
pub fn write(guard: Guard, pi: &mut [u8], t: Tuple) {
    match guard {
        Guard::Crc16 => {
            let v = (t.guard & 0xFFFF) << 48 | u64::from(t.app) << 32 | t.reftag & 0xFFFF_FFFF;
            pi[..8].copy_from_slice(&v.to_be_bytes());
        }
        Guard::Crc64 => {
            let lo = u64::from(t.app) << 48 | t.reftag & 0xFFFF_FFFF_FFFF;
            let pi = &mut pi[..16];
            pi[..8].copy_from_slice(&t.guard.to_be_bytes());
            pi[8..].copy_from_slice(&lo.to_be_bytes());
        }
    }
}

/// Offset in the tuple of a field's last (least significant) byte.
pub fn last_byte(guard: Guard, field: Field) -> usize {
    let [g, a, r] = layout(guard);
    match field {
        Field::Guard => g.1 - 1,
        Field::App => a.1 - 1,
        Field::Ref => r.1 - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_sit_where_the_spec_puts_them() {
        let mut b = [0u8; 8];
        write(
            Guard::Crc16,
            &mut b,
            Tuple {
                guard: 0xD0DB,
                app: 0x1234,
                reftag: 0xA1B2_C3D4,
            },
        );
        assert_eq!(b, [0xD0, 0xDB, 0x12, 0x34, 0xA1, 0xB2, 0xC3, 0xD4]);
        assert_eq!(read(Guard::Crc16, &b).reftag, 0xA1B2_C3D4);
        let mut b = [0u8; 16];
        let t = Tuple {
            guard: 0xAE8B_1486_0A79_9888,
            app: 0xBEEF,
            reftag: 0x0102_0304_0506,
        };
        write(Guard::Crc64, &mut b, t);
        assert_eq!(
            b,
            [0xAE, 0x8B, 0x14, 0x86, 0x0A, 0x79, 0x98, 0x88, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(read(Guard::Crc64, &b), t);
        assert_eq!(last_byte(Guard::Crc16, Field::App), 3);
        assert_eq!(last_byte(Guard::Crc64, Field::Ref), 15);
    }
}
