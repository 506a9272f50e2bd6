"""The client's DMA map: guest memory the controller may reach.

DMA_MAP with an fd maps the client's memory straight into the core (the
fast path: the workers copy to and from it). DMA_MAP without an fd (guest
RAM that is not shared, or BAR ranges of another device) becomes a *remote*
region: the core reaches it through DMA_READ/DMA_WRITE messages to the
client, one round trip per access.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Protocol

from nvmefast.controller import Controller
from nvmefast.errors import NvmeFastError
from nvmefast.vfio_user import protocol as p
from nvmefast.vfio_user.protocol import ProtocolError

__all__ = ["DmaTable"]

log = logging.getLogger("nvmefast.vfio_user")

PAGE = 4096

_KINDS = {
    "sealed": "sealed memfd: trusted, unguarded",
    "guarded": "not sealed against shrinking: guarded",
}


class _Requester(Protocol):
    number: int

    def request(self, command: int, payload: bytes, timeout: float = ...) -> bytes: ...


def _check_fd_covers(fd: int, iova: int, size: int, offset: int) -> None:
    """Refuse, saying what the client likely did, a mapping longer than its file.

    The core refuses it too (it would fault past the file's end); the reason
    is worth a sentence of its own because a well-known client does it: SPDK's
    user-space NVMe driver, run without ``-g``, keeps DPDK's memory in one
    hugepage file per page and sends one DMA_MAP for a run of pages that are
    contiguous in its address space, passing the first page's file.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return  # the core says what is wrong with the fd
    if not stat.S_ISREG(st.st_mode) or offset + size <= st.st_size:
        return  # block devices and the like have no st_size; the core checks them
    raise ProtocolError(
        errno.EINVAL,
        f"DMA_MAP {iova:#x}+{size:#x}: the client mapped {size} bytes at IOVA {iova:#x} with an fd of "
        f"{st.st_size} bytes{f' (at offset {offset})' if offset else ''}: SPDK's user-space NVMe driver does "
        "this without -g (one file per memory segment list): run it with -g",
    )


class DmaTable:
    """The mappings of one connection, kept in step with the controller's."""

    def __init__(self, controller: Controller, conn: _Requester) -> None:
        self.controller = controller
        self.conn = conn
        self.regions: dict[int, tuple[int, bool]] = {}
        """iova -> (size, has fd)."""
        self._transport_set = False

    def map(self, iova: int, size: int, flags: int, fd: int | None, offset: int) -> None:
        """DMA_MAP ``[iova, iova + size)``: ``fd`` (borrowed) at ``offset``, or remote."""
        if flags & ~(p.DMA_MAP_FLAG_READ | p.DMA_MAP_FLAG_WRITE):
            raise ProtocolError(errno.EINVAL, f"DMA_MAP flags {flags:#x} has unknown bits")
        if not flags & p.DMA_MAP_FLAG_READ:
            raise ProtocolError(errno.EINVAL, "DMA_MAP without READ access: the device could not use it")
        if size == 0 or iova + size > 1 << 64:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP of {size:#x} bytes at {iova:#x} is empty or wraps")
        if iova % PAGE or size % PAGE:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP {iova:#x}+{size:#x} is not 4 KiB aligned")
        if len(self.regions) >= p.MAX_DMA_MAPS:
            raise ProtocolError(errno.ENOSPC, f"DMA_MAP: this client already holds {p.MAX_DMA_MAPS} mappings (max_dma_maps)")
        for other, (osize, _) in self.regions.items():
            if iova < other + osize and other < iova + size:
                raise ProtocolError(
                    errno.EEXIST, f"DMA_MAP {iova:#x}+{size:#x} overlaps the mapping at {other:#x}+{osize:#x}"
                )
        writable = bool(flags & p.DMA_MAP_FLAG_WRITE)
        if fd is not None:
            _check_fd_covers(fd, iova, size, offset)
        try:
            if fd is not None:
                self.controller.map_dma(iova, size, fd, offset, writable)
            else:
                if offset:
                    raise ProtocolError(errno.EINVAL, "DMA_MAP without an fd must have offset 0")
                self._ensure_transport()
                self.controller.map_dma_remote(iova, size, writable)
        except NvmeFastError as e:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP {iova:#x}+{size:#x}: {e}") from e
        self.regions[iova] = (size, fd is not None)
        if fd is not None:
            # A sealed memfd (QEMU's memory-backend-memfd) is trusted; any
            # other fd may shrink under the device and is guarded.
            kind = next((r.kind for r in self.controller.dma_regions() if r.iova == iova), "?")
            how = f" fd offset {offset:#x} ({_KINDS.get(kind, kind)})"
        else:
            how = " (no fd: DMA_READ/DMA_WRITE messages)"
        log.info("client %d: DMA map %#x+%#x %s%s", self.conn.number, iova, size, "rw" if writable else "ro", how)

    def unmap(self, iova: int, size: int) -> None:
        """DMA_UNMAP of exactly one earlier mapping (or of every mapping inside the range)."""
        inside = [a for a, (s, _) in self.regions.items() if iova <= a and a + s <= iova + size]
        if not inside:
            raise ProtocolError(errno.ENOENT, f"DMA_UNMAP {iova:#x}+{size:#x} covers no mapping")
        for a in inside:
            s, _ = self.regions.pop(a)
            self.controller.unmap_dma(a, s)
        log.info("client %d: DMA unmap %#x+%#x (%d mapping(s))", self.conn.number, iova, size, len(inside))

    def unmap_all(self) -> None:
        """Drop every mapping (DMA_UNMAP with UNMAP_ALL, or disconnect)."""
        for a, (s, _) in list(self.regions.items()):
            try:
                self.controller.unmap_dma(a, s)
            except NvmeFastError:
                log.debug("unmap of %#x+%#x failed", a, s, exc_info=True)
        if self.regions:
            log.info("client %d: all %d DMA mappings dropped", self.conn.number, len(self.regions))
        self.regions.clear()
        if self._transport_set and not self.controller.closed:
            self.controller.set_dma_transport(None, None)
            self._transport_set = False

    # -- DMA through messages --------------------------------------------------------

    def _ensure_transport(self) -> None:
        if not self._transport_set:
            self.controller.set_dma_transport(self._read, self._write)
            self._transport_set = True

    def _read(self, iova: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            n = min(length - len(out), p.MAX_DATA_XFER)
            at = iova + len(out)
            body = self.conn.request(p.DMA_READ, p.DMA_ACCESS.pack(at, n))
            head = p.DMA_ACCESS.size
            if len(body) < head + n:
                raise ProtocolError(errno.EIO, f"DMA_READ reply of {len(body)} bytes for {n} bytes of data")
            address, count = p.DMA_ACCESS.unpack_from(body)
            if (address, count) != (at, n):
                raise ProtocolError(errno.EIO, f"DMA_READ reply for {address:#x}+{count} to a read of {at:#x}+{n}")
            out += body[head : head + n]
        return bytes(out)

    def _write(self, iova: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            n = min(len(data) - done, p.MAX_DATA_XFER)
            chunk = data[done : done + n]
            payload = p.DMA_ACCESS.pack(iova + done, n) + chunk
            self.conn.request(p.DMA_WRITE, payload)
            done += n
