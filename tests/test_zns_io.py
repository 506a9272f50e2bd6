"""I/O on a zoned namespace: writes at and off the write pointer, Write
Zeroes, Copy into a zone, Zone Append, reads, and the resources writes take.

ZNS 1.1 2.1.1.3-2.1.1.4, 3.3-3.4.1 and Figure 11 (statuses), as the
research note tabulates them: a write must start at the zone's write pointer
(else Zone Invalid Write), stay within the zone's capacity (else Zone
Boundary Error), not target a Full, Read Only or Offline zone (Zone Is
Full / Is Read Only / Is Offline); it opens an Empty or Closed zone
implicitly when the resources allow (else Too Many Active / Open Zones);
Zone Append names the zone by its start (else Invalid Field) and returns the
LBA it wrote; reads see zeroes above the write pointer (DLFEAT 001b) and
may not cross a zone boundary unless RAZB. Every such error carries DNR
(QEMU's choice: Linux retries an error without it five times).
"""

from __future__ import annotations

import threading

import pytest

from nvmefast import Controller, NamespaceConfig, ZoneConfig
from nvmefast.testing import Host
from nvmefast.testing.nvm import compare, copy, verify, write_zeroes
from nvmefast.testing.zns import assigned_lba, zone_append
from znsutil import (
    C, CLOSE, E, EO, F, FINISH, INVALID_FIELD, IO, LBA, LBA_OUT_OF_RANGE, MAX_ACTIVE, MAX_OPEN, NAMESPACES, OPEN, SUCCESS,
    TOO_MANY_ACTIVE_ZONES, TOO_MANY_OPEN_ZONES, ZCAP, ZNS_NSID, ZONE, ZONE_BOUNDARY_ERROR, ZONE_INVALID_WRITE,
    ZONE_IS_FULL, ZONE_IS_OFFLINE, ZONE_IS_READ_ONLY, ZONES, assert_status, block, read_completion, state,
    fill, states, status, write_blocks, zone, zslba,
)  # fmt: skip

pytestmark = pytest.mark.nvme_config(namespaces=NAMESPACES)


def append(host: Host, zs: int, n: int = 1, tag: int = 0x33, qid: int = 1) -> object:
    return zone_append(host, ZNS_NSID, zs, block(tag) * n, qid=qid)


# -- writes ----------------------------------------------------------------------------------------------


def test_writes_at_the_write_pointer(host: Host) -> None:
    assert_status(write_blocks(host, zslba(2), 3, tag=1), SUCCESS)
    d = zone(host, 2)
    assert (d.state, d.wp) == (IO, zslba(2) + 3)
    assert_status(write_blocks(host, zslba(2) + 3, 2, tag=2), SUCCESS)
    assert zone(host, 2).wp == zslba(2) + 5
    assert host.read(ZNS_NSID, zslba(2), 5) == block(1) * 3 + block(2) * 2


def test_writes_off_the_write_pointer(host: Host) -> None:
    host.write(ZNS_NSID, zslba(2), block(1) * 4)
    for slba in (zslba(2) + 5, zslba(2) + 3, zslba(2), zslba(2) + ZCAP - 1):  # above, below, at start, end
        assert_status(write_blocks(host, slba), ZONE_INVALID_WRITE)
    assert_status(write_blocks(host, zslba(3) + 1), ZONE_INVALID_WRITE)  # an Empty zone's WP is its start
    assert (zone(host, 2).wp, state(host, 3)) == (zslba(2) + 4, E), "refused writes move nothing"
    assert host.read(ZNS_NSID, zslba(2), 4) == block(1) * 4


def test_writing_up_to_the_capacity_fills_the_zone(host: Host) -> None:
    fill(host, zslba(1), ZCAP - 1)
    assert_status(write_blocks(host, zslba(1) + ZCAP - 1, 2), ZONE_BOUNDARY_ERROR)  # one past ZCAP
    assert state(host, 1) == IO
    assert_status(write_blocks(host, zslba(1) + ZCAP - 1, 1), SUCCESS)
    assert state(host, 1) == F
    assert_status(write_blocks(host, zslba(1) + ZCAP, 1), ZONE_IS_FULL)  # at the end, zone full
    assert_status(write_blocks(host, zslba(1), 1), ZONE_IS_FULL)


