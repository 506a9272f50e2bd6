//! Completion status field (NVMe Base 2.0, Figure 92): typed, never a bare u16.

/// The 15-bit status field of a CQE: `DNR<<14 | M<<13 | CRD<<11 | SCT<<8 | SC`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status(u16);

/// Status Code Type: generic command status.
const SCT_GENERIC: u16 = 0;
/// Status Code Type: command specific status.
const SCT_COMMAND_SPECIFIC: u16 = 1;
/// Status Code Type: media and data integrity errors.
const SCT_MEDIA: u16 = 2;

impl Status {
    pub const SUCCESS: Status = Status::new(SCT_GENERIC, 0x00);
    pub const INVALID_OPCODE: Status = Status::new(SCT_GENERIC, 0x01);
    pub const INVALID_FIELD: Status = Status::new(SCT_GENERIC, 0x02);
    pub const DATA_TRANSFER_ERROR: Status = Status::new(SCT_GENERIC, 0x04);
    pub const INTERNAL_ERROR: Status = Status::new(SCT_GENERIC, 0x06);
    pub const ABORT_REQUESTED: Status = Status::new(SCT_GENERIC, 0x07);
    pub const ABORT_SQ_DELETED: Status = Status::new(SCT_GENERIC, 0x08);
    pub const INVALID_NAMESPACE: Status = Status::new(SCT_GENERIC, 0x0b);
    pub const INVALID_SGL_DESCRIPTOR: Status = Status::new(SCT_GENERIC, 0x0d);
    pub const INVALID_PRP_OFFSET: Status = Status::new(SCT_GENERIC, 0x13);
    /// Sanitize In Progress: every I/O command but Flush while a sanitize
    /// runs (Base 2.0, 8.1.26.4).
    pub const SANITIZE_IN_PROGRESS: Status = Status::new(SCT_GENERIC, 0x1d);
    pub const LBA_OUT_OF_RANGE: Status = Status::new(SCT_GENERIC, 0x80);
    pub const CAPACITY_EXCEEDED: Status = Status::new(SCT_GENERIC, 0x81);
    pub const INVALID_NUM_SGL_DESCRIPTORS: Status = Status::new(SCT_GENERIC, 0x0e);
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::new(SCT_GENERIC, 0x0f);
    pub const SGL_TYPE_INVALID: Status = Status::new(SCT_GENERIC, 0x11);
    pub const INVALID_QID: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x01);
    /// Copy beyond MSSRL, MCL or MSRC.
    pub const COMMAND_SIZE_LIMIT_EXCEEDED: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x83);
    /// Compare found a difference (Media and Data Integrity Errors).
    pub const COMPARE_FAILURE: Status = Status::new(SCT_MEDIA, 0x85);
    /// Media and data integrity: Write Fault (an EIO from the backing file on a write).
    pub const WRITE_FAULT: Status = Status::new(SCT_MEDIA, 0x80);
    /// Media and data integrity: Unrecovered Read Error (an EIO on a read).
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(SCT_MEDIA, 0x81);
    /// Metadata SGL Length Invalid: a PSDT 10b metadata SGL describes too
    /// little or too much.
    pub const METADATA_SGL_LENGTH_INVALID: Status = Status::new(SCT_GENERIC, 0x10);
    /// Command specific: Invalid Format (Format NVM).
    pub const INVALID_FORMAT: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x0a);
    /// Command specific: Invalid Protection Information (PRINFO not valid
    /// for the namespace's format, a type 1 ILBRT that is not the SLBA).
    pub const INVALID_PI: Status = Status::new(SCT_COMMAND_SPECIFIC, 0x81);
    /// Media and data integrity: End-to-end Guard Check Error.
    pub const GUARD_CHECK_ERROR: Status = Status::new(SCT_MEDIA, 0x82);
    /// Media and data integrity: End-to-end Application Tag Check Error.
    pub const APP_TAG_CHECK_ERROR: Status = Status::new(SCT_MEDIA, 0x83);
    /// Media and data integrity: End-to-end Reference Tag Check Error.
    pub const REF_TAG_CHECK_ERROR: Status = Status::new(SCT_MEDIA, 0x84);
    /// Generic: Namespace is Write Protected (a read-only file namespace).
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::new(SCT_GENERIC, 0x20);
    /// Zoned Namespace Command Set 1.1, Figure 11 (command specific).
    pub const ZONE_BOUNDARY_ERROR: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xb8);
    pub const ZONE_IS_FULL: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xb9);
    pub const ZONE_IS_READ_ONLY: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xba);
    pub const ZONE_IS_OFFLINE: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xbb);
    pub const ZONE_INVALID_WRITE: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xbc);
    pub const TOO_MANY_ACTIVE_ZONES: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xbd);
    pub const TOO_MANY_OPEN_ZONES: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xbe);
    pub const INVALID_ZONE_STATE_TRANSITION: Status = Status::new(SCT_COMMAND_SPECIFIC, 0xbf);

    /// A status from its type and code.
    pub const fn new(sct: u16, sc: u16) -> Status {
        Status(((sct & 7) << 8) | (sc & 0xff))
    }
    /// The status with Do Not Retry set: the same command will fail again.
    pub const fn dnr(self) -> Status {
        Status(self.0 | (1 << 14))
    }
    /// The raw 15-bit field.
    pub const fn field(self) -> u16 {
        self.0
    }
    /// A status from a raw field (bits above 14 dropped).
    pub const fn from_field(f: u16) -> Status {
        Status(f & 0x7fff)
    }
    /// True for successful completion.
    pub const fn is_success(self) -> bool {
        self.0 & 0x7ff == 0
    }
    /// Status Code Type.
    pub const fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    /// Status Code.
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }
}
