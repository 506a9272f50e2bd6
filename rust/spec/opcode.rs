//! Opcodes the core executes itself (NVM Command Set 2.0, Figure 18).

/// I/O command opcodes.
pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    pub const VERIFY: u8 = 0x0c;
    pub const COPY: u8 = 0x19;
    /// Zoned Namespace Command Set 1.1, Figure 12.
    pub const ZONE_MGMT_SEND: u8 = 0x79;
    pub const ZONE_MGMT_RECV: u8 = 0x7a;
    pub const ZONE_APPEND: u8 = 0x7d;
}

/// Admin opcodes the core must recognise (the rest is the Python layer's).
pub mod admin {
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
}
