"""The limits docs/trust.md promises a vfio-user server keeps against its
client: a connection that never sends a message is closed after the
first-message timeout; a client that sends without reading replies is held
back by the socket (the server queues at most MAX_QUEUED messages); DMA
mappings stop at max_dma_maps; SET_IRQS takes eventfds only, and no worker
waits on one a client filled to its maximum. Each time the next client is
served.
"""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from dbutil import eventually
from nvmefast.vfio_user import protocol as p
from vfio_user_client import (
    REGION_RW,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_USER_REGION_READ,
    VfioUserError,
    connect,
    pack_header,
)
from vfio_user_host import NvmeHost, fd_count, running_server

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


EVENTFD_MAX = 2**64 - 2
"""The largest value an eventfd counter holds: a write of 1 more waits (or fails with EAGAIN)."""


@pytest.mark.parametrize("index", [VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX], ids=["msix", "intx"])
def test_set_irqs_refuses_an_fd_that_is_not_an_eventfd(index: int) -> None:
    # A worker writes these fds: a pipe nobody reads would block it for ever.
    r, w = os.pipe()
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        with running_server() as (_, path):
            with connect(path) as client:
                fds = [efd, w] if index == VFIO_PCI_MSIX_IRQ_INDEX else [w]
                before = fd_count()
                with pytest.raises(VfioUserError) as e:
                    client.set_irqs(index, 0, len(fds), VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=fds)
                assert e.value.errno == errno.EINVAL
                # Refused as a whole: the eventfd before the pipe is not kept
                # either (the server closes what it received after replying).
                eventually(lambda: fd_count() == before, "the server keeps none of the fds")
            still_serves(path)
    finally:
        for fd in (r, w, efd):
            os.close(fd)


def test_no_worker_waits_on_an_interrupt_eventfd_at_its_maximum() -> None:
    # A client passes a blocking eventfd and fills its counter: a write of
    # one more would wait until someone reads it. The server makes it
    # non-blocking, so the worker takes the interrupt for pending and goes on.
    with running_server() as (_, path):
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            efd = os.eventfd(0, os.EFD_CLOEXEC)
            host.eventfds[1] = efd  # the host closes it
            os.eventfd_write(efd, EVENTFD_MAX)
            client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[efd])
            assert not os.get_blocking(efd), "made non-blocking (a flag of the open file, shared)"
            host.create_io_queue_pair(1, 16)
            for slba in range(4):
                assert host.write(1, slba, bytes([slba + 1]) * 512, irq=False).ok
            assert os.eventfd_read(efd) == EVENTFD_MAX, "the interrupts were pending in the full counter"
            # Read, it signals again.
            assert host.read(1, 0, 4, irq=True) == b"".join(bytes([i + 1]) * 512 for i in range(4))
        still_serves(path)


def test_a_client_that_makes_its_eventfd_blocking_again_cannot_hold_the_server() -> None:
    # The flag the server sets belongs to the open file the client shares:
    # the client clears it again, fills the counter, and the worker's next
    # interrupt blocks in write(). When the client goes, the server sets it
    # again and reads the counter, which lets that write finish, so the
    # reset after the disconnect and the next client go on.
    with running_server() as (_, path):
        client = connect(path)
        host = NvmeHost(client)
        host.enable()
        host.create_io_queue_pair(1, 16)
        efd = host.eventfds[1]
        os.set_blocking(efd, True)
        os.eventfd_write(efd, EVENTFD_MAX)
        assert host.write(1, 0, b"\x5a" * 512, irq=False).ok  # its interrupt blocks the worker
        time.sleep(0.2)  # not an assertion: lets the worker reach its write() first
        host.close()
        client.close()
        still_serves(path)
