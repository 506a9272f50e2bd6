"""The limits docs/trust.md promises a vfio-user server keeps against its
client: a connection that never sends a message is closed after the
first-message timeout; a client that sends without reading replies is held
back by the socket (the server queues at most MAX_QUEUED messages); DMA
mappings stop at max_dma_maps. Each time the next client is served.
"""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from nvmefast.vfio_user import protocol as p
from vfio_user_client import (
    REGION_RW,
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_USER_REGION_READ,
    VfioUserError,
    connect,
    pack_header,
)
from vfio_user_host import NvmeHost, running_server

pytestmark = pytest.mark.timeout(60)


def still_serves(path: str) -> None:
    with connect(path) as client, NvmeHost(client) as host:
        host.enable()
        host.create_io_queue_pair(1, 16)
        assert host.write(1, 0, b"\x5a" * 512).ok


@pytest.mark.parametrize("sends", [b"", b"\x01\x00\x01"], ids=["silent", "trickles-a-partial-header"])
def test_a_client_that_never_completes_a_message_is_disconnected(sends: bytes) -> None:
    with running_server() as (server, path):
        server.first_message_timeout = 0.5
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(sends)
        s.settimeout(30)
        try:
            assert s.recv(1) == b"", "the server closes the connection"
        finally:
            s.close()
        still_serves(path)
        assert server.connections == 2


def test_a_client_that_only_sends_is_held_back_by_the_socket() -> None:
    with running_server() as (server, path):
        client = connect(path)
        sock = client.sock
        read = REGION_RW.pack(0, VFIO_PCI_BAR0_REGION_INDEX, 4)
        message = pack_header(1, VFIO_USER_REGION_READ, len(read)) + read
        sock.setblocking(False)
        sent = 0
        # Replies are never read: the server's sends block, its queue fills,
        # its reader stops reading, and our sends stop (a server that kept
        # reading would hold ever more of them in memory).
        blocked = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sent += sock.send(message)
            except BlockingIOError:
                # Give a reader that is still draining the socket a moment.
                time.sleep(0.2)
                try:
                    sent += sock.send(message)
                except BlockingIOError:
                    blocked = True
                    break
        assert blocked, f"the server kept reading: {sent // len(message)} messages accepted"
        client.close()
        still_serves(path)


def test_dma_maps_stop_at_max_dma_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(p, "MAX_DMA_MAPS", 3)
    with running_server() as (server, path), connect(path) as client:
        regions = [client.memory.add_memfd(0x1000_0000 * (i + 1), 1 << 20) for i in range(4)]
        for r in regions[:3]:
            client.map_region(r)
        with pytest.raises(VfioUserError) as e:
            client.map_region(regions[3])
        assert e.value.errno == errno.ENOSPC
        client.dma_unmap(regions[0].iova, regions[0].size)
        client.map_region(regions[3])
        assert len(server.controller.dma_regions()) == 3
