"""The PCI Express configuration space of the NVMe function.

Groundwork for the vfio-user server (DESIGN.md, "Embedding"): the 4 KiB
configuration space a client such as QEMU's ``vfio-user-pci`` reads and
writes, laid out the way QEMU's ``hw/nvme`` presents its device so that a
guest sees the same thing with either. Like QEMU's ``hw/pci/pci.c`` it keeps
three byte images, the values, the writable bits (``wmask``) and the
write-1-to-clear bits (``w1cmask``), so one generic write routine gives the
read-only fields, the RW1C bits and the BAR sizing protocol; only the fields
with side effects (Command, MSI-X Message Control, PMCSR) have code of their
own.

Capabilities sit where QEMU puts them: PM at 60h and PCI Express at 80h are
added first, MSI-X is then placed at the first free offset (40h), and QEMU
links each new capability at the head of the list, so the chain reads
34h -> 40h (MSI-X) -> 80h (PCIe) -> 60h (PM).
"""

from __future__ import annotations

import dataclasses

from nvmefast.controller import Controller
from nvmefast.errors import ConfigError, RegisterAccessError
from nvmefast.msix import MsixLayout, layout_after
from nvmefast.registers import bar0_size_for, doorbells_end
from nvmefast.structs import PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID

__all__ = [
    "CLASS_CODE",
    "CONFIG_SPACE_SIZE",
    "DEVICE_ID",
    "REVISION_ID",
    "SUBSYSTEM_ID",
    "SUBSYSTEM_VENDOR_ID",
    "VENDOR_ID",
    "PciConfigSpace",
]

# Identity: the one vfio-user NVMe targets already present (SPDK's, through
# libvfio-user: Nutanix 4e58, device 0001). Linux binds NVMe by class code
# 01/08/02 and applies no quirk to 4e58:0001; QEMU's 1b36:0010 would bring
# QEMU's workarounds (NVME_QUIRK_BOGUS_NID: our namespace IDs ignored) with it.
VENDOR_ID = PCI_VENDOR_ID
"""PCI Vendor ID (Identify Controller's VID is the same value)."""
DEVICE_ID = 0x0001
"""PCI Device ID."""
SUBSYSTEM_VENDOR_ID = PCI_SUBSYSTEM_VENDOR_ID
"""Subsystem Vendor ID (Identify Controller's SSVID is the same value)."""
SUBSYSTEM_ID = 0x0001
"""Subsystem ID."""
REVISION_ID = 2
"""Revision ID, as QEMU's nvme device reports."""
CLASS_CODE = 0x010802
"""Base class 01h mass storage, subclass 08h NVM, programming interface 02h NVMe."""
CONFIG_SPACE_SIZE = 0x1000
"""PCI Express configuration space: 4 KiB (256 bytes legacy + extended)."""

# Type 0 header offsets (PCI Local Bus 6.1).
VENDOR = 0x00
DEVICE = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
CLASS_PROG = 0x09
CACHE_LINE_SIZE = 0x0C
HEADER_TYPE = 0x0E
BAR_BASE = 0x10
SUBSYSTEM_VENDOR = 0x2C
SUBSYSTEM = 0x2E
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D

COMMAND_MEMORY = 1 << 1
COMMAND_MASTER = 1 << 2
COMMAND_INTX_DISABLE = 1 << 10
# No I/O BAR, so I/O Space Enable stays hardwired to 0.
COMMAND_WRITABLE = COMMAND_MEMORY | COMMAND_MASTER | COMMAND_INTX_DISABLE

STATUS_INTERRUPT = 1 << 3
STATUS_CAP_LIST = 1 << 4
# Master Data Parity Error, Signaled/Received Target Abort, Received Master
# Abort, Signaled System Error, Detected Parity Error: all RW1C.
STATUS_RW1C = (1 << 8) | (0x1F << 11)

BAR_MEM_64 = 0b10 << 1
BAR_ADDRESS_BITS = 0xFFFFFFF0  # bits 3:0 of a memory BAR are type bits

CAP_ID_PM = 0x01
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11
MSIX_CAP = 0x40
PM_CAP = 0x60
EXP_CAP = 0x80

MSIX_MXC = MSIX_CAP + 2
MSIX_ENABLE = 1 << 15
MSIX_FUNCTION_MASK = 1 << 14

PM_PMCSR = PM_CAP + 4
PMC_VERSION_1_2 = 0b011
PMCSR_NO_SOFT_RESET = 1 << 3
PMCSR_STATE_MASK = 0b11
PMCSR_PME_STATUS = 1 << 15
PM_D0, PM_D3HOT = 0b00, 0b11

