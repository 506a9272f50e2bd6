"""``Controller.faults``: fault rules seen from a host driver.

The oracle is what the host observes, as a driver would: the status in the
completion, the data in its buffer, when the completion and its interrupt
arrive, CSTS, what the namespace holds after a power loss; plus the rule's
own counters. Each action, each matcher and the firing options have a test;
so do the text form, the refusals, and rules edited while I/O runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvmefast import CommandError, ConfigError, Controller, ControllerConfig, NamespaceConfig
from nvmefast.errors import HostTimeoutError
from nvmefast.faults import FaultRule, FaultRuleError
from nvmefast.status import DNR, MORE, Status
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import sqe as op

KIB = 1024
CSTS_CFS = 1 << 1


def _config(**kw: object) -> ControllerConfig:
    namespaces = kw.pop("namespaces", None) or [
        NamespaceConfig(size_bytes=1 << 20),
        NamespaceConfig(size_bytes=1 << 20),
    ]
    return ControllerConfig(namespaces=namespaces, **kw)  # type: ignore[arg-type]


@pytest.fixture
def ctrl() -> Iterator[Controller]:
    with Controller(_config()) as c:
        yield c


def _host(c: Controller, queues: int = 1, irq: bool = False) -> Host:
    h = Host(c, irq=irq)
    h.enable()
    h.set_num_queues(queues, queues)
    for qid in range(1, queues + 1):
        h.create_io_queue_pair(qid)
    return h


def _until(what: str, cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for ``cond`` (a worker on a loaded machine may take a while to fetch)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.001)


def _read_sqe(h: Host, nsid: int, slba: int, nlb: int = 1) -> tuple[bytes, int]:
    buf = h.alloc(nlb * 512)
    return build_sqe(op.IO_READ, nsid=nsid, prp1=buf, cdw10=slba, cdw12=nlb - 1), buf


# -- the text form -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, expect",
    [
        ("read nsid=1 lba=0..99 count=1 -> status unrecovered-read-error dnr",
         FaultRule("status", opcode=0x02, nsid=1, lba=(0, 99), count=1, status=Status.UNRECOVERED_READ_ERROR | DNR)),
        ("write p=0.25 seed=7 -> delay 50ms",
         FaultRule("delay", opcode=0x01, probability=0.25, seed=7, delay=0.05)),
        ("admin identify -> never abortable", FaultRule("never", queue="admin", opcode=0x06, abortable=True)),
        ("queue=2 opcode=0x08 -> status 1/0x80 more crd=2",
         FaultRule("status", queue=2, opcode=0x08, status=0x180 | MORE | 2 << 11)),
        ("io -> drop-irq count=3", FaultRule("drop-irq", count=3)),
        ("read -> corrupt byte=4096 xor=0x01", FaultRule("corrupt", opcode=0x02, byte=4096, xor=1)),
        ("lba=5 skip=2 -> delay-irq 100us", FaultRule("delay-irq", lba=(5, 5), skip=2, delay=100e-6)),
        ("write skip=100 count=1 -> power-loss", FaultRule("power-loss", opcode=0x01, skip=100, count=1)),
        ("io -> cfs", FaultRule("cfs")),
        ("flush -> transfer-error", FaultRule("transfer-error", opcode=0x00)),
    ],
)
def test_the_text_form_parses_and_prints_back(text: str, expect: FaultRule) -> None:
    rule = FaultRule.parse(text)
    assert rule == expect
    assert FaultRule.parse(str(rule)) == rule


@pytest.mark.parametrize(
    "text, says",
    [
        ("read status 2/0x81", "needs '->'"),
        ("read -> explode", "unknown action 'explode'"),
        ("read -> status", "status needs a status"),
        ("read -> status 9/0x1", "SCT is 0..7"),
        ("read -> status bogus", "neither SCT/SC"),
        ("read -> status 0/0", "0 is success"),
        ("read -> delay", "needs a duration"),
        ("read -> delay 5 parsecs", "not a duration"),
        ("identify -> status 1/1", "an admin opcode: put 'admin' before it"),
        ("read lba=9..3 -> cfs", "is empty"),
        ("read colour=red -> cfs", "unknown key 'colour'"),
        ("write -> corrupt", "not read (02h)"),
        ("admin -> corrupt", "I/O commands only"),
        ("admin lba=1 -> cfs", "no LBA range"),
        ("read p=0 -> cfs", "probability 0.0 must be in (0, 1]"),
        ("read count=x -> cfs", "needs an integer"),
        ("read -> cfs abortable", "not a matcher"),
        ("read -> delay 2h", "not a duration"),
        ("read -> delay 3601s", "must be in (0, 3600]"),
        ("read -> corrupt xor=0", "xor 0 must be in 1..255"),
    ],
)
def test_a_bad_rule_says_what_to_change(text: str, says: str) -> None:
    with pytest.raises(FaultRuleError, match=None) as e:
        FaultRule.parse(text)
    assert says in str(e.value)
    assert isinstance(e.value, ConfigError)


def test_add_refuses_what_is_not_a_rule(ctrl: Controller) -> None:
    with pytest.raises(FaultRuleError, match="FaultRule or its text form"):
        ctrl.faults.add(42)  # type: ignore[arg-type]
    with pytest.raises(FaultRuleError, match="status needs status="):
        FaultRule("status")
    with pytest.raises(FaultRuleError, match="abortable belongs to delay and never"):
        FaultRule("cfs", abortable=True)
    with pytest.raises(FaultRuleError, match="queue 70000"):
        FaultRule("cfs", queue=70000)


# -- actions -----------------------------------------------------------------


def test_status_fails_the_command_unexecuted(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        h.write(1, 3, b"a" * 512)
        fault = ctrl.faults.add("write nsid=1 count=1 -> status write-fault dnr more")
        with pytest.raises(CommandError) as e:
            h.write(1, 3, b"b" * 512)
        assert (e.value.sct, e.value.sc, e.value.dnr) == (2, 0x80, True)
        assert e.value.status & MORE
        assert h.read(1, 3, 1) == b"a" * 512, "not executed"
        h.write(1, 3, b"c" * 512)  # count=1: spent
        assert h.read(1, 3, 1) == b"c" * 512
        assert (fault.matched, fault.hits) == (2, 1)
        # The failure is in the Error Information log, as the More bit promises.
        log = h.get_log_page(op.LOG_ERROR_INFORMATION, 64)
        assert int.from_bytes(log[0:8], "little") >= 1
        assert int.from_bytes(log[12:14], "little") >> 1 == (Status.WRITE_FAULT | DNR | MORE) & 0x7FFF


def test_transfer_error(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.add("read count=1 -> transfer-error")
        with pytest.raises(CommandError) as e:
            h.read(1, 0, 1)
        assert (e.value.sct, e.value.sc) == (0, 0x04)
        h.read(1, 0, 1)


def test_delay_holds_the_completion_and_lets_others_pass(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.add("read lba=7 -> delay 300ms")
        slow, _ = _read_sqe(h, 1, 7)
        fast, _ = _read_sqe(h, 1, 0)
        t0 = time.monotonic()
        cid_slow = h.submit(slow, 1)
        cid_fast = h.submit(fast, 1)
        assert h.wait(1, cid_fast, timeout=5).ok
        assert ctrl.faults.held == 1, "the fast one overtook the held one"
        done = h.wait(1, cid_slow, timeout=5)
        took = time.monotonic() - t0
        assert done.ok and took >= 0.3, took
        assert ctrl.faults.held == 0


def test_never_until_abort_or_reset(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        stuck = ctrl.faults.add("read lba=1 count=1 -> never")
        sqe, _ = _read_sqe(h, 1, 1)
        cid = h.submit(sqe, 1)
        _until("one held", lambda: ctrl.faults.held == 1)
        with pytest.raises(HostTimeoutError):
            h.wait(1, cid, timeout=0.3)
        assert stuck.hits == 1 and ctrl.faults.held == 1
        # Abort finds it in progress and not abortable: dword 0 bit 0 set.
        abort = h.admin(build_sqe(op.ADMIN_ABORT, cdw10=1 | cid << 16))
        assert abort.ok and abort.dw0 & 1 == 1
        # An abortable one completes with Command Abort Requested.
        ctrl.faults.add("read lba=2 count=1 -> never abortable")
        sqe2, _ = _read_sqe(h, 1, 2)
        cid2 = h.submit(sqe2, 1)
        _until("two held", lambda: ctrl.faults.held == 2)
        abort = h.admin(build_sqe(op.ADMIN_ABORT, cdw10=1 | cid2 << 16))
        assert abort.ok and abort.dw0 & 1 == 0
        aborted = h.wait(1, cid2)
        assert (aborted.sct, aborted.sc) == (0, 0x07)
        # Delete I/O SQ completes the one still held: Aborted due to SQ Deletion.
        h.delete_io_sq(1)
    assert ctrl.faults.held == 0
    with _host(ctrl) as h:
        ctrl.faults.add("read count=1 -> never")
        sqe, _ = _read_sqe(h, 1, 0)
        h.submit(sqe, 1)
        _until("one held", lambda: ctrl.faults.held == 1)
        h.disable()  # CC.EN = 0: the controller reset drops it
        assert ctrl.faults.held == 0


def test_delete_sq_aborts_held_commands(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.add("read count=1 -> never")
        sqe, _ = _read_sqe(h, 1, 0)
        cid = h.submit(sqe, 1)
        _until("one held", lambda: ctrl.faults.held == 1)
        h.delete_io_sq(1)
        h.reap(1)
        # The host forgot SQ 1 with the delete: its completion lands as stray.
        (done,) = [c for c in h.cq(1).stray if (c.sqid, c.cid) == (1, cid)]
        assert (done.sct, done.sc) == (0, 0x08)


def test_corrupt_changes_one_byte_of_the_read(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        data = bytes(range(256)) * 8
        h.write(1, 0, data)
        fault = ctrl.faults.add(FaultRule("corrupt", nsid=1, byte=700, xor=0x80, count=1))
        got = h.read(1, 0, 4)
        assert [i for i in range(len(data)) if got[i] != data[i]] == [700]
        assert got[700] == data[700] ^ 0x80
        assert h.read(1, 0, 4) == data, "the namespace itself is intact"
        assert fault.hits == 1


def test_drop_irq_posts_without_the_interrupt(ctrl: Controller) -> None:
    with _host(ctrl, irq=True) as h:
        h.read(1, 0, 1)
        ctrl.faults.add("read count=1 -> drop-irq")
        sqe, _ = _read_sqe(h, 1, 0)
        cid = h.submit(sqe, 1)
        with pytest.raises(HostTimeoutError):
            h.wait(1, cid, timeout=0.3)  # waits for the interrupt, as a driver does
        _until("the completion is there all the same", lambda: h.reap(1) == 1)
        assert h.cq(1).done.pop((1, cid)).ok
        h.read(1, 0, 1)  # the next one signals


def test_delay_irq_sends_the_interrupt_late(ctrl: Controller) -> None:
    with _host(ctrl, irq=True) as h:
        ctrl.faults.add("read count=1 -> delay-irq 250ms")
        sqe, _ = _read_sqe(h, 1, 0)
        t0 = time.monotonic()
        cid = h.submit(sqe, 1)
        cq = h.cq(1)
        # The CQE is posted before the (late) interrupt that announces it.
        _until("posted", lambda: int.from_bytes(h.read_mem(cq.iova + cq.head * 16 + 12, 4), "little") >> 16 & 1
               == cq.phase)
        assert h.wait(1, cid, timeout=5).ok
        assert time.monotonic() - t0 >= 0.25


def test_cfs_fails_the_controller_until_reset(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.add("read count=1 -> cfs")
        sqe, _ = _read_sqe(h, 1, 0)
        cid = h.submit(sqe, 1)
        _until("CSTS.CFS", lambda: h.csts() & CSTS_CFS)
        with pytest.raises(HostTimeoutError):
            h.wait(1, cid, timeout=0.3)
        # What Linux does on CFS: reset the controller, then bring it up again.
        h.disable()
        assert not h.csts() & CSTS_CFS
    with _host(ctrl) as h:
        h.write(1, 0, b"z" * 512)
        assert h.read(1, 0, 1) == b"z" * 512


def test_admin_rules(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.add("admin get-features count=1 -> status internal")
        with pytest.raises(CommandError) as e:
            h.get_features(0x07)
        assert (e.value.sct, e.value.sc) == (0, 0x06)
        h.get_features(0x07)
        ctrl.faults.add("admin identify count=1 -> delay 200ms")
        t0 = time.monotonic()
        h.identify_controller()
        assert time.monotonic() - t0 >= 0.2


def test_power_loss_keeps_what_was_durable(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    cfg = _config(namespaces=[NamespaceConfig(size_bytes=1 << 20), NamespaceConfig(backend="file", path=image)])
    with Controller(cfg) as ctrl:
        with _host(ctrl) as h:
            rule = ctrl.faults.add("write nsid=1 lba=100 -> power-loss")
            for nsid in (1, 2):
                h.write(nsid, 0, b"F" * 512)
                h.flush(nsid)
                h.write(nsid, 0, b"U" * 512)  # over flushed data
                h.write(nsid, 8, b"U" * 512)  # over zeroes
                h.write(nsid, 16, b"A" * 512, fua=True)  # durable by itself
            assert ctrl.faults.unflushed_blocks == 4
            with pytest.raises(HostTimeoutError):
                h.write(1, 100, b"x" * 512, timeout=0.5)
            rule.wait(1)
            deadline = time.monotonic() + 5
            while ctrl.faults.unflushed_blocks and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ctrl.faults.powered_off
            assert ctrl.bar0_read(0x1C, 4) == 0xFFFFFFFF, "CSTS of a device gone from the bus"
            assert ctrl.bar0_read(0x0, 8) == (1 << 64) - 1
            ctrl.bar0_write(0x14, 0, 4)  # ignored
            rule.remove()
            ctrl.faults.power_on()
            assert not ctrl.faults.powered_off
            assert ctrl.bar0_read(0x1C, 4) == 0 and ctrl.bar0_read(0x14, 4) == 0
        with _host(ctrl) as h:
            for nsid in (1, 2):
                assert h.read(nsid, 0, 1) == b"F" * 512
                assert h.read(nsid, 8, 1) == bytes(512)
                assert h.read(nsid, 16, 1) == b"A" * 512
                assert h.read(nsid, 100, 1) == bytes(512), "lost with the power"
        assert image.read_bytes()[:512] == b"F" * 512


def test_power_loss_by_call_and_with_the_write_cache_off(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.faults.track_unflushed()
        h.write(1, 0, b"1" * 512)
        h.set_features(0x06, 0)  # Volatile Write Cache off: writes are durable
        h.write(1, 8, b"2" * 512)
        assert ctrl.faults.power_loss() == 1
        assert ctrl.faults.powered_off
        ctrl.faults.power_on()
    with _host(ctrl) as h:
        assert h.read(1, 0, 1) == bytes(512)
        assert h.read(1, 8, 1) == b"2" * 512


# -- matchers and firing -------------------------------------------------------


def test_matchers_select_queue_nsid_and_lba(ctrl: Controller) -> None:
    with _host(ctrl, queues=2) as h:
        rules = [
            ctrl.faults.add("queue=2 -> status internal"),
            ctrl.faults.add("nsid=2 -> status 0/0x0b dnr"),
            ctrl.faults.add("lba=50..59 -> status 2/0x81"),
        ]
        h.read(1, 0, 1, qid=1)
        h.read(1, 49, 1, qid=1)
        h.read(1, 60, 1, qid=1)
        for args, sc in (((1, 0, 1, 2), 0x06), ((2, 0, 1, 1), 0x0B), ((1, 58, 4, 1), 0x81)):
            with pytest.raises(CommandError) as e:
                nsid, slba, nlb, qid = args
                h.read(nsid, slba, nlb, qid=qid)
            assert e.value.sc == sc
        assert [r.hits for r in rules] == [1, 1, 1]
        # Flush has no LBA range: an LBA matcher never takes it.
        h.flush(1)
        assert rules[2].matched == 1


def test_skip_count_and_a_repeatable_probability(ctrl: Controller) -> None:
    def pattern(seed: int) -> list[bool]:
        with _host(ctrl) as h:
            fault = ctrl.faults.add(f"read p=0.3 seed={seed} skip=5 count=20 -> status internal")
            out = []
            for _ in range(200):
                try:
                    h.read(1, 0, 1)
                    out.append(False)
                except CommandError:
                    out.append(True)
            assert fault.hits == 20 and fault.matched == 200
            fault.remove()
            assert not fault.installed and fault.hits == 20
        return out

    a, b, c = pattern(1), pattern(1), pattern(2)
    assert a == b, "same seed, same commands fail"
    assert a != c
    assert not any(a[:5]), "skip=5 lets the first five through"
    assert sum(a) == 20


def test_first_firing_rule_wins_and_rules_list_in_order(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        first = ctrl.faults.add("read count=1 -> status internal")
        second = ctrl.faults.add("read -> status 2/0x81")
        with pytest.raises(CommandError) as e:
            h.read(1, 0, 1)
        assert e.value.sc == 0x06
        with pytest.raises(CommandError) as e:
            h.read(1, 0, 1)
        assert e.value.sc == 0x81
        assert [r["id"] for r in ctrl.faults] == [first.id, second.id]
        assert len(ctrl.faults) == 2
        ctrl.faults.clear()
        assert len(ctrl.faults) == 0
        h.read(1, 0, 1)


def test_rules_come_and_go_while_io_runs(ctrl: Controller) -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            f = ctrl.faults.add("read -> status internal")
            time.sleep(0.001)
            f.remove()
            time.sleep(0.001)

    t = threading.Thread(target=churn)
    failed = 0
    with _host(ctrl) as h:
        t.start()
        try:
            for i in range(1500):
                try:
                    assert h.read(1, i % 64, 1) is not None
                except CommandError as e:
                    assert e.sc == 0x06
                    failed += 1
        finally:
            stop.set()
            t.join()
    assert 0 < failed < 1500


def test_a_storage_backend_is_not_called_for_a_failed_command() -> None:
    calls: list[tuple[str, int]] = []

    class Disk:
        def read(self, lba: int, nlb: int) -> bytes:
            calls.append(("read", lba))
            return bytes(nlb * 512)

        def write(self, lba: int, data: bytes) -> None:
            calls.append(("write", lba))

    with Controller(_config(namespaces=[NamespaceConfig(size_bytes=1 << 20, backend=Disk())])) as ctrl:
        with _host(ctrl) as h:
            ctrl.faults.add("read lba=3 -> status 2/0x81")
            with pytest.raises(CommandError):
                h.read(1, 3, 1)
            h.read(1, 4, 1)
    assert calls == [("read", 4)]


def test_untracked_namespaces_are_named(tmp_path: Path) -> None:
    cfg = _config(namespaces=[NamespaceConfig(size_bytes=1 << 20, backend="null")])
    with Controller(cfg) as ctrl:
        assert ctrl.faults.unflushed_blocks == 0
        ctrl.faults.track_unflushed()
        with _host(ctrl) as h:
            h.write(1, 0, b"q" * 512)
        assert ctrl.faults.unflushed_blocks == 0


def test_faults_of_a_closed_controller_raise() -> None:
    c = Controller(_config())
    faults = c.faults
    c.close()
    with pytest.raises(Exception) as e:
        c.faults  # noqa: B018
    assert "closed" in str(e.value).lower()
    del faults
