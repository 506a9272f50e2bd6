"""Zone Management Send (79h): every Zone Send Action from every zone state,
Select All, the open and active resource limits, and bad input.

The transition table is ZNS 1.1 3.4.3.1 (and 2.1.1.3's state machine) as
the research note tabulates it: which state each action takes a zone from
and to, which are no-ops, and which are Invalid Zone State Transition.
Resources (2.1.1.4): active = implicitly open + explicitly open + closed,
open = the two opened states; MAR/MOR limit them; with MAR > MOR the missing
resource names the error, and a refused command changes nothing.
"""

from __future__ import annotations

import pytest

from nvmefast import Controller, NamespaceConfig, ZoneConfig
from nvmefast.testing import Host
from nvmefast.testing.zns import ZoneAttribute, ZoneState, zone_append_sqe, zone_receive_sqe, zone_send_sqe
from znsutil import (
    C, CLOSE, E, EO, F, FINISH, INVALID_FIELD, INVALID_OPCODE, INVALID_ZONE_STATE_TRANSITION, IO, LBA,
    LBA_OUT_OF_RANGE, MAX_ACTIVE, MAX_OPEN, NAMESPACES, NVM_NSID, O, OFFLINE, OPEN, RESET, RO, SET_ZDE,
    SUCCESS, TOO_MANY_ACTIVE_ZONES, TOO_MANY_OPEN_ZONES, ZCAP, ZNS_NSID, ZONE, ZONE_IS_OFFLINE, ZONES,
    assert_status, block,
    read_completion, state, states, zone, zslba,
)  # fmt: skip

pytestmark = pytest.mark.nvme_config(namespaces=NAMESPACES)


def send(host: Host, z: int, action: int, **kw: object) -> object:
    return host.zone_send(ZNS_NSID, zslba(z), action, check=False, **kw)  # type: ignore[arg-type]


def put(host: Host, controller: Controller, z: int, target: ZoneState) -> None:
    """Bring zone ``z`` from Empty to ``target`` by the commands (or controller actions) that lead there."""
    match target:
        case ZoneState.EMPTY:
            pass
        case ZoneState.IMPLICITLY_OPENED:
            host.write(ZNS_NSID, zslba(z), block(z))
        case ZoneState.EXPLICITLY_OPENED:
            host.zone_send(ZNS_NSID, zslba(z), OPEN)
        case ZoneState.CLOSED:
            host.write(ZNS_NSID, zslba(z), block(z))
            host.zone_send(ZNS_NSID, zslba(z), CLOSE)
        case ZoneState.FULL:
            host.zone_send(ZNS_NSID, zslba(z), FINISH)
        case ZoneState.READ_ONLY:
            assert controller.engine.zone_action(ZNS_NSID, z, "readonly")
        case ZoneState.OFFLINE:
            assert controller.engine.zone_action(ZNS_NSID, z, "offline")
    assert state(host, z) == target


# (from, action) -> the resulting state, or the error status.
TRANSITIONS: dict[tuple[ZoneState, int], ZoneState | tuple[int, int]] = {
    (E, CLOSE): INVALID_ZONE_STATE_TRANSITION, (IO, CLOSE): C, (EO, CLOSE): C, (C, CLOSE): C,
    (F, CLOSE): INVALID_ZONE_STATE_TRANSITION, (RO, CLOSE): INVALID_ZONE_STATE_TRANSITION,
    (O, CLOSE): INVALID_ZONE_STATE_TRANSITION,
    (E, FINISH): F, (IO, FINISH): F, (EO, FINISH): F, (C, FINISH): F, (F, FINISH): F,
    (RO, FINISH): INVALID_ZONE_STATE_TRANSITION, (O, FINISH): INVALID_ZONE_STATE_TRANSITION,
    (E, OPEN): EO, (IO, OPEN): EO, (EO, OPEN): EO, (C, OPEN): EO,
    (F, OPEN): INVALID_ZONE_STATE_TRANSITION, (RO, OPEN): INVALID_ZONE_STATE_TRANSITION,
    (O, OPEN): INVALID_ZONE_STATE_TRANSITION,
    (E, RESET): E, (IO, RESET): E, (EO, RESET): E, (C, RESET): E, (F, RESET): E,
    (RO, RESET): INVALID_ZONE_STATE_TRANSITION, (O, RESET): INVALID_ZONE_STATE_TRANSITION,
    (E, OFFLINE): INVALID_ZONE_STATE_TRANSITION, (IO, OFFLINE): INVALID_ZONE_STATE_TRANSITION,
    (EO, OFFLINE): INVALID_ZONE_STATE_TRANSITION, (C, OFFLINE): INVALID_ZONE_STATE_TRANSITION,
    (F, OFFLINE): INVALID_ZONE_STATE_TRANSITION, (RO, OFFLINE): O, (O, OFFLINE): O,
}  # fmt: skip


