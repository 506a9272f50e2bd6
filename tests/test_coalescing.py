"""Interrupt Coalescing (Set Features 08h) and Interrupt Vector Configuration
(09h, Coalescing Disable), driven through the admin queue and observed with
real I/O and eventfd counters.

A vector with coalescing fires when THR + 1 completions have accumulated or
TIME x 100 us have passed since the first, whichever is first; THR 0 or
TIME 0 turns it off; the admin vector is never coalesced; CD exempts a
vector. Batches are submitted with one doorbell write, so the worker sees a
batch whole, and completions are reaped by phase tag, so the test is the
only reader of the I/O vectors' eventfds.

Timing is asserted only as lower bounds (an aggregation timer of 25.5 ms
cannot fire before 25.5 ms) or as "at least one of several samples beat
the timer", which only a broken implementation fails.
"""

from __future__ import annotations

import time

import pytest
from irqutil import poll_all, read_counter, readable, submit_batch, write_sqes

from nvmefast import CommandError, Controller
from nvmefast.testing import Host

FID_COALESCING = 0x08
FID_VECTOR_CONFIG = 0x09
CD = 1 << 16
SEL_DEFAULT = 1 << 8
TIME_MAX = 255  # 25.5 ms
TIMER_S = TIME_MAX * 100e-6
SAMPLES = 8


def coalescing(thr: int, time_100us: int) -> int:
    """CDW11 of Feature 08h: THR bits 7:0 (0's based), TIME bits 15:8."""
    return time_100us << 8 | thr


@pytest.fixture
def fds(host: Host) -> dict[int, int]:
    """Queue pairs 1 and 2 on vectors 1 and 2, their eventfds drained."""
    host.create_io_queue_pair(2, entries=64, vector=2)
    out = {v: host.vector_fd(v) for v in (1, 2)}
    for fd in out.values():
        read_counter(fd)
    return out


def held(controller: Controller) -> tuple[int, int]:
    c = controller.counters()
    return c["coalesced_completions"], c["coalescing_timeouts"]


def timed_batch(host: Host, qid: int, fd: int, count: int) -> float:
    """Submit ``count`` commands at one doorbell; seconds until ``fd`` fired
    (measured from before the doorbell); the batch is then reaped."""
    sqes = write_sqes(host, count)
    start = time.monotonic()
    cids = submit_batch(host, qid, sqes)
    assert readable(fd, 5.0), f"no interrupt on queue {qid} within 5 s"
    elapsed = time.monotonic() - start
    poll_all(host, qid, cids)
    return elapsed


def quiet_after_timer(fd: int) -> bool:
    """True if nothing more arrives for well over an aggregation time."""
    return not readable(fd, 4 * TIMER_S)


# -- Get/Set Features --------------------------------------------------------------


def test_get_features_returns_what_was_set(host: Host) -> None:
    assert host.get_features(FID_COALESCING) == 0, "coalescing must be off after reset"
    host.set_features(FID_COALESCING, coalescing(0x34, 0x12))
    assert host.get_features(FID_COALESCING) == 0x1234
    assert host.get_features(FID_COALESCING | SEL_DEFAULT) == 0
    assert host.get_features(FID_VECTOR_CONFIG, 2) == 2
    host.set_features(FID_VECTOR_CONFIG, CD | 2)
    assert host.get_features(FID_VECTOR_CONFIG, 2) == CD | 2
    assert host.get_features(FID_VECTOR_CONFIG, 3) == 3, "CD is per vector"
    host.set_features(FID_VECTOR_CONFIG, 2)
    assert host.get_features(FID_VECTOR_CONFIG, 2) == 2


def test_vector_config_rejects_a_vector_out_of_range(host: Host, controller: Controller) -> None:
    n = controller.config.vectors
    for call in (lambda: host.set_features(FID_VECTOR_CONFIG, CD | n),
                 lambda: host.get_features(FID_VECTOR_CONFIG, n)):
        with pytest.raises(CommandError) as err:
            call()
        assert (err.value.status & 0x7FF) == 0x002, "expected Invalid Field in Command"


# -- behaviour ---------------------------------------------------------------------


def test_off_by_default_every_batch_signals(host: Host, controller: Controller, fds: dict[int, int]) -> None:
    before = held(controller)
    for _ in range(3):
        timed_batch(host, 1, fds[1], 3)
        assert read_counter(fds[1]) == 1
    assert held(controller) == before


