"""The host's side of a device-emulated MSI-X table (PCI Local Bus 6.8.2).

When a controller emulates its own MSI-X table and PBA
(``ControllerConfig(msix_bar=0..5)``) it comes out of reset the way a PCI
function does: MSI-X disabled and every vector masked, so nothing is
delivered until the host programs the table and enables MSI-X, as Linux's
``pci_enable_msix_range`` (``msix_capability_init``) does. This module does
that through the BAR the table lives in: BAR0 (``bar0_write``) or a BAR of
its own (``msix_bar_write``). ``controller.msix_layout`` stands in for the
capability's Table/PBA Offset and BIR fields a real host would read.

Field offsets and bits are written from the PCI spec rather than imported
from ``nvmefast.msix`` so the host checks the device against the spec.
"""

from __future__ import annotations

from nvmefast.controller import Controller
from nvmefast.errors import StateError

__all__ = [
    "ENTRY_SIZE",
    "MSI_ADDRESS",
    "MSIX_ADDR_HI",
    "MSIX_ADDR_LO",
    "MSIX_DATA",
    "MSIX_VECTOR_CTRL",
    "VECTOR_CTRL_MASK",
    "MsixTable",
    "enable_msix",
]

ENTRY_SIZE = 16
"""Bytes per MSI-X table entry."""
MSIX_ADDR_LO, MSIX_ADDR_HI, MSIX_DATA, MSIX_VECTOR_CTRL = 0, 4, 8, 12
"""Dword offsets within an entry: Message Address (low, high), Message Data, Vector Control."""
VECTOR_CTRL_MASK = 1 << 0
"""Vector Control bit 0: Mask Bit."""
MSI_ADDRESS = 0xFEE0_0000
"""The x86 MSI address (destination APIC 0) Linux programs."""


class MsixTable:
    """Guest accesses to a controller's MSI-X table and PBA through its BAR."""

    def __init__(self, controller: Controller) -> None:
        layout = controller.msix_layout
        if layout is None:
            raise StateError("MsixTable: the controller has no MSI-X table of its own (msix_bar=None)")
        self.controller = controller
        self.bar = layout.bar
        """BAR index (BIR) holding the table and the PBA."""
        self.table_offset = layout.table_offset
        self.pba_offset = layout.pba_offset
        self.vectors = layout.vectors

    def bar_read(self, offset: int, size: int) -> int:
        """A read of the MSI-X BAR at ``offset``."""
        if self.bar == 0:
            return self.controller.bar0_read(offset, size)
        return self.controller.msix_bar_read(offset, size)

    def bar_write(self, offset: int, value: int, size: int) -> None:
        """A write of the MSI-X BAR at ``offset``."""
        if self.bar == 0:
            self.controller.bar0_write(offset, value, size)
        else:
            self.controller.msix_bar_write(offset, value, size)

    def entry_offset(self, vector: int) -> int:
        """BAR offset of ``vector``'s table entry."""
        return self.table_offset + vector * ENTRY_SIZE

    def program(self, vector: int, address: int, data: int, masked: bool) -> None:
        """Write a whole entry with dword writes, as Linux ``__pci_write_msi_msg`` does
        (with the vector masked while its message changes)."""
        base = self.entry_offset(vector)
        self.bar_write(base + MSIX_VECTOR_CTRL, VECTOR_CTRL_MASK, 4)
        self.bar_write(base + MSIX_ADDR_LO, address & 0xFFFF_FFFF, 4)
        self.bar_write(base + MSIX_ADDR_HI, address >> 32, 4)
        self.bar_write(base + MSIX_DATA, data, 4)
        if not masked:
            self.set_masked(vector, False)

    def set_masked(self, vector: int, masked: bool) -> None:
        """Write the Vector Control dword of ``vector`` (Linux ``pci_msix_write_vector_ctrl``)."""
        self.bar_write(self.entry_offset(vector) + MSIX_VECTOR_CTRL, int(masked), 4)

    def entry(self, vector: int) -> tuple[int, int, int]:
        """(message address, message data, vector control) read back by dwords."""
        base = self.entry_offset(vector)
        address = self.bar_read(base + MSIX_ADDR_LO, 4) | self.bar_read(base + MSIX_ADDR_HI, 4) << 32
        return address, self.bar_read(base + MSIX_DATA, 4), self.bar_read(base + MSIX_VECTOR_CTRL, 4)

    def pending(self) -> set[int]:
        """The vectors whose PBA bit is set, read a qword at a time."""
        out: set[int] = set()
        for qword in range(-(-self.vectors // 64)):
            bits = self.bar_read(self.pba_offset + 8 * qword, 8)
            out.update(64 * qword + b for b in range(64) if bits >> b & 1)
        return out


def enable_msix(controller: Controller, vectors: int | None = None) -> bool:
    """Program and enable MSI-X the way Linux ``msix_capability_init`` does.

    Enable with the function masked, program every entry (or the first
    ``vectors``) with address 0xFEE00000 and data = vector number, unmask
    them, then clear the function mask. Returns False (and does nothing)
    when the embedder manages MSI-X (``controller.msix_layout`` is None).
    """
    if controller.msix_layout is None:
        return False
    table = MsixTable(controller)
    count = table.vectors if vectors is None else vectors
    controller.set_msix_control(True, True)
    for vector in range(count):
        table.program(vector, MSI_ADDRESS, vector, masked=False)
    controller.set_msix_control(True, False)
    return True
