"""A small NVMe host over the raw vfio-user client, and test scaffolding.

:class:`NvmeHost` uses only what the protocol offers: it finds the MSI-X
capability by walking PCI config space, finds the doorbells through BAR0's
sparse-mmap capability, and takes completions by CQ phase tag or by the
eventfds it gave the server with SET_IRQS. Split from
:mod:`vfio_user_client` (the protocol layer).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from nvmefast.testing.identify import IdentifyController, IdentifyNamespace
from nvmefast.testing.sqe import (
    ADMIN_CREATE_CQ,
    ADMIN_CREATE_SQ,
    ADMIN_IDENTIFY,
    CQE_SIZE,
    IO_READ,
    IO_WRITE,
    SQE_SIZE,
    Completion,
    build_sqe,
)
from vfio_user_client import (
    ConnectionClosed,
    Message,
    PAGE_SIZE,
    SparseArea,
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VfioUserClient,
)

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nvmefast import ControllerConfig
    from nvmefast.vfio_user import VfioUserServer


# -- PCI configuration space ---------------------------------------------------------------------

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 1 << 1
PCI_COMMAND_MASTER = 1 << 2
PCI_COMMAND_INTX_DISABLE = 1 << 10
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 1 << 4
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
MSIX_FLAGS_ENABLE = 1 << 15
MSIX_FLAGS_MASKALL = 1 << 14
MSIX_ENTRY_SIZE = 16
MSIX_ENTRY_VECTOR_CTRL = 12


@dataclass(frozen=True)
class MsixCap:
    """The MSI-X capability as found in config space."""

    offset: int
    """Config-space offset of the capability."""
    table_size: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int

    @property
    def control(self) -> int:
        """Config offset of Message Control."""
        return self.offset + 2


def find_capabilities(config: bytes) -> dict[int, int]:
    """Standard capability IDs to config offsets, walking the list from 34h."""
    found: dict[int, int] = {}
    if not int.from_bytes(config[PCI_STATUS : PCI_STATUS + 2], "little") & PCI_STATUS_CAP_LIST:
        return found
    pointer = config[PCI_CAPABILITY_LIST] & 0xFC
    seen: set[int] = set()
    while pointer and pointer not in seen and pointer + 2 <= min(len(config), 0x100):
        seen.add(pointer)
        found.setdefault(config[pointer], pointer)
        pointer = config[pointer + 1] & 0xFC
    return found


def parse_msix(config: bytes) -> MsixCap | None:
    """The MSI-X capability (PCI Local Bus 6.8.2), or None if absent."""
    offset = find_capabilities(config).get(PCI_CAP_ID_MSIX)
    if offset is None:
        return None
    control, table, pba = struct.unpack_from("<HII", config, offset + 2)
    return MsixCap(offset, (control & 0x7FF) + 1, table & 7, table & ~7, pba & 7, pba & ~7)


# -- NVMe host ------------------------------------------------------------------------------------

NVME_CAP = 0x00
NVME_VS = 0x08
NVME_CC = 0x14
NVME_CSTS = 0x1C
NVME_AQA = 0x24
NVME_ASQ = 0x28
NVME_ACQ = 0x30
NVME_DOORBELLS = 0x1000
CC_EN = 1 << 0
CC_IOSQES_64 = 6 << 16
CC_IOCQES_16 = 4 << 20
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1


class NvmeHostError(Exception):
    """The device did not do what the NVMe host expected (timeout, bad state)."""


@dataclass
class HostQueue:
    """One SQ/CQ pair as the host sees it."""

    qid: int
    entries: int
    sq_iova: int
    cq_iova: int
    vector: int
    irq: bool
    sq_tail: int = 0
    cq_head: int = 0
    phase: int = 1
    next_cid: int = 0
    done: dict[int, Completion] = field(default_factory=dict)


class NvmeHost:
    """A compact NVMe driver over a :class:`VfioUserClient`.

    ``dma="fd"`` maps its guest memory (a memfd) with its fd, so the server
    reads and writes it directly; ``dma="socket"`` maps a plain buffer
    without an fd, so every SQE, CQE, PRP list and data byte must cross the
    socket as DMA_READ/DMA_WRITE. ``doorbells="mmap"`` writes doorbells into
    the sparse-mmap area of BAR0 (it must exist); ``"region"`` writes them
    with REGION_WRITE (posted, with No_reply, if ``posted_doorbells``);
    ``"auto"`` uses mmap when BAR0 offers it.
    """

    def __init__(
        self,
        client: VfioUserClient,
        *,
        dma: str = "fd",
        doorbells: str = "auto",
        mem_iova: int = 0x1_0000_0000,
        mem_size: int = 4 << 20,
        posted_doorbells: bool = False,
    ) -> None:
        if dma not in ("fd", "socket") or doorbells not in ("auto", "mmap", "region"):
            raise ValueError(f"dma={dma!r} doorbells={doorbells!r}")
        self.client = client
        self.dma = dma
        self.doorbell_mode = doorbells
        self.posted_doorbells = posted_doorbells
        """Doorbell REGION_WRITEs carry No_reply (posted, as a VMM may send MMIO writes)."""
        self.device = client.device_get_info()
        self.config = client.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 0, 256)
        msix = parse_msix(self.config)
        if msix is None:
            raise NvmeHostError("no MSI-X capability in config space")
        self.msix = msix
        self.bar0 = client.region_info(VFIO_PCI_BAR0_REGION_INDEX)
        self.msix_irq = client.irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
        self.cap = client.read32(0, NVME_CAP) | client.read32(0, NVME_CAP + 4) << 32
        self.dstrd = 4 << ((self.cap >> 32) & 0xF)
        self.mqes = (self.cap & 0xFFFF) + 1
        self.timeout_ms = max(500, ((self.cap >> 24) & 0xFF) * 500)
        self._db_map: mmap.mmap | None = None
        self._db_area: SparseArea | None = None
        self._setup_doorbells()
        if dma == "fd":
            self.mem = client.memory.add_memfd(mem_iova, mem_size)
        else:
            self.mem = client.memory.add_buffer(mem_iova, mem_size)
        client.map_region(self.mem, with_fd=(dma == "fd"))
        self._next_page = mem_iova
        self._end = mem_iova + mem_size
        self.queues: dict[int, HostQueue] = {}
        self.eventfds: dict[int, int] = {}
        self.doorbell_writes = 0

    # plumbing

    def _setup_doorbells(self) -> None:
        areas = self.bar0.sparse_areas or []
        area = next((a for a in areas if a.offset <= NVME_DOORBELLS < a.offset + a.size), None)
        if self.doorbell_mode == "mmap" and (area is None or self.bar0.fd is None):
            raise NvmeHostError(f"BAR0 offers no mmappable doorbell area (areas {areas}, fd {self.bar0.fd})")
        if self.doorbell_mode == "region" or area is None or self.bar0.fd is None:
            self.doorbell_mode = "region"
            return
        self._db_map = mmap.mmap(self.bar0.fd, area.size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=self.bar0.offset + area.offset)
        self._db_area = area
        self.doorbell_mode = "mmap"

    def close(self) -> None:
        """Unmap the doorbell area and close our eventfds (the client closes the rest)."""
        if self._db_map is not None:
            self._db_map.close()
            self._db_map = None
        fds, self.eventfds = self.eventfds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> NvmeHost:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def alloc(self, nbytes: int) -> int:
        """Page-aligned guest memory (bump allocator, never freed; zeroed)."""
        pages = -(-nbytes // PAGE_SIZE)
        iova = self._next_page
        if iova + pages * PAGE_SIZE > self._end:
            raise NvmeHostError("guest memory exhausted")
        self._next_page += pages * PAGE_SIZE
        self.client.memory.write(iova, bytes(pages * PAGE_SIZE))
        return iova

    def reg_read(self, offset: int) -> int:
        """A 32-bit BAR0 register read."""
        return self.client.read32(0, offset)

    def reg_write(self, offset: int, value: int) -> None:
        """A 32-bit BAR0 register write."""
        self.client.write32(0, offset, value)

    def reg_write64(self, offset: int, value: int) -> None:
        """A 64-bit register as two dword writes, low first (Linux lo_hi_writeq)."""
        self.reg_write(offset, value & 0xFFFFFFFF)
        self.reg_write(offset + 4, value >> 32)

    def config_write(self, offset: int, value: int, size: int) -> None:
        """A PCI config space write."""
        self.client.region_write(VFIO_PCI_CONFIG_REGION_INDEX, offset, value.to_bytes(size, "little"))

    def config_read(self, offset: int, size: int) -> int:
        """A PCI config space read."""
        return int.from_bytes(self.client.region_read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size), "little")

    def ring(self, index: int, value: int) -> None:
        """Doorbell ``index`` (2*qid for SQ tail, 2*qid+1 for CQ head)."""
        offset = NVME_DOORBELLS + index * self.dstrd
        self.doorbell_writes += 1
        if self._db_map is not None and self._db_area is not None:
            struct.pack_into("<I", self._db_map, offset - self._db_area.offset, value)
        else:
            self.client.write32(0, offset, value, no_reply=self.posted_doorbells)

    def _service(self, timeout: float) -> None:
        # Serve DMA requests while we wait; with fd-mapped memory this just sleeps.
        self.client.poll(timeout)

    # bring-up

    def enable_pci(self) -> None:
        """Memory space + bus master + INTx disable, MSI-X enabled (function unmasked)."""
        command = self.config_read(PCI_COMMAND, 2)
        self.config_write(PCI_COMMAND, command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
                          | PCI_COMMAND_INTX_DISABLE, 2)
        self.set_msix_control(enable=True, function_mask=False)

    def set_msix_control(self, *, enable: bool, function_mask: bool) -> None:
        """Write MSI-X Message Control's Enable and Function Mask bits."""
        control = self.config_read(self.msix.control, 2)
        control &= ~(MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL)
        control |= (MSIX_FLAGS_ENABLE if enable else 0) | (MSIX_FLAGS_MASKALL if function_mask else 0)
        self.config_write(self.msix.control, control, 2)

    def set_vector_eventfds(self, vectors: Iterable[int]) -> None:
        """Give the server an eventfd per vector (SET_IRQS MSIX TRIGGER DATA_EVENTFD)."""
        for vector in vectors:
            if vector in self.eventfds:
                continue
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.eventfds[vector] = fd
            self.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, vector, 1, VFIO_IRQ_SET_ACTION_TRIGGER,
                                 eventfds=[fd])

    def forget_vector_eventfds(self) -> None:
        """Close our eventfds so the next bring-up sends fresh ones, as QEMU re-sends
        SET_IRQS after a device reset (the server may or may not have kept the old ones)."""
        fds, self.eventfds = self.eventfds, {}
        for fd in fds.values():
            os.close(fd)

    def wait_ready(self, ready: bool, timeout: float | None = None) -> None:
        """Wait for CSTS.RDY to become ``ready``."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout_ms / 1000)
        while True:
            csts = self.reg_read(NVME_CSTS)
            if csts == 0xFFFFFFFF or csts & CSTS_CFS:
                raise NvmeHostError(f"CSTS {csts:#x}: controller fatal status")
            if bool(csts & CSTS_RDY) == ready:
                return
            if time.monotonic() > deadline:
                raise NvmeHostError(f"CSTS.RDY did not become {int(ready)} (CSTS {csts:#x})")
            self._service(0.001)

    def enable(self, admin_entries: int = 32) -> None:
        """PCI enable, then the controller: disable, admin queues, CC.EN=1, wait RDY."""
        self.enable_pci()
        self.set_vector_eventfds([0])
        self.reg_write(NVME_CC, 0)
        self.wait_ready(False)
        self.queues.clear()
        asq = self.alloc(admin_entries * SQE_SIZE)
        acq = self.alloc(admin_entries * CQE_SIZE)
        self.queues[0] = HostQueue(0, admin_entries, asq, acq, 0, True)
        self.reg_write(NVME_AQA, (admin_entries - 1) << 16 | (admin_entries - 1))
        self.reg_write64(NVME_ASQ, asq)
        self.reg_write64(NVME_ACQ, acq)
        self.reg_write(NVME_CC, CC_EN | CC_IOSQES_64 | CC_IOCQES_16)
        self.wait_ready(True)

    # commands

    def submit(self, qid: int, sqe: bytes) -> int:
        """Write ``sqe`` (its CID replaced) at the SQ tail and ring; returns the CID."""
        q = self.queues[qid]
        cid = q.next_cid
        q.next_cid = (q.next_cid + 1) & 0xFFFF
        sqe = sqe[:2] + struct.pack("<H", cid) + sqe[4:]
        self.client.memory.write(q.sq_iova + q.sq_tail * SQE_SIZE, sqe)
        q.sq_tail = (q.sq_tail + 1) % q.entries
        self.ring(2 * qid, q.sq_tail)
        return cid

    def reap(self, qid: int) -> int:
        """Consume every CQE with the current phase, ring the CQ head; returns the count."""
        q = self.queues[qid]
        count = 0
        while True:
            entry = q.cq_iova + q.cq_head * CQE_SIZE
            raw = self.client.memory.read(entry, CQE_SIZE)
            if (raw[14] & 1) != q.phase:
                break
            completion = Completion.decode(raw)
            q.done[completion.cid] = completion
            q.cq_head += 1
            if q.cq_head == q.entries:
                q.cq_head, q.phase = 0, q.phase ^ 1
            count += 1
        if count:
            self.ring(2 * qid + 1, q.cq_head)
        return count

    def wait(self, qid: int, cid: int, *, irq: bool | None = None, timeout: float = 3.0) -> Completion:
        """Wait for ``cid``'s completion on queue ``qid``.

        With ``irq`` (default: the queue's setting) the CQ is only looked at
        after the vector's eventfd fired, so a missing interrupt times out.
        """
        q = self.queues[qid]
        use_irq = q.irq if irq is None else irq
        deadline = time.monotonic() + timeout
        while cid not in q.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NvmeHostError(f"no completion for qid {qid} cid {cid} within {timeout} s"
                                    + (" (waiting on the interrupt)" if use_irq else ""))
            if use_irq:
                efd = self.eventfds[q.vector]
                sock_fd = self.client.sock.fileno()
                ready = select.select([efd, sock_fd], [], [], min(left, 0.1))[0]
                if sock_fd in ready:
                    self.client.poll(0)
                if efd in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(efd)
                    self.reap(qid)
            else:
                if not self.reap(qid):
                    self._service(0.0005)
        return q.done.pop(cid)

    def command(self, qid: int, sqe: bytes, *, irq: bool | None = None, timeout: float = 3.0) -> Completion:
        """Submit and wait."""
        return self.wait(qid, self.submit(qid, sqe), irq=irq, timeout=timeout)

    def admin(self, sqe: bytes, *, check: bool = True) -> Completion:
        """An admin command, completion by polling (the admin vector is not always wired)."""
        completion = self.command(0, sqe, irq=False)
        if check and not completion.ok:
            raise NvmeHostError(f"admin opcode {sqe[0]:#x} failed: {completion}")
        return completion

    def identify(self, cns: int, nsid: int = 0) -> bytes:
        """Identify with a one-page buffer; returns the 4 KiB data."""
        buf = self.alloc(PAGE_SIZE)
        self.admin(build_sqe(ADMIN_IDENTIFY, nsid=nsid, prp1=buf, cdw10=cns))
        return self.client.memory.read(buf, PAGE_SIZE)

    def identify_controller(self) -> IdentifyController:
        """Identify Controller (CNS 01h)."""
        return IdentifyController.parse(self.identify(1))

    def identify_namespace(self, nsid: int = 1) -> IdentifyNamespace:
        """Identify Namespace (CNS 00h)."""
        return IdentifyNamespace.parse(self.identify(0, nsid))

    def create_io_queue_pair(self, qid: int, entries: int = 64, *, vector: int | None = None,
                             irq: bool = True) -> HostQueue:
        """Create I/O CQ ``qid`` (interrupts on ``vector``, default ``qid``) and SQ ``qid``."""
        vector = qid if vector is None else vector
        entries = min(entries, self.mqes)
        if irq:
            self.set_vector_eventfds([vector])
        cq = self.alloc(entries * CQE_SIZE)
        sq = self.alloc(entries * SQE_SIZE)
        self.admin(build_sqe(ADMIN_CREATE_CQ, prp1=cq, cdw10=(entries - 1) << 16 | qid,
                             cdw11=vector << 16 | (2 if irq else 0) | 1))
        self.admin(build_sqe(ADMIN_CREATE_SQ, prp1=sq, cdw10=(entries - 1) << 16 | qid,
                             cdw11=qid << 16 | 1))
        q = HostQueue(qid, entries, sq, cq, vector, irq)
        self.queues[qid] = q
        return q

    def _prps(self, buf: int, length: int) -> tuple[int, int]:
        pages = [buf + i * PAGE_SIZE for i in range(-(-length // PAGE_SIZE))]
        if len(pages) == 1:
            return pages[0], 0
        if len(pages) == 2:
            return pages[0], pages[1]
        if len(pages) - 1 > PAGE_SIZE // 8:
            raise NvmeHostError("transfer too large for one PRP list page")
        plist = self.alloc(PAGE_SIZE)
        self.client.memory.write(plist, b"".join(struct.pack("<Q", p) for p in pages[1:]))
        return pages[0], plist

    def io(self, qid: int, opcode: int, nsid: int, slba: int, nlb: int, buf: int, length: int,
           *, irq: bool | None = None) -> Completion:
        """One Read/Write of ``nlb`` blocks at ``slba`` through ``buf`` (PRPs built here)."""
        prp1, prp2 = self._prps(buf, length)
        sqe = build_sqe(opcode, nsid=nsid, prp1=prp1, prp2=prp2, cdw10=slba & 0xFFFFFFFF,
                        cdw11=slba >> 32, cdw12=nlb - 1)
        return self.command(qid, sqe, irq=irq)

    def write(self, qid: int, slba: int, data: bytes, *, lba_size: int = 512, nsid: int = 1,
              irq: bool | None = None) -> Completion:
        """Write ``data`` (a whole number of blocks) at ``slba``."""
        buf = self.alloc(len(data))
        self.client.memory.write(buf, data)
        return self.io(qid, IO_WRITE, nsid, slba, len(data) // lba_size, buf, len(data), irq=irq)

    def read(self, qid: int, slba: int, nlb: int, *, lba_size: int = 512, nsid: int = 1,
             irq: bool | None = None) -> bytes:
        """Read ``nlb`` blocks at ``slba``; raises on a failed completion."""
        length = nlb * lba_size
        buf = self.alloc(length)
        completion = self.io(qid, IO_READ, nsid, slba, nlb, buf, length, irq=irq)
        if not completion.ok:
            raise NvmeHostError(f"read failed: {completion}")
        return self.client.memory.read(buf, length)

    # MSI-X through the protocol

    def pba_bits(self) -> int:
        """The first PBA qword, read from the BAR the capability names."""
        data = self.client.region_read(self.msix.pba_bar, self.msix.pba_offset, 8)
        return int.from_bytes(data, "little")

    def mask_vector(self, vector: int, masked: bool) -> None:
        """SET_IRQS MSIX ACTION_MASK/UNMASK for one vector (DATA_NONE)."""
        action = VFIO_IRQ_SET_ACTION_MASK if masked else VFIO_IRQ_SET_ACTION_UNMASK
        self.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, vector, 1, action)


def fd_count() -> int:
    """Open fds of this process."""
    return len(os.listdir("/proc/self/fd"))


# -- test scaffolding ---------------------------------------------------------------------------


def short_socket_path(tag: str = "vu") -> tuple[str, str]:
    """A fresh directory under /tmp and a socket path in it (sun_path is 108 bytes,
    too short for pytest's tmp_path)."""
    import tempfile

    directory = tempfile.mkdtemp(prefix=f"nvmefast-{tag}-", dir="/tmp")
    return directory, os.path.join(directory, "s")


def wait_closed_or_reply(client: VfioUserClient, timeout: float = 2.0) -> Message | None:
    """The next message from the server, or None if it closed the connection (EOF or reset)."""
    client.sock.settimeout(timeout)
    try:
        return client.recv_message()
    except (ConnectionClosed, ConnectionResetError):
        return None
    finally:
        client.sock.settimeout(client.timeout)


def make_config(**overrides: object) -> ControllerConfig:
    """The ControllerConfig the vfio-user tests use, with ``overrides``."""
    from nvmefast import ControllerConfig, NamespaceConfig

    kwargs: dict[str, object] = {
        "namespaces": [NamespaceConfig(size_bytes=16 << 20, lba_size=512, backend="ram")],
        "serial": "VFIOUSER-SN-0042",
        "model": "nvmefast over vfio-user",
        "max_io_queue_pairs": 4,
        "poll_us": 50,
    }
    kwargs.update(overrides)
    return ControllerConfig(**kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_server(
    config: ControllerConfig | None = None, doorbells: str = "mmap"
) -> Iterator[tuple[VfioUserServer, str]]:
    """A started ``VfioUserServer`` on a fresh socket, stopped (and its directory removed) after."""
    import shutil

    from nvmefast.vfio_user import VfioUserServer

    directory, path = short_socket_path()
    try:
        server = VfioUserServer(path, config if config is not None else make_config(), doorbells=doorbells)
        try:
            server.start()
            yield server, path
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
