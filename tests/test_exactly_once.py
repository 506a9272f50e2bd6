"""Every command runs exactly once, whatever a fast or hostile host does.

A raw host (``tests/rawhost.py``: plain Python over the embedding contract,
not ``nvmefast.testing.Host``) keeps reads in flight and checks every
completion: its CID is one in flight on that queue, it succeeded, SQHD never
passed the host's tail, and nothing is lost. Consumed slots are poisoned so a
re-fetch shows. Every doorbell mode, every polling mode, one and two
iothreads, QD 1, 2, 16 and a full queue, across ring wraps, flat out and with
random pauses. ``NVMEFAST_SOAK=seconds`` runs :func:`test_soak` for that long
over random plans.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from rawhost import MODES, RawHost, Report, drive

POLLINGS = ("adaptive", "interrupt", "poll")
LBAS = (1 << 20) // 512


def run(mode: str, polling: str, *, qd: int = 1, entries: int = 32, commands: int = 400,
        iothreads: int = 1, irq: bool = False, pause: int = 0, seed: int = 0,
        refused_dbbuf: bool = False) -> Report:
    """One exactly-once run on a fresh controller; the merged report of every queue pair."""
    cfg = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20)], polling=polling,
                           iothreads=iothreads, max_io_queue_pairs=max(2, iothreads))
    with Controller(cfg) as ctrl:
        host = RawHost(ctrl)
        try:
            host.enable()
            if refused_dbbuf:
                # Not page aligned: Invalid Field, and nothing may change.
                assert host.doorbell_buffer_config(host.alloc(8192) + 8, host.alloc(4096)) & 0xFF == 0x02
            if mode == "shadow":
                assert host.doorbell_buffer_config() == 0
            if mode == "page" and polling != "poll":
                ctrl.set_doorbell_scan(20)
            queues = []
            for qid in range(1, iothreads + 1):
                q = host.create_pair(qid, entries, vector=qid, ien=irq, mode=mode)
                fd = host.vector_eventfd(qid) if irq else None
                queues.append((q, fd, host.alloc(qd * 4096)))
            reports: list[Report] = [Report() for _ in queues]

            def one(k: int) -> None:
                q, fd, buf = queues[k]
                reports[k] = drive(q, commands, qd, seed=seed * 31 + k, pause_per_mille=pause,
                                   irq_fd=fd, buf=buf, lbas=LBAS)

            threads = [threading.Thread(target=one, args=(k,)) for k in range(1, len(queues))]
            for t in threads:
                t.start()
            one(0)
            for t in threads:
                t.join(60)
            total = Report()
            for r in reports:
                total.submitted += r.submitted
                total.completed += r.completed
                total.mmio += r.mmio
                total.faults += r.faults
            return total
        finally:
            host.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("polling", POLLINGS)
def test_issue_10_scenario_shadow_doorbells_qd1_never_replay(polling: str) -> None:
    """Issue 10 as reported: Doorbell Buffer Config, one 128-entry pair (IEN=0,
    vector 1), QD1 4 KiB-class reads with Linux's dbbuf logic from a tight
    Python loop, 20 runs of 2000, half of them after a refused 7Ch."""
    for k in range(20):
        r = run("shadow", polling, entries=128, commands=2000, seed=k, refused_dbbuf=k % 2 == 1)
        assert not r.faults, f"run {k}: {r.faults[:4]}"
        assert r.completed == 2000
        if polling != "interrupt":
            # The point of shadow doorbells: a polling worker's stale
            # EventIdx spares most MMIO writes (interrupt mode asks for all).
            assert r.mmio < 4000


MATRIX = list(itertools.product(MODES, POLLINGS, (1, 2), (1, 2, 16, 31)))


@pytest.mark.parametrize("mode,polling,iothreads,qd", MATRIX,
                         ids=[f"{m}-{p}-io{i}-qd{q}" for m, p, i, q in MATRIX])
def test_exactly_once(mode: str, polling: str, iothreads: int, qd: int) -> None:
    """32-entry rings (wrapping every 32 commands), once flat out with polled
    completions and once with random pauses and interrupt-driven reaping."""
    seed = qd * 7 + iothreads
    r = run(mode, polling, qd=qd, iothreads=iothreads, commands=300, seed=seed)
    assert not r.faults, r.faults[:4]
    assert r.completed == 300 * iothreads
    r = run(mode, polling, qd=qd, iothreads=iothreads, commands=150, seed=seed + 1, pause=30, irq=True)
    assert not r.faults, r.faults[:4]
    assert r.completed == 150 * iothreads


def test_the_oracle_sees_a_replay() -> None:
    """A host bug that rewinds the shadow tail must show as strays: the oracle
    is not vacuous. (A Read's data landing on the shadow page zeroes the tail:
    the device then fetches from its head to the ring's end.)"""
    cfg = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20)], polling="poll")
    with Controller(cfg) as ctrl:
        host = RawHost(ctrl)
        try:
            host.enable()
            assert host.doorbell_buffer_config() == 0
            q = host.create_pair(1, 32, vector=1, ien=False, mode="shadow")
            assert host.shadow is not None
            r = drive(q, 200, 1, buf=host.shadow[0], lbas=LBAS, timeout=1)
            assert any(f[0] == "stray" for f in r.faults), r.faults
        finally:
            host.close()


def test_soak() -> None:
    """``NVMEFAST_SOAK=seconds``: random plans over every axis until time is up."""
    seconds = float(os.environ.get("NVMEFAST_SOAK", "0"))
    if not seconds:
        pytest.skip("set NVMEFAST_SOAK=seconds for a long randomised run")
    rng = random.Random(int(seconds))
    until = time.monotonic() + seconds
    runs = commands = 0
    while time.monotonic() < until:
        entries = rng.choice((2, 3, 8, 32, 128, 1024))
        plan = dict(mode=rng.choice(MODES), polling=rng.choice(POLLINGS), qd=rng.randrange(1, entries),
                    entries=entries, commands=rng.randrange(500, 5000), iothreads=rng.choice((1, 2)),
                    irq=rng.random() < 0.5, pause=rng.choice((0, 0, 5, 50)), seed=rng.randrange(1 << 30),
                    refused_dbbuf=rng.random() < 0.2)
        r = run(**plan)  # type: ignore[arg-type]
        assert not r.faults, (plan, r.faults[:4])
        runs += 1
        commands += r.completed
    print(f"soak: {runs} runs, {commands} commands, 0 faults")
