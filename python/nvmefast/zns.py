"""Zoned Namespace Command Set structures the admin side builds (ZNS 1.1).

The zone state machine and the zone commands (Zone Management Send 79h,
Zone Management Receive 7Ah, Zone Append 7Dh) live in the core; this module
holds what the admin commands transfer about zoned namespaces, at the
offsets of NVM Express Zoned Namespace Command Set Specification 1.1:

- Figure 48/49: the I/O Command Set specific Identify Namespace data
  structure for CSI 02h (CNS 05h): ZOC, OZCS, MAR, MOR, RRL/FRL and one
  LBA Format Extension (ZSZE, ZDES) per LBA format of Identify Namespace;
- Figure 50: the I/O Command Set specific Identify Controller data
  structure for CSI 02h (CNS 06h): ZASL;
- Figure 41: the Changed Zone List log page (BFh);
- Figure 28 (Commands Supported and Effects for CSI 02h): the zone
  commands' effects beside the NVM Command Set's.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence

from nvmefast.iocs import EFFECTS_CSUPP, EFFECTS_LBCC, IO_OPCODE_EFFECTS, IOCS_ZNS
from nvmefast.structs import IDENTIFY_SIZE

__all__ = [
    "CHANGED_ZONE_LIST_MAX",
    "CHANGED_ZONE_LIST_OVERFLOW",
    "CSI_ZNS",
    "IOCS_ZNS",
    "NO_RESOURCE_LIMIT",
    "ZONED_OPCODE_EFFECTS",
    "ZONE_OPCODE_EFFECTS",
    "build_changed_zone_list",
    "build_identify_ctrl_zns",
    "build_identify_ns_zns",
    "resource_limit",
    "zasl_of",
]

CSI_ZNS = 0x02
"""Command Set Identifier of the Zoned Namespace Command Set."""

OPCODE_ZONE_MANAGEMENT_SEND = 0x79
"""Zone Management Send."""
OPCODE_ZONE_MANAGEMENT_RECEIVE = 0x7A
"""Zone Management Receive."""
OPCODE_ZONE_APPEND = 0x7D
"""Zone Append."""

ZONE_OPCODE_EFFECTS: Mapping[int, int] = {
    # Send changes zone states and, with Reset, the data (it reads back as zeroes).
    OPCODE_ZONE_MANAGEMENT_SEND: EFFECTS_CSUPP | EFFECTS_LBCC,
    OPCODE_ZONE_MANAGEMENT_RECEIVE: EFFECTS_CSUPP,
    OPCODE_ZONE_APPEND: EFFECTS_CSUPP | EFFECTS_LBCC,
}
"""The Zoned Namespace Command Set's own I/O opcodes and their effects."""
ZONED_OPCODE_EFFECTS: Mapping[int, int] = {**IO_OPCODE_EFFECTS, **ZONE_OPCODE_EFFECTS}
"""Every I/O opcode of a zoned namespace (the NVM Command Set's and the zone
commands): Commands Supported and Effects with CSI 02h. Linux makes a zoned
disk read-only when Zone Append (7Dh) is missing here."""

NO_RESOURCE_LIMIT = 0xFFFFFFFF
"""MAR / MOR value meaning no limit."""

CHANGED_ZONE_LIST_MAX = 511
"""Zone identifiers the Changed Zone List holds; more changes report an overflow."""
CHANGED_ZONE_LIST_OVERFLOW = 0xFFFF
"""Number of Zone Identifiers when more zones changed than the list holds."""
CHANGED_ZONE_LIST_SIZE = 4096
"""The Changed Zone List log page."""

_LBAFE_OFFSET = 2816
"""LBA Format Extension 0 (bytes 2831:2816); one 16-byte entry per LBA format."""
_ZOC_OFFSET, _OZCS_OFFSET, _MAR_OFFSET, _MOR_OFFSET = 0, 2, 4, 8
OZCS_RAZB = 1 << 0
"""Optional Zoned Command Support bit 0: Read Across Zone Boundaries."""


def resource_limit(count: int) -> int:
    """MAR / MOR for a limit of ``count`` zones (0's based); 0 means no limit."""
    return NO_RESOURCE_LIMIT if count == 0 else count - 1


def build_identify_ns_zns(
    *,
    zone_bytes: int,
    lba_sizes: Sequence[int],
    max_open: int,
    max_active: int,
    cross_read: bool,
    descriptor_extension_bytes: int,
) -> bytes:
    """ZNS Identify Namespace (CNS 05h, CSI 02h) of a namespace whose zones
    are ``zone_bytes`` long, with one LBA Format Extension per entry of
    ``lba_sizes`` (the LBA formats of Identify Namespace, in order): the zone
    size stays ``zone_bytes``, so ZSZE is that in each format's blocks.

    ZOC 0 (fixed zone capacity, no zone active excursions: Linux refuses a
    namespace with either), RRL and FRL 0 (no reset/finish recommended limit).
    """
    buf = bytearray(IDENTIFY_SIZE)
    struct.pack_into("<H", buf, _ZOC_OFFSET, 0)
    struct.pack_into("<H", buf, _OZCS_OFFSET, OZCS_RAZB if cross_read else 0)
    struct.pack_into("<II", buf, _MAR_OFFSET, resource_limit(max_active), resource_limit(max_open))
    zdes = descriptor_extension_bytes // 64
    for i, lba_size in enumerate(lba_sizes):
        struct.pack_into("<QB", buf, _LBAFE_OFFSET + 16 * i, zone_bytes // lba_size, zdes)
    return bytes(buf)


def zasl_of(append_limits: Iterable[int | None], mdts_bytes: int) -> int:
    """Zone Append Size Limit: a power of two of 4 KiB (CAP.MPSMIN) pages,
    the smallest of the namespaces' limits and MDTS; 0 (MDTS applies) when
    no namespace sets one."""
    limits = [limit for limit in append_limits if limit is not None]
    if not limits:
        return 0
    smallest = min(limits)
    if mdts_bytes:
        smallest = min(smallest, mdts_bytes)
    return int(math.log2(smallest // 4096))


def build_identify_ctrl_zns(zasl: int) -> bytes:
    """ZNS Identify Controller (CNS 06h, CSI 02h): byte 0 ZASL, the rest reserved."""
    buf = bytearray(IDENTIFY_SIZE)
    buf[0] = zasl
    return bytes(buf)


def build_changed_zone_list(zslbas: Sequence[int] | None) -> bytes:
    """Changed Zone List log (BFh): the count, then each zone's ZSLBA from
    byte 8; ``None`` (more changes than :data:`CHANGED_ZONE_LIST_MAX`) reports
    the overflow count FFFFh and no identifiers."""
    buf = bytearray(CHANGED_ZONE_LIST_SIZE)
    if zslbas is None or len(zslbas) > CHANGED_ZONE_LIST_MAX:
        struct.pack_into("<H", buf, 0, CHANGED_ZONE_LIST_OVERFLOW)
        return bytes(buf)
    struct.pack_into("<H", buf, 0, len(zslbas))
    struct.pack_into(f"<{len(zslbas)}Q", buf, 8, *zslbas)
    return bytes(buf)