def test_a_full_zone_refuses_every_write(host: Host) -> None:
    host.zone_send(ZNS_NSID, zslba(6), FINISH)
    assert_status(write_blocks(host, zslba(6)), ZONE_IS_FULL)
    assert_status(write_zeroes(host, ZNS_NSID, zslba(6), 1), ZONE_IS_FULL)


def test_read_only_and_offline_zones(host: Host, controller: Controller) -> None:
    host.write(ZNS_NSID, zslba(3), block(9))
    assert controller.engine.zone_action(ZNS_NSID, 3, "readonly")
    assert_status(write_blocks(host, zslba(3) + 1), ZONE_IS_READ_ONLY)
    assert host.read(ZNS_NSID, zslba(3), 1) == block(9)  # still readable
    assert controller.engine.zone_action(ZNS_NSID, 4, "offline")
    assert_status(write_blocks(host, zslba(4)), ZONE_IS_OFFLINE)
    assert_status(read_completion(host, zslba(4))[0], ZONE_IS_OFFLINE)
    assert_status(zone_append(host, ZNS_NSID, zslba(3), block(1)), ZONE_IS_READ_ONLY)
    assert_status(zone_append(host, ZNS_NSID, zslba(4), block(1)), ZONE_IS_OFFLINE)


def test_write_zeroes_follows_the_write_pointer(host: Host) -> None:
    host.write(ZNS_NSID, zslba(5), block(1) * 2)
    assert_status(write_zeroes(host, ZNS_NSID, zslba(5) + 2, 3), SUCCESS)
    assert zone(host, 5).wp == zslba(5) + 5
    assert host.read(ZNS_NSID, zslba(5), 5) == block(1) * 2 + bytes(3 * LBA)
    assert_status(write_zeroes(host, ZNS_NSID, zslba(5) + 7, 1), ZONE_INVALID_WRITE)
    assert_status(write_zeroes(host, ZNS_NSID, zslba(5) + 5, ZCAP), ZONE_BOUNDARY_ERROR)


def test_copy_into_a_zone_follows_the_write_pointer(host: Host) -> None:
    host.write(ZNS_NSID, zslba(1), block(1) + block(2))
    c = copy(host, ZNS_NSID, zslba(7), [(zslba(1), 2)])
    assert_status(c, SUCCESS)
    assert (state(host, 7), zone(host, 7).wp) == (IO, zslba(7) + 2)
    assert host.read(ZNS_NSID, zslba(7), 2) == block(1) + block(2)
    c = copy(host, ZNS_NSID, zslba(7) + 5, [(zslba(1), 1)])
    assert status(c) == ZONE_INVALID_WRITE  # QEMU reports Copy's zone errors without DNR
    host.zone_send(ZNS_NSID, zslba(8), FINISH)
    assert status(copy(host, ZNS_NSID, zslba(8), [(zslba(1), 1)])) == ZONE_IS_FULL


# -- reads ------------------------------------------------------------------------------------------


def test_reads_above_the_write_pointer_are_zeroes(host: Host) -> None:
    host.write(ZNS_NSID, zslba(1), block(0xEE) * 2)
    c, data = read_completion(host, zslba(1), 4)
    assert_status(c, SUCCESS)
    assert data == block(0xEE) * 2 + bytes(2 * LBA)
    # Past the capacity, up to the zone's end: readable, deallocated.
    c, data = read_completion(host, zslba(1) + ZCAP, 32)
    assert_status(c, SUCCESS)
    assert data == bytes(32 * LBA)
    c, data = read_completion(host, zslba(2) - 1, 1)
    assert_status(c, SUCCESS)
    assert data == bytes(LBA)
    assert host.read(ZNS_NSID, zslba(9), 3) == bytes(3 * LBA)  # an Empty zone


