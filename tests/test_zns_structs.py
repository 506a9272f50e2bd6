"""The ZNS structures the admin side builds, byte by byte against ZNS 1.1's figures.

Offsets and values are written here from the spec (Figure 48 Identify
Namespace, Figure 50 Identify Controller, Figure 41 Changed Zone List,
Figure 28 Commands Supported and Effects for CSI 02h), not read from the
builders.
"""

from __future__ import annotations

import pytest

from adminutil import u16, u32, u64
from nvmefast.zns import (
    build_changed_zone_list,
    build_identify_ctrl_zns,
    build_identify_ns_zns,
    zasl_of,
    ZONED_OPCODE_EFFECTS,
)
from nvmefast.testing.zns import ChangedZoneList, IdentifyNamespaceZns

MiB = 1 << 20


def test_identify_namespace_zns_layout() -> None:
    raw = build_identify_ns_zns(zone_bytes=16 * MiB, lba_sizes=(512, 4096), max_open=4, max_active=6,
                                cross_read=True, descriptor_extension_bytes=128)  # fmt: skip
    assert len(raw) == 4096
    assert u16(raw, 0) == 0  # ZOC: no variable capacity, no active excursions (Linux hides the disk otherwise)
    assert u16(raw, 2) == 1  # OZCS bit 0: Read Across Zone Boundaries
    assert u32(raw, 4) == 5  # MAR, 0's based
    assert u32(raw, 8) == 3  # MOR, 0's based
    assert raw[12:2816] == bytes(2816 - 12)  # RRL, FRL, RRL1-3, FRL1-3 0; reserved
    # LBAFE0 at 2816: ZSZE 8 bytes, ZDES 1 byte (64-byte units); LBAFE1 at 2832.
    assert u64(raw, 2816) == 16 * MiB // 512 and raw[2824] == 2
    assert u64(raw, 2832) == 16 * MiB // 4096 and raw[2840] == 2
    assert raw[2825:2832] == bytes(7) and raw[2841:] == bytes(4096 - 2841)


def test_identify_namespace_zns_no_limits() -> None:
    raw = build_identify_ns_zns(zone_bytes=MiB, lba_sizes=(512,), max_open=0, max_active=0,
                                cross_read=False, descriptor_extension_bytes=0)  # fmt: skip
    assert u32(raw, 4) == 0xFFFFFFFF and u32(raw, 8) == 0xFFFFFFFF  # no limit
    assert u16(raw, 2) == 0
    parsed = IdentifyNamespaceZns.parse(raw)
    assert parsed.lbafe == ((MiB // 512, 0),)


def test_identify_controller_zns() -> None:
    raw = build_identify_ctrl_zns(5)
    assert raw[0] == 5 and raw[1:] == bytes(4095)


@pytest.mark.parametrize(
    ("limits", "mdts", "zasl"),
    [
        ([None], 128 << 10, 0),  # none given: 0, MDTS applies
        ([128 << 10], 512 << 10, 5),  # 4 KiB * 2**5
        ([64 << 10, 1 << 20], 0, 4),  # the smallest namespace's
        ([1 << 20], 128 << 10, 5),  # never above MDTS
    ],
)
def test_zasl(limits: list[int | None], mdts: int, zasl: int) -> None:
    assert zasl_of(limits, mdts) == zasl


def test_changed_zone_list() -> None:
    raw = build_changed_zone_list([0x1000, 0x3000])
    assert len(raw) == 4096
    assert u16(raw, 0) == 2 and raw[2:8] == bytes(6)
    assert (u64(raw, 8), u64(raw, 16)) == (0x1000, 0x3000)
    assert raw[24:] == bytes(4096 - 24)
    assert ChangedZoneList.parse(raw) == ChangedZoneList(False, (0x1000, 0x3000))
    full = build_changed_zone_list(list(range(511)))
    assert u16(full, 0) == 511 and u64(full, 8 + 8 * 510) == 510
    for over in (None, list(range(512))):
        raw = build_changed_zone_list(over)
        assert u16(raw, 0) == 0xFFFF and raw[2:] == bytes(4094)


def test_zoned_effects() -> None:
    csupp, lbcc = 1, 2
    assert ZONED_OPCODE_EFFECTS[0x79] == csupp | lbcc  # Zone Management Send
    assert ZONED_OPCODE_EFFECTS[0x7A] == csupp  # Zone Management Receive
    assert ZONED_OPCODE_EFFECTS[0x7D] == csupp | lbcc  # Zone Append
    for opcode in (0x00, 0x01, 0x02):  # Flush, Write, Read: the NVM commands stay
        assert ZONED_OPCODE_EFFECTS[opcode] & csupp
