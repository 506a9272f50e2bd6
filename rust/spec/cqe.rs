//! The 16-byte Completion Queue Entry (NVMe Base 2.0, Figure 90).

use super::status::Status;

/// A completion queue entry, built locally before it is posted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Cqe {
    /// DW0: command specific.
    pub dw0: u32,
    /// DW1: command specific.
    pub dw1: u32,
    /// DW2 bits 15:0.
    pub sqhd: u16,
    /// DW2 bits 31:16.
    pub sqid: u16,
    /// DW3 bits 15:0.
    pub cid: u16,
    /// DW3 bits 31:16: phase tag in bit 0, status field in bits 15:1.
    pub status_phase: u16,
}

const _: () = assert!(std::mem::size_of::<Cqe>() == 16);

impl Cqe {
    /// Size of one entry in bytes (CC.IOCQES = 4).
    pub const SIZE: usize = 16;

    /// A completion for `cid` from `sqid` with `status`; the phase is set at post time.
    pub fn new(sqid: u16, cid: u16, status: Status, dw0: u32) -> Self {
        Cqe {
            dw0,
            dw1: 0,
            sqhd: 0,
            sqid,
            cid,
            status_phase: status.field() << 1,
        }
    }

    /// A completion carrying `result` in DW0 (bits 31:0) and DW1 (bits
    /// 63:32): a Zone Append's ALBA.
    pub fn with_result(sqid: u16, cid: u16, status: Status, result: u64) -> Self {
        Cqe {
            dw1: (result >> 32) as u32,
            ..Cqe::new(sqid, cid, status, result as u32)
        }
    }

    /// Dwords 0-1 as one little-endian u64 (the half written first).
    pub fn low(&self) -> u64 {
        u64::from(self.dw0) | (u64::from(self.dw1) << 32)
    }

    /// Dwords 2-3 with `phase`: the half whose phase tag publishes the entry.
    pub fn high(&self, phase: bool) -> u64 {
        let dw2 = u32::from(self.sqhd) | (u32::from(self.sqid) << 16);
        let dw3 = u32::from(self.cid) | (u32::from(self.status_phase | u16::from(phase)) << 16);
        u64::from(dw2) | (u64::from(dw3) << 32)
    }

    /// Decodes the entry (driver side).
    pub fn from_words(low: u64, high: u64) -> Self {
        Cqe {
            dw0: low as u32,
            dw1: (low >> 32) as u32,
            sqhd: high as u16,
            sqid: (high >> 16) as u16,
            cid: (high >> 32) as u16,
            status_phase: (high >> 48) as u16,
        }
    }

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status_phase & 1 == 1
    }

    /// The status field.
    pub fn status(&self) -> Status {
        Status::from_field(self.status_phase >> 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_dw3() {
        let c = Cqe::new(3, 0x1234, Status::LBA_OUT_OF_RANGE.dnr(), 9);
        let h = c.high(true);
        let dw3 = (h >> 32) as u32;
        assert_eq!(dw3 & 0xffff, 0x1234);
        assert_eq!((dw3 >> 16) & 1, 1, "phase in bit 16");
        assert_eq!((dw3 >> 17) & 0xff, 0x80, "SC in bits 24:17");
        assert_eq!((dw3 >> 25) & 7, 0, "SCT in bits 27:25");
        assert_eq!(dw3 >> 31, 1, "DNR in bit 31");
        assert_eq!(((h >> 16) & 0xffff) as u16, 3);
        let back = Cqe::from_words(c.low(), h);
        assert!(back.phase());
        assert_eq!(back.status(), Status::LBA_OUT_OF_RANGE.dnr());
    }
}
