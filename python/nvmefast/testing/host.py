"""``Host``: an NVMe host driver in Python, doing what the Linux nvme driver does.

It drives a :class:`nvmefast.Controller` only through the embedding contract a
VMM uses (DMA maps of memfds, BAR0 reads and writes, per-vector eventfds),
so tests exercise the same paths a real guest does: register bring-up,
queues in guest memory, PRPs, doorbells, phase tags and interrupts.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from nvmefast.controller import Controller
from nvmefast.errors import CommandError, HostTimeoutError, NvmeFastError
from nvmefast.testing import sqe as op
from nvmefast.testing.bar0 import (
    CC_CSS_SHIFT, CC_EN, CC_LINUX, CC_SHN_MASK, CC_SHN_NORMAL, CSTS_RDY, CSTS_SHST_COMPLETE, CSTS_SHST_MASK,
    CSTS_SHST_SHIFT, REG_ACQ, REG_AQA, REG_ASQ, REG_CAP, REG_CC, REG_CSTS, cq_head_doorbell,
    cc_linux, sq_tail_doorbell,
)
from nvmefast.testing.doorbells import HostDoorbells, ShadowBuffers, dbbuf_set
from nvmefast.testing.identify import IdentifyController, IdentifyNamespace
from nvmefast.testing.memory import PAGE_SIZE, GuestMemory
from nvmefast.testing.msix import enable_msix
from nvmefast.testing.nvm import CDW12_FUA
from nvmefast.testing.prp import PrpSet, build_prps, data_pointers
from nvmefast.testing.queues import CompletionQueue, QueuePair, SubmissionQueue, Vector
from nvmefast.testing.sgl import DESCRIPTORS_PER_PAGE, SglDescriptor, SglSet, build_sgl
from nvmefast.testing.sqe import CQE_SIZE, SQE_SIZE, Completion, build_sqe, sqe_with_cid
from nvmefast.testing import zns
from nvmefast.testing.zns import ZoneDescriptor, ZoneReport

MiB = 1 << 20


def command_error(completion: Completion, opcode: int, what: str) -> CommandError:
    """The CommandError for a failed completion, naming the command."""
    return CommandError(completion.status, opcode, f"{what}: {completion}")


class Host:
    """A host driver for an in-process :class:`nvmefast.Controller`.

    ``memory_bytes`` of guest RAM (a memfd) is mapped at ``iova``; with
    ``remote_memory`` it is remote instead (no fd: the controller reaches it
    through DMA transport callbacks the host serves, as a vfio-user client
    does for DMA_READ/DMA_WRITE); with ``sealed_memory`` the memfd is
    sealed against resizing as QEMU seals guest RAM (the controller trusts
    it: no SIGBUS guard; unsealed, the default, it is guarded). With
    ``irq`` the host waits for completions on per-vector eventfds, as Linux
    does with MSI-X; without it every CQ is polled by phase tag. Use
    :meth:`enable` to bring the controller up like ``nvme_pci_enable`` does.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        memory_bytes: int = 64 * MiB,
        iova: int = 0x1_0000_0000,
        admin_entries: int = 32,
        irq: bool = True,
        remote_memory: bool = False,
        sealed_memory: bool = False,
    ) -> None:
        self.controller = controller
        self.irq = irq
        self.admin_entries = admin_entries
        self.mem = GuestMemory()
        self.interrupts: Counter[int] = Counter()
        """Eventfd signals received per vector (the eventfd counter values read)."""
        self._lock = threading.RLock()
        self._sqs: dict[int, SubmissionQueue] = {}
        self._cqs: dict[int, CompletionQueue] = {}
        self._vectors: dict[int, Vector] = {}
        self._poll_locks: dict[int, threading.Lock] = {}
        self._lba_sizes: dict[int, int] = {}
        self._closed = False
        self.cap: int = controller.bar0_read(REG_CAP, 8)
        self.dstrd: int = (self.cap >> 32) & 0xF
        self.mqes: int = self.cap & 0xFFFF
        self.add_region(iova, memory_bytes, remote=remote_memory, sealed=sealed_memory)
        self.doorbells = HostDoorbells(controller, self.mem)
        """How doorbells are rung (``doorbells.set_mode``): MMIO, shadow, page, ioeventfd."""

    # lifecycle

    def __enter__(self) -> Host:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Disable the controller if it is still up, unmap guest memory, close every fd."""
        if self._closed:
            return
        self._closed = True
        # NvmeFastError here means the controller was closed first and already
        # dropped its maps and notifiers; teardown order must not matter.
        with contextlib.suppress(NvmeFastError):
            # Stop the device from touching queues before their memory goes away.
            if self.controller.bar0_read(REG_CC, 4) & CC_EN:
                self.disable(timeout=2)
        self.doorbells.close()
        for region in self.mem.regions:
            with contextlib.suppress(NvmeFastError):
                self.controller.unmap_dma(region.iova, region.size)
        if any(region.fd < 0 for region in self.mem.regions):
            with contextlib.suppress(NvmeFastError):
                self.controller.set_dma_transport(None, None)
        for vector in self._vectors.values():
            if vector.eventfd is not None:
                with contextlib.suppress(NvmeFastError):
                    self.controller.set_vector_eventfd(vector.number, None)
                os.close(vector.eventfd)
        self._vectors.clear()
        self.mem.close()

    # guest memory

    def add_region(self, iova: int, size: int, *, remote: bool = False, sealed: bool = False) -> int:
        """Add a memfd of ``size`` bytes and map it for DMA at ``iova``; returns ``iova``.

        ``remote``: anonymous memory mapped with ``map_dma_remote``, served by
        this host's memory as the controller's DMA transport. ``sealed``: the
        memfd is sealed against resizing, as QEMU seals guest RAM (the
        controller trusts it and skips its SIGBUS guard).
        """
        region = self.mem.add_region(iova, size, remote=remote, sealed=sealed)
        try:
            if remote:
                self.controller.map_dma_remote(iova, size, True)
                self.controller.set_dma_transport(self.mem.read, self.mem.write)
            else:
                self.controller.map_dma(iova, size, region.fd, 0, True)
        except BaseException:
            self.mem.remove_region(iova)
            raise
        return iova

    def remove_region(self, iova: int) -> None:
        """Unmap the region starting at ``iova`` from the controller, then free it."""
        region = next(r for r in self.mem.regions if r.iova == iova)
        self.controller.unmap_dma(region.iova, region.size)
        self.mem.remove_region(iova)

    def alloc(self, nbytes: int, align: int = PAGE_SIZE, region: int | None = None) -> int:
        """Allocate zeroed guest memory; returns its IOVA (``region``: a region's IOVA)."""
        return self.mem.alloc(nbytes, align, region)

    def free(self, iova: int) -> None:
        """Free memory returned by :meth:`alloc`."""
        self.mem.free(iova)

    def read_mem(self, iova: int, n: int) -> bytes:
        """Read ``n`` bytes of guest memory."""
        return self.mem.read(iova, n)

    def write_mem(self, iova: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` into guest memory."""
        self.mem.write(iova, data)

    # registers

    def sq_doorbell(self, qid: int) -> int:
        """BAR0 offset of SQ ``qid``'s tail doorbell."""
        return sq_tail_doorbell(qid, self.dstrd)

    def cq_doorbell(self, qid: int) -> int:
        """BAR0 offset of CQ ``qid``'s head doorbell."""
        return cq_head_doorbell(qid, self.dstrd)

    def csts(self) -> int:
        """The current CSTS register."""
        return int(self.controller.bar0_read(REG_CSTS, 4))

    def _wait_csts(self, mask: int, value: int, timeout: float, what: str) -> None:
        # nvme_wait_ready: poll CSTS until the masked bits match, or time out.
        deadline = time.monotonic() + timeout
        while True:
            csts = self.csts()
            if csts & mask == value:
                return
            if time.monotonic() > deadline:
                raise HostTimeoutError(
                    f"{what}: CSTS={csts:#x} did not reach {value:#x} under mask {mask:#x} "
                    f"within {timeout}s"
                )
            time.sleep(0.0005)

    def _writeq_lo_hi(self, offset: int, value: int) -> None:
        # Linux lo_hi_writeq: two 32-bit writes, low half first.
        self.controller.bar0_write(offset, value & 0xFFFF_FFFF, 4)
        self.controller.bar0_write(offset + 4, value >> 32, 4)

    def disable(self, timeout: float = 5) -> None:
        """Clear CC.EN and wait for CSTS.RDY = 0 (a controller reset); forget all queues."""
        cc = int(self.controller.bar0_read(REG_CC, 4))
        self.controller.bar0_write(REG_CC, cc & ~CC_EN, 4)
        self._wait_csts(CSTS_RDY, 0, timeout, "disable (CC.EN=0)")
        self.doorbells.controller_reset()
        with self._lock:
            # The reset deleted every queue in the controller; their memory is ours again.
            for sq in self._sqs.values():
                self.mem.free(sq.iova)
            for cq in self._cqs.values():
                self.mem.free(cq.iova)
            self._sqs.clear()
            self._cqs.clear()
            for vector in self._vectors.values():
                vector.cqs.clear()

    def enable(self, timeout: float = 5, *, css: int | None = None) -> None:
        """Bring the controller up as ``nvme_pci_configure_admin_queue`` + ``nvme_enable_ctrl`` do.

        CC.CSS is what Linux picks (110b when CAP.CSS offers I/O Command Set
        selection, else 000b) unless ``css`` gives it (0b000, 0b110, 0b111).
        """
        self.cap = int(self.controller.bar0_read(REG_CAP, 8))
        self.dstrd = (self.cap >> 32) & 0xF
        self.mqes = self.cap & 0xFFFF
        # nvme_pci_enable allocates vectors before touching the controller.
        self.enable_msix()
        self.disable(timeout)
        entries = self.admin_entries
        sq_iova = self.alloc(entries * SQE_SIZE)
        cq_iova = self.alloc(entries * CQE_SIZE)
        # AQA: ACQS 27:16 and ASQS 11:0, both 0's based.
        self.controller.bar0_write(REG_AQA, (entries - 1) << 16 | (entries - 1), 4)
        self._writeq_lo_hi(REG_ASQ, sq_iova)
        self._writeq_lo_hi(REG_ACQ, cq_iova)
        # Program CC without EN, read it back (flushes the posted write on PCI), then set EN.
        cc = cc_linux(self.cap) if css is None else CC_LINUX | css << CC_CSS_SHIFT
        self.controller.bar0_write(REG_CC, cc, 4)
        self.controller.bar0_read(REG_CC, 4)
        self.controller.bar0_write(REG_CC, cc | CC_EN, 4)
        self._wait_csts(CSTS_RDY, CSTS_RDY, timeout, "enable (CC.EN=1)")
        with self._lock:
            self._sqs[0] = SubmissionQueue(0, sq_iova, entries, 0)
            self._register_cq(0, cq_iova, entries, 0, self.irq)

    def shutdown(self, timeout: float = 5) -> None:
        """Normal shutdown: CC.SHN = 01b, then wait for CSTS.SHST = 10b."""
        cc = int(self.controller.bar0_read(REG_CC, 4))
        self.controller.bar0_write(REG_CC, (cc & ~CC_SHN_MASK) | CC_SHN_NORMAL, 4)
        shst_complete = CSTS_SHST_COMPLETE << CSTS_SHST_SHIFT
        self._wait_csts(CSTS_SHST_MASK, shst_complete, timeout, "shutdown (CC.SHN=01b)")

    def enable_shadow_doorbells(self, admin: bool = False) -> ShadowBuffers:
        """Doorbell Buffer Config (7Ch) as Linux ``nvme_dbbuf_set``; I/O queues (and
        with ``admin`` the admin queue) then ring through the shadow buffer."""
        return dbbuf_set(self, admin)

    @property
    def mmio_doorbells(self) -> int:
        """MMIO doorbell writes this host made."""
        return self.doorbells.mmio_writes

    # vectors

    def enable_msix(self) -> bool:
        """With a device MSI-X table, program every entry and enable MSI-X as
        ``pci_enable_msix`` does (see :mod:`nvmefast.testing.msix`); False if
        the embedder manages MSI-X."""
        return enable_msix(self.controller)

    def vector_fd(self, vector: int) -> int:
        """The eventfd the host attached to ``vector`` (creating it if needed)."""
        fd = self._vector(vector).eventfd
        assert fd is not None
        return fd

    def _vector(self, number: int) -> Vector:
        # Non-blocking, so a racing reader never blocks: select() says when to read.
        with self._lock:
            vector = self._vectors.get(number)
            if vector is None:
                fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                try:
                    self.controller.set_vector_eventfd(number, fd)
                except BaseException:
                    os.close(fd)
                    raise
                vector = self._vectors[number] = Vector(number, fd)
            return vector

    def _register_cq(self, qid: int, iova: int, entries: int, vector: int, irq: bool) -> None:
        cq = CompletionQueue(qid, iova, entries, vector, irq)
        self._cqs[qid] = cq
        if irq:
            self._vector(vector).cqs.append(cq)
        self._poll_locks.setdefault(qid, threading.Lock())

    # submission and completion

    def submit(self, sqe: bytes, qid: int = 0, *, keep_cid: bool = False, timeout: float = 5) -> int:
        """Write a raw 64-byte SQE at SQ ``qid``'s tail and ring its doorbell; returns the CID.

        The CID field is replaced by a free CID unless ``keep_cid``. If the SQ
        is full, reaps completions until a slot frees up.
        """
        sq = self._sqs.get(qid)
        if sq is None:
            raise NvmeFastError(f"submit: SQ {qid} does not exist on this host")
        deadline = time.monotonic() + timeout
        while True:
            with sq.lock:
                if not sq.full():
                    cid = op.sqe_cid(sqe) if keep_cid else sq.take_cid()
                    if cid is not None:
                        self.mem.write(sq.slot_iova(), sqe if keep_cid else sqe_with_cid(sqe, cid))
                        sq.outstanding.add(cid)
                        # Ring under the SQ lock so tail doorbell values are monotonic.
                        self.doorbells.ring(2 * qid, sq.advance_tail())
                        return cid
            self._progress(self._cqs[sq.cqid], deadline, f"SQ {qid} is full")

    def wait(self, qid: int, cid: int, timeout: float = 5) -> Completion:
        """Wait for the completion of command ``cid`` submitted on SQ ``qid``."""
        sq = self._sqs.get(qid)
        if sq is None:
            raise NvmeFastError(f"wait: SQ {qid} does not exist on this host")
        cq = self._cqs[sq.cqid]
        deadline = time.monotonic() + timeout
        key = (qid, cid)
        while True:
            completion = cq.done.pop(key, None)
            if completion is not None:
                return completion
            self._progress(cq, deadline, f"SQ {qid} CID {cid} (CQ {cq.qid}, vector {cq.vector})")

    def reap(self, cqid: int) -> int:
        """Consume new CQEs of CQ ``cqid`` by phase tag now, without touching any eventfd.

        Returns how many were consumed; :meth:`wait` and :meth:`poll` return them.
        """
        cq = self._cqs[cqid]
        with self._poll_locks[cqid]:
            return cq.drain(self.mem, self._retire, self._ring_cq_head)

    def poll(self, qid: int, cid: int, timeout: float = 5) -> Completion:
        """Like :meth:`wait` but spin on the phase tag and never read the eventfd.

        For tests that must leave the vector's eventfd alone (masking).
        """
        cq = self._cqs[self._sqs[qid].cqid]
        deadline = time.monotonic() + timeout
        while True:
            self.reap(cq.qid)
            completion = cq.done.pop((qid, cid), None)
            if completion is not None:
                return completion
            if time.monotonic() > deadline:
                raise HostTimeoutError(f"SQ {qid} CID {cid}: no completion within {timeout}s (polled)")
            time.sleep(0.0001)

    def admin(self, sqe: bytes, timeout: float = 5) -> Completion:
        """Submit an admin SQE and wait for its completion (never raises on a failed status)."""
        return self.wait(0, self.submit(sqe, 0, timeout=timeout), timeout)

    def io(self, sqe: bytes, qid: int = 1, timeout: float = 5) -> Completion:
        """Submit an I/O SQE on ``qid`` and wait for its completion (never raises on a failed status)."""
        return self.wait(qid, self.submit(sqe, qid, timeout=timeout), timeout)

    def _retire(self, completion: Completion) -> bool:
        sq = self._sqs.get(completion.sqid)
        if sq is None:
            return False
        with sq.lock:
            known = completion.cid in sq.outstanding
            sq.retire(completion.cid, completion.sqhd)
        return known

    def _ring_cq_head(self, qid: int, head: int) -> None:
        self.doorbells.ring(2 * qid + 1, head)

    def _progress(self, cq: CompletionQueue, deadline: float, what: str) -> None:
        """Reap new completions of ``cq`` once, waiting until ``deadline`` for some to arrive.

        In irq mode completions are reaped only after the vector's eventfd
        fired, as a driver's interrupt handler does, so a missing interrupt
        shows up as a timeout instead of being papered over by polling.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HostTimeoutError(
                f"{what}: no completion within the timeout (CSTS={self.csts():#x}, "
                f"pending vectors {sorted(self.controller.pending_vectors())})"
            )
        vector = self._vectors.get(cq.vector) if cq.irq else None
        if vector is None or vector.eventfd is None:
            with self._poll_locks[cq.qid]:
                found = cq.drain(self.mem, self._retire, self._ring_cq_head)
            if not found:
                time.sleep(min(remaining, 0.0001))
            return
        vector.wait(remaining, self._on_interrupt)

    def _on_interrupt(self, vector: Vector, signals: int) -> None:
        # The interrupt handler: count the signals, then drain every CQ of the vector.
        self.interrupts[vector.number] += signals
        for cq in vector.cqs:
            with self._poll_locks[cq.qid]:
                cq.drain(self.mem, self._retire, self._ring_cq_head)

    # PRPs and data buffers

    def build_prps(self, entries: Sequence[int]) -> PrpSet:
        """PRP1/PRP2 (and PRP list pages, allocated here) for data at these page pointers."""
        return build_prps(entries, lambda: self.alloc(PAGE_SIZE), self.mem.write)

    def free_prps(self, prps: PrpSet) -> None:
        """Free the PRP list pages of ``prps``."""
        for page in prps.list_pages:
            self.free(page)

    def build_sgl(self, descriptors: Sequence[SglDescriptor], *,
                  per_segment: int = DESCRIPTORS_PER_PAGE) -> SglSet:
        """SGL1 (and segment lists, allocated here) for these data descriptors;
        see :func:`nvmefast.testing.sgl.build_sgl`. Use ``**sgl.dptr()`` in an SQE."""
        return build_sgl(descriptors, self.alloc, self.mem.write, per_segment=per_segment)

    def free_sgl(self, sgls: SglSet) -> None:
        """Free the segment lists of ``sgls``."""
        for page in sgls.segment_lists:
            self.free(page)

    # admin commands

    def _admin_ok(self, sqe: bytes, what: str, timeout: float = 5) -> Completion:
        completion = self.admin(sqe, timeout)
        if not completion.ok:
            raise command_error(completion, sqe[0], what)
        return completion

    def _admin_read(self, sqe_args: dict[str, int], opcode: int, length: int, what: str) -> bytes:
        buf = self.alloc(length)
        prps = self.build_prps(data_pointers(buf, length))
        try:
            self._admin_ok(build_sqe(opcode, prp1=prps.prp1, prp2=prps.prp2, **sqe_args), what)
            return self.mem.read(buf, length)
        finally:
            self.free_prps(prps)
            self.free(buf)

    def identify(self, cns: int, nsid: int = 0, cntid: int = 0, *, csi: int = 0) -> bytes:
        """Raw Identify data (4096 bytes) for ``cns`` (``csi``: CDW11 bits 31:24)."""
        return self._admin_read(
            {"nsid": nsid, "cdw10": cns | cntid << 16, "cdw11": csi << 24}, op.ADMIN_IDENTIFY, 4096,
            f"Identify CNS {cns:#04x} NSID {nsid} CSI {csi}"
        )

    def identify_controller(self) -> IdentifyController:
        """Identify Controller (CNS 01h), parsed; ``.raw`` has the 4096 bytes."""
        return IdentifyController.parse(self.identify(0x01))

    def identify_namespace(self, nsid: int) -> IdentifyNamespace:
        """Identify Namespace (CNS 00h), parsed; also remembers its LBA size for read/write."""
        ns = IdentifyNamespace.parse(self.identify(0x00, nsid))
        if ns.nsze:
            self._lba_sizes[nsid] = ns.lba_size
        return ns

    def get_log_page(self, lid: int, nbytes: int, *, nsid: int = 0xFFFF_FFFF, rae: bool = False,
                     offset: int = 0) -> bytes:
        """Get Log Page ``lid``: ``nbytes`` (a multiple of 4) from byte ``offset``."""
        numd = nbytes // 4 - 1
        args = {
            "nsid": nsid,
            "cdw10": lid | int(rae) << 15 | (numd & 0xFFFF) << 16,
            "cdw11": numd >> 16,
            "cdw12": offset & 0xFFFF_FFFF,
            "cdw13": offset >> 32,
        }
        return self._admin_read(args, op.ADMIN_GET_LOG_PAGE, nbytes, f"Get Log Page {lid:#04x}")

    def get_features(self, fid: int, cdw11: int = 0, nsid: int = 0) -> int:
        """Get Features ``fid`` (current value); returns CQE DW0."""
        return self._admin_ok(build_sqe(op.ADMIN_GET_FEATURES, nsid=nsid, cdw10=fid, cdw11=cdw11),
                              f"Get Features {fid:#04x}").dw0

    def set_features(self, fid: int, cdw11: int = 0, nsid: int = 0) -> int:
        """Set Features ``fid``; returns CQE DW0."""
        return self._admin_ok(build_sqe(op.ADMIN_SET_FEATURES, nsid=nsid, cdw10=fid, cdw11=cdw11),
                              f"Set Features {fid:#04x}").dw0

    def set_num_queues(self, nsq: int, ncq: int) -> tuple[int, int]:
        """Set Features Number of Queues (07h) with 1-based counts; returns (NSQA, NCQA) 1-based."""
        dw0 = self.set_features(op.FEATURE_NUMBER_OF_QUEUES, (ncq - 1) << 16 | (nsq - 1))
        return (dw0 & 0xFFFF) + 1, (dw0 >> 16) + 1

    def submit_aer(self) -> int:
        """Submit one Asynchronous Event Request; returns its CID (wait on qid 0)."""
        return self.submit(build_sqe(op.ADMIN_ASYNC_EVENT_REQUEST), 0)

    def create_io_cq(self, qid: int, entries: int, vector: int, irq: bool = True, region: int | None = None) -> int:
        """Create I/O CQ ``qid`` (physically contiguous; in the region at IOVA ``region``, default the first)."""
        iova = self.alloc(entries * CQE_SIZE, region=region)
        sqe = build_sqe(op.ADMIN_CREATE_CQ, prp1=iova, cdw10=(entries - 1) << 16 | qid,
                        cdw11=vector << 16 | int(irq) << 1 | 1)
        try:
            self._admin_ok(sqe, f"Create I/O CQ {qid}")
        except BaseException:
            self.free(iova)
            raise
        with self._lock:
            # Attach the eventfd before any SQ can post here: no interrupt is lost.
            self._register_cq(qid, iova, entries, vector, irq and self.irq)
        return iova

    def create_io_sq(self, qid: int, entries: int, cqid: int, region: int | None = None) -> int:
        """Create I/O SQ ``qid`` posting to CQ ``cqid`` (in the region at IOVA ``region``); returns its IOVA."""
        iova = self.alloc(entries * SQE_SIZE, region=region)
        sqe = build_sqe(op.ADMIN_CREATE_SQ, prp1=iova, cdw10=(entries - 1) << 16 | qid,
                        cdw11=cqid << 16 | 1)
        try:
            self._admin_ok(sqe, f"Create I/O SQ {qid}")
        except BaseException:
            self.free(iova)
            raise
        with self._lock:
            self._sqs[qid] = SubmissionQueue(qid, iova, entries, cqid)
        return iova

    def create_io_queue_pair(self, qid: int, entries: int | None = None, vector: int | None = None,
                             irq: bool = True) -> QueuePair:
        """Create CQ then SQ ``qid`` as ``nvme_create_queue`` does (PC=1, IEN=irq)."""
        entries = entries if entries is not None else min(256, self.mqes + 1)
        vector = qid if vector is None else vector
        irq = irq and self.irq
        if irq:
            self._vector(vector)
        cq_iova = self.create_io_cq(qid, entries, vector, irq)
        try:
            sq_iova = self.create_io_sq(qid, entries, qid)
        except BaseException:
            self._delete_cq(qid)
            raise
        return QueuePair(qid, entries, vector, irq, sq_iova, cq_iova)

    def delete_io_sq(self, qid: int) -> None:
        """Delete I/O SQ ``qid`` (outstanding commands are aborted by the controller)."""
        self._admin_ok(build_sqe(op.ADMIN_DELETE_SQ, cdw10=qid), f"Delete I/O SQ {qid}")
        with self._lock:
            sq = self._sqs.pop(qid)
        self.free(sq.iova)

    def _delete_cq(self, qid: int) -> None:
        self._admin_ok(build_sqe(op.ADMIN_DELETE_CQ, cdw10=qid), f"Delete I/O CQ {qid}")
        with self._lock:
            cq = self._cqs.pop(qid)
            vector = self._vectors.get(cq.vector)
            if vector is not None and cq in vector.cqs:
                vector.cqs.remove(cq)
        self.free(cq.iova)

    def delete_io_cq(self, qid: int) -> None:
        """Delete I/O CQ ``qid`` (its SQs must be deleted first)."""
        self._delete_cq(qid)

    def delete_io_queue_pair(self, qid: int) -> None:
        """Delete SQ then CQ ``qid`` as ``nvme_disable_io_queues`` does."""
        self.delete_io_sq(qid)
        self.delete_io_cq(qid)

    # NVM I/O commands

    def lba_size(self, nsid: int) -> int:
        """The namespace's LBA data size, from Identify Namespace (cached)."""
        if nsid not in self._lba_sizes:
            self.identify_namespace(nsid)
        return self._lba_sizes[nsid]

    def _rw(self, opcode: int, nsid: int, slba: int, nlb: int, qid: int, entries: Sequence[int],
            timeout: float, cdw12_flags: int = 0) -> Completion:
        prps = self.build_prps(entries)
        try:
            sqe = build_sqe(opcode, nsid=nsid, prp1=prps.prp1, prp2=prps.prp2,
                            cdw10=slba & 0xFFFF_FFFF, cdw11=slba >> 32,
                            cdw12=((nlb - 1) & 0xFFFF) | cdw12_flags)
            return self.io(sqe, qid, timeout)
        finally:
            self.free_prps(prps)

    def read(self, nsid: int, slba: int, nlb: int, qid: int = 1, *, buf_iova: int | None = None,
             entries: Sequence[int] | None = None, timeout: float = 5) -> bytes:
        """Read ``nlb`` blocks from ``slba``; raises CommandError on a failed status.

        The data lands in a fresh buffer, or at ``buf_iova``, or in the pages
        ``entries`` lists (PRP entries: the first may have an offset).
        """
        length = nlb * self.lba_size(nsid)
        owned = buf_iova is None and entries is None
        if entries is None:
            buf_iova = self.alloc(length) if buf_iova is None else buf_iova
            entries = data_pointers(buf_iova, length)
        try:
            completion = self._rw(op.IO_READ, nsid, slba, nlb, qid, entries, timeout)
            if not completion.ok:
                raise command_error(completion, op.IO_READ, f"Read nsid {nsid} slba {slba} nlb {nlb}")
            return self.mem.gather(entries, length)
        finally:
            if owned:
                self.free(entries[0])

    def write(self, nsid: int, slba: int, data: bytes, qid: int = 1, *, buf_iova: int | None = None,
              entries: Sequence[int] | None = None, timeout: float = 5, fua: bool = False) -> None:
        """Write ``data`` (a whole number of blocks) at ``slba``; raises CommandError on failure.

        ``fua`` sets Force Unit Access (CDW12 bit 30): the data is durable
        before the command completes.
        """
        lba = self.lba_size(nsid)
        if not data or len(data) % lba:
            raise ValueError(f"write of {len(data)} bytes is not a whole number of {lba}-byte blocks")
        owned = buf_iova is None and entries is None
        if entries is None:
            buf_iova = self.alloc(len(data)) if buf_iova is None else buf_iova
            entries = data_pointers(buf_iova, len(data))
        try:
            self.mem.scatter(entries, data)
            completion = self._rw(op.IO_WRITE, nsid, slba, len(data) // lba, qid, entries, timeout,
                                  CDW12_FUA if fua else 0)
            if not completion.ok:
                what = f"Write nsid {nsid} slba {slba} nlb {len(data) // lba}"
                raise command_error(completion, op.IO_WRITE, what)
        finally:
            if owned:
                self.free(entries[0])

    def flush(self, nsid: int, qid: int = 1, timeout: float = 5) -> None:
        """Flush ``nsid``; raises CommandError on failure."""
        completion = self.io(build_sqe(op.IO_FLUSH, nsid=nsid), qid, timeout)
        if not completion.ok:
            raise command_error(completion, op.IO_FLUSH, f"Flush nsid {nsid}")

    # Zoned Namespace Command Set (nvmefast.testing.zns has the structures)

    def zone_report(self, nsid: int, slba: int = 0, nbytes: int = 4096, *, qid: int = 1,
                    report_filter: int = 0, partial: bool = False, extended: bool = False) -> ZoneReport:
        """One Report Zones (``extended``: Extended Report Zones) into an ``nbytes`` buffer
        from the zone holding ``slba``; raises CommandError on a failed status."""
        zdes_bytes = 0
        if extended:
            idns = zns.IdentifyNamespaceZns.parse(self.identify(0x05, nsid, csi=zns.CSI_ZNS))
            zdes_bytes = 64 * idns.lbafe[self.identify_namespace(nsid).format_index][1]
        action = zns.ZRA_EXTENDED_REPORT if extended else zns.ZRA_REPORT
        c, data = zns.zone_receive(self, nsid, slba, nbytes, qid=qid, action=action,
                                   report_filter=report_filter, partial=partial)  # fmt: skip
        zns.check(c, zns.IO_ZONE_MANAGEMENT_RECEIVE, f"Zone Management Receive nsid {nsid} slba {slba}")
        return ZoneReport.parse(data, zdes_bytes)

    def zones(self, nsid: int, *, qid: int = 1, report_filter: int = 0) -> list[ZoneDescriptor]:
        """Every zone of ``nsid`` (matching ``report_filter``), walked by Partial reports as Linux does."""
        return zns.all_zones(self, nsid, qid=qid, report_filter=report_filter)

    def zone_send(self, nsid: int, slba: int, action: int, *, select_all: bool = False,
                  data: bytes | None = None, qid: int = 1, check: bool = True) -> Completion:
        """Zone Management Send ``action`` (a :class:`~nvmefast.testing.zns.ZoneSendAction`) to the
        zone at ``slba``, or to every zone it applies to with ``select_all``; ``data`` is the
        descriptor extension of Set Zone Descriptor Extension. Raises CommandError on a failed
        status unless ``check`` is False."""
        c = zns.zone_send(self, nsid, slba, action, select_all=select_all, data=data, qid=qid)
        if check:
            zns.check(c, zns.IO_ZONE_MANAGEMENT_SEND, f"Zone Management Send {action:#04x} nsid {nsid} slba {slba}")
        return c

    def zone_append(self, nsid: int, zslba: int, data: bytes, *, qid: int = 1, fua: bool = False) -> int:
        """Zone Append ``data`` to the zone starting at ``zslba``; returns the assigned LBA
        (CQE DW0/DW1). Raises CommandError on a failed status."""
        c = zns.zone_append(self, nsid, zslba, data, qid=qid, cdw12_flags=CDW12_FUA if fua else 0)
        zns.check(c, zns.IO_ZONE_APPEND, f"Zone Append nsid {nsid} zslba {zslba} {len(data)} bytes")
        return zns.assigned_lba(c)

    # misc

    def sq(self, qid: int) -> SubmissionQueue:
        """The host-side state of SQ ``qid`` (tail, head, outstanding CIDs)."""
        return self._sqs[qid]

    def cq(self, qid: int) -> CompletionQueue:
        """The host-side state of CQ ``qid`` (head, phase, unclaimed completions)."""
        return self._cqs[qid]


__all__ = ["Host", "QueuePair", "command_error"]
