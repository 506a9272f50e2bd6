"""vfio-user end to end: a client on the server's socket brings the controller
up the way QEMU and a guest driver would, and moves data through it.

Everything is discovered through the protocol (device and region info, the
MSI-X capability in config space, BAR0's sparse-mmap doorbell area), so a
test fails if the server describes the device wrongly, not only if it
executes commands wrongly.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest

from vfio_user_client import (
    VFIO_DEVICE_FLAGS_PCI,
    VFIO_DEVICE_FLAGS_RESET,
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS,
    VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
    VfioUserClient,
    connect,
)
from vfio_user_host import (
    CSTS_RDY,
    NVME_CC,
    NVME_CSTS,
    NVME_DOORBELLS,
    NvmeHost,
    make_config,
    parse_msix,
    running_server,
)

pytestmark = pytest.mark.timeout(15)

LBA = 512


def pattern(nbytes: int, seed: int) -> bytes:
    """Distinct bytes per position and seed, so a misplaced block is caught."""
    return bytes((i * 7 + seed * 13 + (i >> 9)) & 0xFF for i in range(nbytes))


@pytest.fixture
def server_path() -> Iterator[str]:
    with running_server(doorbells="mmap") as (_server, path):
        yield path


@pytest.fixture
def client(server_path: str) -> Iterator[VfioUserClient]:
    with connect(server_path) as c:
        yield c


def io_host(client: VfioUserClient, *, dma: str = "fd", doorbells: str = "auto") -> NvmeHost:
    host = NvmeHost(client, dma=dma, doorbells=doorbells)
    host.enable()
    host.create_io_queue_pair(1, 64, vector=1)
    return host


def test_version_reply_is_compatible(server_path: str) -> None:
    with connect(server_path) as c:
        assert c.server_version is not None
        major, minor, caps = c.server_version
        assert major == 0 and minor <= 1
        # Capabilities are optional but, when present, sit in a "capabilities" object.
        assert set(caps) <= {"capabilities"}


def test_device_info_describes_a_resettable_pci_device(client: VfioUserClient) -> None:
    info = client.device_get_info()
    assert info.flags & VFIO_DEVICE_FLAGS_PCI
    assert info.flags & VFIO_DEVICE_FLAGS_RESET
    assert info.num_regions >= VFIO_PCI_NUM_REGIONS
    assert info.num_irqs >= VFIO_PCI_NUM_IRQS
    assert info.argsz == 16


def test_config_space_and_bar0_regions(client: VfioUserClient) -> None:
    config = client.region_info(VFIO_PCI_CONFIG_REGION_INDEX)
    assert config.size >= 256
    assert config.flags & VFIO_REGION_INFO_FLAG_READ and config.flags & VFIO_REGION_INFO_FLAG_WRITE
    raw = client.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 0, 256)
    vendor, _device = struct.unpack_from("<HH", raw)
    assert vendor not in (0, 0xFFFF)
    assert raw[0x0B] == 0x01 and raw[0x0A] == 0x08 and raw[0x09] == 0x02  # class code NVMe

    bar0 = client.region_info(VFIO_PCI_BAR0_REGION_INDEX)
    assert bar0.size >= 0x2000 and bar0.size & (bar0.size - 1) == 0
    # A 64-bit memory BAR0 in config space, its size matching the region.
    assert struct.unpack_from("<I", raw, 0x10)[0] & 0x6 == 0x4
    msix = parse_msix(raw)
    assert msix is not None
    table_region = client.region_info(msix.table_bar)
    assert msix.table_offset + 16 * msix.table_size <= table_region.size
    pba_region = client.region_info(msix.pba_bar)
    assert msix.pba_offset + 8 <= pba_region.size


def test_bar0_doorbells_are_a_sparse_mmap_area(client: VfioUserClient) -> None:
    bar0 = client.region_info(VFIO_PCI_BAR0_REGION_INDEX)
    assert bar0.flags & VFIO_REGION_INFO_FLAG_MMAP
    assert bar0.fd is not None, "a mappable region's reply must carry its fd"
    assert bar0.sparse_areas, "BAR0 should be sparse: registers trapped, doorbells mapped"
    area = next(a for a in bar0.sparse_areas if a.offset <= NVME_DOORBELLS < a.offset + a.size)
    assert area.offset % 4096 == 0 and area.size % 4096 == 0
    assert area.offset + area.size <= bar0.size
    # The registers page (CC, CSTS, ...) must stay trapped.
    assert all(a.offset >= 0x1000 for a in bar0.sparse_areas)
    assert os.fstat(bar0.fd).st_size >= bar0.offset + area.offset + area.size


def test_msix_irq_info_matches_the_capability(client: VfioUserClient) -> None:
    raw = client.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 0, 256)
    msix = parse_msix(raw)
    assert msix is not None
    irq = client.irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
    assert irq.index == VFIO_PCI_MSIX_IRQ_INDEX
    assert irq.count == msix.table_size
    assert irq.flags & 0x1, "MSI-X must support eventfd signalling"
    assert irq.flags & 0x2, "MSI-X must be MASKABLE (per-vector mask/pending in the server)"


def test_bringup_and_identify(client: VfioUserClient) -> None:
    config = make_config()
    with NvmeHost(client) as host:
        host.enable()
        assert host.reg_read(NVME_CSTS) & CSTS_RDY
        ident = host.identify_controller()
        assert ident.sn == config.serial
        assert ident.mn == config.model
        # Identify's PCI Vendor ID is the one in config space.
        assert ident.vid == struct.unpack_from("<H", host.config, 0)[0]
        ns = host.identify_namespace(1)
        assert ns.size_bytes == 16 << 20
        assert ns.lba_size == LBA


@pytest.mark.parametrize("dma", ["fd", "socket"])
def test_write_then_read_back(server_path: str, dma: str) -> None:
    with connect(server_path) as c, io_host(c, dma=dma) as host:
        chunks = {0: pattern(LBA, 1), 7: pattern(3 * LBA, 2), 100: pattern(16 * LBA, 3),
                  32767: pattern(LBA, 4)}
        for slba, data in chunks.items():
            completion = host.write(1, slba, data)
            assert completion.ok, completion
        for slba, data in chunks.items():
            assert host.read(1, slba, len(data) // LBA) == data, f"LBA {slba}"
        # A read spanning two writes and the gap between them: the gap reads zeros.
        got = host.read(1, 6, 5)
        assert got[:LBA] == bytes(LBA) and got[LBA:4 * LBA] == chunks[7] and got[4 * LBA:] == bytes(LBA)
        if dma == "socket":
            # No fd was given, so every byte had to cross the socket.
            assert c.dma_reads > 0 and c.dma_writes > 0
            assert c.dma_errors == 0
        else:
            assert c.dma_reads == 0 and c.dma_writes == 0


def test_large_transfer_with_prp_list(client: VfioUserClient) -> None:
    with io_host(client) as host:
        data = pattern(64 * LBA, 9)  # 32 KiB: 8 pages, PRP2 is a list
        assert host.write(1, 1000, data).ok
        assert host.read(1, 1000, 64) == data


def test_doorbells_through_the_mmapped_area(client: VfioUserClient) -> None:
    with io_host(client, doorbells="mmap") as host:
        assert host.doorbell_mode == "mmap"
        for i in range(8):
            assert host.write(1, i * 8, pattern(8 * LBA, i)).ok
        for i in range(8):
            assert host.read(1, i * 8, 8) == pattern(8 * LBA, i)


def test_posted_doorbell_writes(client: VfioUserClient) -> None:
    host = NvmeHost(client, doorbells="region", posted_doorbells=True)
    with host:
        host.enable()
        host.create_io_queue_pair(1, 16, vector=1)
        for i in range(4):
            assert host.write(1, 200 + i, pattern(LBA, 20 + i)).ok
        assert host.read(1, 200, 4) == b"".join(pattern(LBA, 20 + i) for i in range(4))
        assert client.unexpected == [], "posted doorbell writes were answered"


def test_doorbells_trapped_as_region_writes() -> None:
    with running_server(doorbells="trap") as (_server, path), connect(path) as c:
        bar0 = c.region_info(VFIO_PCI_BAR0_REGION_INDEX)
        # "trap": nothing of the doorbell page may be offered for mmap.
        for area in bar0.sparse_areas or []:
            assert not area.offset <= NVME_DOORBELLS < area.offset + area.size
        assert bar0.sparse_areas or not bar0.flags & VFIO_REGION_INFO_FLAG_MMAP
        with io_host(c, doorbells="region") as host:
            assert host.doorbell_mode == "region"
            data = pattern(4 * LBA, 5)
            assert host.write(1, 40, data).ok
            assert host.read(1, 40, 4) == data


def test_posted_register_write_is_applied_and_not_answered(client: VfioUserClient) -> None:
    # AQA is a plain read/write register while CC.EN = 0.
    client.region_write(0, 0x24, struct.pack("<I", 0x001F_001F), no_reply=True)
    assert client.read32(0, 0x24) == 0x001F_001F
    assert client.unexpected == [], "a No_reply command must not be answered"


def test_region_write_multi_applies_each_write(client: VfioUserClient) -> None:
    reply = client.region_write_multi([
        (0, 0x28, struct.pack("<I", 0x0012_3000)),  # ASQ low
        (0, 0x2C, struct.pack("<I", 0x0000_0001)),  # ASQ high
        (0, 0x24, struct.pack("<I", 0x0007_0007)),  # AQA
    ])
    assert not reply.failed
    assert struct.unpack("<Q", reply.payload[:8])[0] == 3  # wr_cnt completed
    assert client.read32(0, 0x28) == 0x0012_3000
    assert client.read32(0, 0x2C) == 1
    assert client.read32(0, 0x24) == 0x0007_0007


def test_dma_unmap_answers_with_the_entry(client: VfioUserClient) -> None:
    region = client.memory.add_memfd(0x2000_0000, 1 << 20)
    client.map_region(region)
    reply = client.dma_unmap(region.iova, region.size)
    assert not reply.failed
    # "The server responds with the original DMA entry in the request."
    assert reply.payload[:24] == struct.pack("<IIQQ", 24, 0, region.iova, region.size)
    # Unmapped: mapping the same range again is allowed.
    client.map_region(region)


def test_device_reset_drops_ready_and_allows_bringup_again(client: VfioUserClient) -> None:
    with io_host(client) as host:
        data = pattern(2 * LBA, 6)
        assert host.write(1, 64, data).ok
        client.device_reset()
        assert host.reg_read(NVME_CSTS) & CSTS_RDY == 0
        assert host.reg_read(NVME_CC) == 0
        host.forget_vector_eventfds()
        host.enable()
        host.create_io_queue_pair(1, 64, vector=1)
        # A controller reset is not a power cycle of the media.
        assert host.read(1, 64, 2) == data


def test_doorbells_as_region_writes_work_when_mappable_too(client: VfioUserClient) -> None:
    # A client may trap accesses it could have mapped (QEMU does while the BAR
    # is not yet mapped): the same doorbells reached by message must work.
    with io_host(client, doorbells="region") as host:
        assert host.doorbell_mode == "region"
        data = pattern(2 * LBA, 8)
        assert host.write(1, 12, data).ok
        assert host.read(1, 12, 2) == data


def test_read_into_unmapped_memory_fails_the_command_only(client: VfioUserClient) -> None:
    with io_host(client) as host:
        extra = client.memory.add_memfd(0x3000_0000, 0x10000)
        client.map_region(extra)
        assert host.write(1, 0, pattern(LBA, 10)).ok
        client.dma_unmap(extra.iova, extra.size)
        completion = host.io(1, 0x02, 1, 0, 1, extra.iova, LBA)  # Read into the unmapped range
        assert not completion.ok
        assert (completion.sct, completion.sc) == (0, 0x04), completion  # Data Transfer Error
        # Nothing reached our memory through the stale mapping, and the queue still works.
        assert client.memory.read(extra.iova, LBA) == bytes(LBA)
        assert host.read(1, 0, 1) == pattern(LBA, 10)


def test_client_refusing_dma_fails_the_command_only(client: VfioUserClient) -> None:
    # An fd-less mapping the client then cannot serve: its DMA_WRITEs get an
    # error reply (EFAULT), which must end as the command's Data Transfer
    # Error, not a hung queue or a dead connection.
    with io_host(client, dma="socket") as host:
        client.dma_map(0x5000_0000, 0x10000, None)  # not backed by client memory
        completion = host.io(1, 0x02, 1, 0, 1, 0x5000_0000, LBA)
        assert not completion.ok
        assert (completion.sct, completion.sc) == (0, 0x04), completion
        assert client.dma_errors > 0
        assert host.read(1, 0, 1) == bytes(LBA)
        assert host.reg_read(NVME_CSTS) & CSTS_RDY