EXP_FLAGS_V2_ENDPOINT = 0x0002  # version 2, device/port type 0000b (endpoint)
EXP_DEVCAP_RBER = 1 << 15  # role-based error reporting: required since PCIe 1.1
# Device Control reset value (PCIe 7.5.3.4): Relaxed Ordering and No Snoop
# enabled, Max Read Request Size 512 bytes.
EXP_DEVCTL_DEFAULT = 0x2810
# Error reporting enables, Relaxed Ordering, Max Payload Size, No Snoop, Max
# Read Request Size; not Phantom Functions, Aux Power or FLR (unsupported).
EXP_DEVCTL_WRITABLE = 0x78FF
EXP_DEVSTA_RW1C = 0x000F
EXP_LINK_X1_2_5GT = 0x0011  # x1 at 2.5 GT/s, as QEMU fills in for endpoints
EXP_LNKCTL_WRITABLE = 0x00C3  # ASPM Control, Common Clock, Extended Synch
EXP_LNKCAP2_2_5GT = 1 << 1
EXP_CAP_SIZE = 0x3C  # a version 2 capability structure


class PciConfigSpace:
    """The 4 KiB PCI Express configuration space of ``controller``'s function.

    Header type 0 with BAR0 (64-bit memory, the controller's registers and
    doorbells) and, when ``ControllerConfig.msix_bar`` is 2..5, a 32-bit
    memory BAR for the MSI-X table and PBA (as QEMU's
    ``msix_init_exclusive_bar``). Capabilities: MSI-X, PCI Express
    (endpoint, version 2) and Power Management.

    MSI-X Enable/Function Mask are read from and written to the controller
    (:meth:`Controller.msix_control`, :meth:`Controller.set_msix_control`):
    the core owns that state, so there is one copy of it. Building a
    ``PciConfigSpace`` changes nothing in the controller; the first write to
    Command or Message Control selects the interrupt mode, as a driver's
    enable sequence always makes one.
    """

    def __init__(self, controller: Controller) -> None:
        config = controller.config
        if config.msix_bar == 1:
            # BAR1 is the upper dword of the 64-bit BAR0.
            raise ConfigError(
                "ControllerConfig.msix_bar=1 collides with the upper half of the 64-bit BAR0; "
                "use msix_bar=0, or 2..5 (QEMU's exclusive MSI-X BAR is 4)"
            )
        self._controller = controller
        self._data = bytearray(CONFIG_SPACE_SIZE)
        self._wmask = bytearray(CONFIG_SPACE_SIZE)
        self._w1cmask = bytearray(CONFIG_SPACE_SIZE)

        layout = controller.msix_layout
        self.msix_embedder_managed = layout is None
        """True when the embedder emulates the MSI-X table (``msix_bar=None``)."""
        if layout is None:
            # The embedder (QEMU's vfio-pci traps the table and emulates it
            # itself) still needs a capability naming a place for the table
            # inside a BAR: use where msix_bar=0 would put it, and size BAR0
            # to cover it, since vfio-pci rejects a table beyond its BAR.
            layout = layout_after(0, doorbells_end(config), config.vectors)
            bar0 = bar0_size_for(dataclasses.replace(config, msix_bar=0))
        else:
            bar0 = controller.bar0_size
        self.msix_layout: MsixLayout = layout
        """Where the MSI-X capability says the table and PBA are."""
        self.bar_sizes: dict[int, int] = {0: bar0}
        """Size in bytes of each implemented BAR, by index."""
        if layout.bar != 0:
            self.bar_sizes[layout.bar] = controller.msix_bar_size
        self._build_header()
        self._build_msix()
        self._build_pm()
        self._build_exp()

    # -- building --------------------------------------------------------------

    def _put(self, offset: int, value: int, size: int, wmask: int = 0, w1c: int = 0) -> None:
        self._data[offset : offset + size] = value.to_bytes(size, "little")
        self._wmask[offset : offset + size] = wmask.to_bytes(size, "little")
        self._w1cmask[offset : offset + size] = w1c.to_bytes(size, "little")

    def _build_header(self) -> None:
        self._put(VENDOR, VENDOR_ID, 2)
        self._put(DEVICE, DEVICE_ID, 2)
        self._put(COMMAND, 0, 2, wmask=COMMAND_WRITABLE)
        self._put(STATUS, STATUS_CAP_LIST, 2, w1c=STATUS_RW1C)
        self._put(REVISION, REVISION_ID, 1)
        self._put(CLASS_PROG, CLASS_CODE, 3)
        # Cache Line Size and Interrupt Line are scratch registers software
        # writes and reads back (QEMU makes both writable too).
        self._put(CACHE_LINE_SIZE, 0, 1, wmask=0xFF)
        self._put(HEADER_TYPE, 0x00, 1)  # type 0, single function
        self._put(SUBSYSTEM_VENDOR, SUBSYSTEM_VENDOR_ID, 2)
        self._put(SUBSYSTEM, SUBSYSTEM_ID, 2)
        self._put(CAPABILITIES_POINTER, MSIX_CAP, 1)
        self._put(INTERRUPT_LINE, 0, 1, wmask=0xFF)
        self._put(INTERRUPT_PIN, 1, 1)  # INTA#
        # BAR sizing (PCI Local Bus 6.2.5.1) falls out of the write masks:
        # only the address bits above the size are writable, so writing all
        # ones reads back the size mask with the read-only type bits.
        for bar, size in self.bar_sizes.items():
            address_mask = ~(size - 1) & ((1 << 64) - 1) & ~0xF
            if bar == 0:
                self._put(BAR_BASE, BAR_MEM_64, 4, wmask=address_mask & BAR_ADDRESS_BITS)
                self._put(BAR_BASE + 4, 0, 4, wmask=address_mask >> 32)
            else:
                # 32-bit like QEMU's exclusive MSI-X BAR, so it fits any slot.
                self._put(BAR_BASE + 4 * bar, 0, 4, wmask=address_mask & BAR_ADDRESS_BITS)

    def _build_msix(self) -> None:
        lay = self.msix_layout
        self._put(MSIX_CAP, CAP_ID_MSIX | EXP_CAP << 8, 2)
        # Table Size is N-1 and read-only; only Enable and Function Mask are
        # writable, and their values live in the core (see read()).
        self._put(MSIX_MXC, lay.vectors - 1, 2, wmask=MSIX_ENABLE | MSIX_FUNCTION_MASK)
        self._put(MSIX_CAP + 4, lay.table_offset | lay.bar, 4)
        self._put(MSIX_CAP + 8, lay.pba_offset | lay.bar, 4)

    def _build_pm(self) -> None:
        self._put(PM_CAP, CAP_ID_PM, 2)  # last in the chain
        self._put(PM_CAP + 2, PMC_VERSION_1_2, 2)
        # No_Soft_Reset: D3hot -> D0 keeps the function's state, so the
        # driver need not reinitialise it (QEMU's nvme sets it too).
        self._put(PM_PMCSR, PMCSR_NO_SOFT_RESET, 2, wmask=PMCSR_STATE_MASK, w1c=PMCSR_PME_STATUS)

    def _build_exp(self) -> None:
        base = EXP_CAP
        self._put(base, CAP_ID_EXP | PM_CAP << 8, 2)
        self._put(base + 0x02, EXP_FLAGS_V2_ENDPOINT, 2)
        self._put(base + 0x04, EXP_DEVCAP_RBER, 4)
        self._put(base + 0x08, EXP_DEVCTL_DEFAULT, 2, wmask=EXP_DEVCTL_WRITABLE)
        self._put(base + 0x0A, 0, 2, w1c=EXP_DEVSTA_RW1C)
        self._put(base + 0x0C, EXP_LINK_X1_2_5GT, 4)
        self._put(base + 0x10, 0, 2, wmask=EXP_LNKCTL_WRITABLE)
        self._put(base + 0x12, EXP_LINK_X1_2_5GT, 2)
        self._put(base + 0x2C, EXP_LNKCAP2_2_5GT, 4)
        assert base + EXP_CAP_SIZE <= 0x100

    # -- accesses ----------------------------------------------------------------

    @staticmethod
    def _check(offset: int, size: int, what: str) -> None:
        if size not in (1, 2, 4):
            raise RegisterAccessError(f"PCI config {what}: size must be 1, 2 or 4 bytes, got {size!r}")
        if not isinstance(offset, int) or not 0 <= offset <= CONFIG_SPACE_SIZE - size or offset % size:
            raise RegisterAccessError(
                f"PCI config {what} of {size} bytes at {offset!r}: the offset must be a multiple "
                f"of {size} in 0..{CONFIG_SPACE_SIZE - size:#x}"
            )

    @staticmethod
    def _overlaps(offset: int, size: int, start: int, length: int) -> bool:
        return offset < start + length and start < offset + size

    def _get(self, offset: int, size: int) -> int:
        return int.from_bytes(self._data[offset : offset + size], "little")

    def _refresh_live(self, offset: int, size: int) -> None:
        # Bits whose truth lives in the controller are fetched into the image
        # only when touched, so ID reads never call into the core.
        if self._overlaps(offset, size, STATUS, 1):
            status = self._data[STATUS] & ~STATUS_INTERRUPT
            if self._controller.intx_asserted:
                status |= STATUS_INTERRUPT
            self._data[STATUS] = status
        if self._overlaps(offset, size, MSIX_MXC + 1, 1):
            enabled, masked = self._controller.msix_control()
            high = self._data[MSIX_MXC + 1] & 0x3F
            high |= (MSIX_ENABLE >> 8) if enabled else 0
            high |= (MSIX_FUNCTION_MASK >> 8) if masked else 0
            self._data[MSIX_MXC + 1] = high

    def read(self, offset: int, size: int) -> int:
        """A read of ``size`` (1, 2 or 4) bytes at naturally aligned ``offset``, little endian.

        Unimplemented registers, and the extended space from 100h (no
        extended capabilities), read 0.
        """
        self._check(offset, size, "read")
        self._refresh_live(offset, size)
        return self._get(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        """A write of ``size`` (1, 2 or 4) bytes of ``value`` at naturally aligned ``offset``.

        Read-only bits keep their value, RW1C bits clear where ``value`` has
        ones; MSI-X Enable/Function Mask go to the controller, and a change
        of INTx Disable or MSI-X Enable selects its interrupt mode.
        """
        self._check(offset, size, "write")
        value &= (1 << (8 * size)) - 1
        self._refresh_live(offset, size)
        old_command = self._get(COMMAND, 2)
        old_mxc = self._get(MSIX_MXC, 2)
        old_pmcsr = self._get(PM_PMCSR, 2)
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            at = offset + i
            wmask, w1c = self._wmask[at], self._w1cmask[at]
            self._data[at] = ((self._data[at] & ~wmask) | (byte & wmask)) & ~(byte & w1c) & 0xFF
        self._after_pmcsr(old_pmcsr)
        mxc = self._get(MSIX_MXC, 2)
        if mxc != old_mxc:
            self._controller.set_msix_control(bool(mxc & MSIX_ENABLE), bool(mxc & MSIX_FUNCTION_MASK))
        if self._overlaps(offset, size, COMMAND, 2) or self._overlaps(offset, size, MSIX_MXC, 2):
            self._select_irq_mode(old_command, old_mxc)

    def _after_pmcsr(self, old: int) -> None:
        state = self._get(PM_PMCSR, 2) & PMCSR_STATE_MASK
        if state not in (PM_D0, PM_D3HOT):
            # PCI PM 1.2, 7.1.2: a write of an unsupported state (D1/D2 are
            # not in PMC) completes normally but the data is discarded.
            self._data[PM_PMCSR] = (self._data[PM_PMCSR] & ~PMCSR_STATE_MASK) | (old & PMCSR_STATE_MASK)

    def _select_irq_mode(self, old_command: int, old_mxc: int) -> None:
        command, mxc = self._get(COMMAND, 2), self._get(MSIX_MXC, 2)
        toggled = (command ^ old_command) & COMMAND_INTX_DISABLE or (mxc ^ old_mxc) & MSIX_ENABLE
        if not toggled:
            return
        # MSI-X wins when enabled (PCI Local Bus 6.8.2); otherwise INTx,
        # unless software disabled it: the "msix" mode with MSI-X disabled
        # then sends nothing, which is what the function must do.
        use_msix = bool(mxc & MSIX_ENABLE) or bool(command & COMMAND_INTX_DISABLE)
        mode = "msix" if use_msix else "intx"
        if self._controller.irq_mode != mode:
            self._controller.set_irq_mode(mode)

    # -- device side -----------------------------------------------------------------

    def set_status_error(self, bits: int) -> None:
        """Set RW1C error bits of the Status register, as the device does when
        it sees one (e.g. Received Master Abort on a failed DMA); the driver
        clears them by writing ones."""
        if bits & ~STATUS_RW1C:
            raise RegisterAccessError(
                f"Status bits {bits:#06x} are not RW1C error bits (allowed: {STATUS_RW1C:#06x})"
            )
        self._data[STATUS : STATUS + 2] = (self._get(STATUS, 2) | bits).to_bytes(2, "little")

    def bar_address(self, bar: int) -> int:
        """The address software programmed into BAR ``bar`` (0 when unimplemented)."""
        if bar not in self.bar_sizes:
            return 0
        low = self._get(BAR_BASE + 4 * bar, 4) & BAR_ADDRESS_BITS
        if bar == 0:
            return low | self._get(BAR_BASE + 4, 4) << 32
        return low

    @property
    def power_state(self) -> int:
        """PMCSR PowerState: 0 for D0, 3 for D3hot."""
        return self._get(PM_PMCSR, 2) & PMCSR_STATE_MASK

