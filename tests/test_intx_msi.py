"""Hosts without MSI-X: pin-based INTx and MSI with INTMS/INTMC; and CQs
created with IEN = 0, which never signal.

INTx is level triggered (NVMe Base 2.0 7.5.1.1.1): asserted while a CQ with
IEN = 1 holds entries the host has not consumed (its head doorbell is
behind the device's tail) and INTMS bit 0 is clear. The device signals it
through a KVM-style trigger/resample eventfd pair or a level callback.

Synchronisation without timing: the worker decides the INTx level in the
same critical section that posts a CQE, and ``intx_asserted`` takes that
lock. :func:`sync` completes a command on a queue created with IEN = 0,
which cannot move the line itself; the pass that posted it had seen every
doorbell and register write made before it, so afterwards the line shows
the level those writes call for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from irqutil import (
    FLUSH, admin_barrier, complete_batch, new_eventfd, posted, read_counter, readable, wait_until,
)

from nvmefast import Controller
from nvmefast.testing import Host, build_sqe

INTMS, INTMC = 0x0C, 0x10
PIN_QID, SYNC_QID = 1, 2


def sync(host: Host) -> None:
    """Complete one command on the IEN = 0 queue (see the module docstring)."""
    assert host.poll(SYNC_QID, host.submit(build_sqe(FLUSH, nsid=1), SYNC_QID)).ok


def submit_pin(host: Host, count: int = 1) -> list[int]:
    """Submit ``count`` Flushes on the IEN = 1 queue and wait until the device
    has posted every command outstanding there, consuming none (no CQ head
    doorbell)."""
    cids = [host.submit(build_sqe(FLUSH, nsid=1), PIN_QID) for _ in range(count)]
    unconsumed = len(host.sq(PIN_QID).outstanding)
    wait_until(lambda: posted(host, PIN_QID, unconsumed), f"{unconsumed} CQEs posted on CQ {PIN_QID}")
    return cids


@pytest.fixture
def intx_host(controller: Controller) -> Iterator[Host]:
    """A polling host with the controller in INTx mode, CQ 1 (IEN = 1) and CQ 2 (IEN = 0)."""
    controller.set_irq_mode("intx")
    assert controller.irq_mode == "intx"
    with Host(controller, irq=False) as host:
        host.enable()
        host.set_num_queues(2, 2)
        host.create_io_cq(PIN_QID, 16, vector=0, irq=True)
        host.create_io_sq(PIN_QID, 16, PIN_QID)
        host.create_io_cq(SYNC_QID, 16, vector=0, irq=False)
        host.create_io_sq(SYNC_QID, 16, SYNC_QID)
        sync(host)
        assert not controller.intx_asserted, "the line is high with every CQ consumed"
        yield host


@pytest.fixture
def intx_fds(controller: Controller) -> Iterator[tuple[int, int]]:
    trigger, resample = new_eventfd(), new_eventfd()
    controller.set_intx_eventfds(trigger, resample)
    yield trigger, resample
    controller.set_intx_eventfds(None, None)
    os.close(trigger)
    os.close(resample)


# -- INTx with a trigger/resample eventfd pair -----------------------------------------


def test_intx_eventfds_follow_the_cq_head(intx_host: Host, controller: Controller,
                                          intx_fds: tuple[int, int]) -> None:
    host = intx_host
    trigger, resample = intx_fds
    assert not readable(trigger)
    submit_pin(host)
    assert controller.intx_asserted, "a posted CQE on an IEN = 1 CQ did not assert the line"
    assert read_counter(trigger) == 1, "assertion must write the trigger eventfd once"
    # Stays asserted (and quiet) while the entry is unconsumed.
    sync(host)
    assert controller.intx_asserted
    assert not readable(trigger), "trigger written with no level change and no new entry"
    # The guest EOIs with the level still high: KVM signals resample, the device re-asserts.
    os.eventfd_write(resample, 1)
    sync(host)
    assert not readable(resample), "the device did not consume the resample eventfd"
    assert read_counter(trigger) == 1, "resample while high must re-assert once"
    assert controller.intx_asserted
    # A new entry while high re-triggers.
    submit_pin(host)
    assert controller.intx_asserted
    assert read_counter(trigger) == 1, "a new entry while high must re-trigger once"
    # The host consumes one of two: the head doorbell is still behind the tail.
    host.controller.bar0_write(host.cq_doorbell(PIN_QID), 1, 4)
    sync(host)
    assert controller.intx_asserted, "deasserted while the CQ head is behind the tail"
    assert not readable(trigger)
    # Catching up deasserts, without writing the trigger.
    assert host.reap(PIN_QID) == 2
    sync(host)
    assert not controller.intx_asserted, "still asserted after the host caught up"
    assert not readable(trigger)
    # Resample while low asserts nothing.
    os.eventfd_write(resample, 1)
    sync(host)
    assert not readable(trigger)
    assert not controller.intx_asserted
    assert controller.counters()["intx_deassertions"] >= 1


def test_intms_bit0_masks_the_pin(intx_host: Host, controller: Controller,
                                  intx_fds: tuple[int, int]) -> None:
    host = intx_host
    trigger, _ = intx_fds
    submit_pin(host)
    assert controller.intx_asserted
    assert read_counter(trigger) == 1
    controller.bar0_write(INTMS, 1, 4)
    assert controller.bar0_read(INTMS, 4) & 1
    sync(host)
    assert not controller.intx_asserted, "INTMS bit 0 did not deassert the pin"
    # New entries while masked: still low, nothing triggered.
    submit_pin(host, 2)
    sync(host)
    assert not controller.intx_asserted
    assert not readable(trigger)
    # INTMC bit 0 unmasks: the level is high again and the trigger fires once.
    controller.bar0_write(INTMC, 1, 4)
    assert controller.bar0_read(INTMS, 4) & 1 == 0
    sync(host)
    assert controller.intx_asserted
    assert read_counter(trigger) == 1
    assert host.reap(PIN_QID) == 3
    sync(host)
    assert not controller.intx_asserted


def test_intx_masked_before_entries_never_asserts(intx_host: Host, controller: Controller,
                                                  intx_fds: tuple[int, int]) -> None:
    host = intx_host
    trigger, _ = intx_fds
    controller.bar0_write(INTMS, 1, 4)
    submit_pin(host)
    sync(host)
    assert not controller.intx_asserted
    assert not readable(trigger)
    host.reap(PIN_QID)
    controller.bar0_write(INTMC, 1, 4)
    sync(host)
    assert not controller.intx_asserted, "asserted for entries the host already consumed"
    assert not readable(trigger)


def test_ien0_cq_does_not_assert_intx(intx_host: Host, controller: Controller,
                                      intx_fds: tuple[int, int]) -> None:
    trigger, _ = intx_fds
    # Leave entries unconsumed on the IEN = 0 queue: the pin must stay low.
    host = intx_host
    for _ in range(3):
        host.submit(build_sqe(FLUSH, nsid=1), SYNC_QID)
    wait_until(lambda: posted(host, SYNC_QID, 3), "3 CQEs on the IEN = 0 CQ")
    # intx_asserted waits for the pass that posted the last of them.
    assert not controller.intx_asserted
    assert not readable(trigger)
    host.reap(SYNC_QID)


# -- INTx with a level callback -----------------------------------------------------------


def test_intx_callback_hears_every_level_change(intx_host: Host, controller: Controller) -> None:
    host = intx_host
    levels: list[bool] = []
    seen_state: list[bool] = []
    cond = threading.Condition()

    def on_level(level: bool) -> None:
        # No internal lock is held here: calling back into the controller must not deadlock.
        seen_state.append(controller.intx_asserted)
        with cond:
            levels.append(level)
            cond.notify_all()

    def wait_levels(expected: list[bool]) -> None:
        with cond:
            assert cond.wait_for(lambda: len(levels) >= len(expected), 5.0), f"levels {levels}"
        assert levels == expected

    controller.set_intx_callback(on_level)
    submit_pin(host)
    wait_levels([True])
    sync(host)
    assert levels == [True], "a level callback without a level change"
    host.reap(PIN_QID)
    sync(host)
    wait_levels([True, False])
    # INTMS/INTMC move the pin while an entry is unconsumed.
    submit_pin(host)
    wait_levels([True, False, True])
    controller.bar0_write(INTMS, 1, 4)
    sync(host)
    wait_levels([True, False, True, False])
    controller.bar0_write(INTMC, 1, 4)
    sync(host)
    wait_levels([True, False, True, False, True])
    # A controller reset drops every CQ: the line goes low.
    host.disable()
    wait_levels([True, False, True, False, True, False])
    assert not controller.intx_asserted
    assert len(seen_state) == len(levels)
    controller.set_intx_callback(None)


# -- MSI: INTMS/INTMC mask vectors ----------------------------------------------------------


@pytest.fixture
def msi_host(host: Host, controller: Controller) -> Host:
    host.create_io_queue_pair(2, entries=16, vector=2)
    controller.set_irq_mode("msi")
    assert controller.irq_mode == "msi"
    for vector in (1, 2):
        read_counter(host.vector_fd(vector))
    return host


def test_msi_intms_holds_and_intmc_releases_once(msi_host: Host, controller: Controller) -> None:
    host = msi_host
    fd1, fd2 = host.vector_fd(1), host.vector_fd(2)
    controller.bar0_write(INTMS, 1 << 1, 4)
    assert controller.bar0_read(INTMS, 4) == 1 << 1
    assert controller.bar0_read(INTMC, 4) == 1 << 1
    complete_batch(host, 1, 2)
    complete_batch(host, 1, 3)
    admin_barrier(host)
    assert controller.pending_vectors() == {1}
    assert not readable(fd1), "a vector masked by INTMS signalled"
    # Vector 2 is not masked.
    complete_batch(host, 2, 1)
    assert readable(fd2, 2.0) and read_counter(fd2) == 1
    # INTMS writes set bits (1s), they do not replace the mask.
    controller.bar0_write(INTMS, 1 << 2, 4)
    assert controller.bar0_read(INTMS, 4) == 0b110
    controller.bar0_write(INTMS, 0, 4)
    assert controller.bar0_read(INTMS, 4) == 0b110
    # INTMC clears only the bits written as 1 and sends what was held, once.
    controller.bar0_write(INTMC, 1 << 1, 4)
    assert controller.bar0_read(INTMS, 4) == 0b100
    assert read_counter(fd1) == 1
    assert controller.pending_vectors() == set()
    admin_barrier(host)
    assert not readable(fd1)
    # Vector 2 masked with nothing held: INTMC sends nothing.
    controller.bar0_write(INTMC, 1 << 2, 4)
    assert controller.bar0_read(INTMS, 4) == 0
    assert not readable(fd2)
    # Unmasked vectors deliver normally.
    complete_batch(host, 1, 1)
    assert readable(fd1, 2.0) and read_counter(fd1) == 1


def test_msi_host_waits_for_intmc(msi_host: Host, controller: Controller) -> None:
    # The irq-driven host only reaps after an interrupt: a held completion
    # times out, and INTMC delivers it.
    controller.bar0_write(INTMS, 1 << 1, 4)
    cid = msi_host.submit(build_sqe(FLUSH, nsid=1), 1)
    with pytest.raises(TimeoutError):
        msi_host.wait(1, cid, timeout=0.2)
    before = msi_host.interrupts[1]
    controller.bar0_write(INTMC, 1 << 1, 4)
    assert msi_host.wait(1, cid, timeout=5).ok
    assert msi_host.interrupts[1] == before + 1


# -- IEN = 0 with MSI-X and MSI ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["msix", "msi"])
def test_ien0_cq_never_signals(host: Host, controller: Controller, mode: str) -> None:
    controller.set_irq_mode(mode)
    fd = host.vector_fd(2)  # the vector has a notifier; the CQ must not use it
    read_counter(fd)
    host.create_io_cq(2, 16, vector=2, irq=False)
    host.create_io_sq(2, 16, 2)
    complete_batch(host, 2, 3)
    complete_batch(host, 2, 1)
    admin_barrier(host)
    assert not readable(fd), "a CQ created with IEN = 0 signalled"
    assert controller.pending_vectors() == set()
    # Masked, it leaves nothing pending either, so unmasking sends nothing.
    if mode == "msix":
        controller.mask_vector(2, True)
    else:
        controller.bar0_write(INTMS, 1 << 2, 4)
    complete_batch(host, 2, 2)
    admin_barrier(host)
    assert controller.pending_vectors() == set(), "an IEN = 0 completion set a pending bit"
    if mode == "msix":
        controller.mask_vector(2, False)
    else:
        controller.bar0_write(INTMC, 1 << 2, 4)
    assert not readable(fd)


def test_controller_reset_clears_intms(msi_host: Host, controller: Controller) -> None:
    # NVMe 3.7.2: a Controller Level Reset resets controller registers; QEMU's
    # nvme_ctrl_reset clears INTMS/INTMC too.
    controller.bar0_write(INTMS, 0b110, 4)
    msi_host.disable()
    assert controller.bar0_read(INTMS, 4) == 0
