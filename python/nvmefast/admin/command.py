"""The admin Submission Queue Entry as the handlers see it, and how they fail.

A handler validates its command field by field and raises :class:`Reject`
with the status the spec names (and where in the SQE the bad field is) the
moment a check fails; the dispatcher turns that into the completion and an
Error Information log entry. This keeps each handler a straight list of the
spec's checks.
"""

from __future__ import annotations

import dataclasses
import struct

from nvmefast.status import with_dnr

__all__ = ["AdminCommand", "Reject", "Result", "param_location"]

Result = tuple[int, int] | None
"""``(status, dw0)`` to complete now, or None when the completion is deferred."""

_SQE = struct.Struct("<IIQQQQ6I")  # CDW0, NSID, CDW2-3, MPTR, PRP1, PRP2, CDW10-15


def param_location(byte: int, bit: int = 0) -> int:
    """Parameter Error Location (Error Information log): byte 7:0, bit 10:8."""
    return (bit & 0x7) << 8 | (byte & 0xFF)


@dataclasses.dataclass(frozen=True)
class AdminCommand:
    """A decoded 64-byte admin SQE (NVMe 1.4 Figure 104/105)."""

    opcode: int
    fuse: int
    psdt: int
    cid: int
    nsid: int
    mptr: int
    prp1: int
    prp2: int
    cdw10: int
    cdw11: int
    cdw12: int
    cdw13: int
    cdw14: int
    cdw15: int

    @classmethod
    def parse(cls, sqe: bytes) -> AdminCommand:
        """Decode the little-endian 64-byte SQE."""
        cdw0, nsid, _cdw23, mptr, prp1, prp2, *cdw = _SQE.unpack_from(sqe, 0)
        return cls(
            opcode=cdw0 & 0xFF,
            fuse=(cdw0 >> 8) & 0x3,
            psdt=(cdw0 >> 14) & 0x3,
            cid=cdw0 >> 16,
            nsid=nsid,
            mptr=mptr,
            prp1=prp1,
            prp2=prp2,
            cdw10=cdw[0],
            cdw11=cdw[1],
            cdw12=cdw[2],
            cdw13=cdw[3],
            cdw14=cdw[4],
            cdw15=cdw[5],
        )


# Byte offsets of SQE fields, for Parameter Error Location.
CDW0 = 0
NSID = 4
PRP1 = 24
CDW10 = 40
CDW11 = 44
CDW12 = 48
CDW13 = 52


class Reject(Exception):
    """Raised by a handler to complete its command with an error status.

    ``status`` gets DNR: every check here fails the same way on a retry.
    ``location`` is the Parameter Error Location of the offending field.
    """

    def __init__(self, status: int, location: int = 0xFFFF) -> None:
        super().__init__(status, location)
        self.status = with_dnr(status)
        self.location = location
