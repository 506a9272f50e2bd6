"""Host-side queue state: SQ tail and CIDs, CQ head and phase, interrupt vectors.

This is the driver's half of the queue protocol (NVMe Base 2.0 §3.3.1): the
host owns the SQ tail and the CQ head, learns the SQ head from each CQE's
SQHD, and finds new CQEs by their phase tag, which flips every time the
controller wraps the CQ.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from nvmefast.testing.memory import GuestMemory
from nvmefast.testing.sqe import CQE_SIZE, SQE_SIZE, Completion


@dataclass(frozen=True)
class QueuePair:
    """What :meth:`Host.create_io_queue_pair` created: an I/O SQ and its CQ."""

    qid: int
    entries: int
    vector: int
    irq: bool
    sq_iova: int
    cq_iova: int


class SubmissionQueue:
    """An SQ as the host sees it: its memory, tail, last known head and free CIDs."""

    def __init__(self, qid: int, iova: int, entries: int, cqid: int) -> None:
        self.qid = qid
        self.iova = iova
        self.entries = entries
        self.cqid = cqid
        self.tail = 0
        # Updated from SQHD of every completion; the SQ is full when
        # tail + 1 == head (one slot always stays empty, §3.3.1.5).
        self.head = 0
        self.lock = threading.Lock()
        # One CID per possible outstanding command; CIDs are reused only after
        # their completion arrived, so a completion always names one command.
        self.free_cids = list(range(entries - 1, -1, -1))
        self.outstanding: set[int] = set()

    def full(self) -> bool:
        """True if writing one more entry would make tail catch up with head."""
        return (self.tail + 1) % self.entries == self.head

    def slot_iova(self) -> int:
        """Guest address of the entry at the current tail."""
        return self.iova + self.tail * SQE_SIZE

    def advance_tail(self) -> int:
        """Move the tail past the entry just written; returns the new tail."""
        self.tail = (self.tail + 1) % self.entries
        return self.tail

    def take_cid(self) -> int | None:
        """A CID not used by any outstanding command, or None if all are in flight."""
        while self.free_cids:
            cid = self.free_cids.pop()
            if cid not in self.outstanding:
                return cid
        return None

    def retire(self, cid: int, sqhd: int) -> None:
        """Account for a completion of ``cid`` that reported SQ head ``sqhd``."""
        if sqhd < self.entries:
            self.head = sqhd
        if cid in self.outstanding:
            self.outstanding.discard(cid)
            if cid < self.entries:
                self.free_cids.insert(0, cid)


@dataclass
class CompletionQueue:
    """A CQ as the host sees it: head, expected phase, and completions not yet claimed."""

    qid: int
    iova: int
    entries: int
    vector: int
    irq: bool
    head: int = 0
    # The controller posts the first pass with phase 1 into zeroed memory.
    phase: int = 1
    # Completions reaped but not yet returned by wait(), keyed (sqid, cid).
    done: dict[tuple[int, int], Completion] = field(default_factory=dict)
    # Completions for commands the host did not submit (a device bug if any).
    stray: list[Completion] = field(default_factory=list)

    def drain(
        self,
        mem: GuestMemory,
        retire: Callable[[Completion], bool],
        ring_head: Callable[[int, int], None],
    ) -> int:
        """Consume every CQE whose phase tag is current, then ring the CQ head doorbell once.

        ``retire`` accounts for one completion and returns whether the host
        knew the command; ``ring_head(qid, head)`` writes the doorbell.
        Returns the number of CQEs consumed.
        """
        count = 0
        while True:
            entry = self.iova + self.head * CQE_SIZE
            # Read DW3 (phase) first and the rest after: the controller writes
            # DW0-2 before DW3, so only a read of DW0-2 *after* seeing the new
            # phase is guaranteed to see this CQE's DW0-2 (loads are not
            # reordered with each other on x86; this is a test host).
            dw3 = int.from_bytes(mem.read(entry + 12, 4), "little")
            if (dw3 >> 16) & 1 != self.phase:
                break
            completion = Completion.decode(mem.read(entry, CQE_SIZE))
            self.head += 1
            if self.head == self.entries:
                self.head = 0
                self.phase ^= 1
            if retire(completion):
                self.done[(completion.sqid, completion.cid)] = completion
            else:
                self.stray.append(completion)
            count += 1
        if count:
            ring_head(self.qid, self.head)
        return count


class Vector:
    """One interrupt vector: its eventfd and the CQs that signal through it.

    Several CQs may share a vector, so whoever consumes the eventfd drains all
    of them. Exactly one thread (the "leader") waits on the eventfd at a time;
    the others wait on ``cond`` for the leader to publish what it drained, so
    no thread can consume another's wake-up and leave it sleeping.
    """

    def __init__(self, number: int, eventfd: int | None) -> None:
        self.number = number
        self.eventfd = eventfd
        self.cqs: list[CompletionQueue] = []
        self.cond = threading.Condition(threading.Lock())
        self.leader = False

    def wait(self, timeout: float, on_signal: Callable[[Vector, int], None]) -> None:
        """Wait up to ``timeout`` for this vector's interrupt, then call ``on_signal``.

        ``on_signal(vector, count)`` runs under ``cond`` with the eventfd counter
        just read, so it drains while no other thread does. A follower returns
        after the leader's notification (or a short timeout) and the caller
        checks again for its completion.
        """
        if self.eventfd is None:
            raise RuntimeError(f"vector {self.number} has no eventfd to wait on")
        with self.cond:
            if self.leader:
                self.cond.wait(min(timeout, 0.05))
                return
            self.leader = True
        signals = 0
        try:
            # Bounded slices so a leader re-checks deadlines; followers only sleep on cond.
            readable, _, _ = select.select([self.eventfd], [], [], min(timeout, 0.25))
            if readable:
                with contextlib.suppress(BlockingIOError):
                    signals = os.eventfd_read(self.eventfd)
        finally:
            with self.cond:
                if signals:
                    on_signal(self, signals)
                self.leader = False
                self.cond.notify_all()
