"""A raw host in plain Python: guest memory, BAR0 and doorbells, nothing else.

Deliberately *not* :class:`nvmefast.testing.Host`: it drives a controller
through the embedding contract alone (``map_dma``, ``bar0_read``/``bar0_write``,
``set_vector_eventfd``, ``set_doorbell_eventfd``, ``doorbell_page_fd``) with
hand-written rings, as a new user or a foreign driver would, so the tests
built on it do not share the project's own host's assumptions. Its loop is
tight (a few microseconds per command), and :func:`exactly_once` turns it
into an oracle: every command completes once, with its own CID, and nothing
else completes.

Doorbell modes: ``mmio``; ``shadow`` (Doorbell Buffer Config, then Linux's
``nvme_dbbuf_update_and_check_event``: old value read back from the shadow
slot, new value stored, EventIdx loaded, MMIO only when
``nvme_dbbuf_need_event``); ``page`` (stores into the doorbell page); and
``ioeventfd`` (page store, then the doorbell's eventfd).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import random
import select
import struct
import threading
import time
from typing import Any

from nvmefast import Controller

IOVA = 0x10_0000
ADMIN_ENTRIES = 32
MODES = ("mmio", "shadow", "page", "ioeventfd")
POISON_CID = 0xFFFF
_SQE = struct.Struct("<BBHI8x8xQQIIIIII")
_READ, _CREATE_SQ, _CREATE_CQ, _DBBUF = 0x02, 0x01, 0x05, 0x7C


def need_event(event_idx: int, new: int, old: int) -> bool:
    """Linux ``nvme_dbbuf_need_event`` in u16 arithmetic."""
    return (new - event_idx - 1) & 0xFFFF < (new - old) & 0xFFFF


class _Fence:
    """Python has no mb(); an uncontended lock round trip is a locked
    read-modify-write, a full barrier on x86."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            pass


