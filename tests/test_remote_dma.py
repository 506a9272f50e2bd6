"""Remote guest memory: regions with no fd, reached through DMA transport callbacks.

A vfio-user client may DMA_MAP memory without an fd; the server then moves
its bytes with DMA_READ/DMA_WRITE messages. Here the test host plays that
client: its guest memory is anonymous, and a :class:`Client` serves the
controller's transport calls from it, logging each one and failing the ones
a test poisons. Everything the controller touches (admin and I/O queues,
PRP lists, data, completions) goes through those calls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from nvmefast import ConfigError, Controller, DmaMapError
from nvmefast.testing import PAGE_SIZE, Completion, Host, build_sqe, data_pointers

READ, WRITE, COMPARE = 0x02, 0x01, 0x05
DOORBELL_BUFFER_CONFIG = 0x7C
DATA_TRANSFER_ERROR = 0x04
REMOTE_IOVA = 0x2_0000_0000


class Client:
    """The far end of the transport: the host's memory, a call log, poisoned ranges."""

    def __init__(self, host: Host) -> None:
        self.mem = host.mem
        self.calls: list[tuple[str, int, int]] = []
        self.poison: tuple[int, int] | None = None
        self.how = "raise"
        self._lock = threading.Lock()

    def _poisoned(self, iova: int, length: int) -> bool:
        return self.poison is not None and iova < self.poison[1] and self.poison[0] < iova + length

    def read(self, iova: int, length: int) -> bytes:
        with self._lock:
            self.calls.append(("read", iova, length))
        if self._poisoned(iova, length):
            if self.how == "short":
                return self.mem.read(iova, length)[:-1]
            raise ConnectionResetError("client went away")
        return self.mem.read(iova, length)

    def write(self, iova: int, data: bytes) -> None:
        with self._lock:
            self.calls.append(("write", iova, len(data)))
        if self._poisoned(iova, len(data)):
            raise ConnectionResetError("client went away")
        self.mem.write(iova, data)

    def touched(self, iova: int, length: int, since: int = 0) -> list[tuple[str, int, int]]:
        """The logged calls from number ``since`` on that overlap ``[iova, iova + length)``."""
        with self._lock:
            return [c for c in self.calls[since:] if c[1] < iova + length and iova < c[1] + c[2]]


@pytest.fixture
def remote_host(controller: Controller) -> Iterator[tuple[Host, Client]]:
    """An enabled host whose guest memory is all remote, served by a Client."""
    with Host(controller, remote_memory=True, memory_bytes=8 << 20) as host:
        client = Client(host)
        controller.set_dma_transport(client.read, client.write)
        host.enable()
        yield host, client


def rw_sqe(opcode: int, slba: int, nlb: int, prp1: int, prp2: int) -> bytes:
    return build_sqe(opcode, nsid=1, prp1=prp1, prp2=prp2, cdw10=slba, cdw12=nlb - 1)


def scattered_pages(host: Host, count: int) -> list[int]:
    """``count`` data pages, every other one of a run, so the PRP list cannot merge them."""
    base = host.alloc(2 * count * PAGE_SIZE)
    return [base + 2 * i * PAGE_SIZE for i in range(count)]


