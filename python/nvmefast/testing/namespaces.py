"""The host side of namespace management, device self-test and sanitize:
the data structures a host sends (the Create structure, a Controller List)
and parsers of what it reads back (Controller Lists, the Device Self-test
and Sanitize Status logs), and :class:`Host` helpers that send the commands.

Kept independent of the controller's own code on purpose: offsets are the
spec's (NVMe Base 2.0 Figure 134 Controller List, Figure 235/236 Device
Self-test log, Figure 267 Sanitize Status log; the Create structure at the
Identify Namespace offsets of NVM Command Set 1.0 Figure 97), so a wrong
offset in the controller is caught rather than mirrored.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nvmefast.testing.sqe import Completion, build_sqe

if TYPE_CHECKING:
    from nvmefast.testing.host import Host

__all__ = [
    "SanitizeStatus",
    "SelfTestLog",
    "SelfTestResultEntry",
    "attach_namespace",
    "build_controller_list",
    "build_create_structure",
    "create_namespace",
    "delete_namespace",
    "detach_namespace",
    "device_self_test",
    "parse_controller_list",
    "sanitize",
]

NAMESPACE_MANAGEMENT, DEVICE_SELF_TEST, NAMESPACE_ATTACHMENT, SANITIZE = 0x0D, 0x14, 0x15, 0x84
PAGE = 4096


def build_create_structure(
    nsze: int, ncap: int | None = None, *, flbas: int = 0, dps: int = 0, nmic: int = 0, anagrpid: int = 0,
    nvmsetid: int = 0, endgid: int = 0, lbstm: int = 0, nphndls: int = 0, zoned: bytes = b"",
) -> bytes:  # fmt: skip
    """The 4096-byte Host Software Specified Fields of a Namespace Management
    Create (``ncap`` None: NSZE; ``zoned``: bytes 499.. for a zoned one)."""
    buf = bytearray(PAGE)
    struct.pack_into("<QQ", buf, 0, nsze, nsze if ncap is None else ncap)
    buf[26], buf[29], buf[30] = flbas, dps, nmic
    struct.pack_into("<I", buf, 92, anagrpid)
    struct.pack_into("<HH", buf, 100, nvmsetid, endgid)
    struct.pack_into("<QH", buf, 384, lbstm, nphndls)
    buf[499 : 499 + len(zoned)] = zoned
    return bytes(buf)


def build_controller_list(cntlids: Sequence[int], count: int | None = None) -> bytes:
    """A 4096-byte Controller List: ``count`` (default: how many) then the IDs."""
    buf = bytearray(PAGE)
    struct.pack_into("<H", buf, 0, len(cntlids) if count is None else count)
    struct.pack_into(f"<{len(cntlids)}H", buf, 2, *cntlids)
    return bytes(buf)


def parse_controller_list(data: bytes) -> list[int]:
    """The identifiers of a Controller List."""
    (count,) = struct.unpack_from("<H", data, 0)
    return list(struct.unpack_from(f"<{min(count, 2047)}H", data, 2))


@dataclasses.dataclass(frozen=True)
class SelfTestResultEntry:
    """One Self-test Result entry of the Device Self-test log."""

    code: int
    """Self-test Code that ran (1h short, 2h extended)."""
    result: int
    """Device Self-test Result (0h passed, 7h failed segment, Fh unused, ...)."""
    segment: int
    valid: int
    """Valid Diagnostic Information bits: 0 NSID, 1 FLBA, 2 SCT, 3 SC."""
    power_on_hours: int
    nsid: int
    lba: int
    sct: int
    sc: int


@dataclasses.dataclass(frozen=True)
class SelfTestLog:
    """The Device Self-test log (564 bytes)."""

    current: int
    """Current Device Self-test Operation (0h none)."""
    percent: int
    entries: tuple[SelfTestResultEntry, ...]
    """Newest first; unused entries (result Fh) left out."""

    @classmethod
    def parse(cls, data: bytes) -> SelfTestLog:
        """Read a Device Self-test log page."""
        entries = []
        for i in range(20):
            b0, segment, valid, hours, nsid, lba, sct, sc = struct.unpack_from("<BBBxQIQBBxx", data, 4 + 28 * i)
            if b0 & 0xF == 0xF:
                continue
            entries.append(SelfTestResultEntry(b0 >> 4, b0 & 0xF, segment, valid, hours, nsid, lba, sct & 0x7, sc))
        return cls(data[0] & 0xF, data[1] & 0x7F, tuple(entries))


@dataclasses.dataclass(frozen=True)
class SanitizeStatus:
    """The Sanitize Status log's fields (512 bytes)."""

    sprog: int
    sos: int
    """Sanitize Operation Status (SSTAT 2:0): 0 never, 1 completed, 2 in progress, 3 failed."""
    passes: int
    global_data_erased: bool
    scdw10: int
    estimates: tuple[int, ...]
    """ETO, ETBE, ETCE, ETODMM, ETBENMM, ETCENMM."""

    @classmethod
    def parse(cls, data: bytes) -> SanitizeStatus:
        """Read a Sanitize Status log page."""
        sprog, sstat, scdw10 = struct.unpack_from("<HHI", data, 0)
        estimates = struct.unpack_from("<6I", data, 8)
        return cls(sprog, sstat & 0x7, (sstat >> 3) & 0x1F, bool(sstat & 0x100), scdw10, estimates)


