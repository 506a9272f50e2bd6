//! The 64-byte Submission Queue Entry (NVMe Base 2.0, Figure 88).

/// A submission queue entry, as fetched from guest memory.
///
/// Kept as sixteen little-endian dwords: every accessor decodes on demand,
/// so a fetched entry is one 64-byte copy and nothing else.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Sqe {
    pub dw: [u32; 16],
}

const _: () = assert!(std::mem::size_of::<Sqe>() == 64);

impl Sqe {
    /// Size of one entry in bytes (CC.IOSQES = 6).
    pub const SIZE: usize = 64;

    /// Decodes an entry from its wire bytes.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let mut dw = [0u32; 16];
        for (i, d) in dw.iter_mut().enumerate() {
            let o = i * 4;
            *d = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        }
        Sqe { dw }
    }

    /// Encodes the entry to its wire bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        for (i, d) in self.dw.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// CDW0 bits 7:0.
    pub fn opcode(&self) -> u8 {
        self.dw[0] as u8
    }
    /// CDW0 bits 9:8, fused operation.
    pub fn fuse(&self) -> u8 {
        ((self.dw[0] >> 8) & 3) as u8
    }
    /// CDW0 bits 15:14, PRP or SGL for data transfer.
    pub fn psdt(&self) -> u8 {
        ((self.dw[0] >> 14) & 3) as u8
    }
    /// CDW0 bits 31:16, command identifier.
    pub fn cid(&self) -> u16 {
        (self.dw[0] >> 16) as u16
    }
    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.dw[1]
    }
    /// Data pointer, PRP entry 1.
    pub fn prp1(&self) -> u64 {
        u64::from(self.dw[6]) | (u64::from(self.dw[7]) << 32)
    }
    /// Data pointer, PRP entry 2.
    pub fn prp2(&self) -> u64 {
        u64::from(self.dw[8]) | (u64::from(self.dw[9]) << 32)
    }
    /// Command dword `n` for n in 10..=15.
    pub fn cdw(&self, n: usize) -> u32 {
        self.dw[n]
    }

    /// Builds an entry (driver side: mock host, tests, benchmarks).
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        let mut s = Sqe::default();
        s.dw[0] = u32::from(opcode) | (u32::from(cid) << 16);
        s.dw[1] = nsid;
        s
    }
    /// Sets PRP1 and PRP2 (driver side).
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.dw[6] = prp1 as u32;
        self.dw[7] = (prp1 >> 32) as u32;
        self.dw[8] = prp2 as u32;
        self.dw[9] = (prp2 >> 32) as u32;
    }
    /// Sets SLBA (CDW10-11) and NLB (CDW12 bits 15:0, given 1-based, stored
    /// 0's based) of an LBA command (driver side).
    pub fn set_lba_range(&mut self, slba: u64, nlb: u32) {
        self.dw[10] = slba as u32;
        self.dw[11] = (slba >> 32) as u32;
        self.dw[12] = (self.dw[12] & !0xffff) | (nlb.saturating_sub(1) & 0xffff);
    }
    /// Sets the CID (driver side).
    pub fn set_cid(&mut self, cid: u16) {
        self.dw[0] = (self.dw[0] & 0xffff) | (u32::from(cid) << 16);
    }
}

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqe")
            .field("opcode", &self.opcode())
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("prp1", &format_args!("{:#x}", self.prp1()))
            .field("prp2", &format_args!("{:#x}", self.prp2()))
            .field("cdw10", &format_args!("{:#x}", self.dw[10]))
            .field("cdw11", &format_args!("{:#x}", self.dw[11]))
            .field("cdw12", &format_args!("{:#x}", self.dw[12]))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fields() {
        let mut s = Sqe::new(0x02, 0xbeef, 7);
        s.set_prps(0x1122_3344_5566_7000, 0x8000);
        s.dw[10] = 5;
        s.dw[12] = 0x1f;
        let b = s.to_bytes();
        assert_eq!(b[0], 0x02);
        assert_eq!(&b[2..4], &[0xef, 0xbe]);
        assert_eq!(&b[24..32], &0x1122_3344_5566_7000u64.to_le_bytes());
        let t = Sqe::from_bytes(&b);
        assert_eq!(t, s);
        assert_eq!(t.cid(), 0xbeef);
        assert_eq!(t.nsid(), 7);
        assert_eq!(t.prp1(), 0x1122_3344_5566_7000);
        assert_eq!(t.prp2(), 0x8000);
        assert_eq!(t.cdw(12), 0x1f);
        assert_eq!(t.psdt(), 0);
    }
}
