"""MSI-X masking with eventfd notifiers: the ``msix_notify`` / unmask contract.

While a vector is masked a completion sets its pending bit and writes nothing
to the eventfd; unmasking with the pending bit set clears it and signals
exactly once; unmasking without it signals nothing. Completions are reaped by
phase tag here so the test, not the host, is the only reader of each eventfd.
"""

from __future__ import annotations

import os

import pytest

from nvmefast import Controller, HostTimeoutError
from nvmefast.testing import Host, build_sqe

import irqutil
from irqutil import read_counter

WRITE = 0x01


def readable(fd: int, timeout: float = 0.05) -> bool:
    return irqutil.readable(fd, timeout)


def complete_writes(host: Host, qid: int, count: int) -> None:
    buf = host.alloc(4096)
    cids = [host.submit(build_sqe(WRITE, nsid=1, prp1=buf, cdw10=i, cdw12=0), qid) for i in range(count)]
    for cid in cids:
        assert host.poll(qid, cid).ok
    host.free(buf)


def test_no_signal_while_masked_then_exactly_one(host: Host, controller: Controller) -> None:
    fd = host.vector_fd(1)
    assert read_counter(fd) == 0
    controller.mask_vector(1, True)
    complete_writes(host, 1, 5)
    assert not readable(fd), "a masked vector wrote its eventfd"
    assert 1 in controller.pending_vectors()
    controller.mask_vector(1, False)
    assert readable(fd, 1.0), "unmask with the pending bit set did not signal"
    assert read_counter(fd) == 1
    assert 1 not in controller.pending_vectors()
    assert not readable(fd)
    # and the vector delivers normally afterwards
    complete_writes(host, 1, 1)
    assert readable(fd, 1.0)
    assert read_counter(fd) == 1


def test_unmask_without_pending_does_not_signal(host: Host, controller: Controller) -> None:
    fd = host.vector_fd(1)
    controller.mask_vector(1, True)
    assert 1 not in controller.pending_vectors()
    controller.mask_vector(1, False)
    assert not readable(fd)
    assert controller.pending_vectors() == set()


def test_unmask_twice_signals_once(host: Host, controller: Controller) -> None:
    fd = host.vector_fd(1)
    controller.mask_vector(1, True)
    complete_writes(host, 1, 2)
    controller.mask_vector(1, False)
    controller.mask_vector(1, False)  # already unmasked: nothing pending, nothing sent
    controller.mask_vector(1, True)
    controller.mask_vector(1, False)
    assert readable(fd, 1.0)
    assert read_counter(fd) == 1


def test_masking_is_per_vector(host: Host, controller: Controller) -> None:
    host.create_io_queue_pair(2, entries=16, vector=2)
    fd1, fd2 = host.vector_fd(1), host.vector_fd(2)
    controller.mask_vector(1, True)
    complete_writes(host, 2, 3)
    assert readable(fd2, 1.0)
    assert read_counter(fd2) >= 1
    assert controller.pending_vectors() == set()
    complete_writes(host, 1, 1)
    assert controller.pending_vectors() == {1}
    assert not readable(fd1)
    controller.mask_vector(1, False)
    assert read_counter(fd1) == 1


def test_admin_vector_masking(host: Host, controller: Controller) -> None:
    fd = host.vector_fd(0)
    read_counter(fd)
    controller.mask_vector(0, True)
    buf = host.alloc(4096)
    cid = host.submit(build_sqe(0x06, prp1=buf, cdw10=0x01), 0)  # Identify Controller
    assert host.poll(0, cid).ok
    assert not readable(fd)
    assert controller.pending_vectors() == {0}
    controller.mask_vector(0, False)
    assert read_counter(fd) == 1


def test_notifier_fd_is_duplicated(host: Host, controller: Controller) -> None:
    # The core keeps its own duplicate: closing ours after attaching must not
    # stop delivery to the eventfd object (and must not write to a reused fd number).
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    keep = os.dup(efd)
    try:
        controller.set_vector_eventfd(1, efd)
        os.close(efd)
        complete_writes(host, 1, 1)
        assert readable(keep, 1.0)
        assert read_counter(keep) == 1
        # detaching: completions signal nothing
        controller.set_vector_eventfd(1, None)
        complete_writes(host, 1, 2)
        assert not readable(keep)
    finally:
        os.close(keep)


def test_masked_without_notifier_keeps_pending(host: Host, controller: Controller) -> None:
    controller.set_vector_eventfd(1, None)
    controller.mask_vector(1, True)
    complete_writes(host, 1, 1)
    assert 1 in controller.pending_vectors()
    # attach a notifier, then unmask: the pending interrupt is delivered to it
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        controller.set_vector_eventfd(1, efd)
        controller.mask_vector(1, False)
        assert read_counter(efd) == 1
    finally:
        os.close(efd)


def test_host_waits_for_the_interrupt(host: Host, controller: Controller) -> None:
    # The host reaps only after an interrupt: while the vector is masked, wait()
    # times out naming the command; after unmask the pending interrupt delivers it.
    controller.mask_vector(1, True)
    buf = host.alloc(4096)
    cid = host.submit(build_sqe(WRITE, nsid=1, prp1=buf, cdw10=0, cdw12=0), 1)
    with pytest.raises(HostTimeoutError, match=f"SQ 1 CID {cid}"):
        host.wait(1, cid, timeout=0.3)
    before = host.interrupts[1]
    controller.mask_vector(1, False)
    assert host.wait(1, cid, timeout=2).ok
    assert host.interrupts[1] == before + 1
