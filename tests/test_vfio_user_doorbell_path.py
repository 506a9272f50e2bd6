"""Trapped doorbells on the server's reader thread.

A doorbell REGION_WRITE (or REGION_WRITE_MULTI) that finds the handler
thread idle runs on the reader, skipping the hand-off. The oracle: data and
completions as the host sees them, the order of a doorbell behind a slower
command kept, and a doorbell whose side effect needs a DMA reply (an AER
completed into memory without an fd) answered, not deadlocked.
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmefast.vfio_user import VfioUserServer
from nvmefast.vfio_user.protocol import REGION_WRITE, REGION_WRITE_MULTI, Header
from nvmefast.vfio_user.server import _doorbell_write
from vfio_user_client import connect
from vfio_user_host import NVME_DOORBELLS, NvmeHost, build_sqe, running_server

pytestmark = pytest.mark.timeout(60)

LBA = 512
ADMIN_ASYNC_EVENT_REQUEST = 0x0C


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def connection(server: VfioUserServer) -> object:
    conn = server._current
    assert conn is not None, "no client connected"
    return conn


@pytest.mark.parametrize("posted", [True, False])
def test_trapped_doorbells_run_on_the_reader_and_data_is_right(posted: bool) -> None:
    with running_server(doorbells="trap") as (server, path), connect(path) as client:
        with NvmeHost(client, doorbells="region", posted_doorbells=posted) as host:
            host.enable()
            host.create_io_queue_pair(1, 16, vector=1)
            for i in range(20):
                assert host.write(1, i * 4, pattern(4 * LBA, i)).ok
            for i in range(20):
                assert host.read(1, i * 4, 4) == pattern(4 * LBA, i)
            conn = connection(server)
            assert conn.inline_doorbells >= 80, conn.inline_doorbells  # type: ignore[attr-defined]
            assert client.unexpected == [] or not posted


def test_a_doorbell_write_multi_runs_on_the_reader() -> None:
    with running_server(doorbells="trap") as (server, path), connect(path) as client:
        with NvmeHost(client, doorbells="region") as host:
            host.enable()
            host.create_io_queue_pair(1, 16, vector=1)
            q = host.queues[1]
            buf = host.alloc(LBA)
            client.memory.write(buf, pattern(LBA, 3))
            sqe = build_sqe(0x01, nsid=1, prp1=buf, cdw10=5)
            client.memory.write(q.sq_iova + q.sq_tail * 64, sqe[:2] + struct.pack("<H", 77) + sqe[4:])
            q.sq_tail += 1
            before = connection(server).inline_doorbells  # type: ignore[attr-defined]
            reply = client.region_write_multi([(0, NVME_DOORBELLS + 8, struct.pack("<I", q.sq_tail))])
            assert not reply.failed
            # Replied to: it ran, and on the reader (the handler was idle).
            assert connection(server).inline_doorbells == before + 1  # type: ignore[attr-defined]
            assert host.wait(1, 77, irq=False).ok
            assert host.read(1, 5, 1) == pattern(LBA, 3)


def test_an_event_from_a_doorbell_on_the_reader_is_completed_through_the_socket() -> None:
    # Guest memory with no fd: the AER that an invalid doorbell value
    # completes is posted to the admin CQ by DMA_WRITE, whose reply the
    # reader itself must receive while it runs that doorbell.
    with running_server(doorbells="trap") as (server, path), connect(path) as client:
        with NvmeHost(client, dma="socket", doorbells="region", posted_doorbells=True) as host:
            host.enable()
            host.create_io_queue_pair(1, 16, vector=1)
            aer = host.submit(0, build_sqe(ADMIN_ASYNC_EVENT_REQUEST))
            # Serve the admin worker's DMA (it reads the AER's SQE through
            # the socket) until the AER is outstanding.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                client.poll(0.01)
            before = connection(server).inline_doorbells  # type: ignore[attr-defined]
            host.ring(2, 200)  # SQ 1 tail 200 of a 16-entry queue: Invalid Doorbell Write Value
            event = host.wait(0, aer, irq=False, timeout=10)
            assert event.ok
            # DW0: type 0 (error status), info 01h (invalid doorbell write value), log page 01h.
            assert (event.dw0 & 0x7, (event.dw0 >> 8) & 0xFF, (event.dw0 >> 16) & 0xFF) == (0, 0x01, 0x01)
            assert connection(server).inline_doorbells > before  # type: ignore[attr-defined]
            host.ring(2, 0)  # back in range; the queue still works
            assert host.write(1, 0, pattern(LBA, 9)).ok
            assert host.read(1, 0, 1) == pattern(LBA, 9)


@given(
    command=st.sampled_from([REGION_WRITE, REGION_WRITE_MULTI, 1, 0]),
    payload=st.one_of(
        st.binary(max_size=64),
        st.lists(
            st.tuples(st.integers(0, 0x3000), st.integers(0, 9), st.integers(0, 12)), min_size=1, max_size=4
        ).map(lambda es: struct.pack("<Q", len(es)) + b"".join(struct.pack("<QII8s", o, r, c, b"") for o, r, c in es)),
        st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, 9), st.integers(0, 8)).map(
            lambda t: struct.pack("<QII", *t) + b"\0" * 4
        ),
    ),
)
@settings(max_examples=400, deadline=None)
def test_the_doorbell_test_of_the_reader_takes_any_payload(command: int, payload: bytes) -> None:
    # Guest-controlled bytes: never an exception, and "a doorbell" only for
    # writes that all land in BAR0 at or past the doorbells.
    hdr = Header(1, command, 16 + len(payload), 0, 0)
    inline = _doorbell_write(hdr, payload)
    if not inline:
        return
    if command == REGION_WRITE:
        offset, region, _ = struct.unpack_from("<QII", payload)
        assert region == 0 and offset >= NVME_DOORBELLS
    else:
        assert command == REGION_WRITE_MULTI
        (n,) = struct.unpack_from("<Q", payload)
        entries = [struct.unpack_from("<QII8s", payload, 8 + 24 * i) for i in range(n)]
        assert len(payload) == 8 + 24 * n and all(r == 0 and o >= NVME_DOORBELLS for o, r, _c, _d in entries)
