"""Helpers shared by the interrupt tests: eventfd counters, batched
submission, and "posted but not consumed" checks on a CQ.

Synchronisation notes the tests rely on (all follow from the device's
contract, not from timing):

- A CQE is visible in guest memory only after the worker posted it, and the
  worker decides the batch's interrupt (coalescing, INTx level) in the same
  critical section; delivery follows when it drops the queue lock.
- The worker runs admin commands only after delivering what its previous
  pass decided, so a completed admin command is a barrier: every interrupt
  for CQEs the host saw before submitting it has been delivered (or made
  pending) by then.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence

from nvmefast.testing import Host, build_sqe
from nvmefast.testing.sqe import CQE_SIZE

WRITE = 0x01
FLUSH = 0x00
GET_FEATURES = 0x0A
FEATURE_NUMBER_OF_QUEUES = 0x07


def readable(fd: int, timeout: float = 0.0) -> bool:
    """True if eventfd ``fd`` has a non-zero counter (waiting up to ``timeout``)."""
    return bool(select.select([fd], [], [], timeout)[0])


def read_counter(fd: int) -> int:
    """The eventfd counter (signals since the last read), 0 if none."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.0005)


def write_sqes(host: Host, count: int, first_lba: int = 0) -> list[bytes]:
    """``count`` one-block Writes to consecutive LBAs from one shared buffer."""
    buf = host.alloc(4096)
    return [build_sqe(WRITE, nsid=1, prp1=buf, cdw10=first_lba + i, cdw12=0) for i in range(count)]


def submit_batch(host: Host, qid: int, sqes: Sequence[bytes]) -> list[int]:
    """Write every SQE at SQ ``qid``'s tail and ring its doorbell once, so
    the worker sees the whole batch at one doorbell write. Returns the CIDs."""
    sq = host.sq(qid)
    cids = []
    with sq.lock:
        for sqe in sqes:
            assert not sq.full(), "batch larger than the SQ"
            cid = sq.take_cid()
            assert cid is not None
            host.write_mem(sq.slot_iova(), sqe[:2] + cid.to_bytes(2, "little") + sqe[4:])
            sq.outstanding.add(cid)
            sq.advance_tail()
            cids.append(cid)
        host.controller.bar0_write(host.sq_doorbell(qid), sq.tail, 4)
    return cids


def poll_all(host: Host, qid: int, cids: Sequence[int], timeout: float = 5.0) -> None:
    """Reap the completions of ``cids`` by phase tag (never reading an eventfd); all must succeed."""
    for cid in cids:
        completion = host.poll(qid, cid, timeout)
        assert completion.ok, str(completion)


def complete_batch(host: Host, qid: int, count: int, first_lba: int = 0) -> None:
    """Submit ``count`` Writes on ``qid`` at one doorbell and reap them by phase tag."""
    poll_all(host, qid, submit_batch(host, qid, write_sqes(host, count, first_lba)))


def posted(host: Host, cqid: int, count: int) -> bool:
    """True when ``count`` CQEs past the host's head of CQ ``cqid`` carry the
    current phase: posted by the device, not consumed (no head doorbell)."""
    cq = host.cq(cqid)
    head, phase = cq.head, cq.phase
    for _ in range(count):
        dw3 = int.from_bytes(host.read_mem(cq.iova + head * CQE_SIZE + 12, 4), "little")
        if (dw3 >> 16) & 1 != phase:
            return False
        head += 1
        if head == cq.entries:
            head, phase = 0, phase ^ 1
    return True


def admin_barrier(host: Host) -> None:
    """A polled admin command: once it completes, the worker has delivered
    every interrupt decided for CQEs posted before it was submitted."""
    cid = host.submit(build_sqe(GET_FEATURES, cdw10=FEATURE_NUMBER_OF_QUEUES), 0)
    assert host.poll(0, cid).ok
