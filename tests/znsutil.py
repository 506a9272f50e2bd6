"""Shared geometry and helpers of the zoned conformance tests (tests/test_zns_*.py).

Statuses are ZNS 1.1 Figure 11's literals and the Base spec's, as (SCT, SC)
pairs, not the device's own tables. The default controller has a zoned
namespace (NSID 1: 16 zones of 1 MiB, 768 KiB writable, 4 KiB LBAs, at most
3 open and 4 active) and a conventional one (NSID 2).
"""

from __future__ import annotations

from nvmefast import NamespaceConfig, ZoneConfig
from nvmefast.testing import Completion, Host, build_sqe, data_pointers
from nvmefast.testing.nvm import lba_fields
from nvmefast.testing.zns import ZoneDescriptor, ZoneSendAction, ZoneState

MiB = 1 << 20
KiB = 1 << 10

ZNS_NSID, NVM_NSID = 1, 2
LBA = 4096
ZONE_BYTES = 1 * MiB
ZONE_CAP_BYTES = 768 * KiB
ZONE = ZONE_BYTES // LBA  # ZSZE, blocks
ZCAP = ZONE_CAP_BYTES // LBA
NAMESPACE_BYTES = 16 * MiB
ZONES = NAMESPACE_BYTES // ZONE_BYTES
MAX_OPEN, MAX_ACTIVE = 3, 4

ZONED = NamespaceConfig(
    size_bytes=NAMESPACE_BYTES, lba_size=LBA,
    zones=ZoneConfig(size_bytes=ZONE_BYTES, capacity_bytes=ZONE_CAP_BYTES, max_open=MAX_OPEN,
                     max_active=MAX_ACTIVE),
)  # fmt: skip
CONVENTIONAL = NamespaceConfig(size_bytes=4 * MiB, lba_size=512)
NAMESPACES = [ZONED, CONVENTIONAL]

# (SCT, SC)
SUCCESS = (0, 0x00)
INVALID_OPCODE = (0, 0x01)
INVALID_FIELD = (0, 0x02)
INVALID_NSID = (0, 0x0B)
LBA_OUT_OF_RANGE = (0, 0x80)
INVALID_FORMAT = (1, 0x0A)
IOCS_COMBINATION_REJECTED = (1, 0x2B)
ZONE_BOUNDARY_ERROR = (1, 0xB8)
ZONE_IS_FULL = (1, 0xB9)
ZONE_IS_READ_ONLY = (1, 0xBA)
ZONE_IS_OFFLINE = (1, 0xBB)
ZONE_INVALID_WRITE = (1, 0xBC)
TOO_MANY_ACTIVE_ZONES = (1, 0xBD)
TOO_MANY_OPEN_ZONES = (1, 0xBE)
INVALID_ZONE_STATE_TRANSITION = (1, 0xBF)

E, IO, EO, C, RO, F, O = (ZoneState.EMPTY, ZoneState.IMPLICITLY_OPENED, ZoneState.EXPLICITLY_OPENED,
                          ZoneState.CLOSED, ZoneState.READ_ONLY, ZoneState.FULL, ZoneState.OFFLINE)
CLOSE, FINISH, OPEN, RESET, OFFLINE, SET_ZDE = (
    ZoneSendAction.CLOSE, ZoneSendAction.FINISH, ZoneSendAction.OPEN, ZoneSendAction.RESET,
    ZoneSendAction.OFFLINE, ZoneSendAction.SET_ZONE_DESCRIPTOR_EXTENSION,
)


def zslba(zone: int) -> int:
    """The first LBA of zone ``zone``."""
    return zone * ZONE


def status(c: Completion) -> tuple[int, int]:
    return (c.sct, c.sc)


def assert_status(c: Completion, expected: tuple[int, int], *, dnr: bool | None = None) -> None:
    """``c`` has ``expected``; failures carry DNR (every zone error is
    deterministic) unless ``dnr`` says otherwise."""
    assert status(c) == expected, str(c)
    if expected != SUCCESS:
        want = True if dnr is None else dnr
        assert c.dnr == want, f"DNR should be {want}: {c}"


def block(tag: int) -> bytes:
    """One recognisable 4 KiB block."""
    return bytes([tag & 0xFF]) * LBA


def zone(host: Host, index: int, nsid: int = ZNS_NSID) -> ZoneDescriptor:
    """The descriptor of zone ``index`` (a one-zone Partial report)."""
    report = host.zone_report(nsid, zslba(index), 128, partial=True)
    assert report.count == 1 and len(report.zones) == 1, report
    return report.zones[0]


def state(host: Host, index: int) -> ZoneState | int:
    return zone(host, index).state


def states(host: Host, nsid: int = ZNS_NSID) -> list[ZoneState | int]:
    return [z.state for z in host.zones(nsid)]


def write_blocks(host: Host, slba: int, n: int = 1, tag: int = 0x5A, nsid: int = ZNS_NSID) -> Completion:
    """A Write of ``n`` blocks at ``slba``; the completion (no exception on failure)."""
    buf = host.alloc(n * LBA)
    host.write_mem(buf, block(tag) * n)
    prps = host.build_prps(data_pointers(buf, n * LBA))
    try:
        return host.io(build_sqe(0x01, nsid=nsid, prp1=prps.prp1, prp2=prps.prp2, **lba_fields(slba, n)))
    finally:
        host.free_prps(prps)
        host.free(buf)


def fill(host: Host, slba: int, n: int, tag: int = 0x5A, nsid: int = ZNS_NSID) -> None:
    """Write ``n`` blocks from ``slba`` in MDTS-sized pieces (32 blocks), each at the write pointer."""
    done = 0
    while done < n:
        step = min(32, n - done)
        assert_status(write_blocks(host, slba + done, step, tag, nsid), SUCCESS)
        done += step


def read_completion(host: Host, slba: int, n: int = 1, nsid: int = ZNS_NSID,
                    lba: int = LBA) -> tuple[Completion, bytes]:
    """A Read of ``n`` blocks of ``lba`` bytes at ``slba``: (completion, data)."""
    size = n * lba
    buf = host.alloc(size)
    prps = host.build_prps(data_pointers(buf, size))
    try:
        c = host.io(build_sqe(0x02, nsid=nsid, prp1=prps.prp1, prp2=prps.prp2, **lba_fields(slba, n)))
        return c, host.read_mem(buf, size)
    finally:
        host.free_prps(prps)
        host.free(buf)