@pytest.mark.parametrize(("start", "action"), list(TRANSITIONS), ids=lambda v: getattr(v, "name", str(v)))
def test_single_zone_transition(host: Host, controller: Controller, start: ZoneState, action: int) -> None:
    z = 5
    put(host, controller, z, start)
    expected = TRANSITIONS[(start, action)]
    c = send(host, z, action)
    if isinstance(expected, ZoneState):
        assert_status(c, SUCCESS)  # type: ignore[arg-type]
        assert state(host, z) == expected
    else:
        assert_status(c, expected)  # type: ignore[arg-type]
        assert state(host, z) == start, "a refused action changes nothing"
    assert all(s == E for i, s in enumerate(states(host)) if i != z), "no other zone moved"


def test_reset_rewinds_the_write_pointer_and_zeroes_the_data(host: Host) -> None:
    host.write(ZNS_NSID, zslba(2), block(7) * 3)
    assert zone(host, 2).wp == zslba(2) + 3
    host.zone_send(ZNS_NSID, zslba(2), RESET)
    d = zone(host, 2)
    assert (d.state, d.wp, d.capacity) == (E, zslba(2), ZCAP)
    assert host.read(ZNS_NSID, zslba(2), 3) == bytes(3 * LBA)


def test_finish_and_reset_clear_recommendations(host: Host, controller: Controller) -> None:
    host.write(ZNS_NSID, zslba(1), block(1))
    assert controller.engine.zone_action(ZNS_NSID, 1, "finish-recommended")
    assert zone(host, 1).attributes & ZoneAttribute.FZR
    host.zone_send(ZNS_NSID, zslba(1), FINISH)
    assert zone(host, 1).state == F
    assert controller.engine.zone_action(ZNS_NSID, 1, "reset-recommended")
    assert zone(host, 1).attributes & ZoneAttribute.RZR
    host.zone_send(ZNS_NSID, zslba(1), RESET)
    assert zone(host, 1).attributes == ZoneAttribute(0)


# -- Select All ------------------------------------------------------------------------------------


def _mixed(host: Host, controller: Controller) -> None:
    # zone: 0 E, 1 IO, 2 EO, 3 C, 4 F, 5 RO, 6 O, 7 E
    for z, s in ((1, IO), (2, EO), (3, C), (4, F), (5, RO), (6, O)):
        put(host, controller, z, s)


SELECT_ALL: dict[int, list[ZoneState]] = {
    CLOSE: [E, C, C, C, F, RO, O, E],  # the opened zones close
    FINISH: [E, F, F, F, F, RO, O, E],  # opened and closed finish; Empty ones do not
    OPEN: [E, IO, EO, EO, F, RO, O, E],  # closed zones only
    RESET: [E, E, E, E, E, RO, O, E],  # everything but Read Only and Offline
    OFFLINE: [E, IO, EO, C, F, O, O, E],  # Read Only zones only
}


