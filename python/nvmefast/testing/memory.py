"""Guest memory for the test host: memfd-backed regions and a page allocator.

A VMM hands the device its guest RAM as file descriptors plus IOVAs; the test
host does the same with ``memfd_create``, so the device reads and writes the
very pages the host sees through its own ``mmap``. Nothing is copied between
host and device: what a test writes with :meth:`GuestMemory.write` is what
the controller's DMA reads.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from nvmefast.errors import NvmeFastError

PAGE_SIZE = 4096
"""The host memory page size: CC.MPS = 0 selects 4 KiB, as Linux does on x86."""


class GuestMemoryError(NvmeFastError):
    """A host-side memory request the test host cannot satisfy.

    Raised for allocator exhaustion, accesses outside every region and
    malformed region requests; these are bugs in a test, not in the device.
    """


@dataclass
class Region:
    """One memfd-backed range of guest memory mapped into the controller.

    ``fd`` is -1 for a remote region: anonymous memory the controller has no
    fd for, which it reaches through its DMA transport instead.
    """

    iova: int
    size: int
    fd: int
    map: mmap.mmap
    # Free runs of pages as (first page index, page count), kept sorted by
    # index so first-fit allocation and coalescing on free are both simple.
    free_runs: list[tuple[int, int]] = field(default_factory=list)
    # Allocated runs, first page index -> page count, for free().
    allocated: dict[int, int] = field(default_factory=dict)

    def contains(self, iova: int, length: int) -> bool:
        """True if ``[iova, iova + length)`` lies inside this region."""
        return self.iova <= iova and iova + length <= self.iova + self.size


class GuestMemory:
    """Guest RAM as a set of memfd regions with a first-fit page allocator.

    Thread-safe: tests drive several queue pairs from several threads and each
    allocates its own buffers.
    """

    def __init__(self) -> None:
        self._regions: list[Region] = []
        self._lock = threading.Lock()

    @property
    def regions(self) -> list[Region]:
        """The regions, in the order they were added."""
        return list(self._regions)

    def add_region(
        self, iova: int, size: int, name: str = "nvmefast-guest", *, remote: bool = False, sealed: bool = False
    ) -> Region:
        """Create a memfd of ``size`` bytes and mmap it; the caller maps it for DMA.

        With ``remote`` the memory is anonymous (no fd): the caller maps it
        with ``map_dma_remote`` and serves the transport from it. With
        ``sealed`` the memfd is sealed against resizing (``F_SEAL_SHRINK``
        and ``F_SEAL_GROW``), as QEMU's memory-backend-memfd seals guest
        RAM: the controller then trusts it and skips its SIGBUS guard.
        """
        if size <= 0 or size % PAGE_SIZE or iova % PAGE_SIZE:
            raise GuestMemoryError(
                f"region iova {iova:#x} size {size:#x}: both must be positive multiples of {PAGE_SIZE}"
            )
        with self._lock:
            for region in self._regions:
                if iova < region.iova + region.size and region.iova < iova + size:
                    raise GuestMemoryError(
                        f"region [{iova:#x}, {iova + size:#x}) overlaps [{region.iova:#x}, "
                        f"{region.iova + region.size:#x})"
                    )
            if remote:
                region = Region(iova, size, -1, mmap.mmap(-1, size), free_runs=[(0, size // PAGE_SIZE)])
                self._regions.append(region)
                return region
            fd = os.memfd_create(name, os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealed else 0))
            try:
                os.ftruncate(fd, size)
                if sealed:
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
                mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                os.close(fd)
                raise
            region = Region(iova, size, fd, mapping, free_runs=[(0, size // PAGE_SIZE)])
            self._regions.append(region)
            return region

    def remove_region(self, iova: int) -> Region:
        """Forget the region starting at ``iova`` and close its memfd and mapping."""
        with self._lock:
            region = self._find_start(iova)
            self._regions.remove(region)
        region.map.close()
        if region.fd >= 0:
            os.close(region.fd)
        return region

    def close(self) -> None:
        """Close every region's mapping and memfd."""
        with self._lock:
            regions, self._regions = self._regions, []
        for region in regions:
            region.map.close()
            if region.fd >= 0:
                os.close(region.fd)

    # allocation

    def alloc(self, nbytes: int, align: int = PAGE_SIZE, region_iova: int | None = None) -> int:
        """Allocate zeroed, page-granular memory of at least ``nbytes``; returns its IOVA.

        ``align`` must be a power of two; anything up to a page is satisfied by
        page alignment. ``region_iova`` picks the region (default: the first).
        """
        if nbytes <= 0:
            raise GuestMemoryError(f"alloc of {nbytes} bytes: size must be positive")
        if align <= 0 or align & (align - 1):
            raise GuestMemoryError(f"alloc alignment {align} is not a power of two")
        pages = -(-nbytes // PAGE_SIZE)
        align_pages = max(1, align // PAGE_SIZE)
        with self._lock:
            if not self._regions:
                raise GuestMemoryError("no guest memory region to allocate from")
            region = self._regions[0] if region_iova is None else self._find_start(region_iova)
            for i, (start, count) in enumerate(region.free_runs):
                # Alignment is of the IOVA, not of the page index within the region.
                base_page = region.iova // PAGE_SIZE
                first = -(-(base_page + start) // align_pages) * align_pages - base_page
                waste = first - start
                if count - waste < pages:
                    continue
                replacement = []
                if waste:
                    replacement.append((start, waste))
                if count - waste - pages:
                    replacement.append((first + pages, count - waste - pages))
                region.free_runs[i : i + 1] = replacement
                region.allocated[first] = pages
                offset = first * PAGE_SIZE
                # Zero on allocation so a test never reads a previous test's data
                # and mistakes it for what the device wrote.
                region.map[offset : offset + pages * PAGE_SIZE] = bytes(pages * PAGE_SIZE)
                return region.iova + offset
            raise GuestMemoryError(
                f"guest memory region at {region.iova:#x} has no free run of {pages} pages "
                f"aligned to {align}; use a larger memory_bytes or free buffers"
            )

    def free(self, iova: int) -> None:
        """Free a buffer returned by :meth:`alloc`."""
        with self._lock:
            region = self._find(iova, 1)
            first = (iova - region.iova) // PAGE_SIZE
            if (iova - region.iova) % PAGE_SIZE or first not in region.allocated:
                raise GuestMemoryError(f"free({iova:#x}): not an address returned by alloc")
            count = region.allocated.pop(first)
            runs = region.free_runs
            runs.append((first, count))
            runs.sort()
            merged: list[tuple[int, int]] = []
            for start, n in runs:
                if merged and merged[-1][0] + merged[-1][1] == start:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((start, n))
            region.free_runs = merged

    # access

    def read(self, iova: int, length: int) -> bytes:
        """Copy ``length`` bytes of guest memory starting at ``iova``."""
        region = self._find(iova, length)
        offset = iova - region.iova
        return region.map[offset : offset + length]

    def write(self, iova: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into guest memory at ``iova``."""
        region = self._find(iova, len(data))
        offset = iova - region.iova
        region.map[offset : offset + len(data)] = data

    def view(self, iova: int, length: int) -> memoryview:
        """A live view of guest memory (no copy); the caller must drop it before close."""
        region = self._find(iova, length)
        offset = iova - region.iova
        return memoryview(region.map)[offset : offset + length]

    def gather(self, entries: Sequence[int], length: int) -> bytes:
        """Read ``length`` bytes from the pages a list of PRP entries describes.

        The first entry may start mid-page; each entry covers up to the end of
        its page, exactly as the controller walks them.
        """
        out = bytearray()
        for entry in entries:
            if len(out) == length:
                break
            chunk = min(length - len(out), PAGE_SIZE - entry % PAGE_SIZE)
            out += self.read(entry, chunk)
        return bytes(out)

    def scatter(self, entries: Sequence[int], data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` into the pages a list of PRP entries describes."""
        done = 0
        for entry in entries:
            if done == len(data):
                break
            chunk = min(len(data) - done, PAGE_SIZE - entry % PAGE_SIZE)
            self.write(entry, data[done : done + chunk])
            done += chunk

    def _find(self, iova: int, length: int) -> Region:
        for region in self._regions:
            if region.contains(iova, length):
                return region
        raise GuestMemoryError(
            f"guest memory [{iova:#x}, {iova + length:#x}) is not inside one mapped region"
        )

    def _find_start(self, iova: int) -> Region:
        for region in self._regions:
            if region.iova == iova:
                return region
        raise GuestMemoryError(f"no guest memory region starts at {iova:#x}")
