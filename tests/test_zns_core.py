"""The zoned-namespace core from Python: ZoneConfig and its errors, the
engine's zone calls, zone fault rules, and what a file namespace's zones
keep across a SIGKILL after Flush and a power loss. Expectations come from
the ZNS 1.1 text (section numbers in the tests), not from the code.

The admin side of zoned namespaces (Identify, logs, CC.CSS) and the
command-by-command conformance tests are test_zns_*.py of the host side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nvmefast import ConfigError, Controller, ControllerConfig, FaultRule, NamespaceConfig, Status, ZoneConfig
from nvmefast._core import Engine
from nvmefast.status import DNR
from nvmefast.testing import Host, build_sqe

MiB = 1 << 20
ZONE_APPEND, ZONE_SEND, ZONE_RECV = 0x7D, 0x79, 0x7A
EMPTY, IOPEN, CLOSED, RDONLY, FULL, OFFLINE = 0x1, 0x2, 0x4, 0xD, 0xE, 0xF
RESET, FINISH = 0x04, 0x02


# -- ZoneConfig ---------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "hint"), [
    ({"size_bytes": 0}, "ZoneConfig.size_bytes must be"),
    ({"size_bytes": MiB, "capacity_bytes": 2 * MiB}, "give at most size_bytes"),
    ({"max_open": 4, "max_active": 2}, "lower max_open or raise max_active"),
    ({"append_size_limit": 6144}, "power-of-two multiple of 4096"),
    ({"append_size_limit": 2048}, "power-of-two multiple of 4096"),
    ({"append_size_limit": 4096}, "ZASL 0 means MDTS"),
    ({"descriptor_extension_bytes": 100}, "multiple of 64"),
    ({"descriptor_extension_bytes": 256 * 64}, "must be in 0..16320"),
    ({"max_open": -1}, "ZoneConfig.max_open must be in"),
])
def test_zone_config_refuses_what_the_spec_cannot_describe(kwargs: dict[str, int], hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        ZoneConfig(**kwargs)


@pytest.mark.parametrize(("ns", "hint"), [
    ({"size_bytes": 100 * MiB, "zones": ZoneConfig(size_bytes=16 * MiB)}, r"does not divide the namespace size 100M.*e\.g\. 96M"),
    ({"size_bytes": 96 * MiB, "zones": ZoneConfig(size_bytes=3 * MiB)}, "not a power of two .*use 2M or 4M"),
    ({"size_bytes": 64 * MiB, "zones": ZoneConfig(size_bytes=16 * MiB, max_active=5)}, "above the zone count 4"),
    ({"size_bytes": 64 * MiB, "lba_size": 4096, "zones": ZoneConfig(size_bytes=16 * MiB, capacity_bytes=512)},
     "not a multiple of the 4096-byte LBA size"),
])
def test_zones_must_fit_the_namespace(ns: dict[str, object], hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        NamespaceConfig(**ns)  # type: ignore[arg-type]


def test_zone_config_fields_for_identify() -> None:
    # Figure 48/49: MAR and MOR are 0's based (FFFFFFFFh: no limit), ZDES
    # counts 64-byte units, ZASL a power of two of CAP.MPSMIN (4 KiB).
    z = ZoneConfig(size_bytes=16 * MiB, capacity_bytes=12 * MiB, max_open=4, max_active=6,
                   append_size_limit=128 * 1024, descriptor_extension_bytes=128)
    assert (z.zone_lbas(4096), z.capacity_lbas(4096), z.mor, z.mar, z.zdes, z.zasl()) == (4096, 3072, 3, 5, 2, 5)
    assert (ZoneConfig().mor, ZoneConfig().mar, ZoneConfig().zasl()) == (0xFFFFFFFF, 0xFFFFFFFF, 0)


def test_a_file_namespace_of_the_files_size_is_checked_when_opened(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "disk.img")
    with open(path, "wb") as f:
        f.truncate(40 * MiB)
    ns = NamespaceConfig(backend="file", path=path, zones=ZoneConfig(size_bytes=16 * MiB))
    with pytest.raises(ConfigError, match="does not divide the namespace size"):
        Controller(ControllerConfig(namespaces=[ns]))


# -- the engine's zone calls ----------------------------------------------------

def _engine(**zones: int | bool) -> Engine:
    spec = {"size_bytes": 4 * MiB, "capacity_bytes": 3 * MiB, "max_open": 2, "max_active": 3}
    spec.update(zones)
    return Engine(namespaces=[{"size_bytes": 16 * MiB, "lba_size": 512, "backend": "ram", "zones": spec},
                              {"size_bytes": MiB, "lba_size": 512, "backend": "null"}],
                  msix_vectors=2, max_qid=1, max_queue_entries=64, mdts_bytes=0, poll_us=0)


def test_engine_geometry_report_and_controller_actions() -> None:
    e = _engine()
    try:
        assert e.zone_geometry(1) == {"zone_lbas": 8192, "capacity_lbas": 6144, "zones": 4, "max_open": 2,
                                      "max_active": 3, "zasl_bytes": 0, "zde_bytes": 0, "cross_read": False}
        assert e.zone_geometry(2) is None and e.zone_report(2) is None
        assert e.zone_report(1) == [(z * 8192, 6144, z * 8192, EMPTY, 0) for z in range(4)]
        events: list[int] = []
        e.set_zone_event_handler(events.append)
        # 2.1.1.3: Read Only and Offline are the controller's own transitions.
        assert e.zone_action(1, 2, "readonly") and not e.zone_action(1, 2, "readonly")
        assert e.zone_action(1, 3, "offline")
        assert not e.zone_action(1, 0, "reset-recommended"), "RZR applies to Full zones only (5.4)"
        assert events == [1, 1]
        report = e.zone_report(1)
        assert report is not None
        assert [(r[3], r[2]) for r in report[2:]] == [(RDONLY, 2**64 - 1), (OFFLINE, 2**64 - 1)]
        assert e.take_changed_zones(1, clear=False) == ([2 * 8192, 3 * 8192], False)
        assert e.take_changed_zones(1) == ([2 * 8192, 3 * 8192], False)
        assert e.take_changed_zones(1) == ([], False)
        with pytest.raises(ConfigError, match="must be \"readonly\""):
            e.zone_action(1, 0, "explode")
        with pytest.raises(ConfigError, match="zone 9 does not exist"):
            e.zone_action(1, 9, "offline")
        with pytest.raises(ConfigError, match="not zoned"):
            e.zone_action(2, 0, "offline")
    finally:
        e.close()


def test_changed_zone_list_overflows_past_511_entries() -> None:
    # 4.1.4.1: up to 511 Zone Identifiers, then FFFFh.
    e = Engine(namespaces=[{"size_bytes": 1024 * 4096, "lba_size": 512, "backend": "null",
                            "zones": {"size_bytes": 4096}}],
               msix_vectors=2, max_qid=1, max_queue_entries=64, mdts_bytes=0, poll_us=0)
    try:
        for z in range(512):
            assert e.zone_action(1, z, "offline")
        zslbas, overflow = e.take_changed_zones(1) or ([], False)
        assert (len(zslbas), overflow) == (511, True)
    finally:
        e.close()


@pytest.mark.parametrize(("zones", "hint"), [
    ({"capacity_bytes": 1}, "zone capacity"),
    ({"size_bytes": 3 * MiB}, "not a power of two"),
    ({"colour": 1}, "zones key \"colour\" is not one of"),
    ({"max_open": "two"}, "wrong type"),
])
def test_engine_zones_key_errors_say_what_to_change(zones: dict[str, object], hint: str) -> None:
    spec = {"size_bytes": 4 * MiB, **zones}
    with pytest.raises(ConfigError, match=hint):
        Engine(namespaces=[{"size_bytes": 16 * MiB, "lba_size": 512, "backend": "ram", "zones": spec}],
               msix_vectors=2, max_qid=1, max_queue_entries=64, mdts_bytes=0, poll_us=0)


# -- I/O through a host, fault rules --------------------------------------------

def _zoned(zone: int = 4 * MiB, **kw: int) -> ControllerConfig:
    return ControllerConfig(namespaces=[NamespaceConfig(size_bytes=16 * MiB, zones=ZoneConfig(size_bytes=zone, **kw))])


def _append(host: Host, zslba: int, data: bytes) -> tuple[int, int]:
    buf = host.alloc(len(data))
    host.write_mem(buf, data)
    c = host.io(build_sqe(ZONE_APPEND, nsid=1, prp1=buf, cdw10=zslba & 0xFFFFFFFF, cdw11=zslba >> 32,
                          cdw12=len(data) // 512 - 1))
    host.free(buf)
    return c.status, c.dw0 | c.dw1 << 32


def _send(host: Host, slba: int, action: int) -> int:
    return host.io(build_sqe(ZONE_SEND, nsid=1, cdw10=slba, cdw13=action)).status


def test_appends_land_where_their_alba_says() -> None:
    with Controller(_zoned()) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        albas = []
        for i in range(1, 5):
            status, alba = _append(host, 8192, bytes([i]) * 512 * i)
            assert status == 0
            albas.append(alba)
        assert albas == [8192, 8193, 8195, 8198], "each append at the write pointer of its time"
        data = host.read(1, 8192, 10)
        assert data == b"".join(bytes([i]) * 512 * i for i in range(1, 5))
        assert _append(host, 8193, b"x" * 512)[0] == Status.INVALID_FIELD | DNR


def test_zone_fault_rules_match_zones_and_move_them() -> None:
    rule = FaultRule.parse("write nsid=1 zone=1 skip=1 count=1 -> zone-readonly")
    assert (rule.zone, rule.action) == (1, "zone-readonly")
    assert str(rule) == "write nsid=1 zone=1 count=1 skip=1 -> zone-readonly"
    assert FaultRule.parse(str(rule)) == rule
    assert FaultRule.parse("zone-append -> status zone-is-full dnr").status == Status.ZONE_IS_FULL | DNR
    with pytest.raises(ConfigError, match="admin commands touch no zone"):
        FaultRule.parse("admin zone=1 -> never")
    with pytest.raises(ConfigError, match="applies to I/O commands only"):
        FaultRule.parse("admin -> zone-offline")
    with Controller(_zoned()) as ctrl, Host(ctrl) as host:
        events: list[int] = []
        ctrl._live().set_zone_event_handler(events.append)
        fault = ctrl.faults.add(rule)
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        host.write(1, 0, b"a" * 512)  # zone 0: not matched
        host.write(1, 8192, b"b" * 512)  # zone 1: matched, skipped
        buf = host.alloc(512)
        c = host.io(build_sqe(0x01, nsid=1, prp1=buf, cdw10=8193, cdw12=0))
        assert c.status == Status.ZONE_IS_READ_ONLY | DNR, "the zone went Read Only before the write ran"
        assert (fault.matched, fault.hits) == (2, 1)
        # The event is delivered once the worker's pass lets go of its locks,
        # which may be just after the completion is posted.
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.001)
        assert events == [1]
        assert host.read(1, 8192, 2) == b"b" * 512 + bytes(512), "Read Only zones stay readable"
        report = ctrl._live().zone_report(1)
        assert report is not None and report[1][3] == RDONLY
        assert ctrl._live().take_changed_zones(1) == ([8192], False)
        ctrl.faults.add("zone-mgmt-send zone=0 count=1 -> status invalid-zone-state-transition dnr")
        assert _send(host, 0, RESET) == Status.INVALID_ZONE_STATE_TRANSITION | DNR
        assert _send(host, 0, RESET) == 0


# -- durability -------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from nvmefast import Controller, ControllerConfig, NamespaceConfig, ZoneConfig
    from nvmefast.testing import Host, build_sqe

    path = sys.argv[1]
    ns = NamespaceConfig(backend="file", path=path, size_bytes=16 << 20, zones=ZoneConfig(size_bytes=4 << 20))
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        host.write(1, 0, b"A" * 8 * 512)                 # zone 0: 8 blocks
        host.write(1, 8192, b"B" * 3 * 512)              # zone 1: 3 blocks
        host.io(build_sqe(0x79, nsid=1, cdw10=2 * 8192, cdw13=0x02))   # zone 2: Finish (durable at once)
        host.flush(1)
        print("flushed", flush=True)
        host.write(1, 8, b"C" * 512)                     # after the Flush: not promised
        host.write(1, 3 * 8192, b"D" * 512)
        sys.stdin.readline()                             # wait for the kill
""")