def test_reads_do_not_cross_zone_boundaries(host: Host) -> None:
    c, _ = read_completion(host, zslba(2) - 1, 2)
    assert_status(c, ZONE_BOUNDARY_ERROR)  # OZCS.RAZB is clear
    # Verify and Compare are read commands too (ZNS 1.1 Figure 11).
    assert_status(verify(host, ZNS_NSID, zslba(2) - 1, 2), ZONE_BOUNDARY_ERROR)
    assert_status(compare(host, ZNS_NSID, zslba(2) - 1, bytes(2 * LBA)), ZONE_BOUNDARY_ERROR)
    assert_status(verify(host, ZNS_NSID, zslba(2) - 2, 2), SUCCESS)


def test_offline_zones_refuse_verify_and_compare(host: Host, controller: Controller) -> None:
    assert controller.engine.zone_action(ZNS_NSID, 3, "offline")
    assert_status(verify(host, ZNS_NSID, zslba(3), 1), ZONE_IS_OFFLINE)
    assert_status(compare(host, ZNS_NSID, zslba(3), bytes(LBA)), ZONE_IS_OFFLINE)


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(
    size_bytes=4 << 20, lba_size=4096, zones=ZoneConfig(size_bytes=1 << 20, cross_read=True))])
def test_reads_cross_zone_boundaries_with_razb(host: Host) -> None:
    host.write(1, zslba(1), block(3))
    c, data = read_completion(host, zslba(1) - 1, 2, nsid=1)
    assert_status(c, SUCCESS)
    assert data == bytes(LBA) + block(3)


# -- Zone Append -------------------------------------------------------------------------------------


def test_zone_append_returns_the_lba_it_wrote(host: Host) -> None:
    first = host.zone_append(ZNS_NSID, zslba(4), block(1) * 2)
    second = host.zone_append(ZNS_NSID, zslba(4), block(2))
    assert (first, second) == (zslba(4), zslba(4) + 2)
    d = zone(host, 4)
    assert (d.state, d.wp) == (IO, zslba(4) + 3)
    assert host.read(ZNS_NSID, zslba(4), 3) == block(1) * 2 + block(2)


def test_zone_append_after_writes_and_to_the_capacity(host: Host) -> None:
    host.write(ZNS_NSID, zslba(3), block(1) * 5)
    assert host.zone_append(ZNS_NSID, zslba(3), block(2)) == zslba(3) + 5
    fill(host, zslba(3) + 6, ZCAP - 8)  # two blocks left
    c = append(host, zslba(3), 3)  # one block too many
    assert_status(c, ZONE_BOUNDARY_ERROR)  # type: ignore[arg-type]
    c = append(host, zslba(3), 2)
    assert_status(c, SUCCESS)  # type: ignore[arg-type]
    assert assigned_lba(c) == zslba(3) + ZCAP - 2  # type: ignore[arg-type]
    assert state(host, 3) == F
    assert_status(append(host, zslba(3)), ZONE_IS_FULL)  # type: ignore[arg-type]


@pytest.mark.parametrize("slba", [1, ZONE - 1, ZONE + 1, 3 * ZONE + ZCAP])
def test_zone_append_needs_a_zone_start(host: Host, slba: int) -> None:
    assert_status(zone_append(host, ZNS_NSID, slba, block(1)), INVALID_FIELD)
    assert states(host) == [E] * ZONES


@pytest.mark.parametrize("slba", [ZONES * ZONE, 2**63])
def test_io_past_the_namespace(host: Host, slba: int) -> None:
    assert_status(zone_append(host, ZNS_NSID, slba, block(1)), LBA_OUT_OF_RANGE)
    assert_status(write_blocks(host, slba), LBA_OUT_OF_RANGE)
    assert_status(read_completion(host, slba)[0], LBA_OUT_OF_RANGE)


@pytest.mark.nvme_config(mdts=5, namespaces=[NamespaceConfig(
    size_bytes=4 << 20, lba_size=4096, zones=ZoneConfig(size_bytes=1 << 20, append_size_limit=16 << 10))])
