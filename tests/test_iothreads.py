"""I/O queues spread over several iothreads, resets under load, start/stop with the GIL.

Every CQ belongs to one iothread (round robin, or ``iothread_affinity``) and
its SQs go with it; the admin queue has a worker of its own. Data is checked
byte for byte; a lost doorbell or a deadlock shows up as a timeout.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from dbutil import LBA, READ, WRITE, bring_up, submit_blocks, verified_io
from nvmefast import Controller, ControllerConfig
from nvmefast.errors import NvmeFastError
from nvmefast.testing import Host, build_sqe

PAIRS = tuple(range(1, 9))


def run_threads(targets: list[threading.Thread], timeout: float = 60) -> None:
    for t in targets:
        t.start()
    deadline = time.monotonic() + timeout
    for t in targets:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in targets), "a thread hung"


@pytest.mark.parametrize("iothreads", [
    pytest.param(n, marks=pytest.mark.nvme_config(iothreads=n, max_io_queue_pairs=8), id=f"iothreads{n}")
    for n in (2, 3)
])
def test_round_robin_and_concurrent_verified_io(bare_host: Host, controller: Controller, iothreads: int) -> None:
    host = bare_host
    bring_up(host, PAIRS, 32)
    assert controller.iothread_of(0) is None, "the admin queue has its own worker"
    assert [controller.iothread_of(q) for q in PAIRS] == [(q - 1) % iothreads for q in PAIRS]
    io0 = controller.counters()["io_commands"]
    errors: list[BaseException] = []
    span = 400

    def run(qid: int) -> None:
        try:
            base = qid * span
            for i in range(4):
                verified_io(host, qid, range(base + i * 100, base + i * 100 + 100))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    run_threads([threading.Thread(target=run, args=(q,)) for q in PAIRS])
    assert not errors, errors
    assert controller.counters()["io_commands"] - io0 == len(PAIRS) * 4 * 200
    # What one iothread's queue wrote, another's reads back identically.
    for qid in PAIRS:
        other = qid % len(PAIRS) + 1
        mine: dict[int, bytes | None] = {s: None for s in range(qid * span, qid * span + 40)}
        theirs: dict[int, bytes | None] = dict.fromkeys(mine)
        submit_blocks(host, qid, READ, mine)
        submit_blocks(host, other, READ, theirs)
        assert mine == theirs and all(b != bytes(LBA) for b in mine.values() if b is not None)
    assert host.csts() & 0b10 == 0


@pytest.mark.nvme_config(iothreads=3, iothread_affinity=(2, 2, 0, 1))
def test_affinity_then_round_robin(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, PAIRS, 16)
    # CQs 1-4 as configured, the rest round robin over 0, 1, 2.
    assert [controller.iothread_of(q) for q in PAIRS] == [2, 2, 0, 1, 0, 1, 2, 0]
    for q in PAIRS:
        verified_io(host, q, range(q * 100, q * 100 + 20))


@pytest.mark.nvme_config(iothreads=2, iothread_affinity=(0, 1))
def test_sq_goes_with_its_cq(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1, 2), 16, queues=4)
    # SQ 3 and SQ 4 post to CQ 2 (iothread 1); no CQ 3 or 4 exists.
    host.create_io_sq(3, 16, cqid=2)
    host.create_io_sq(4, 16, cqid=2)
    assert [controller.iothread_of(q) for q in (1, 2, 3, 4)] == [0, 1, 1, 1]
    errors: list[BaseException] = []

    def run(qid: int) -> None:
        try:
            for i in range(5):
                verified_io(host, qid, range(qid * 1000 + i * 30, qid * 1000 + i * 30 + 30))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    run_threads([threading.Thread(target=run, args=(q,)) for q in (1, 2, 3, 4)])
    assert not errors, errors
    host.delete_io_sq(3)
    host.delete_io_sq(4)
    assert controller.iothread_of(3) is None
    verified_io(host, 2, range(50))


@pytest.mark.nvme_config(iothreads=1)
def test_cq_id_of_an_sq_on_another_cq(bare_host: Host, controller: Controller) -> None:
    """SQ and CQ identifiers are separate (NVMe Base 2.0 3.3.1): SQ 2 may post
    to CQ 1 and CQ 2 may still be created afterwards, for SQ 3 say."""
    host = bare_host
    bring_up(host, (1,), 16, queues=4)
    host.create_io_sq(2, 16, cqid=1)
    host.create_io_cq(2, 16, vector=2)
    host.create_io_sq(3, 16, cqid=2)
    for q in (1, 2, 3):
        verified_io(host, q, range(q * 100, q * 100 + 20))


@pytest.mark.nvme_config(iothreads=2, iothread_affinity=(0, 1))
def test_crossed_sq_cq_ids(bare_host: Host, controller: Controller) -> None:
    """SQ 1 on CQ 2 and SQ 2 on CQ 1, with the CQs on different iothreads:
    legal for the host, so the controller must accept it."""
    host = bare_host
    host.enable()
    host.set_num_queues(2, 2)
    host.create_io_cq(1, 16, vector=1)
    host.create_io_cq(2, 16, vector=2)
    host.create_io_sq(1, 16, cqid=2)
    host.create_io_sq(2, 16, cqid=1)
    for q in (1, 2):
        verified_io(host, q, range(q * 100, q * 100 + 20))


@pytest.mark.nvme_config(iothreads=2, polling="adaptive")
def test_reset_under_load(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    pairs = (1, 2, 3, 4)
    bring_up(host, pairs, 16)
    acked: dict[int, bytes] = {}
    acked_lock = threading.Lock()
    started = threading.Barrier(len(pairs) + 1)
    stop = threading.Event()

    def run(qid: int) -> None:
        started.wait()
        # Every LBA is written once, so an acknowledged block has one right value.
        for slba in range(qid * 5000, qid * 5000 + 5000):
            if stop.is_set():
                return
            data = os.urandom(LBA)
            try:
                c = submit_blocks(host, qid, WRITE, {slba: data}, timeout=1)[slba]
            except (NvmeFastError, KeyError):
                return  # the queue went away under us: expected
            if c.ok:
                with acked_lock:
                    acked[slba] = data

    threads = [threading.Thread(target=run, args=(q,)) for q in pairs]
    for t in threads:
        t.start()
    started.wait()
    deadline = time.monotonic() + 10
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(acked) >= 200
    host.disable()  # CC.EN = 0 while four threads keep submitting
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a submitting thread hung across the reset"
    assert host.csts() & 0b11 == 0
    bring_up(host, pairs, 16)
    with acked_lock:
        snapshot = dict(acked)
    for qid in pairs:
        mine = {s: None for s in snapshot if qid * 5000 <= s < qid * 5000 + 5000}
        back: dict[int, bytes | None] = dict(mine)
        for slba, c in submit_blocks(host, 1 + qid % len(pairs), READ, back).items():
            assert c.ok
            assert back[slba] == snapshot[slba], f"acknowledged write to slba {slba} lost across the reset"
    verified_io(host, 2, range(30000, 30100))


@pytest.mark.nvme_config(iothreads=2)
def test_close_with_admin_command_in_flight(config: ControllerConfig) -> None:
    """The admin handler runs Python on the admin worker; close() waits for
    that worker and must let go of the GIL meanwhile."""
    ctrl = Controller(config)
    host = Host(ctrl)
    bring_up(host, (1, 2), 16)
    entered = threading.Event()
    original = ctrl._admin.handle

    def slow(sqe: bytes) -> tuple[int, int] | None:
        entered.set()
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # hold and re-take the GIL, no sleeping
            sum(range(1000))
        return original(sqe)

    ctrl.engine.set_admin_handler(slow)
    host.submit_aer()  # deferred: outstanding when the controller goes
    host.submit(build_sqe(0x06, cdw10=1, prp1=host.alloc(4096)), 0)
    assert entered.wait(5)
    closer = threading.Thread(target=ctrl.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "Controller.close deadlocked with an admin command in flight"
    assert ctrl.closed
    host.close()


@pytest.mark.nvme_config(iothreads=2, polling="adaptive")
def test_stop_and_start_while_io_runs(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1, 2), 16)
    errors: list[BaseException] = []
    done = threading.Event()

    def run(qid: int) -> None:
        try:
            rng = random.Random(qid)
            for i in range(30):
                base = qid * 10000 + i * 20
                verified_io(host, qid, range(base, base + rng.randint(1, 20)), timeout=10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(q,)) for q in (1, 2)]
    for t in threads:
        t.start()
    engine = controller.engine
    for _ in range(10):
        engine.stop()  # with the GIL taken by the I/O threads in between
        assert not engine.running
        time.sleep(0.01)
        engine.start()
        assert engine.running
        time.sleep(0.01)
    for t in threads:
        t.join(60)
    done.set()
    assert not any(t.is_alive() for t in threads), "I/O hung across stop/start"
    assert not errors, errors