def test_sigkill_after_flush_keeps_exactly_the_durable_write_pointers(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "zoned.img")
    with subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert line == "flushed"
    assert os.path.exists(path + ".zones"), "the zones live beside the image"
    ns = NamespaceConfig(backend="file", path=path, zones=ZoneConfig(size_bytes=4 * MiB))
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        report = ctrl._live().zone_report(1)
        assert report is not None
        # 2.1.1.3: after a restart a written zone is Closed; a finished one Full.
        # Zone 0's write after the Flush is not claimed; zone 3's never became durable.
        assert [(r[3], r[2] - r[0] if r[2] != 2**64 - 1 else None) for r in report] == [
            (CLOSED, 8), (CLOSED, 3), (FULL, None), (EMPTY, 0)]
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        assert host.read(1, 0, 9) == b"A" * 8 * 512 + bytes(512), "above the write pointer: zeroes"
        assert host.read(1, 8192, 3) == b"B" * 3 * 512
        assert host.read(1, 3 * 8192, 1) == bytes(512)
        host.write(1, 8, b"E" * 512)
        assert host.read(1, 8, 1) == b"E" * 512
    with pytest.raises(ConfigError, match=r"zoned\.img\.zones: was written for another zone geometry.*delete"):
        Controller(ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=path,
                                                                 zones=ZoneConfig(size_bytes=2 * MiB))]))


