"""A vfio-user client that truncates its guest memory mid-I/O (docs/trust.md).

The client's memfd is the server's guest memory. Shrinking it under the
server costs that client's commands a Data Transfer Error (SCT 0h, SC 04h);
the server logs the loss once, keeps the connection (the client goes on
with failed commands: its other memory still works), and serves the next
client, in process and as ``nvmefast serve``. A memfd sealed against
shrinking, as QEMU's, is logged as trusted.
"""

from __future__ import annotations

import logging
import os

import pytest

from nvmefast.testing.sqe import IO_READ, build_sqe
from test_vfio_user_cli import serving
from vfio_user_client import VfioUserClient, connect
from vfio_user_host import CSTS_CFS, NVME_CSTS, NvmeHost, running_server

pytestmark = pytest.mark.timeout(60)

LBA = 512
DATA_IOVA = 0x8000_0000
DATA_SIZE = 1 << 20
BURST = 16
"""Reads submitted before the truncation, and as many after it."""
DTE = 0x004
"""Data Transfer Error: SCT 0h, SC 04h (NVMe Base 2.0, Figure 102)."""


def truncate_mid_io(client: VfioUserClient, host: NvmeHost) -> tuple[list[int], list[int]]:
    """Reads into a second memfd region, which shrinks to nothing between two
    bursts; returns the status fields (SCT << 8 | SC) of each burst."""
    region = client.memory.add_memfd(DATA_IOVA, DATA_SIZE)
    client.map_region(region)
    assert region.fd is not None

    def burst(first: int) -> list[int]:
        return [
            host.submit(1, build_sqe(IO_READ, nsid=1, prp1=DATA_IOVA + (first + i) * 4096, cdw12=7))
            for i in range(BURST)
        ]

    before = burst(0)
    os.ftruncate(region.fd, 0)
    after = burst(BURST)
    # Every command completes (the client never touches the region again).
    return [_status(host, cid) for cid in before], [_status(host, cid) for cid in after]


def _status(host: NvmeHost, cid: int) -> int:
    c = host.wait(1, cid)
    return c.sct << 8 | c.sc



@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """The server's INFO records (the vfio-user logger as `nvmefast serve` has
    it, whatever an earlier test in this process did to it: the fuzz replay
    keeps only its errors)."""
    caplog.set_level(logging.INFO, logger="nvmefast")
    caplog.set_level(logging.INFO, logger="nvmefast.vfio_user")
    monkeypatch.setattr(logging.getLogger("nvmefast.vfio_user"), "propagate", True)
    return caplog


def check_client(host: NvmeHost) -> bytes:
    """Brings the device up and writes a marker through the client's own RAM."""
    host.enable()
    host.create_io_queue_pair(1, 64)
    data = os.urandom(8 * LBA)
    assert host.write(1, 0, data).ok
    return data


def test_a_client_truncating_its_memory_mid_io_fails_its_commands_not_the_server(
    server_log: pytest.LogCaptureFixture,
) -> None:
    caplog = server_log
    with running_server() as (server, path):
        with connect(path) as client, NvmeHost(client) as host:
            data = check_client(host)
            before, after = truncate_mid_io(client, host)
            assert set(before) <= {0, DTE}, before
            assert after == [DTE] * BURST, "every read issued after the truncation fails"
            # The connection goes on: its other memory and the queues work.
            assert host.read(1, 0, 8) == data
            assert not host.reg_read(NVME_CSTS) & CSTS_CFS
            assert server.controller.counters()["dma_regions_lost"] == 1
            assert [r.kind for r in server.controller.dma_regions()] == ["lost", "guarded"], "sorted by IOVA: the data region first"
        lost = [r.getMessage() for r in caplog.records if "shrank under the device" in r.getMessage()]
        assert len(lost) == 1 and f"{DATA_IOVA:#x}+{DATA_SIZE:#x}" in lost[0]
        maps = [r.getMessage() for r in caplog.records if "DMA map 0x" in r.getMessage()]
        assert len(maps) == 2 and all("guarded" in m for m in maps), maps
        # The next client finds the device and its data, and nothing lost.
        with connect(path) as client, NvmeHost(client, mem_iova=0x4000_0000) as host:
            host.enable()
            host.create_io_queue_pair(1, 64)
            assert host.read(1, 0, 8) == data
            assert [r.kind for r in server.controller.dma_regions()] == ["guarded"]
        assert server.connections == 2


def test_a_sealed_client_memfd_is_trusted(server_log: pytest.LogCaptureFixture) -> None:
    caplog = server_log
    with running_server() as (server, path), connect(path) as client, NvmeHost(client) as host:
        check_client(host)
        region = client.memory.add_memfd(DATA_IOVA, DATA_SIZE, sealed=True)
        client.map_region(region)
        assert [r.kind for r in server.controller.dma_regions()] == ["sealed", "guarded"]
        assert any("sealed memfd: trusted, unguarded" in r.getMessage() for r in caplog.records)
        assert region.fd is not None
        with pytest.raises(PermissionError):
            os.ftruncate(region.fd, 0)


def test_nvmefast_serve_survives_a_client_that_truncates_its_memory() -> None:
    with serving("loss", "--namespace", "ram:8M", "--log-level", "info") as (path, stderr):
        with connect(path) as client, NvmeHost(client) as host:
            data = check_client(host)
            _, after = truncate_mid_io(client, host)
            assert after == [DTE] * BURST
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            host.create_io_queue_pair(1, 64)
            assert host.read(1, 0, 8) == data
    log = stderr[0]
    assert log.count("shrank under the device") == 1, log
    assert "not sealed against shrinking: guarded" in log
