"""The BAR0 register file and the CC/CSTS state machine (NVMe 1.4 3.1).

Offsets below 1000h are controller registers, kept here; from 1000h on are
the doorbells, which belong to the core (``engine.doorbell_write``). The
embedder routes every BAR0 access of its guest to :meth:`Registers.read` /
:meth:`Registers.write`. Accesses no driver should make (a size other than
1/2/4/8, past the BAR) raise :class:`RegisterAccessError`; accesses a buggy
or hostile guest can make (misaligned or narrow writes, writes to read-only
registers) are ignored and counted, as QEMU's ``pci_nvme_ub_*`` traces do.
"""

from __future__ import annotations

import collections
import logging
import threading

from nvmefast._core import Engine
from nvmefast.admin import Admin
from nvmefast.admin.command_sets import SUPPORTED_CSS
from nvmefast.config import ControllerConfig
from nvmefast.errors import NvmeFastError, RegisterAccessError
from nvmefast.msix import MsixRegisters, bar_size, layout_after
from nvmefast.structs import NVME_VERSION

__all__ = ["Registers", "bar0_size_for", "doorbells_end"]

log = logging.getLogger(__name__)

# Register offsets.
CAP = 0x00
VS = 0x08
INTMS = 0x0C
INTMC = 0x10
CC = 0x14
CSTS = 0x1C
NSSR = 0x20
AQA = 0x24
ASQ = 0x28
ACQ = 0x30
DOORBELLS = 0x1000

# CAP fields.
CAP_CQR = 1 << 16
CAP_TO_500MS = 20  # CAP.TO: 20 * 500 ms = 10 s for CSTS.RDY to follow CC.EN
CAP_CSS_NVM = 1 << 37  # CSS bit 0: the NVM Command Set
CAP_CSS_IOCS = 1 << 43  # CSS bit 6: one or more I/O Command Sets (CC.CSS 110b)
CAP_CSS_ADMIN_ONLY = 1 << 44  # CSS bit 7: the Admin Command Set only (CC.CSS 111b)
CAP_MPSMIN = 0  # 2 ** (12 + 0) = 4 KiB
CAP_MPSMAX = 4  # 2 ** (12 + 4) = 64 KiB

# CC fields.
CC_EN = 1 << 0
CC_CSS_SHIFT, CC_MPS_SHIFT, CC_AMS_SHIFT, CC_SHN_SHIFT = 4, 7, 11, 14
CC_WRITABLE = 0x00FFFFF1  # EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES
SHN_NONE = 0b00

# CSTS fields.
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_SHIFT = 2
CSTS_NSSRO = 1 << 4
SHST_COMPLETE = 0b10

AQA_MASK = 0x0FFF0FFF  # ASQS 11:0, ACQS 27:16
QUEUE_BASE_MASK = ~0xFFF & (1 << 64) - 1  # ASQ/ACQ bits 11:0 reserved


def _write_back_files(engine: Engine) -> None:
    # Through the core's own descriptors: a path could name another file by
    # now (renamed or replaced since it was opened).
    try:
        engine.flush_all()
    except NvmeFastError:
        log.exception("shutdown: writing back the file namespaces failed")


def doorbells_end(config: ControllerConfig) -> int:
    """First BAR0 offset after the last doorbell."""
    return DOORBELLS + (config.max_io_queue_pairs + 1) * 2 * (4 << config.doorbell_stride)


def bar0_size_for(config: ControllerConfig) -> int:
    """The BAR0 size: a power of two of at least 8 KiB covering every doorbell
    (and the MSI-X table and PBA when they live in BAR0)."""
    needed = doorbells_end(config)
    if config.msix_bar == 0:
        needed = layout_after(0, needed, config.vectors).end
    return bar_size(needed, 0x2000)


