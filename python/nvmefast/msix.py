"""The MSI-X table and Pending Bit Array as device registers (PCI Local Bus
6.8.2), backed by the core's per-vector state.

Each table entry is 16 bytes: Message Address (low, high), Message Data,
Vector Control (bit 0: Mask). The PBA is read-only, one bit per vector,
in qwords. The core keeps the state (mask, pending, message) because
interrupts leave through eventfds that bypass any emulator-side MSI-X
logic; this module only encodes register accesses, like QEMU's
``msix_table_mmio_*`` and ``msix_pba_mmio_read``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from nvmefast._core import Engine

__all__ = ["ENTRY_SIZE", "MsixLayout", "MsixRegisters", "bar_size", "layout_after"]

ENTRY_SIZE = 16


def bar_size(needed: int, floor: int) -> int:
    """The smallest power of two, at least ``floor``, that holds ``needed`` bytes:
    a memory BAR's size (PCI sizes BARs by powers of two)."""
    size = floor
    while size < needed:
        size <<= 1
    return size


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


@dataclass(frozen=True)
class MsixLayout:
    """Where the table and PBA sit inside their BAR."""

    bar: int
    """BAR index (BIR) holding both."""
    table_offset: int
    pba_offset: int
    vectors: int

    @property
    def table_size(self) -> int:
        """Bytes of the table."""
        return self.vectors * ENTRY_SIZE

    @property
    def pba_size(self) -> int:
        """Bytes of the PBA (whole qwords)."""
        return _align(self.vectors, 64) // 8

    @property
    def end(self) -> int:
        """First byte after the PBA."""
        return self.pba_offset + self.pba_size


def layout_after(bar: int, start: int, vectors: int) -> MsixLayout:
    """Table at the first 4 KiB boundary from ``start``, PBA on the next one.

    Page-aligned and page-separated so a VMM can mmap the doorbell pages
    and still trap the table and PBA.
    """
    table = _align(start, 0x1000)
    pba = _align(table + vectors * ENTRY_SIZE, 0x1000)
    return MsixLayout(bar, table, pba, vectors)


class MsixRegisters:
    """Table and PBA register semantics over the core's vector state."""

    def __init__(self, engine: Engine, layout: MsixLayout) -> None:
        self.engine = engine
        self.layout = layout
        self.counters: collections.Counter[str] = collections.Counter()
        """Guest misbehaviour on the table/PBA (misaligned, PBA writes)."""

    def contains(self, offset: int) -> bool:
        """True when BAR ``offset`` is in the table or the PBA."""
        lay = self.layout
        return lay.table_offset <= offset < lay.table_offset + lay.table_size or lay.pba_offset <= offset < lay.end

    def read(self, offset: int, size: int) -> int:
        """A guest read at BAR ``offset``: dword or aligned qword."""
        lay = self.layout
        if size not in (4, 8) or offset % size:
            # The PCI spec allows only aligned dword/qword access (QEMU
            # accepts 4 bytes only); anything else reads 0 and is counted.
            self.counters["ub_msix_misaligned"] += 1
            return 0
        if lay.table_offset <= offset < lay.table_offset + lay.table_size:
            value = 0
            for i in range(size // 4):
                value |= self.table_dword(offset - lay.table_offset + 4 * i) << (32 * i)
            return value
        if lay.pba_offset <= offset < lay.end:
            first = (offset - lay.pba_offset) * 8
            bits = 0
            for v in self.engine.pending_vectors():
                if first <= v < first + size * 8:
                    bits |= 1 << (v - first)
            return bits
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        """A guest write at BAR ``offset``; the PBA is read-only."""
        lay = self.layout
        if size not in (4, 8) or offset % size:
            self.counters["ub_msix_misaligned"] += 1
            return
        if lay.table_offset <= offset < lay.table_offset + lay.table_size:
            for i in range(size // 4):
                self.write_table_dword(offset - lay.table_offset + 4 * i, (value >> (32 * i)) & 0xFFFFFFFF)
        elif lay.pba_offset <= offset < lay.end:
            self.counters["ub_msix_pba_write"] += 1

    def table_dword(self, rel: int) -> int:
        """Dword at byte ``rel`` of the table."""
        vector, field = divmod(rel, ENTRY_SIZE)
        return self.engine.msix_table_dword(vector, field)

    def write_table_dword(self, rel: int, value: int) -> None:
        """Writes the dword at byte ``rel`` of the table (one core call: a
        concurrent ``mask_vector`` is never undone by a read-modify-write)."""
        vector, field = divmod(rel, ENTRY_SIZE)
        self.engine.write_msix_table_dword(vector, field, value)
