"""vfio-user connection lifecycle: a client disconnecting leaves the device
(and its data) to the next client, which re-establishes memory and IRQs
(vfio-user.rst, "Client Disconnection"); connecting and disconnecting leaks
no fds and no threads; stopping the server with a client attached ends
cleanly.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from vfio_user_client import (
    VFIO_PCI_BAR0_REGION_INDEX,
    ConnectionClosed,
    connect,
)
from vfio_user_host import (
    CSTS_RDY,
    NVME_CSTS,
    NvmeHost,
    fd_count,
    running_server,
    wait_closed_or_reply,
)

pytestmark = pytest.mark.timeout(20)

LBA = 512


def test_reconnect_sees_data_written_by_the_previous_client() -> None:
    data = bytes(range(256)) * 8  # 4 LBAs
    with running_server() as (server, path):
        with connect(path) as first, NvmeHost(first) as host:
            host.enable()
            host.create_io_queue_pair(1, 32)
            assert host.write(1, 300, data).ok
        # The second client maps different memory at a different IOVA, so
        # nothing of the first client's mappings may be reused.
        with connect(path) as second, NvmeHost(second, mem_iova=0x4000_0000) as host:
            host.enable()
            host.create_io_queue_pair(1, 32)
            assert host.read(1, 300, 4) == data
            assert host.reg_read(NVME_CSTS) & CSTS_RDY
        assert server.connections == 2


def test_reconnect_without_fd_dma() -> None:
    data = b"\xC3" * (2 * LBA)
    with running_server() as (_server, path):
        with connect(path) as first, NvmeHost(first, dma="socket") as host:
            host.enable()
            host.create_io_queue_pair(1, 16)
            assert host.write(1, 5, data).ok
        with connect(path) as second, NvmeHost(second, dma="socket") as host:
            host.enable()
            host.create_io_queue_pair(1, 16)
            assert host.read(1, 5, 2) == data


def test_abrupt_disconnect_mid_io_then_reconnect() -> None:
    with running_server() as (_server, path):
        first = connect(path)
        host = NvmeHost(first)
        host.enable()
        host.create_io_queue_pair(1, 32)
        # Queue commands and vanish without reaping them.
        for i in range(8):
            buf = host.alloc(LBA)
            host.client.memory.write(buf, bytes([i]) * LBA)
            host.submit(1, host_write_sqe(buf, i))
        host.close()
        first.close()
        with connect(path) as second, NvmeHost(second) as host2:
            host2.enable()
            host2.create_io_queue_pair(1, 32)
            assert host2.write(1, 0, b"\x11" * LBA).ok
            assert host2.read(1, 0, 1) == b"\x11" * LBA


def host_write_sqe(buf: int, slba: int) -> bytes:
    from nvmefast.testing.sqe import IO_WRITE, build_sqe

    return build_sqe(IO_WRITE, nsid=1, prp1=buf, cdw10=slba, cdw12=0)


def one_session(path: str, dma: str = "fd") -> None:
    """Everything that makes a server hold fds: memfd DMA map, BAR0 fd, eventfds, queues."""
    with connect(path) as client, NvmeHost(client, dma=dma) as host:
        host.enable()
        host.create_io_queue_pair(1, 16)
        assert host.write(1, 0, b"\x42" * LBA).ok
        client.region_info(VFIO_PCI_BAR0_REGION_INDEX)


def counts_while_probing(path: str) -> tuple[int, int]:
    """fds and threads of this process (client and server) while a probe client
    is being served: the server serves one client at a time, so by then the
    previous client has been torn down, and both measurements include the same
    one live connection."""
    with connect(path) as probe:
        probe.device_get_info()
        # Objects of earlier tests (servers, controllers) close their fds when
        # collected; collect now so that does not happen between measurements.
        gc.collect()
        return fd_count(), threading.active_count()


@pytest.mark.parametrize("dma,cycles", [("fd", 20), ("socket", 10)])
def test_no_fd_or_thread_leak_across_connections(dma: str, cycles: int) -> None:
    with running_server() as (server, path):
        one_session(path, dma)  # warm-up: lazily created server state is not a leak
        fds, threads = counts_while_probing(path)
        for _ in range(cycles):
            one_session(path, dma)
        # A teardown still finishing after the next accept gets a moment.
        deadline = time.monotonic() + 2.0
        while counts_while_probing(path) != (fds, threads) and time.monotonic() < deadline:
            time.sleep(0.05)
        after_fds, after_threads = counts_while_probing(path)
        assert after_fds == fds, f"{after_fds - fds} fds leaked across {cycles} connections"
        assert after_threads == threads, f"{after_threads - threads} threads leaked across {cycles} connections"
        assert server.connections >= cycles + 3


def test_stop_with_a_client_attached_closes_it() -> None:
    gc.collect()
    threads = threading.active_count()
    fds = fd_count()
    with running_server() as (server, path):
        client = connect(path)
        host = NvmeHost(client)
        host.enable()
    # The server is stopped: the client sees the connection end, not a hang.
    try:
        with pytest.raises((ConnectionClosed, ConnectionResetError, BrokenPipeError)):
            client.device_get_info()
        assert wait_closed_or_reply(client, 0.5) is None
    finally:
        host.close()
        client.close()
    assert threading.active_count() == threads, "stop() must join every server thread"
    del server
    gc.collect()
    assert fd_count() == fds


def test_stop_releases_the_controllers_fds() -> None:
    gc.collect()
    fds = fd_count()
    with running_server() as (server, path):
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
    # stop() "closes": the server object may live on (server.controller stays
    # inspectable) but nothing it opened may stay open.
    assert server.controller.closed
    assert fd_count() == fds
