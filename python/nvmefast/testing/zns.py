"""Zoned Namespace Command Set commands for the test host (ZNS 1.1).

SQE builders and parsers for Zone Management Send (79h), Zone Management
Receive (7Ah) and Zone Append (7Dh), and the ZNS Identify structures,
written from the NVM Express Zoned Namespace Command Set Specification 1.1
(Figures 32-37 the commands and the zone descriptor, 41 the Changed Zone
List, 48-50 Identify), not from the device's code, so a test reading them
checks the device against the spec. :class:`~nvmefast.testing.Host` has
methods on top of these (``zone_report``, ``zones``, ``zone_send``,
``zone_append``).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nvmefast.errors import CommandError
from nvmefast.testing.prp import data_pointers
from nvmefast.testing.sqe import Completion, build_sqe

if TYPE_CHECKING:
    from nvmefast.testing.host import Host

__all__ = [
    "CSI_ZNS",
    "IO_ZONE_APPEND",
    "IO_ZONE_MANAGEMENT_RECEIVE",
    "IO_ZONE_MANAGEMENT_SEND",
    "REPORT_HEADER_SIZE",
    "ZONE_DESCRIPTOR_SIZE",
    "ChangedZoneList",
    "IdentifyNamespaceZns",
    "ReportFilter",
    "ZoneAttribute",
    "ZoneDescriptor",
    "ZoneReport",
    "ZoneSendAction",
    "ZoneState",
    "all_zones",
    "assigned_lba",
    "zone_append",
    "zone_append_sqe",
    "zone_blocks",
    "zone_receive",
    "zone_send",
    "zone_receive_sqe",
    "zone_send_sqe",
]

CSI_ZNS = 0x02
"""Command Set Identifier of the Zoned Namespace Command Set."""
IO_ZONE_MANAGEMENT_SEND = 0x79
"""Zone Management Send."""
IO_ZONE_MANAGEMENT_RECEIVE = 0x7A
"""Zone Management Receive."""
IO_ZONE_APPEND = 0x7D
"""Zone Append."""

REPORT_HEADER_SIZE = 64
"""The Report Zones data structure's header: Number of Zones, then reserved."""
ZONE_DESCRIPTOR_SIZE = 64
"""One Zone Descriptor."""


class ZoneState(enum.IntEnum):
    """Zone State (descriptor byte 1 bits 7:4; ZNS 1.1 Figure 37)."""

    EMPTY = 0x1
    """ZSE: Empty."""
    IMPLICITLY_OPENED = 0x2
    """ZSIO: opened by a write."""
    EXPLICITLY_OPENED = 0x3
    """ZSEO: opened by Zone Management Send Open."""
    CLOSED = 0x4
    """ZSC: Closed."""
    READ_ONLY = 0xD
    """ZSRO: Read Only (only the controller moves a zone here)."""
    FULL = 0xE
    """ZSF: Full."""
    OFFLINE = 0xF
    """ZSO: Offline."""


class ZoneSendAction(enum.IntEnum):
    """Zone Send Action (Zone Management Send CDW13 bits 7:0; ZNS 1.1 Figure 33)."""

    CLOSE = 0x01
    """Close Zone."""
    FINISH = 0x02
    """Finish Zone."""
    OPEN = 0x03
    """Open Zone."""
    RESET = 0x04
    """Reset Zone."""
    OFFLINE = 0x05
    """Offline Zone (from Read Only)."""
    SET_ZONE_DESCRIPTOR_EXTENSION = 0x10
    """Set Zone Descriptor Extension (Empty -> Closed, with data)."""


class ReportFilter(enum.IntEnum):
    """Zone Receive Action Specific Field of Report Zones (CDW13 bits 15:8; ZNS 1.1 Figure 35)."""

    ALL = 0x0
    """Every zone."""
    EMPTY = 0x1
    """Zones in ZSE."""
    IMPLICITLY_OPENED = 0x2
    """Zones in ZSIO."""
    EXPLICITLY_OPENED = 0x3
    """Zones in ZSEO."""
    CLOSED = 0x4
    """Zones in ZSC."""
    FULL = 0x5
    """Zones in ZSF."""
    READ_ONLY = 0x6
    """Zones in ZSRO."""
    OFFLINE = 0x7
    """Zones in ZSO."""
    ATTRIBUTES = 0x9
    """Extended Report Zones only: zones with Reset or Finish Zone Recommended, or Finished by Controller."""