def test_zone_append_size_limit(host: Host) -> None:
    assert_status(zone_append(host, 1, 0, block(1) * 4), SUCCESS)  # 16 KiB: at ZASL
    assert_status(zone_append(host, 1, 0, block(1) * 5), INVALID_FIELD)  # above it
    assert zone(host, 0, nsid=1).wp == 4
    host.write(1, 4, block(2) * 8)  # plain writes are bound by MDTS only


def test_appends_from_several_queues_get_distinct_lbas(host: Host) -> None:
    per_queue, qids = 40, (1, 2, 3, 4)
    for qid in qids[1:]:
        host.create_io_queue_pair(qid)
    got: dict[int, list[tuple[int, int]]] = {q: [] for q in qids}
    errors: list[BaseException] = []

    def run(qid: int) -> None:
        try:
            for i in range(per_queue):
                tag = qid << 6 | i
                got[qid].append((host.zone_append(ZNS_NSID, zslba(6), block(tag), qid=qid), tag))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(q,)) for q in qids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    placed = sorted(alba for items in got.values() for alba, _ in items)
    assert placed == list(range(zslba(6), zslba(6) + per_queue * len(qids)))  # each LBA once
    for items in got.values():
        for alba, tag in items:
            assert host.read(ZNS_NSID, alba, 1) == block(tag), f"append tagged {tag} is not at LBA {alba}"


# -- resources taken by writes -------------------------------------------------------------------------


def test_implicit_open_needs_an_active_resource(host: Host) -> None:
    for z in range(MAX_ACTIVE):
        host.write(ZNS_NSID, zslba(z), block(z))
        host.zone_send(ZNS_NSID, zslba(z), CLOSE)
    assert_status(write_blocks(host, zslba(MAX_ACTIVE)), TOO_MANY_ACTIVE_ZONES)
    assert_status(zone_append(host, ZNS_NSID, zslba(MAX_ACTIVE), block(1)), TOO_MANY_ACTIVE_ZONES)
    assert state(host, MAX_ACTIVE) == E
    # A closed zone reopens: it is already active.
    assert_status(write_blocks(host, zslba(0) + 1), SUCCESS)
    assert state(host, 0) == IO


def test_implicit_open_needs_an_open_resource(host: Host) -> None:
    for z in range(MAX_OPEN):
        host.zone_send(ZNS_NSID, zslba(z), OPEN)  # explicitly opened: the controller may not close them
    assert_status(write_blocks(host, zslba(MAX_OPEN)), TOO_MANY_OPEN_ZONES)
    assert states(host)[: MAX_OPEN + 1] == [EO] * MAX_OPEN + [E]


def test_implicit_open_past_mor_with_implicitly_opened_zones(host: Host) -> None:
    for z in range(MAX_OPEN):
        host.write(ZNS_NSID, zslba(z), block(z))
    # The controller may close an implicitly opened zone to make room (ZNS 2.1.1.4.1) or refuse.
    c = write_blocks(host, zslba(MAX_OPEN))
    now = states(host)[: MAX_OPEN + 1]
    if status(c) == SUCCESS:
        assert now.count(IO) == MAX_OPEN and now.count(C) == 1 and now[MAX_OPEN] == IO
    else:
        assert_status(c, TOO_MANY_OPEN_ZONES)
        assert now == [IO] * MAX_OPEN + [E]


def test_flush_on_a_zoned_namespace(host: Host) -> None:
    host.write(ZNS_NSID, 0, block(1))
    host.flush(ZNS_NSID)
    assert host.read(ZNS_NSID, 0, 1) == block(1)


def test_conventional_namespace_is_untouched_by_zones(host: Host) -> None:
    host.write(2, 100, b"\x42" * 512 * 3)
    host.write(2, 0, b"\x43" * 512)  # anywhere, any order
    assert host.read(2, 100, 3) == b"\x42" * 1536
    assert states(host) == [E] * ZONES