@pytest.mark.parametrize("action", list(SELECT_ALL), ids=lambda a: a.name)
def test_select_all(host: Host, controller: Controller, action: int) -> None:
    _mixed(host, controller)
    # SLBA is ignored with Select All: even one past the namespace.
    c = host.zone_send(ZNS_NSID, ZONES * ZONE + 12345, action, select_all=True, check=False)
    assert_status(c, SUCCESS)
    assert states(host)[:8] == SELECT_ALL[action]
    assert all(s == E for s in states(host)[8:])


@pytest.mark.parametrize("action", [CLOSE, FINISH, OPEN, RESET, OFFLINE], ids=lambda a: a.name)
def test_select_all_with_nothing_to_do(host: Host, action: int) -> None:
    c = host.zone_send(ZNS_NSID, 0, action, select_all=True, check=False)
    assert_status(c, SUCCESS)
    assert states(host) == [E] * ZONES


def test_select_all_open_that_cannot_open_every_zone_opens_none(host: Host) -> None:
    for z in range(MAX_ACTIVE):  # four closed zones: active 4, open 0
        host.write(ZNS_NSID, zslba(z), block(z))
        host.zone_send(ZNS_NSID, zslba(z), CLOSE)
    c = host.zone_send(ZNS_NSID, 0, OPEN, select_all=True, check=False)
    assert_status(c, TOO_MANY_OPEN_ZONES)  # four to open, MOR allows three
    assert states(host)[:MAX_ACTIVE] == [C] * MAX_ACTIVE


def test_set_zone_descriptor_extension_is_not_for_select_all(host: Host) -> None:
    c = host.zone_send(ZNS_NSID, 0, SET_ZDE, select_all=True, data=bytes(64), check=False)
    assert_status(c, INVALID_FIELD)


# -- resources ---------------------------------------------------------------------------------------


def test_explicit_open_limits(host: Host) -> None:
    for z in range(MAX_OPEN):
        host.zone_send(ZNS_NSID, zslba(z), OPEN)
    # Active 3 < MAR 4 but open 3 = MOR: the open resource is missing.
    assert_status(send(host, 3, OPEN), TOO_MANY_OPEN_ZONES)  # type: ignore[arg-type]
    assert state(host, 3) == E
    host.zone_send(ZNS_NSID, zslba(0), CLOSE)  # open 2, active 3
    host.zone_send(ZNS_NSID, zslba(3), OPEN)  # open 3, active 4
    # Both resources missing now: with MAR > MOR the active one is named for an Empty zone ...
    assert_status(send(host, 4, OPEN), TOO_MANY_ACTIVE_ZONES)  # type: ignore[arg-type]
    # ... and a closed zone needs only an open resource.
    assert_status(send(host, 0, OPEN), TOO_MANY_OPEN_ZONES)  # type: ignore[arg-type]
    assert states(host)[:5] == [C, EO, EO, EO, E]
    host.zone_send(ZNS_NSID, zslba(1), FINISH)  # Full releases both
    host.zone_send(ZNS_NSID, zslba(4), OPEN)
    assert states(host)[:5] == [C, F, EO, EO, EO]


def test_finish_of_an_empty_zone_needs_no_resource(host: Host) -> None:
    host.write(ZNS_NSID, zslba(0), block(0))
    host.zone_send(ZNS_NSID, zslba(0), CLOSE)
    for z in range(1, 1 + MAX_OPEN):
        host.zone_send(ZNS_NSID, zslba(z), OPEN)  # open 3 = MOR, active 4 = MAR
    host.zone_send(ZNS_NSID, zslba(8), FINISH)  # Empty -> Full takes neither
    assert states(host)[:9] == [C, EO, EO, EO, E, E, E, E, F]


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(
    size_bytes=8 << 20, lba_size=4096, zones=ZoneConfig(size_bytes=1 << 20, max_open=2, max_active=2))])