class ZoneAttribute(enum.IntFlag):
    """Zone Attributes (descriptor byte 2; ZNS 1.1 Figure 37)."""

    ZFC = 1 << 0
    """Zone Finished by Controller."""
    FZR = 1 << 1
    """Finish Zone Recommended."""
    RZR = 1 << 2
    """Reset Zone Recommended."""
    ZDEV = 1 << 7
    """Zone Descriptor Extension Valid."""


ZRA_REPORT = 0x00
"""Zone Receive Action: Report Zones."""
ZRA_EXTENDED_REPORT = 0x01
"""Zone Receive Action: Extended Report Zones (descriptors followed by their extensions)."""
SELECT_ALL = 1 << 8
"""Zone Management Send CDW13 bit 8: Select All (SLBA ignored)."""
PARTIAL_REPORT = 1 << 16
"""Zone Management Receive CDW13 bit 16: Number of Zones counts the descriptors returned."""


def _slba(slba: int) -> dict[str, int]:
    return {"cdw10": slba & 0xFFFF_FFFF, "cdw11": (slba >> 32) & 0xFFFF_FFFF}


def zone_send_sqe(nsid: int, slba: int, action: int, *, select_all: bool = False, prp1: int = 0,
                  prp2: int = 0) -> bytes:
    """Zone Management Send (79h); a data pointer only for Set Zone Descriptor Extension."""
    cdw13 = (action & 0xFF) | (SELECT_ALL if select_all else 0)
    return build_sqe(IO_ZONE_MANAGEMENT_SEND, nsid=nsid, prp1=prp1, prp2=prp2, cdw13=cdw13, **_slba(slba))


