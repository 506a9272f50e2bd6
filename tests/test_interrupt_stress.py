"""Masking races: nothing signalled while masked, nothing lost, under load.

Four queue pairs on four vectors complete thousands of commands from four
submitter threads while the test thread masks and unmasks vectors at random
(``mask_vector``; with a device MSI-X table also table mask-bit writes,
the function mask and MSI-X enable). The test thread is the only reader of
the vectors' eventfds and checks the hw/pci/msix.c contract:

- No signal while masked. A mask change returns only after every delivery
  decided before it has landed, so the test reads a vector's eventfd right
  after masking it; any signal found later while it is still masked is a
  violation.
- Nothing lost. Submitters reap their completions by phase tag and count
  them as "uncovered"; whenever the test reads a signal from a vector it
  reaps that vector's CQ under the same lock and marks everything covered
  (a signal covers every CQE posted before it was sent). After the run
  every vector is unmasked; each must then have signalled after its last
  completions, and no pending bit may remain.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from conftest import DEFAULT_CONFIG
from irqutil import admin_barrier, new_eventfd, read_counter, readable, submit_batch, write_sqes

from nvmefast import Controller, ControllerConfig
from nvmefast.testing import Host, MsixTable

QUEUES = (1, 2, 3, 4)
QUEUE_ENTRIES = 64
RUN_SECONDS = 2.0
MAX_RUN_SECONDS = 60.0
MIN_MASK_CHANGES = 200
MIN_COMPLETIONS = 1000
LBAS_PER_QUEUE = 4096


@dataclass
class Books:
    """What the host knows per vector (vector = qid here)."""

    locks: dict[int, threading.Lock] = field(default_factory=lambda: {v: threading.Lock() for v in QUEUES})
    uncovered: dict[int, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    signals: dict[int, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    completed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(params=[None, 0, 2], ids=["embedder", "bar0", "bar2"])
def config(request: pytest.FixtureRequest) -> ControllerConfig:
    return ControllerConfig(**{**DEFAULT_CONFIG, "max_io_queue_pairs": len(QUEUES), "msix_bar": request.param})


@pytest.fixture
def stress_host(controller: Controller) -> Iterator[tuple[Host, dict[int, int]]]:
    """A polling host (the test owns every eventfd) with queue pair q on vector q, IEN = 1."""
    fds = {v: new_eventfd() for v in QUEUES}
    try:
        with Host(controller, irq=False, memory_bytes=32 << 20) as host:
            host.enable()
            host.set_num_queues(len(QUEUES), len(QUEUES))
            for q in QUEUES:
                host.create_io_cq(q, QUEUE_ENTRIES, vector=q, irq=True)
                host.create_io_sq(q, QUEUE_ENTRIES, q)
                controller.set_vector_eventfd(q, fds[q])
            yield host, fds
            for q in QUEUES:
                controller.set_vector_eventfd(q, None)
    finally:
        for fd in fds.values():
            os.close(fd)


def drain(host: Host, books: Books, fds: dict[int, int], v: int) -> None:
    """Read vector ``v``'s signals and reap its CQ under the same lock: every
    CQE posted before those signals were sent is now covered."""
    with books.locks[v]:
        count = read_counter(fds[v])
        if count:
            books.signals[v] += count
            host.reap(v)
            books.uncovered[v] = 0


def submitter(host: Host, books: Books, q: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    cq = host.cq(q)
    lba = 0
    try:
        while not stop.is_set():
            count = rng.randint(1, 8)
            sqes = write_sqes(host, count, first_lba=(q - 1) * LBAS_PER_QUEUE + lba)
            lba = (lba + count) % (LBAS_PER_QUEUE - 8)
            cids = set(submit_batch(host, q, sqes))
            host.free(int.from_bytes(sqes[0][24:32], "little"))  # PRP1: the shared buffer
            deadline = time.monotonic() + 10
            while cids:
                with books.locks[q]:
                    books.uncovered[q] += host.reap(q)
                for cid in list(cids):
                    completion = cq.done.pop((q, cid), None)
                    if completion is not None:
                        cids.discard(cid)
                        books.completed[q] += 1
                        if not completion.ok:
                            books.errors.append(f"queue {q}: {completion}")
                if cids:
                    if time.monotonic() > deadline:
                        books.errors.append(f"queue {q}: CIDs {sorted(cids)} never completed")
                        return
                    time.sleep(0.0001)
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        books.errors.append(f"queue {q}: {exc!r}")


class Masker:
    """The vector mask state the test set, through every path the config offers."""

    def __init__(self, controller: Controller, rng: random.Random) -> None:
        self.controller = controller
        self.rng = rng
        self.table = MsixTable(controller) if controller.msix_layout is not None else None
        self.own = dict.fromkeys(QUEUES, False)
        self.enabled, self.function_masked = controller.msix_control()
        assert (self.enabled, self.function_masked) == (True, False)
        self.changes = 0

    def masked(self) -> set[int]:
        if not self.enabled or self.function_masked:
            return set(QUEUES)
        return {v for v in QUEUES if self.own[v]}

    def describe(self) -> str:
        return f"own={self.own} enabled={self.enabled} function_masked={self.function_masked}"

    def change(self) -> None:
        self.changes += 1
        choices = ["mask_vector"] if self.table is None else ["mask_vector", "table", "table", "function", "enable"]
        kind = self.rng.choice(choices)
        v = self.rng.choice(QUEUES)
        if kind == "mask_vector":
            self.own[v] = not self.own[v]
            self.controller.mask_vector(v, self.own[v])
        elif kind == "table":
            assert self.table is not None
            self.own[v] = not self.own[v]
            self.table.set_masked(v, self.own[v])
        elif kind == "function":
            self.function_masked = not self.function_masked
            self.controller.set_msix_control(self.enabled, self.function_masked)
        else:
            self.enabled = not self.enabled
            self.controller.set_msix_control(self.enabled, self.function_masked)

    def kinds(self) -> list[str]:
        """Ways to mask every vector at once: own mask bits, function mask, MSI-X disable."""
        return ["own"] if self.table is None else ["own", "function", "enable"]

    def set_own(self, v: int, masked: bool) -> None:
        """Vector ``v``'s own mask bit, through mask_vector or (randomly) its table entry."""
        self.own[v] = masked
        if self.table is not None and self.rng.random() < 0.5:
            self.table.set_masked(v, masked)
        else:
            self.controller.mask_vector(v, masked)

    def mask_all(self, kind: str) -> None:
        if kind == "own":
            for v in QUEUES:
                self.set_own(v, True)
        else:
            self.enabled, self.function_masked = kind != "enable", kind == "function"
            self.controller.set_msix_control(self.enabled, self.function_masked)

    def unmask_all(self) -> None:
        self.enabled, self.function_masked = True, False
        self.controller.set_msix_control(True, False)
        for v in QUEUES:
            self.set_own(v, False)