def _with_page(host: Host, data: bytes, opcode: int, **fields: int) -> Completion:
    buf = host.alloc(PAGE)
    host.write_mem(buf, data)
    try:
        return host.admin(build_sqe(opcode, prp1=buf, **fields))
    finally:
        host.free(buf)


def create_namespace(host: Host, structure: bytes, csi: int = 0) -> Completion:
    """Namespace Management Create with ``structure`` (dword 0: the NSID)."""
    return _with_page(host, structure, NAMESPACE_MANAGEMENT, cdw10=0x0, cdw11=csi << 24)


def delete_namespace(host: Host, nsid: int) -> Completion:
    """Namespace Management Delete of ``nsid`` (FFFFFFFFh: all)."""
    return host.admin(build_sqe(NAMESPACE_MANAGEMENT, nsid=nsid, cdw10=0x1))


def attach_namespace(host: Host, nsid: int, cntlids: Sequence[int] = (0,)) -> Completion:
    """Namespace Attachment, Controller Attach of ``nsid`` to ``cntlids``."""
    return _with_page(host, build_controller_list(cntlids), NAMESPACE_ATTACHMENT, nsid=nsid, cdw10=0x0)


def detach_namespace(host: Host, nsid: int, cntlids: Sequence[int] = (0,)) -> Completion:
    """Namespace Attachment, Controller Detach of ``nsid`` from ``cntlids``."""
    return _with_page(host, build_controller_list(cntlids), NAMESPACE_ATTACHMENT, nsid=nsid, cdw10=0x1)


def device_self_test(host: Host, stc: int, nsid: int = 0xFFFFFFFF) -> Completion:
    """Device Self-test: STC 1h short, 2h extended, Fh abort."""
    return host.admin(build_sqe(DEVICE_SELF_TEST, nsid=nsid, cdw10=stc))


def sanitize(host: Host, action: int, *, ause: bool = False, passes: int = 1, invert: bool = False,
             no_dealloc: bool = False, pattern: int = 0) -> Completion:  # fmt: skip
    """Sanitize: SANACT ``action`` (1h exit failure mode, 2h block erase, 3h overwrite, 4h crypto erase)."""
    cdw10 = action | int(ause) << 3 | (passes & 0xF) << 4 | int(invert) << 8 | int(no_dealloc) << 9
    return host.admin(build_sqe(SANITIZE, cdw10=cdw10, cdw11=pattern))
