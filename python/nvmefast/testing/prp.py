"""Physical Region Page (PRP) construction, the way Linux ``nvme_pci_setup_prps`` does it.

PRP1 points at the first byte of the data and may carry an offset into its
page; every later entry is page aligned. Two pages fit in PRP1/PRP2; more need
a PRP list whose page holds ``page_size / 8`` entries, and when more entries
remain than fit, the last slot of a list page points to the next list page
(NVMe Base 2.0, section 4.1.1).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nvmefast.testing.memory import PAGE_SIZE


@dataclass
class PrpSet:
    """The DPTR of one command plus the list pages that must be freed after it."""

    prp1: int
    prp2: int
    list_pages: list[int] = field(default_factory=list)


def data_pointers(iova: int, length: int, page_size: int = PAGE_SIZE) -> list[int]:
    """PRP entries covering a contiguous buffer: ``iova`` then each following page."""
    if length <= 0:
        return [iova]
    entries = [iova]
    page = (iova // page_size + 1) * page_size
    end = iova + length
    while page < end:
        entries.append(page)
        page += page_size
    return entries


def build_prps(
    entries: Sequence[int],
    alloc_page: Callable[[], int],
    write: Callable[[int, bytes], None],
    page_size: int = PAGE_SIZE,
) -> PrpSet:
    """Turn the data's PRP entries into PRP1/PRP2 and, if needed, a chain of list pages.

    ``entries`` are the addresses of each memory page of the data in order
    (the first may have an offset); they need not be contiguous, so a buffer
    may span several DMA regions. ``alloc_page`` returns a page-aligned IOVA
    for a list page and ``write`` stores bytes in guest memory.
    """
    if not entries:
        raise ValueError("a data transfer needs at least one PRP entry")
    if len(entries) == 1:
        return PrpSet(entries[0], 0)
    if len(entries) == 2:
        return PrpSet(entries[0], entries[1])
    per_page = page_size // 8
    rest = list(entries[1:])
    prps = PrpSet(entries[0], 0)
    previous_slot: int | None = None
    while rest:
        page = alloc_page()
        prps.list_pages.append(page)
        if previous_slot is None:
            prps.prp2 = page
        else:
            # The last slot of the previous list page chains to this one.
            write(previous_slot, struct.pack("<Q", page))
        if len(rest) <= per_page:
            chunk, rest = rest, []
        else:
            # Keep the last slot free for the pointer to the next list page.
            chunk, rest = rest[: per_page - 1], rest[per_page - 1 :]
            previous_slot = page + (per_page - 1) * 8
        write(page, struct.pack(f"<{len(chunk)}Q", *chunk))
    return prps