def zone_receive_sqe(nsid: int, slba: int, nbytes: int, *, action: int = ZRA_REPORT,
                     report_filter: int = ReportFilter.ALL, partial: bool = False, prp1: int = 0,
                     prp2: int = 0) -> bytes:
    """Zone Management Receive (7Ah) of ``nbytes`` (NUMD is 0's based dwords: ``nbytes // 4 - 1``)."""
    numd = max(nbytes // 4 - 1, 0)
    cdw13 = (action & 0xFF) | (report_filter & 0xFF) << 8 | (PARTIAL_REPORT if partial else 0)
    return build_sqe(IO_ZONE_MANAGEMENT_RECEIVE, nsid=nsid, prp1=prp1, prp2=prp2, cdw12=numd, cdw13=cdw13,
                     **_slba(slba))  # fmt: skip


def zone_append_sqe(nsid: int, zslba: int, nlb: int, *, cdw12_flags: int = 0, prp1: int = 0,
                    prp2: int = 0) -> bytes:
    """Zone Append (7Dh) of ``nlb`` blocks (1-based here) to the zone starting at ``zslba``."""
    cdw12 = ((nlb - 1) & 0xFFFF) | cdw12_flags
    return build_sqe(IO_ZONE_APPEND, nsid=nsid, prp1=prp1, prp2=prp2, cdw12=cdw12, **_slba(zslba))


def assigned_lba(completion: Completion) -> int:
    """The Zone Append's Assigned LBA: CQE DW0 low, DW1 high (ZNS 1.1 Figure 31)."""
    return completion.dw1 << 32 | completion.dw0


@dataclasses.dataclass(frozen=True)
class ZoneDescriptor:
    """One Zone Descriptor (ZNS 1.1 Figure 37) and, in an Extended report, its extension."""

    zone_type: int
    """ZT bits 3:0 (2h: Sequential Write Required)."""
    state: ZoneState | int
    """ZS bits 7:4: a :class:`ZoneState`, or the raw value if it is none of them."""
    attributes: ZoneAttribute
    """ZA."""
    attribute_info: int
    """ZAI (byte 3)."""
    capacity: int
    """ZCAP, logical blocks."""
    zslba: int
    """Zone Start Logical Block Address."""
    wp: int
    """Write Pointer (meaningful only in Empty, opened and Closed zones)."""
    extension: bytes = b""
    """The Zone Descriptor Extension that follows it in an Extended report."""

    @classmethod
    def parse(cls, data: bytes, extension: bytes = b"") -> ZoneDescriptor:
        """Read 64 bytes of a descriptor."""
        zt, zs, za, zai = data[0], data[1], data[2], data[3]
        zcap, zslba, wp = struct.unpack_from("<QQQ", data, 8)
        state: ZoneState | int = zs >> 4
        if state in ZoneState._value2member_map_:
            state = ZoneState(state)
        return cls(zt & 0xF, state, ZoneAttribute(za), zai, zcap, zslba, wp, extension)


@dataclasses.dataclass(frozen=True)
class ZoneReport:
    """A Report Zones / Extended Report Zones data structure (ZNS 1.1 Figure 36)."""

    count: int
    """Number of Zones in the header: matching zones from the SLBA's zone on, or with
    Partial Report the descriptors returned."""
    zones: tuple[ZoneDescriptor, ...]
    """The descriptors that fit in the buffer."""

    @classmethod
    def parse(cls, data: bytes, extension_bytes: int = 0) -> ZoneReport:
        """Read a report; ``extension_bytes`` (ZDES * 64) for an Extended one. Only
        the descriptors the header's count and the buffer both allow are read."""
        # A buffer under 8 bytes holds the low bytes of the count only.
        (count,) = struct.unpack_from("<Q", bytes(data[:8]).ljust(8, b"\0"), 0)
        step = ZONE_DESCRIPTOR_SIZE + extension_bytes
        fits = max(len(data) - REPORT_HEADER_SIZE, 0) // step
        zones = []
        for i in range(min(count, fits)):
            at = REPORT_HEADER_SIZE + i * step
            ext = data[at + ZONE_DESCRIPTOR_SIZE : at + step]
            zones.append(ZoneDescriptor.parse(data[at : at + ZONE_DESCRIPTOR_SIZE], ext))
        return cls(count, tuple(zones))


@dataclasses.dataclass(frozen=True)
class IdentifyNamespaceZns:
    """The ZNS I/O Command Set specific Identify Namespace (CNS 05h, CSI 02h; ZNS 1.1 Figure 48)."""

    zoc: int
    """Zone Operation Characteristics."""
    ozcs: int
    """Optional Zoned Command Support (bit 0: Read Across Zone Boundaries)."""
    mar: int
    """Maximum Active Resources, 0's based (FFFFFFFFh: no limit)."""
    mor: int
    """Maximum Open Resources, 0's based (FFFFFFFFh: no limit)."""
    rrl: int
    """Reset Recommended Limit, seconds."""
    frl: int
    """Finish Recommended Limit, seconds."""
    lbafe: tuple[tuple[int, int], ...]
    """(ZSZE, ZDES) of each LBA Format Extension, for every non-zero entry's index and below."""
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> IdentifyNamespaceZns:
        """Read the 4096-byte structure."""
        zoc, ozcs, mar, mor, rrl, frl = struct.unpack_from("<HHIIII", data, 0)
        entries = [struct.unpack_from("<QB", data, 2816 + 16 * i) for i in range(64)]
        while entries and entries[-1] == (0, 0):
            entries.pop()
        return cls(zoc, ozcs, mar, mor, rrl, frl, tuple((zsze, zdes) for zsze, zdes in entries), bytes(data))


@dataclasses.dataclass(frozen=True)
class ChangedZoneList:
    """The Changed Zone List log page (BFh; ZNS 1.1 Figure 41)."""

    overflow: bool
    """Number of Zone Identifiers was FFFFh: more zones changed than the list holds."""
    zslbas: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes) -> ChangedZoneList:
        """Read the page: the count at bytes 1:0, ZSLBAs from byte 8."""
        (count,) = struct.unpack_from("<H", data, 0)
        if count == 0xFFFF:
            return cls(True, ())
        return cls(False, struct.unpack_from(f"<{count}Q", data, 8))


# -- on a Host --------------------------------------------------------------------------


def _buffer(host: Host, nbytes: int) -> tuple[int, list[int]]:
    iova = host.alloc(max(nbytes, 1))
    return iova, data_pointers(iova, max(nbytes, 1))