class Registers:
    """Controller registers of one controller; see the module docstring."""

    def __init__(self, config: ControllerConfig, engine: Engine, admin: Admin) -> None:
        self.config = config
        self.engine = engine
        self.admin = admin
        self.size = bar0_size_for(config)
        """BAR0 size in bytes."""
        self.doorbell_stride = 4 << config.doorbell_stride
        """Bytes between consecutive doorbells."""
        self.cap = (
            (config.max_queue_entries - 1)
            | CAP_CQR
            | CAP_TO_500MS << 24
            | config.doorbell_stride << 32
            | CAP_CSS_NVM
            | CAP_CSS_IOCS
            | CAP_CSS_ADMIN_ONLY
            | CAP_MPSMIN << 48
            | CAP_MPSMAX << 52
        )
        self.msix: MsixRegisters | None = None
        """The MSI-X table and PBA when they live in BAR0 (``msix_bar=0``)."""
        if config.msix_bar == 0:
            self.msix = MsixRegisters(engine, layout_after(0, doorbells_end(config), config.vectors))
        self.cc = 0
        self.csts = 0  # RDY, SHST, NSSRO, and CFS of a refused CC.CSS; the engine adds its own CFS
        self.aqa = 0
        self.asq = 0
        self.acq = 0
        self.counters: collections.Counter[str] = collections.Counter()
        """Guest misbehaviour, named like QEMU's ``pci_nvme_ub_*`` trace events."""
        # Serialises CC transitions between embedder threads. The worker never
        # takes it, so holding it across engine.reset() cannot deadlock.
        self._lock = threading.Lock()

    # -- access ------------------------------------------------------------

    def check_access(self, offset: int, size: int) -> None:
        """Raise :class:`RegisterAccessError` for an access no embedder should make."""
        if size not in (1, 2, 4, 8):
            raise RegisterAccessError(f"BAR0 access size must be 1, 2, 4 or 8 bytes, got {size}")
        if offset < 0 or offset + size > self.size:
            raise RegisterAccessError(
                f"BAR0 access [{offset:#x}, {offset + size:#x}) is outside BAR0 "
                f"[0, {self.size:#x}); offsets must lie in 0..{self.size - size:#x} for size {size}"
            )

    def read(self, offset: int, size: int) -> int:
        """A guest read of ``size`` bytes at ``offset``, little endian."""
        self.check_access(offset, size)
        if self.msix is not None and self.msix.contains(offset):
            return self.msix.read(offset, size)
        if offset % size:
            self.counters["ub_mmio_read_misaligned"] += 1
        # Assemble from the dwords the access touches; no register has read
        # side effects, so a misaligned read just returns those bytes.
        first = offset & ~0x3
        value = 0
        for i, dword_offset in enumerate(range(first, offset + size, 4)):
            value |= self._read_dword(dword_offset) << (32 * i)
        return (value >> (8 * (offset - first))) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int) -> None:
        """A guest write of ``size`` bytes of ``value`` at ``offset``."""
        self.check_access(offset, size)
        value &= (1 << (8 * size)) - 1
        if self.msix is not None and self.msix.contains(offset):
            self.msix.write(offset, value, size)
        elif size == 4 and offset % 4 == 0:
            self._write_dword(offset, value)
        elif size == 8 and offset % 8 == 0:
            self._write_dword(offset, value & 0xFFFFFFFF)
            self._write_dword(offset + 4, value >> 32)
        else:
            # Registers are written as whole dwords (3.1); QEMU ignores and
            # traces the rest (pci_nvme_ub_mmiowr_misaligned32/toosmall).
            self.counters["ub_mmio_write_misaligned"] += 1

    # -- dwords ------------------------------------------------------------

    def _read_dword(self, offset: int) -> int:
        if offset >= DOORBELLS:
            return 0  # doorbells are write-only; reads return 0
        match offset:
            case 0x00:
                return self.cap & 0xFFFFFFFF
            case 0x04:
                return self.cap >> 32
            case 0x08:
                return NVME_VERSION
            case 0x0C | 0x10:
                return self.engine.interrupt_mask
            case 0x14:
                return self.cc
            case 0x1C:
                return self.csts | (CSTS_CFS if self.engine.fatal else 0)
            case 0x24:
                return self.aqa
            case 0x28:
                return self.asq & 0xFFFFFFFF
            case 0x2C:
                return self.asq >> 32
            case 0x30:
                return self.acq & 0xFFFFFFFF
            case 0x34:
                return self.acq >> 32
        return 0  # NSSR (not supported) and reserved space read 0

    def _write_dword(self, offset: int, value: int) -> None:
        if offset >= DOORBELLS:
            self._write_doorbell(offset, value)
            return
        with self._lock:
            match offset:
                case 0x00 | 0x04 | 0x08:
                    self.counters["ub_mmio_write_readonly"] += 1
                # INTMS sets, INTMC clears mask bits; the core applies them
                # (per vector with MSI, the pin with INTx) and delivers what
                # was held when a bit clears.
                case 0x0C:
                    self.engine.set_interrupt_mask(self.engine.interrupt_mask | value)
                case 0x10:
                    self.engine.set_interrupt_mask(self.engine.interrupt_mask & ~value)
                case 0x14:
                    self._write_cc(value & CC_WRITABLE)
                case 0x1C:
                    if value & CSTS_NSSRO:  # RW1C
                        self.csts &= ~CSTS_NSSRO
                case 0x24:
                    self.aqa = value & AQA_MASK
                case 0x28:
                    self.asq = (self.asq & ~0xFFFFFFFF) | (value & 0xFFFFF000)
                case 0x2C:
                    self.asq = (self.asq & 0xFFFFFFFF) | value << 32
                case 0x30:
                    self.acq = (self.acq & ~0xFFFFFFFF) | (value & 0xFFFFF000)
                case 0x34:
                    self.acq = (self.acq & 0xFFFFFFFF) | value << 32
                case _:
                    pass  # NSSR (NSSRS = 0) and reserved registers ignore writes

    def _write_doorbell(self, offset: int, value: int) -> None:
        relative = offset - DOORBELLS
        if relative % self.doorbell_stride:
            self.counters["ub_db_write_unaligned"] += 1
            return
        # Bits 31:16 of SQ tail / CQ head doorbells are reserved.
        info = self.engine.doorbell_write(relative // self.doorbell_stride, value & 0xFFFF)
        if info is not None and self.csts & CSTS_RDY:
            self.admin.report_error_event(info)

    def doorbell_event(self, info: int) -> None:
        """A worker found an invalid doorbell value in memory (page or shadow)."""
        if self.csts & CSTS_RDY:
            self.admin.report_error_event(info)

    # -- CC state machine ----------------------------------------------------

    def _write_cc(self, value: int) -> None:
        old = self.cc
        self.cc = value
        if value & CC_EN and not old & CC_EN:
            self._enable()
        elif old & CC_EN and not value & CC_EN:
            self._reset()
        if value & CC_EN:
            shn = (value >> CC_SHN_SHIFT) & 0x3
            old_shn = (old >> CC_SHN_SHIFT) & 0x3
            if shn != SHN_NONE:
                # A shutdown ends with the volatile write cache on the media:
                # for a file namespace that is the page cache. Commands in
                # flight are the host's to wait for before it shuts down.
                if old_shn == SHN_NONE:
                    _write_back_files(self.engine)
                self._set_shst(SHST_COMPLETE)
            elif old_shn != SHN_NONE:
                self._set_shst(0)

    def _set_shst(self, shst: int) -> None:
        self.csts = (self.csts & ~(0x3 << CSTS_SHST_SHIFT)) | shst << CSTS_SHST_SHIFT

    def _enable_problem(self) -> str | None:
        mqes = self.config.max_queue_entries - 1
        asqs, acqs = self.aqa & 0xFFF, self.aqa >> 16
        cc = self.cc
        if not 1 <= asqs <= mqes:
            return f"AQA.ASQS {asqs} not in 1..{mqes}"
        if not 1 <= acqs <= mqes:
            return f"AQA.ACQS {acqs} not in 1..{mqes}"
        if not self.asq:
            return "ASQ is 0"
        if not self.acq:
            return "ACQ is 0"
        if (cc >> CC_MPS_SHIFT) & 0xF > CAP_MPSMAX:
            return f"CC.MPS {(cc >> CC_MPS_SHIFT) & 0xF} > CAP.MPSMAX {CAP_MPSMAX}"
        page = 4096 << ((cc >> CC_MPS_SHIFT) & 0xF)
        for name, base, entries, entry_size in (("ASQ", self.asq, asqs + 1, 64), ("ACQ", self.acq, acqs + 1, 16)):
            if base % page:
                return f"{name} {base:#x} is not aligned to the {page}-byte memory page (CC.MPS)"
            if base + entries * entry_size >= 1 << 64:
                return f"{name} {base:#x} with {entries} entries runs past the top of the address space"
        if (cc >> CC_AMS_SHIFT) & 0x7:
            return f"CC.AMS {(cc >> CC_AMS_SHIFT) & 0x7} is not round robin (0)"
        return None

    def _enable(self) -> None:
        css = (self.cc >> CC_CSS_SHIFT) & 0x7
        if css not in SUPPORTED_CSS:
            # A selection CAP.CSS does not offer: QEMU (nvme_start_ctrl) fails
            # the controller, and so do we, so the host sees it at once.
            log.warning("CC.EN set with CC.CSS %s, which CAP.CSS does not support (000b, 110b, 111b)", bin(css))
            self.counters["ub_cc_enable_css"] += 1
            self.csts |= CSTS_CFS
            return
        problem = self._enable_problem()
        if problem is not None:
            # QEMU (nvme_start_ctrl) likewise refuses and leaves RDY clear;
            # the host times out after CAP.TO and sees why in the counters.
            log.warning("CC.EN set with an invalid configuration: %s", problem)
            self.counters["ub_cc_enable_invalid"] += 1
            return
        page_size = 4096 << ((self.cc >> CC_MPS_SHIFT) & 0xF)
        self.engine.set_page_size(page_size)
        with self.admin.lock:
            self.admin.page_size = page_size
        self.admin.set_command_sets(css)
        self.engine.create_cq(0, self.acq, (self.aqa >> 16) + 1, vector=0, ien=True)
        self.engine.create_sq(0, self.asq, (self.aqa & 0xFFF) + 1, cqid=0)
        self.csts |= CSTS_RDY

    def _reset(self) -> None:
        # The admin lock is not held here: engine.reset waits for the worker,
        # which may be running an admin handler that wants that lock.
        self.engine.reset()
        self.engine.drop_deferred()
        self.admin.reset()
        self.csts &= ~(CSTS_RDY | CSTS_CFS | 0x3 << CSTS_SHST_SHIFT)

    def function_reset(self) -> None:
        """A PCI function-level reset: a controller reset, then every register
        back to its power-on value (AQA, ASQ, ACQ and INTMS included, which a
        controller reset keeps)."""
        with self._lock:
            self._write_cc(0)
            self.csts = 0
            self.aqa = self.asq = self.acq = 0
            self.engine.set_interrupt_mask(0)

    @property
    def ready(self) -> bool:
        """CSTS.RDY."""
        return bool(self.csts & CSTS_RDY)
