//! The guards: CRC-16 T10-DIF (16b Guard PI) and CRC-64/NVME (64b Guard
//! PI), through the crc-fast crate's carry-less multiply kernels.
//!
//! | | CRC-16/T10-DIF | CRC-64/NVME |
//! |---|---|---|
//! | poly | 8BB7h, MSB first | AD93D23594C93659h (reflected) |
//! | init / xorout | 0 / 0 | all ones / all ones |
//!
//! The tests hold them to bit-by-bit implementations written from those
//! parameters and to the published values: the "123456789" check values of
//! the CRC catalogue and NVM Command Set 1.0 Figure 121 (whose "Check" line
//! in 5.2.1.3.4 is wrong: it is the value with RefOut false).

use crc_fast::{checksum, CrcAlgorithm, Digest};

use super::Guard;

/// CRC-16 T10-DIF of `data`.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    checksum(CrcAlgorithm::Crc16T10Dif, data) as u16
}

/// CRC-64/NVME of `data`.
#[inline]
pub fn crc64(data: &[u8]) -> u64 {
    checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// The guard of `data` for `guard` (a 16-bit CRC in the low bits).
#[inline]
pub fn of(guard: Guard, data: &[u8]) -> u64 {
    match guard {
        Guard::Crc16 => u64::from(crc16(data)),
        Guard::Crc64 => crc64(data),
    }
}

/// A guard over data that arrives in pieces.
pub struct Running(Digest);

impl Running {
    /// A fresh CRC for `guard`.
    pub fn new(guard: Guard) -> Running {
        Running(Digest::new(match guard {
            Guard::Crc16 => CrcAlgorithm::Crc16T10Dif,
            Guard::Crc64 => CrcAlgorithm::Crc64Nvme,
        }))
    }

    /// Adds the next piece.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The guard of everything added.
    pub fn finish(&self) -> u64 {
        self.0.finalize()
    }
}

#[cfg(test)]
pub(crate) mod reference {
    //! Bit-at-a-time CRCs from the polynomial, for tests only.

    /// CRC-16 T10-DIF: poly 0x8BB7, MSB first, init 0, xorout 0.
    pub fn crc16(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &byte in data {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x8BB7
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// CRC-64/NVME: poly 0xAD93D23594C93659 reflected (0x9A6C9329AC4BC9B5),
    /// LSB first, init and xorout all ones.
    pub fn crc64(data: &[u8]) -> u64 {
        let mut crc = u64::MAX;
        for &byte in data {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x9A6C_9329_AC4B_C9B5
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc() -> Vec<u8> {
        (0..4096u32).map(|i| i as u8).collect()
    }
    fn dec() -> Vec<u8> {
        (0..4096u32).map(|i| 255 - i as u8).collect()
    }

    #[test]
    fn the_reference_matches_the_published_values() {
        // The CRC catalogue's check values for "123456789".
        assert_eq!(reference::crc16(b"123456789"), 0xD0DB);
        assert_eq!(reference::crc64(b"123456789"), 0xAE8B_1486_0A79_9888);
        // NVM Command Set 1.0 Figure 121 (64b CRC test cases, 4 KiB).
        assert_eq!(reference::crc64(&[0u8; 4096]), 0x6482_D367_EB22_B64E);
        assert_eq!(reference::crc64(&[0xFFu8; 4096]), 0xC0DD_BA73_02EC_A3AC);
        assert_eq!(reference::crc64(&inc()), 0x3E72_9F5F_6750_449C);
        assert_eq!(reference::crc64(&dec()), 0x9A2D_F64B_8E9E_517E);
        // Linux crypto/testmgr.h crct10dif vector.
        assert_eq!(reference::crc16(b"abc"), 0x443B);
    }

    #[test]
    fn crc_fast_agrees_with_the_reference() {
        assert_eq!(crc16(b"123456789"), 0xD0DB);
        assert_eq!(crc64(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(crc64(&[0u8; 4096]), 0x6482_D367_EB22_B64E);
        assert_eq!(crc64(&[0xFFu8; 4096]), 0xC0DD_BA73_02EC_A3AC);
        assert_eq!(crc64(&inc()), 0x3E72_9F5F_6750_449C);
        assert_eq!(crc64(&dec()), 0x9A2D_F64B_8E9E_517E);
        assert_eq!(crc16(&[0xFFu8; 4096]), 0x8B5D);
        assert_eq!(crc16(&inc()), 0x8F6D);
        assert_eq!(crc16(&dec()), 0x0430);
        assert_eq!(crc16(&[0u8; 512]), 0);
        assert_eq!(crc16(&[0xFFu8; 512]), 0xE6A1);
        assert_eq!(crc64(&[0u8; 512]), 0x1DE6_0E28_68A7_82E9);
        // Every length across the SIMD kernels' block and tail sizes.
        let data: Vec<u8> = (0..1100u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                crc16(&data[..n]),
                reference::crc16(&data[..n]),
                "crc16 len {n}"
            );
            assert_eq!(
                crc64(&data[..n]),
                reference::crc64(&data[..n]),
                "crc64 len {n}"
            );
        }
    }

    #[test]
    fn pieces_give_the_same_guard() {
        let data = inc();
        for guard in [Guard::Crc16, Guard::Crc64] {
            for cut in [0usize, 1, 7, 512, 4095, 4096] {
                let mut r = Running::new(guard);
                r.update(&data[..cut]);
                r.update(&data[cut..]);
                assert_eq!(r.finish(), of(guard, &data), "{guard:?} cut at {cut}");
            }
        }
    }
}
