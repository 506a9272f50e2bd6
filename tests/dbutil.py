"""Helpers shared by the doorbell and iothread tests: bring-up and verified I/O.

Verified I/O writes random blocks with many commands in flight, reads them
back with many commands in flight and compares byte for byte, so a lost or
misread doorbell shows up as a timeout or as wrong data, never silently.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Sequence

from nvmefast.testing import Completion, Host, build_sqe

READ, WRITE, FLUSH = 0x02, 0x01, 0x00
LBA = 512


def bring_up(host: Host, pairs: Sequence[int] = (1,), entries: int = 64, *, shadow: bool = False,
             shadow_admin: bool = False, queues: int | None = None) -> None:
    """Linux's order: enable, Identify, Set Features Number of Queues, Doorbell
    Buffer Config (``shadow``), then create each I/O CQ and SQ. ``queues``:
    how many SQs and CQs to ask for (default: the highest pair)."""
    host.enable()
    host.identify_controller()
    n = queues or max(pairs, default=1)
    host.set_num_queues(n, n)
    if shadow:
        host.enable_shadow_doorbells(admin=shadow_admin)
    for qid in pairs:
        host.create_io_queue_pair(qid, entries)


def submit_blocks(host: Host, qid: int, opcode: int, blocks: dict[int, bytes | None],
                  timeout: float = 5) -> dict[int, Completion]:
    """One single-block command per LBA in ``blocks``, up to a full SQ in flight
    (the oldest is waited for before the SQ could need its CID again). Writes
    send the given data; reads land in fresh buffers, returned through ``blocks``."""
    window = host.sq(qid).entries - 1
    bufs: dict[int, int] = {}
    inflight: collections.deque[tuple[int, int]] = collections.deque()
    out: dict[int, Completion] = {}
    try:
        for slba, data in blocks.items():
            if len(inflight) == window:
                first, cid = inflight.popleft()
                out[first] = host.wait(qid, cid, timeout)
            buf = bufs[slba] = host.alloc(LBA)
            if data is not None:
                host.write_mem(buf, data)
            sqe = build_sqe(opcode, nsid=1, prp1=buf, cdw10=slba & 0xFFFF_FFFF, cdw11=slba >> 32, cdw12=0)
            inflight.append((slba, host.submit(sqe, qid, timeout=timeout)))
        while inflight:
            first, cid = inflight.popleft()
            out[first] = host.wait(qid, cid, timeout)
        if opcode == READ:
            for slba in blocks:
                blocks[slba] = host.read_mem(bufs[slba], LBA)
        return out
    finally:
        for buf in bufs.values():
            host.free(buf)


def verified_io(host: Host, qid: int, slbas: Sequence[int], timeout: float = 5) -> None:
    """Write random data to every LBA of ``slbas`` (in flight together), read it
    back the same way and compare byte for byte."""
    written = {slba: os.urandom(LBA) for slba in slbas}
    for slba, c in submit_blocks(host, qid, WRITE, dict(written), timeout).items():
        assert c.ok, f"write slba {slba} on SQ {qid}: {c}"
    back: dict[int, bytes | None] = {slba: None for slba in slbas}
    for slba, c in submit_blocks(host, qid, READ, back, timeout).items():
        assert c.ok, f"read slba {slba} on SQ {qid}: {c}"
    for slba in slbas:
        assert back[slba] == written[slba], f"SQ {qid} slba {slba}: data read back differs from data written"


def eventually(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Wait until ``check()`` holds (state the device reaches asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.001)