def held_round(host: Host, fds: dict[int, int], masker: Masker, kind: str) -> None:
    """Deterministic: mask every vector (``kind``), complete a batch on every
    queue, check all are held, unmask; each vector signals exactly once."""
    controller = host.controller
    masker.mask_all(kind)
    for v in QUEUES:
        read_counter(fds[v])
    for q in QUEUES:
        cids = submit_batch(host, q, write_sqes(host, 1 + q, first_lba=q * 16))
        for cid in cids:
            assert host.poll(q, cid).ok
    admin_barrier(host)
    assert set(QUEUES) <= controller.pending_vectors(), f"masked by {kind}: pending bits missing"
    leaked = [v for v in QUEUES if readable(fds[v])]
    assert not leaked, f"vectors {leaked} signalled while masked by {kind}"
    masker.unmask_all()
    counts = {v: read_counter(fds[v]) for v in QUEUES}
    assert counts == dict.fromkeys(QUEUES, 1), f"unmask after {kind}: signals per vector {counts}"
    assert controller.pending_vectors() == set()
    admin_barrier(host)
    assert not [v for v in QUEUES if readable(fds[v])], "a second signal after the unmask"


def test_mask_races_lose_nothing_and_leak_nothing(stress_host: tuple[Host, dict[int, int]],
                                                  controller: Controller) -> None:
    host, fds = stress_host
    books = Books()
    admin_barrier(host)
    for v in QUEUES:
        read_counter(fds[v])
    interrupts_before = controller.counters()["interrupts"]
    rng = random.Random(0x5EED)
    masker = Masker(controller, rng)
    stop = threading.Event()
    threads = [threading.Thread(target=submitter, args=(host, books, q, stop, q), name=f"submit-{q}")
               for q in QUEUES]
    for t in threads:
        t.start()
    try:
        # At least RUN_SECONDS, and on a loaded machine on until the race
        # has really been exercised (enough mask changes and completions on
        # every queue), within a generous bound.
        start = time.monotonic()

        def exercised() -> bool:
            done = books.completed
            return (masker.changes >= MIN_MASK_CHANGES and sum(done.values()) >= MIN_COMPLETIONS
                    and all(done.get(q, 0) > 0 for q in QUEUES))

        while not books.errors:
            elapsed = time.monotonic() - start
            if elapsed >= RUN_SECONDS and exercised() or elapsed >= MAX_RUN_SECONDS:
                break
            masked = masker.masked()
            for v in QUEUES:
                if v in masked:
                    if readable(fds[v]):
                        books.violations.append(f"vector {v} signalled while masked ({masker.describe()})")
                        read_counter(fds[v])
                else:
                    drain(host, books, fds, v)
            masker.change()
            # What was decided before the mask change has landed: take it now.
            for v in masker.masked() - masked:
                drain(host, books, fds, v)
            time.sleep(rng.random() * 0.001)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads), "a submitter hung"
    assert not books.errors, books.errors[:5]
    assert not books.violations, books.violations[:5]

    # Nothing lost: unmask everything and collect what was held.
    masker.unmask_all()
    for v in QUEUES:
        drain(host, books, fds, v)
    admin_barrier(host)  # every decided delivery has landed
    for v in QUEUES:
        drain(host, books, fds, v)
        assert not readable(fds[v])
    assert controller.pending_vectors() == set(), "pending bits left with every vector unmasked"
    lost = {v: n for v, n in books.uncovered.items() if n}
    assert not lost, f"completions never followed by an interrupt (vector: count): {lost}"
    assert sum(books.signals.values()) == controller.counters()["interrupts"] - interrupts_before, \
        "eventfd signals read differ from the deliveries the controller counted"
    # Then every way of masking, deterministically: held while masked, one signal each on unmask.
    for kind in masker.kinds() * 3:
        held_round(host, fds, masker, kind)
    total = sum(books.completed.values())
    assert total >= MIN_COMPLETIONS and min(books.completed.values()) > 0, f"too little load: {books.completed}"
    assert masker.changes >= MIN_MASK_CHANGES, f"too few mask changes: {masker.changes}"
    print(f"completed {books.completed}, signals {books.signals}, mask changes {masker.changes}")