def zone_receive(host: Host, nsid: int, slba: int, nbytes: int, *, qid: int = 1, action: int = ZRA_REPORT,
                 report_filter: int = ReportFilter.ALL, partial: bool = False) -> tuple[Completion, bytes]:
    """Run one Zone Management Receive into a fresh ``nbytes`` buffer: (completion, the buffer)."""
    iova, entries = _buffer(host, nbytes)
    prps = host.build_prps(entries)
    try:
        sqe = zone_receive_sqe(nsid, slba, nbytes, action=action, report_filter=report_filter, partial=partial,
                               prp1=prps.prp1, prp2=prps.prp2)  # fmt: skip
        c = host.io(sqe, qid)
        return c, host.mem.gather(entries, nbytes)
    finally:
        host.free_prps(prps)
        host.free(iova)


def zone_send(host: Host, nsid: int, slba: int, action: int, *, select_all: bool = False,
              data: bytes | None = None, qid: int = 1) -> Completion:
    """Run one Zone Management Send (``data``: the descriptor extension of ZSA 10h)."""
    if data is None:
        return host.io(zone_send_sqe(nsid, slba, action, select_all=select_all), qid)
    iova, entries = _buffer(host, len(data))
    prps = host.build_prps(entries)
    try:
        host.mem.scatter(entries, data)
        return host.io(zone_send_sqe(nsid, slba, action, select_all=select_all, prp1=prps.prp1,
                                     prp2=prps.prp2), qid)  # fmt: skip
    finally:
        host.free_prps(prps)
        host.free(iova)


def zone_append(host: Host, nsid: int, zslba: int, data: bytes, *, qid: int = 1,
                cdw12_flags: int = 0) -> Completion:
    """Run one Zone Append of ``data`` (whole blocks) to the zone at ``zslba``."""
    lba = host.lba_size(nsid)
    if not data or len(data) % lba:
        raise ValueError(f"zone append of {len(data)} bytes is not a whole number of {lba}-byte blocks")
    iova, entries = _buffer(host, len(data))
    prps = host.build_prps(entries)
    try:
        host.mem.scatter(entries, data)
        sqe = zone_append_sqe(nsid, zslba, len(data) // lba, cdw12_flags=cdw12_flags, prp1=prps.prp1,
                              prp2=prps.prp2)  # fmt: skip
        return host.io(sqe, qid)
    finally:
        host.free_prps(prps)
        host.free(iova)


def check(completion: Completion, opcode: int, what: str) -> Completion:
    """``completion``, or CommandError when it failed."""
    if not completion.ok:
        raise CommandError(completion.status, opcode, f"{what}: {completion}")
    return completion


def all_zones(host: Host, nsid: int, *, qid: int = 1, batch: int = 64,
              report_filter: int = ReportFilter.ALL) -> list[ZoneDescriptor]:
    """Every zone (matching ``report_filter``) of ``nsid``, by Partial reports of
    ``batch`` descriptors as Linux walks them (``nvme_ns_report_zones``)."""
    zone_size = zone_blocks(host, nsid)
    nsze = host.identify_namespace(nsid).nsze
    zones: list[ZoneDescriptor] = []
    slba = 0
    nbytes = REPORT_HEADER_SIZE + batch * ZONE_DESCRIPTOR_SIZE
    while slba < nsze:
        c, data = zone_receive(host, nsid, slba, nbytes, qid=qid, report_filter=report_filter, partial=True)
        check(c, IO_ZONE_MANAGEMENT_RECEIVE, f"Report Zones nsid {nsid} slba {slba}")
        report = ZoneReport.parse(data)
        if not report.zones:
            break
        zones.extend(report.zones)
        slba = report.zones[-1].zslba + zone_size
    return zones


def zone_blocks(host: Host, nsid: int) -> int:
    """ZSZE of the namespace's current LBA format, from Identify (CNS 05h CSI 02h, CNS 00h)."""
    idns = IdentifyNamespaceZns.parse(host.identify(0x05, nsid, csi=CSI_ZNS))
    return idns.lbafe[host.identify_namespace(nsid).format_index][0]


def report_states(zones: Sequence[ZoneDescriptor]) -> list[ZoneState | int]:
    """The state of each zone, in order (a compact thing to assert on)."""
    return [z.state for z in zones]
