"""NVMe wire formats the host side needs: SQE building, CQE parsing, opcodes.

Written from the NVMe Base Specification 2.0 (Figures "Common Command
Format" and "Common Completion Queue Entry Layout"), not from the device's
own tables, so a test that compares the two compares against the spec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SQE_SIZE = 64
"""Bytes per submission queue entry (CC.IOSQES = 6)."""

CQE_SIZE = 16
"""Bytes per completion queue entry (CC.IOCQES = 4)."""

# Admin command opcodes (NVMe Base 2.0, Figure 28).
ADMIN_DELETE_SQ = 0x00
ADMIN_CREATE_SQ = 0x01
ADMIN_GET_LOG_PAGE = 0x02
ADMIN_DELETE_CQ = 0x04
ADMIN_CREATE_CQ = 0x05
ADMIN_IDENTIFY = 0x06
ADMIN_ABORT = 0x08
ADMIN_SET_FEATURES = 0x09
ADMIN_GET_FEATURES = 0x0A
ADMIN_ASYNC_EVENT_REQUEST = 0x0C

# NVM command set I/O opcodes (NVM Command Set 1.0, Figure 18).
IO_FLUSH = 0x00
IO_WRITE = 0x01
IO_READ = 0x02
IO_COMPARE = 0x05
IO_WRITE_ZEROES = 0x08
IO_DATASET_MANAGEMENT = 0x09
IO_VERIFY = 0x0C
IO_COPY = 0x19

# Feature identifiers (NVMe Base 2.0, Figure 317).
FEATURE_NUMBER_OF_QUEUES = 0x07

# Log page identifiers (NVMe Base 2.0, Figure 202).
LOG_ERROR_INFORMATION = 0x01
LOG_SMART_HEALTH = 0x02
LOG_FIRMWARE_SLOT = 0x03

_SQE = struct.Struct("<IIIIQQQIIIIII")
assert _SQE.size == SQE_SIZE
_CQE = struct.Struct("<IIII")
assert _CQE.size == CQE_SIZE


def build_sqe(
    opcode: int,
    *,
    cid: int = 0,
    nsid: int = 0,
    prp1: int = 0,
    prp2: int = 0,
    cdw2: int = 0,
    cdw3: int = 0,
    mptr: int = 0,
    cdw10: int = 0,
    cdw11: int = 0,
    cdw12: int = 0,
    cdw13: int = 0,
    cdw14: int = 0,
    cdw15: int = 0,
    psdt: int = 0,
    fuse: int = 0,
) -> bytes:
    """Encode a 64-byte submission queue entry.

    CDW0 is opcode 7:0, FUSE 9:8, PSDT 15:14, CID 31:16; PRP1 and PRP2 are
    the data pointer (DPTR) in dwords 6-9.
    """
    cdw0 = (opcode & 0xFF) | (fuse & 0x3) << 8 | (psdt & 0x3) << 14 | (cid & 0xFFFF) << 16
    return _SQE.pack(
        cdw0, nsid, cdw2, cdw3, mptr, prp1, prp2, cdw10, cdw11, cdw12, cdw13, cdw14, cdw15
    )


def sqe_with_cid(sqe: bytes, cid: int) -> bytes:
    """Return ``sqe`` with its CID (CDW0 31:16) replaced."""
    if len(sqe) != SQE_SIZE:
        raise ValueError(f"an SQE is {SQE_SIZE} bytes, got {len(sqe)}")
    return sqe[:2] + struct.pack("<H", cid & 0xFFFF) + sqe[4:]


def sqe_cid(sqe: bytes) -> int:
    """The CID of an encoded SQE."""
    return int.from_bytes(sqe[2:4], "little")


@dataclass(frozen=True)
class Completion:
    """One completion queue entry, decoded.

    ``status`` is the 15-bit Status Field (CQE DW3 31:17): DNR 14, M 13,
    CRD 12:11, SCT 10:8, SC 7:0, the layout ``nvmefast.status`` uses.
    """

    dw0: int
    dw1: int
    sqhd: int
    sqid: int
    cid: int
    status: int
    phase: int

    @classmethod
    def decode(cls, raw: bytes) -> Completion:
        """Decode 16 bytes of a CQE."""
        dw0, dw1, dw2, dw3 = _CQE.unpack(raw)
        return cls(
            dw0=dw0,
            dw1=dw1,
            sqhd=dw2 & 0xFFFF,
            sqid=dw2 >> 16,
            cid=dw3 & 0xFFFF,
            status=dw3 >> 17,
            phase=(dw3 >> 16) & 1,
        )

    @property
    def sc(self) -> int:
        """Status Code."""
        return self.status & 0xFF

    @property
    def sct(self) -> int:
        """Status Code Type (0 generic, 1 command specific, 2 media and data integrity)."""
        return (self.status >> 8) & 0x7

    @property
    def crd(self) -> int:
        """Command Retry Delay."""
        return (self.status >> 11) & 0x3

    @property
    def more(self) -> bool:
        """M: more information is in the Error Information log page."""
        return bool(self.status >> 13 & 1)

    @property
    def dnr(self) -> bool:
        """Do Not Retry."""
        return bool(self.status >> 14 & 1)

    @property
    def ok(self) -> bool:
        """True for Successful Completion (SCT 0, SC 0)."""
        return self.sct == 0 and self.sc == 0

    def __str__(self) -> str:
        return (
            f"Completion(sqid={self.sqid} cid={self.cid} sct={self.sct:#x} sc={self.sc:#04x}"
            f" dnr={int(self.dnr)} dw0={self.dw0:#x} sqhd={self.sqhd})"
        )