class RawQueue:
    """The host half of one SQ/CQ pair."""

    def __init__(self, host: RawHost, qid: int, entries: int, sq: int, cq: int, mode: str) -> None:
        self.host, self.qid, self.size, self.mode = host, qid, entries, mode
        self.sq_off = sq - IOVA
        self.cq_word = (cq - IOVA) // 4
        self.tail = self.head = 0
        self.phase = 1
        self.mmio = 0
        self.pause: Any = None
        self._db_index = qid * 2
        stride_words = host.stride // 4
        if mode == "shadow":
            assert host.shadow is not None, "shadow mode needs Doorbell Buffer Config first"
            db, ei = host.shadow
            self._slot = ((db - IOVA) // 4 + self._db_index * stride_words, (db - IOVA) // 4 + (self._db_index + 1) * stride_words)
            self._ei = ((ei - IOVA) // 4 + self._db_index * stride_words, (ei - IOVA) // 4 + (self._db_index + 1) * stride_words)
        elif mode in ("page", "ioeventfd"):
            self._slot = (self._db_index * stride_words, (self._db_index + 1) * stride_words)
        self._efd: tuple[int, int] | None = None
        if mode == "ioeventfd":
            self._efd = (host.doorbell_eventfd(self._db_index), host.doorbell_eventfd(self._db_index + 1))

    def push(self, opcode: int, cid: int, nsid: int, prp1: int, slba: int, nlb0: int) -> None:
        """Writes an SQE at the tail and advances it (no doorbell)."""
        _SQE.pack_into(self.host.mem, self.sq_off + self.tail * 64, opcode, 0, cid, nsid, prp1, 0,
                       slba & 0xFFFFFFFF, slba >> 32, nlb0, 0, 0, 0)
        self.tail = (self.tail + 1) % self.size

    def poison(self, slot: int) -> None:
        """Overwrites a consumed SQ slot with an entry whose CID says "replayed"."""
        _SQE.pack_into(self.host.mem, self.sq_off + slot * 64, _READ, 0, POISON_CID, 1, 0, 0, 0, 0, 0, 0, 0, 0)

    def ring_sq(self) -> None:
        """Publishes the SQ tail."""
        self._ring(0, self.tail)

    def ring_cq(self) -> None:
        """Publishes the CQ head."""
        self._ring(1, self.head)

    def _ring(self, side: int, value: int) -> None:
        index = self._db_index + side
        host = self.host
        if self.mode == "mmio":
            host.ctrl.bar0_write(0x1000 + index * host.stride, value, 4)
            self.mmio += 1
        elif self.mode == "shadow":
            words = host.words
            old = words[self._slot[side]]
            words[self._slot[side]] = value
            if self.pause:
                self.pause()
            host.fence()
            if need_event(words[self._ei[side]], value, old):
                host.ctrl.bar0_write(0x1000 + index * host.stride, value, 4)
                self.mmio += 1
        else:
            assert host.page_words is not None
            host.page_words[self._slot[side]] = value
            if self._efd is not None:
                if self.pause:
                    self.pause()
                os.eventfd_write(self._efd[side], 1)

    def pop(self) -> tuple[int, int, int, int] | None:
        """The next completion as (cid, status field, sqhd, sqid), if its phase says new."""
        words = self.host.words
        w = self.cq_word + self.head * 4
        dw3 = words[w + 3]
        if (dw3 >> 16) & 1 != self.phase:
            return None
        dw2 = words[w + 2]
        self.head += 1
        if self.head == self.size:
            self.head = 0
            self.phase ^= 1
        return dw3 & 0xFFFF, dw3 >> 17, dw2 & 0xFFFF, dw2 >> 16


class RawHost:
    """Guest memory in one memfd at :data:`IOVA`, a bump allocator, the admin queue by hand."""

    def __init__(self, ctrl: Controller, size: int = 8 << 20) -> None:
        self.ctrl = ctrl
        self.fd = os.memfd_create("rawhost", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mem = mmap.mmap(self.fd, size)
        self.words = memoryview(self.mem).cast("I")
        ctrl.map_dma(IOVA, size, self.fd)
        self.stride = 4 << ((ctrl.bar0_read(0, 8) >> 32) & 0xF)
        self._next = IOVA
        self._end = IOVA + size
        self.shadow: tuple[int, int] | None = None
        self.fence = _Fence()
        self._page: mmap.mmap | None = None
        self.page_words: memoryview | None = None
        self._eventfds: list[int] = []
        self._cid = 0
        self.asq, self.acq = self.alloc(ADMIN_ENTRIES * 64), self.alloc(ADMIN_ENTRIES * 16)
        self._at = self._ah = 0
        self._ap = 1

    def alloc(self, nbytes: int) -> int:
        """Bump-allocates whole pages."""
        at = self._next
        self._next += -(-nbytes // 4096) * 4096
        assert self._next <= self._end, "raw host memory exhausted"
        return at

    def enable(self) -> None:
        """CC.EN=0, AQA/ASQ/ACQ, CC.EN=1 with IOSQES=6/IOCQES=4, wait for RDY."""
        c = self.ctrl
        c.bar0_write(0x14, 0, 4)
        self._wait_rdy(0)
        c.bar0_write(0x24, (ADMIN_ENTRIES - 1) << 16 | (ADMIN_ENTRIES - 1), 4)
        c.bar0_write(0x28, self.asq, 8)
        c.bar0_write(0x30, self.acq, 8)
        c.bar0_write(0x14, 4 << 20 | 6 << 16 | 1, 4)
        self._wait_rdy(1)

    def _wait_rdy(self, want: int) -> None:
        deadline = time.monotonic() + 5
        while self.ctrl.bar0_read(0x1C, 4) & 1 != want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"CSTS.RDY never became {want}")
            time.sleep(0.0001)

    def admin(self, opcode: int, *, cdw10: int = 0, cdw11: int = 0, prp1: int = 0, prp2: int = 0) -> int:
        """Runs one admin command (MMIO doorbells, as Linux); returns its status field."""
        self._cid = self._cid % 0xFFF0 + 1
        _SQE.pack_into(self.mem, self.asq - IOVA + self._at * 64, opcode, 0, self._cid, 0, prp1, prp2,
                       cdw10, cdw11, 0, 0, 0, 0)
        self._at = (self._at + 1) % ADMIN_ENTRIES
        self.ctrl.bar0_write(0x1000, self._at, 4)
        w = (self.acq - IOVA) // 4 + self._ah * 4
        deadline = time.monotonic() + 5
        while (self.words[w + 3] >> 16) & 1 != self._ap:
            if time.monotonic() > deadline:
                raise TimeoutError(f"admin command {opcode:#x} never completed")
        dw3 = self.words[w + 3]
        assert dw3 & 0xFFFF == self._cid, "admin completion for another command"
        self._ah += 1
        if self._ah == ADMIN_ENTRIES:
            self._ah, self._ap = 0, self._ap ^ 1
        self.ctrl.bar0_write(0x1000 + self.stride, self._ah, 4)
        return dw3 >> 17

    def doorbell_buffer_config(self, db: int | None = None, ei: int | None = None) -> int:
        """7Ch with two fresh zeroed pages (or the given IOVAs); status field."""
        db = self.alloc(4096) if db is None else db
        ei = self.alloc(4096) if ei is None else ei
        status = self.admin(_DBBUF, prp1=db, prp2=ei)
        if status == 0:
            self.shadow = (db, ei)
        return status

    def open_page(self) -> memoryview:
        """Maps the controller's doorbell page (a vfio-user client's sparse mmap)."""
        if self.page_words is None:
            fd, offset, length = self.ctrl.doorbell_page_fd()
            try:
                self._page = mmap.mmap(fd, length, offset=offset)
            finally:
                os.close(fd)
            self.page_words = memoryview(self._page).cast("I")
        return self.page_words

    def doorbell_eventfd(self, index: int) -> int:
        """A new ioeventfd registered for doorbell ``index``."""
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._eventfds.append(fd)
        self.ctrl.set_doorbell_eventfd(index, fd)
        return fd

    def vector_eventfd(self, vector: int) -> int:
        """A new eventfd attached to MSI-X ``vector``."""
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._eventfds.append(fd)
        self.ctrl.set_vector_eventfd(vector, fd)
        return fd

    def create_pair(self, qid: int, entries: int, vector: int, ien: bool, mode: str) -> RawQueue:
        """Create I/O CQ then SQ ``qid`` (PC=1) and return the host's half."""
        if mode in ("page", "ioeventfd"):
            self.open_page()
        cq, sq = self.alloc(entries * 16), self.alloc(entries * 64)
        status = self.admin(_CREATE_CQ, cdw10=(entries - 1) << 16 | qid, cdw11=vector << 16 | int(ien) << 1 | 1, prp1=cq)
        assert status == 0, f"Create I/O CQ {qid}: status {status:#x}"
        status = self.admin(_CREATE_SQ, cdw10=(entries - 1) << 16 | qid, cdw11=qid << 16 | 1, prp1=sq)
        assert status == 0, f"Create I/O SQ {qid}: status {status:#x}"
        return RawQueue(self, qid, entries, sq, cq, mode)

    def close(self) -> None:
        """Drops every mapping and fd (the controller is the caller's)."""
        for fd in self._eventfds:
            os.close(fd)
        self._eventfds.clear()
        for view in (self.words, self.page_words):
            if view is not None:
                view.release()
        if self._page is not None:
            self._page.close()
        self.mem.close()
        os.close(self.fd)


@dataclasses.dataclass
class Report:
    """What an exactly-once run saw."""

    submitted: int = 0
    completed: int = 0
    mmio: int = 0
    faults: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)


def _pauser(rng: random.Random, per_mille: int, max_us: int) -> Any:
    if not per_mille:
        return None

    def pause() -> None:
        if rng.randrange(1000) < per_mille:
            time.sleep(rng.randrange(max_us + 1) / 1e6)

    return pause


def drive(q: RawQueue, commands: int, qd: int, *, seed: int = 0, pause_per_mille: int = 0,
          max_pause_us: int = 200, irq_fd: int | None = None, timeout: float = 5.0,
          buf: int, lbas: int) -> Report:
    """Keeps ``qd`` 512-byte reads in flight on ``q`` until ``commands`` completed,
    checking each completion against what is in flight (see :mod:`tests.rawhost`)."""
    rng = random.Random(seed)
    pause = _pauser(rng, pause_per_mille, max_pause_us)
    q.pause = pause
    r = Report()
    inflight: dict[int, int] = {}
    free = list(range(qd))
    cid = 0
    consumed = 0
    size = q.size
    last = time.monotonic()
    while r.completed < commands:
        unrung = False
        while free and r.submitted < commands:
            while cid in inflight or cid == POISON_CID:
                cid = (cid + 1) & 0xFFFF
            b = free.pop()
            q.push(_READ, cid, 1, buf + b * 4096, rng.randrange(lbas), 0)
            inflight[cid] = b
            cid = (cid + 1) & 0xFFFF
            r.submitted += 1
            unrung = True
            if pause:
                pause()
            if rng.randrange(4) == 0:
                q.ring_sq()
                unrung = False
        if unrung:
            q.ring_sq()
        got = 0
        while True:
            c = q.pop()
            if c is None:
                if got:
                    break
                if time.monotonic() - last > timeout:
                    r.faults.append(("lost", q.qid, sorted(inflight), r.completed))
                    break
                if irq_fd is not None:
                    if select.select([irq_fd], [], [], 0.1)[0]:
                        os.eventfd_read(irq_fd)
                continue
            got += 1
            last = time.monotonic()
            ccid, status, sqhd, sqid = c
            b = inflight.pop(ccid, None)
            if b is None:
                r.faults.append(("stray", q.qid, ccid, hex(status), sqhd, r.completed))
            else:
                free.append(b)
                r.completed += 1
                if status or sqid != q.qid:
                    r.faults.append(("failed", q.qid, ccid, hex(status), sqid))
            if sqhd >= size or (sqhd - consumed) % size > (q.tail - consumed) % size:
                r.faults.append(("head past tail", q.qid, sqhd, consumed, q.tail))
            else:
                while consumed != sqhd:
                    q.poison(consumed)
                    consumed = (consumed + 1) % size
        if r.faults:
            break
        if pause:
            pause()
        q.ring_cq()
    r.mmio = q.mmio
    q.pause = None
    return r