def test_power_loss_rolls_write_pointers_back_to_the_last_flush() -> None:
    with Controller(_zoned()) as ctrl, Host(ctrl) as host:
        ctrl.faults.track_unflushed()
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        host.write(1, 0, b"a" * 1024)
        host.flush(1)
        # FUA: durable at once (on a zoned namespace a FUA write flushes the
        # whole namespace, so the write pointers may claim all below them).
        host.write(1, 8192, b"c" * 512, fua=True)
        host.write(1, 2, b"b" * 512)
        host.write(1, 8193, b"d" * 512)
        ctrl.faults.power_loss()
        ctrl.faults.power_on()
        report = ctrl._live().zone_report(1)
        assert report is not None
        assert [(r[3], r[2] - r[0]) for r in report[:3]] == [(CLOSED, 2), (CLOSED, 1), (EMPTY, 0)]
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        assert host.read(1, 0, 3) == b"a" * 1024 + bytes(512)
        assert host.read(1, 8192, 2) == b"c" * 512 + bytes(512)


# -- bench --zoned ---------------------------------------------------------------

def test_bench_zoned_prints_every_workload_beside_plain_writes() -> None:
    out = subprocess.run([sys.executable, "-m", "nvmefast.cli", "bench", "--zoned", "--seconds", "0.05", "--qd", "1,4",
                          "--mode", "poll", "--size", "64M", "--zone-size", "4M"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    for row in ("seqwrite   poll     4", "zonewrite  poll     4", "zoneappend poll     4",
                "target: zoneappend poll QD4", "zone management"):
        assert row in out.stdout, out.stdout
    bad = subprocess.run([sys.executable, "-m", "nvmefast.cli", "bench", "--zoned", "--size", "64M", "--zone-size", "3M"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "not a power of two" in bad.stderr


def test_a_zoned_namespace_has_no_metadata() -> None:
    # The zone rules sit on the data path without metadata: the combination is
    # refused by the config and, for a direct Engine user, by the core.
    with pytest.raises(ConfigError, match="zoned namespace cannot have metadata"):
        NamespaceConfig(size_bytes=16 << 20, lba_size=4096, metadata_size=8, pi_type=1,
                        zones=ZoneConfig(size_bytes=1 << 20))
    with pytest.raises(ConfigError, match="zoned namespace cannot have metadata"):
        Engine(namespaces=[{"size_bytes": 16 << 20, "lba_size": 4096, "backend": "ram", "metadata_size": 8,
                            "zones": {"size_bytes": 1 << 20}}],
               msix_vectors=2, max_qid=2, max_queue_entries=64, mdts_bytes=0, poll_us=0)