def test_threshold_reached_signals_once(host: Host, controller: Controller, fds: dict[int, int]) -> None:
    host.set_features(FID_COALESCING, coalescing(7, TIME_MAX))  # 8 entries or 25.5 ms
    _, timeouts = held(controller)
    for _ in range(3):
        timed_batch(host, 1, fds[1], 8)
        assert read_counter(fds[1]) == 1
        assert quiet_after_timer(fds[1]), "THR + 1 completions must give exactly one interrupt"
    assert held(controller)[1] == timeouts, "the threshold, not the timer, fired"
    # More than THR + 1 in one batch is still one interrupt.
    timed_batch(host, 1, fds[1], 20)
    assert read_counter(fds[1]) == 1
    assert quiet_after_timer(fds[1])


def test_below_threshold_fires_after_time(host: Host, controller: Controller, fds: dict[int, int]) -> None:
    host.set_features(FID_COALESCING, coalescing(15, TIME_MAX))  # 16 entries or 25.5 ms
    deferred, timeouts = held(controller)
    elapsed = timed_batch(host, 1, fds[1], 3)
    assert elapsed >= TIMER_S * 0.98, f"interrupt after {elapsed * 1e3:.2f} ms, before TIME (25.5 ms)"
    assert read_counter(fds[1]) == 1
    assert quiet_after_timer(fds[1])
    assert held(controller)[0] > deferred
    assert held(controller)[1] == timeouts + 1


def test_coalescing_disable_exempts_the_vector(host: Host, controller: Controller, fds: dict[int, int]) -> None:
    host.set_features(FID_COALESCING, coalescing(15, TIME_MAX))
    host.set_features(FID_VECTOR_CONFIG, CD | 2)
    before = held(controller)
    latencies = []
    for _ in range(SAMPLES):
        latencies.append(timed_batch(host, 2, fds[2], 1))
        assert read_counter(fds[2]) == 1, "every batch on a CD vector signals once"
    assert held(controller) == before, "completions on a CD vector were held back"
    assert min(latencies) < TIMER_S, f"every CD-vector interrupt waited for TIME: {latencies}"
    # Vector 1, without CD, is still coalesced.
    assert timed_batch(host, 1, fds[1], 1) >= TIMER_S * 0.98
    assert read_counter(fds[1]) == 1
    # Clearing CD brings coalescing back to vector 2.
    host.set_features(FID_VECTOR_CONFIG, 2)
    assert timed_batch(host, 2, fds[2], 1) >= TIMER_S * 0.98
    assert read_counter(fds[2]) == 1


def test_admin_vector_is_never_coalesced(host: Host, controller: Controller, fds: dict[int, int]) -> None:
    host.set_features(FID_COALESCING, coalescing(255, TIME_MAX))
    before = held(controller)
    signals = host.interrupts[0]
    latencies = []
    for _ in range(SAMPLES):
        start = time.monotonic()
        host.get_features(FID_COALESCING)  # waits for vector 0's interrupt
        latencies.append(time.monotonic() - start)
    assert host.interrupts[0] - signals >= SAMPLES
    assert held(controller) == before, "admin completions were held back"
    assert min(latencies) < TIMER_S, f"every admin command waited for TIME: {latencies}"


@pytest.mark.parametrize("thr, time_100us", [(0, TIME_MAX), (15, 0)], ids=["thr0", "time0"])
def test_thr_or_time_zero_means_no_coalescing(host: Host, controller: Controller, fds: dict[int, int],
                                              thr: int, time_100us: int) -> None:
    host.set_features(FID_COALESCING, coalescing(thr, time_100us))
    before = held(controller)
    for _ in range(3):
        timed_batch(host, 1, fds[1], 1)
        assert read_counter(fds[1]) == 1
    assert held(controller) == before


def test_controller_reset_restores_no_coalescing(host: Host, controller: Controller,
                                                  fds: dict[int, int]) -> None:
    host.set_features(FID_COALESCING, coalescing(15, TIME_MAX))
    host.set_features(FID_VECTOR_CONFIG, CD | 2)
    host.disable()
    host.enable()
    assert host.get_features(FID_COALESCING) == 0
    assert host.get_features(FID_VECTOR_CONFIG, 2) == 2
    host.create_io_queue_pair(1)
    before = held(controller)
    latencies = []
    for _ in range(SAMPLES):
        latencies.append(timed_batch(host, 1, fds[1], 1))
        assert read_counter(fds[1]) == 1
    assert held(controller) == before, "coalescing survived a controller reset"
    assert min(latencies) < TIMER_S