def test_equal_limits_name_the_active_resource(host: Host) -> None:
    for z in range(2):
        host.zone_send(1, zslba(z), OPEN)
    c = host.zone_send(1, zslba(2), OPEN, check=False)
    assert_status(c, TOO_MANY_ACTIVE_ZONES)  # MAR == MOR: always Too Many Active Zones


# -- Set Zone Descriptor Extension -------------------------------------------------------------------

ZDE_NS = [NamespaceConfig(size_bytes=8 << 20, lba_size=4096,
                          zones=ZoneConfig(size_bytes=1 << 20, descriptor_extension_bytes=128, max_active=2))]


@pytest.mark.nvme_config(namespaces=ZDE_NS)
def test_set_zone_descriptor_extension(host: Host) -> None:
    ext = bytes(range(128))
    host.zone_send(1, zslba(1), SET_ZDE, data=ext)
    d = zone(host, 1, nsid=1)
    assert d.state == C and d.attributes & ZoneAttribute.ZDEV and d.wp == zslba(1)
    report = host.zone_report(1, zslba(1), 64 + 2 * (64 + 128), extended=True, partial=True)
    assert report.zones[0].extension == ext
    # Only an Empty zone takes one; the second active zone, then no resource left.
    assert_status(host.zone_send(1, zslba(1), SET_ZDE, data=ext, check=False), INVALID_ZONE_STATE_TRANSITION)
    host.zone_send(1, zslba(2), SET_ZDE, data=ext)
    assert_status(host.zone_send(1, zslba(3), SET_ZDE, data=ext, check=False), TOO_MANY_ACTIVE_ZONES)
    # Reset forgets it.
    host.zone_send(1, zslba(1), RESET)
    d = zone(host, 1, nsid=1)
    assert d.state == E and not d.attributes & ZoneAttribute.ZDEV


def test_set_zone_descriptor_extension_without_zdes(host: Host) -> None:
    assert_status(send(host, 1, SET_ZDE, data=bytes(64)), INVALID_FIELD)  # type: ignore[arg-type]
    assert state(host, 1) == E


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [CLOSE, FINISH, OPEN, RESET, OFFLINE], ids=lambda a: a.name)
def test_slba_not_a_zone_start(host: Host, action: int) -> None:
    for slba in (1, ZONE - 1, ZONE + ZCAP, 3 * ZONE + 17):
        assert_status(host.zone_send(ZNS_NSID, slba, action, check=False), INVALID_FIELD)
    assert states(host) == [E] * ZONES


@pytest.mark.parametrize("slba", [ZONES * ZONE, ZONES * ZONE + ZONE, 2**63, 2**64 - 1])
def test_slba_out_of_range(host: Host, slba: int) -> None:
    assert_status(host.zone_send(ZNS_NSID, slba, OPEN, check=False), LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("zsa", [0x00, 0x06, 0x0F, 0x11, 0x12, 0x80, 0xFF])
def test_unknown_zone_send_action(host: Host, zsa: int) -> None:
    assert_status(host.zone_send(ZNS_NSID, zslba(1), zsa, check=False), INVALID_FIELD)
    assert_status(host.zone_send(ZNS_NSID, 0, zsa, select_all=True, check=False), INVALID_FIELD)


def test_zone_commands_on_a_conventional_namespace(host: Host) -> None:
    buf = host.alloc(4096)
    for sqe in (
        zone_send_sqe(NVM_NSID, 0, OPEN),
        zone_receive_sqe(NVM_NSID, 0, 4096, prp1=buf),
        zone_append_sqe(NVM_NSID, 0, 1, prp1=buf),
    ):
        assert_status(host.io(sqe), INVALID_OPCODE)
    host.free(buf)


def test_offline_zone_reads_fail(host: Host, controller: Controller) -> None:
    put(host, controller, 4, O)
    assert_status(read_completion(host, zslba(4))[0], ZONE_IS_OFFLINE)
