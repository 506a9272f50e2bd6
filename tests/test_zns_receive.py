"""Zone Management Receive (7Ah): Report Zones and Extended Report Zones,
every reporting filter, Partial Report, any buffer size, bad input.

From ZNS 1.1 3.4.2 (Figures 34-37): the header's Number of Zones counts the
zones that match the filter from the SLBA's zone to the end of the
namespace, or with Partial Report only the descriptors returned; the
controller fills what the host's buffer holds (NUMD + 1 dwords) and no more.
"""

from __future__ import annotations

import struct

import pytest

from nvmefast import Controller, NamespaceConfig, ZoneConfig
from nvmefast.testing import Host
from nvmefast.testing.prp import data_pointers
from nvmefast.testing.zns import ReportFilter, ZoneAttribute, ZoneReport, zone_receive_sqe
from znsutil import (
    C, CLOSE, E, EO, F, FINISH, INVALID_FIELD, IO, LBA_OUT_OF_RANGE, NAMESPACES, O, OPEN, RO, SUCCESS,
    ZCAP, ZNS_NSID, ZONE, ZONES, assert_status, block, zslba,
)  # fmt: skip

pytestmark = pytest.mark.nvme_config(namespaces=NAMESPACES)

ZRA_REPORT, ZRA_EXTENDED = 0x00, 0x01
CANARY = 0xA5


def receive(host: Host, slba: int, nbytes: int, *, room: int = 0, **fields: int) -> tuple[object, bytes, bytes]:
    """One Zone Management Receive of ``nbytes`` into a buffer with ``room`` more
    bytes of canary after it: (completion, the nbytes, what follows them)."""
    total = nbytes + room
    buf = host.alloc(max(total, 1))
    host.write_mem(buf, bytes([CANARY]) * total)
    prps = host.build_prps(data_pointers(buf, max(nbytes, 1)))
    try:
        c = host.io(zone_receive_sqe(ZNS_NSID, slba, nbytes, prp1=prps.prp1, prp2=prps.prp2, **fields))
        data = host.read_mem(buf, total)
        return c, data[:nbytes], data[nbytes:]
    finally:
        host.free_prps(prps)
        host.free(buf)


def mixed(host: Host, controller: Controller) -> dict[int, object]:
    """Zones 0..6 in each state: E, IO, EO, C, F, RO, O; the rest Empty."""
    host.write(ZNS_NSID, zslba(1), block(1) * 2)
    host.zone_send(ZNS_NSID, zslba(2), OPEN)
    host.write(ZNS_NSID, zslba(3), block(3))
    host.zone_send(ZNS_NSID, zslba(3), CLOSE)
    host.zone_send(ZNS_NSID, zslba(4), FINISH)
    assert controller.engine.zone_action(ZNS_NSID, 5, "readonly")
    assert controller.engine.zone_action(ZNS_NSID, 6, "offline")
    return {0: E, 1: IO, 2: EO, 3: C, 4: F, 5: RO, 6: O}


def test_report_of_a_fresh_namespace(host: Host) -> None:
    report = host.zone_report(ZNS_NSID, 0, 64 + ZONES * 64)
    assert report.count == ZONES
    assert len(report.zones) == ZONES
    for i, d in enumerate(report.zones):
        assert (d.zone_type, d.state, d.capacity, d.zslba, d.wp) == (0x2, E, ZCAP, zslba(i), zslba(i))
        assert d.attributes == ZoneAttribute(0)


def test_write_pointers_in_the_report(host: Host, controller: Controller) -> None:
    mixed(host, controller)
    report = host.zone_report(ZNS_NSID, 0, 64 + 8 * 64, partial=True)
    assert [d.state for d in report.zones] == [E, IO, EO, C, F, RO, O, E]
    assert report.zones[1].wp == zslba(1) + 2  # two blocks written
    assert report.zones[2].wp == zslba(2)  # opened, nothing written
    assert report.zones[3].wp == zslba(3) + 1  # closed keeps its write pointer


def test_report_starts_at_the_zone_holding_slba(host: Host) -> None:
    report = host.zone_report(ZNS_NSID, zslba(5) + 17, 4096)
    assert report.count == ZONES - 5  # matching zones from the SLBA's zone to the end
    assert report.zones[0].zslba == zslba(5)
    last = host.zone_report(ZNS_NSID, zslba(ZONES) - 1, 4096)
    assert (last.count, last.zones[0].zslba) == (1, zslba(ZONES - 1))


FILTERS = {
    ReportFilter.ALL: list(range(ZONES)),
    ReportFilter.EMPTY: [0, *range(7, ZONES)],
    ReportFilter.IMPLICITLY_OPENED: [1],
    ReportFilter.EXPLICITLY_OPENED: [2],
    ReportFilter.CLOSED: [3],
    ReportFilter.FULL: [4],
    ReportFilter.READ_ONLY: [5],
    ReportFilter.OFFLINE: [6],
}


@pytest.mark.parametrize("report_filter", list(FILTERS), ids=lambda f: f.name)
@pytest.mark.parametrize("partial", [False, True], ids=["count-all", "partial"])
def test_every_reporting_filter(host: Host, controller: Controller, report_filter: ReportFilter,
                                partial: bool) -> None:
    mixed(host, controller)
    want = FILTERS[report_filter]
    report = host.zone_report(ZNS_NSID, 0, 64 + ZONES * 64, report_filter=report_filter, partial=partial)
    assert [d.zslba for d in report.zones] == [zslba(z) for z in want]
    assert report.count == len(want)
    # From zone 4 on, only the matching zones at or after it count.
    later = [z for z in want if z >= 4]
    report = host.zone_report(ZNS_NSID, zslba(4), 64 + ZONES * 64, report_filter=report_filter, partial=partial)
    assert [d.zslba for d in report.zones] == [zslba(z) for z in later]
    assert report.count == len(later)