def test_identify_queues_and_io_through_the_transport(remote_host: tuple[Host, Client]) -> None:
    host, client = remote_host
    assert host.controller.engine.dma_regions() == [(0x1_0000_0000, 8 << 20, True)]
    assert host.identify_controller().sn == "NVMEFAST-TEST-0001"
    qp = host.create_io_queue_pair(1, entries=16)
    pages = scattered_pages(host, 6)
    data = os.urandom(6 * PAGE_SIZE)
    mark = len(client.calls)
    host.write(1, 40, data, entries=pages)
    # The I/O queues live in remote memory too: the SQE came by a message.
    assert client.touched(qp.sq_iova, 64, mark) == [("read", qp.sq_iova, 64)]
    # A PRP list: six single-page data transfers (no two pages contiguous).
    for page in pages:
        assert client.touched(page, PAGE_SIZE, mark) == [("read", page, PAGE_SIZE)]
    # The completion: DW0-1, then DW2-3 with the phase tag, as two writes.
    assert client.touched(qp.cq_iova, 16, mark) == [("write", qp.cq_iova, 8), ("write", qp.cq_iova + 8, 8)]
    out = scattered_pages(host, 6)
    mark = len(client.calls)
    assert host.read(1, 40, len(data) // 512, entries=out) == data
    for page in out:
        assert client.touched(page, PAGE_SIZE, mark) == [("write", page, PAGE_SIZE)]
    # A Compare bounces the host's data through the transport too.
    assert host.io(rw_sqe(COMPARE, 40, 8, out[0], 0)).ok
    host.mem.write(out[0] + 100, b"\x00" if data[100] else b"\x01")
    assert host.io(rw_sqe(COMPARE, 40, 8, out[0], 0)).sc == 0x85  # Compare Failure
    assert not host.controller.engine.fatal


@pytest.mark.parametrize("how", ["raise", "short"])
def test_a_failing_transport_fails_the_command_not_the_controller(
    remote_host: tuple[Host, Client], how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    host, client = remote_host
    host.create_io_queue_pair(1, entries=16)
    buf = host.alloc(2 * PAGE_SIZE)
    good = os.urandom(PAGE_SIZE)
    host.write(1, 0, good, buf_iova=buf)
    client.how = how
    client.poison = (buf, buf + PAGE_SIZE)
    for opcode in (READ, WRITE, COMPARE):
        completion: Completion = host.io(rw_sqe(opcode, 0, 8, buf, 0))
        assert (completion.sct, completion.sc) == (0, DATA_TRANSFER_ERROR), (opcode, str(completion))
    if how == "raise":
        assert "client went away" in capsys.readouterr().err, "the exception is printed"
    # The failed Write left the namespace alone, and the controller goes on.
    client.poison = None
    assert host.read(1, 0, 8, buf_iova=buf + PAGE_SIZE) == good
    assert not host.controller.engine.fatal


def test_mixed_fd_and_remote_memory_in_one_command(host: Host) -> None:
    client = Client(host)
    host.add_region(REMOTE_IOVA, 1 << 20, remote=True)
    host.controller.set_dma_transport(client.read, client.write)
    assert host.controller.engine.dma_regions() == [
        (0x1_0000_0000, 64 << 20, True),
        (REMOTE_IOVA, 1 << 20, True),
    ]
    fd_page = host.alloc(PAGE_SIZE)
    remote_pages = [host.alloc(PAGE_SIZE, region=REMOTE_IOVA) for _ in range(2)]
    entries = [remote_pages[0], fd_page, remote_pages[1]]
    data = os.urandom(3 * PAGE_SIZE)
    host.write(1, 8, data, entries=entries)
    assert host.read(1, 8, 24) == data, "read back into fd memory"
    out = [host.alloc(PAGE_SIZE), host.alloc(PAGE_SIZE, region=REMOTE_IOVA)]
    mark = len(client.calls)
    assert host.read(1, 8, 16, entries=out) == data[: 2 * PAGE_SIZE]
    assert client.touched(fd_page, PAGE_SIZE) == [], "fd-backed pages never reach the transport"
    assert client.touched(out[0], PAGE_SIZE) == []
    assert client.touched(out[1], PAGE_SIZE, mark) == [("write", out[1], PAGE_SIZE)]


def test_unmap_and_map_rules(host: Host) -> None:
    ctrl = host.controller
    client = Client(host)
    host.add_region(REMOTE_IOVA, 1 << 20, remote=True)
    ctrl.set_dma_transport(client.read, client.write)
    page = host.alloc(PAGE_SIZE, region=REMOTE_IOVA)
    host.write(1, 0, b"\x5a" * PAGE_SIZE)
    # Remote and fd regions share one address space and one set of rules.
    with pytest.raises(DmaMapError, match="overlaps"):
        ctrl.map_dma_remote(REMOTE_IOVA + PAGE_SIZE, PAGE_SIZE)
    with pytest.raises(DmaMapError, match="overlaps"):
        ctrl.map_dma_remote(0x1_0000_0000, PAGE_SIZE)
    with pytest.raises(DmaMapError, match="greater than zero"):
        ctrl.map_dma_remote(0x3_0000_0000, 0)
    with pytest.raises(DmaMapError):
        ctrl.map_dma_remote(-1, PAGE_SIZE)
    with pytest.raises(DmaMapError, match="exactly"):
        ctrl.unmap_dma(REMOTE_IOVA, PAGE_SIZE)
    ctrl.unmap_dma(REMOTE_IOVA, 1 << 20)
    assert (REMOTE_IOVA, 1 << 20, True) not in ctrl.engine.dma_regions()
    before = len(client.calls)
    completion = host.io(rw_sqe(READ, 0, 8, page, 0))
    assert (completion.sct, completion.sc) == (0, DATA_TRANSFER_ERROR)
    assert len(client.calls) == before, "an unmapped range never reaches the transport"
    # Mapped again, read-only: device writes to it fail, reads from it work.
    ctrl.map_dma_remote(REMOTE_IOVA, 1 << 20, writable=False)
    assert host.io(rw_sqe(READ, 0, 8, page, 0)).sc == DATA_TRANSFER_ERROR
    assert host.io(rw_sqe(WRITE, 8, 8, page, 0)).ok
    ctrl.unmap_dma(REMOTE_IOVA, 1 << 20)
    host.mem.remove_region(REMOTE_IOVA)


def test_no_transport_and_bad_callbacks(host: Host) -> None:
    ctrl = host.controller
    with pytest.raises(ConfigError, match="not callable"):
        ctrl.set_dma_transport(42, None)  # type: ignore[arg-type]
    host.add_region(REMOTE_IOVA, 1 << 20, remote=True)
    ctrl.set_dma_transport(None, None)
    page = host.alloc(PAGE_SIZE, region=REMOTE_IOVA)
    assert host.io(rw_sqe(WRITE, 0, 8, page, 0)).sc == DATA_TRANSFER_ERROR
    # Only a read callback: device-to-host transfers fail, host-to-device work.
    client = Client(host)
    ctrl.set_dma_transport(client.read, None)
    assert host.io(rw_sqe(WRITE, 0, 8, page, 0)).ok
    assert host.io(rw_sqe(READ, 0, 8, page, 0)).sc == DATA_TRANSFER_ERROR


def test_shadow_doorbells_refuse_remote_memory(remote_host: tuple[Host, Client]) -> None:
    host, _ = remote_host
    db, ei = host.alloc(PAGE_SIZE), host.alloc(PAGE_SIZE)
    completion = host.admin(build_sqe(DOORBELL_BUFFER_CONFIG, prp1=db, prp2=ei))
    assert (completion.sct, completion.sc) == (0, DATA_TRANSFER_ERROR)
    assert host.controller.engine.shadow_doorbells is None
    # The controller goes on with MMIO doorbells.
    host.create_io_queue_pair(1, entries=16)
    data = os.urandom(PAGE_SIZE)
    host.write(1, 0, data, entries=data_pointers(host.alloc(PAGE_SIZE), PAGE_SIZE))
    assert host.read(1, 0, 8) == data