@pytest.mark.parametrize("fit", [0, 1, 2, 5])
def test_partial_report_counts_what_was_returned(host: Host, fit: int) -> None:
    nbytes = 64 + fit * 64
    whole = host.zone_report(ZNS_NSID, 0, nbytes)
    assert whole.count == ZONES and len(whole.zones) == fit
    part = host.zone_report(ZNS_NSID, 0, nbytes, partial=True)
    assert part.count == fit and len(part.zones) == fit


def test_walk_in_partial_batches_as_linux_does(host: Host, controller: Controller) -> None:
    states = mixed(host, controller)
    zones = host.zones(ZNS_NSID)
    assert [d.zslba for d in zones] == [zslba(z) for z in range(ZONES)]
    assert [d.state for d in zones[:7]] == [states[z] for z in range(7)]


@pytest.mark.parametrize("nbytes", [4, 8, 12, 60, 64, 68, 100, 124, 128, 132, 1028, 1088, 4096, 8192])
def test_any_buffer_size_is_filled_without_overrun(host: Host, nbytes: int) -> None:
    for partial in (False, True):
        c, data, after = receive(host, 0, nbytes, room=256, partial=partial)
        assert_status(c, SUCCESS)  # type: ignore[arg-type]
        assert after == bytes([CANARY]) * 256, "the controller wrote past NUMD"
        fits = max(nbytes - 64, 0) // 64
        count = min(fits, ZONES) if partial else ZONES
        header = struct.pack("<Q", count)
        assert data[: min(nbytes, 8)] == header[: min(nbytes, 8)]
        report = ZoneReport.parse(data)
        assert [d.zslba for d in report.zones] == [zslba(z) for z in range(min(fits, ZONES))]
        # A descriptor cut by the end of the buffer: its first bytes are there.
        if nbytes > 64 and (nbytes - 64) % 64 and fits < ZONES:
            cut = data[64 + fits * 64 :]
            assert cut[:2] == bytes([0x02, E << 4])[: len(cut)]


@pytest.mark.nvme_config(mdts=1, namespaces=NAMESPACES)  # 8 KiB
def test_a_buffer_over_mdts(host: Host) -> None:
    c, _, _ = receive(host, 0, 16 << 10)
    assert_status(c, INVALID_FIELD)  # type: ignore[arg-type]
    c, _, _ = receive(host, 0, 8 << 10)
    assert_status(c, SUCCESS)  # type: ignore[arg-type]


@pytest.mark.parametrize("slba", [ZONES * ZONE, 2**63, 2**64 - 1])
def test_slba_out_of_range(host: Host, slba: int) -> None:
    c, _, _ = receive(host, slba, 4096)
    assert_status(c, LBA_OUT_OF_RANGE)  # type: ignore[arg-type]


@pytest.mark.parametrize(("zra", "zrasf"), [(0x02, 0), (0x10, 0), (0xFF, 0), (0, 0x08), (0, 0x09), (0, 0x0A),
                                             (0, 0xFF), (ZRA_EXTENDED, 0)])  # fmt: skip
def test_bad_receive_fields(host: Host, zra: int, zrasf: int) -> None:
    # ZRA 01h needs ZDES (0 here); 09h filters Extended reports only.
    c, _, _ = receive(host, 0, 4096, action=zra, report_filter=zrasf)
    assert_status(c, INVALID_FIELD)  # type: ignore[arg-type]


# -- Extended Report Zones -------------------------------------------------------------------------

ZDE = 64
ZDE_NS = [NamespaceConfig(size_bytes=8 << 20, lba_size=4096,
                          zones=ZoneConfig(size_bytes=1 << 20, descriptor_extension_bytes=ZDE))]


@pytest.mark.nvme_config(namespaces=ZDE_NS)
def test_extended_report(host: Host) -> None:
    ext = bytes(range(1, ZDE + 1))
    host.zone_send(1, zslba(2), 0x10, data=ext)
    report = host.zone_report(1, 0, 64 + 8 * (64 + ZDE), extended=True)
    assert report.count == 8 and len(report.zones) == 8
    assert report.zones[2].extension == ext and report.zones[2].attributes & ZoneAttribute.ZDEV
    assert report.zones[2].state == C
    part = host.zone_report(1, 0, 64 + 3 * (64 + ZDE), extended=True, partial=True)
    assert part.count == 3 and [d.zslba for d in part.zones] == [zslba(0), zslba(1), zslba(2)]
    assert part.zones[2].extension == ext


@pytest.mark.nvme_config(namespaces=ZDE_NS)
def test_extended_report_of_recommended_zones(host: Host, controller: Controller) -> None:
    host.write(1, zslba(1), bytes(4096))
    assert controller.engine.zone_action(1, 1, "finish-recommended")
    host.zone_send(1, zslba(4), FINISH)
    assert controller.engine.zone_action(1, 4, "reset-recommended")
    report = host.zone_report(1, 0, 4096, extended=True, report_filter=ReportFilter.ATTRIBUTES)
    assert [d.zslba for d in report.zones] == [zslba(1), zslba(4)]
    assert report.zones[0].attributes & ZoneAttribute.FZR and report.zones[1].attributes & ZoneAttribute.RZR
    assert report.zones[0].state == IO and report.zones[1].state == F
