"""The NVMe function as a vfio-user client sees it: regions and interrupts.

One :class:`Device` per client connection, over the server's long-lived
:class:`~nvmefast.Controller`. It answers the region and IRQ commands and
turns them into controller calls:

- Region 7 (PCI config) is a fresh :class:`~nvmefast.pci.PciConfigSpace`
  per connection, so every client sees a device straight out of reset.
- Region 0 (BAR0) holds the NVMe registers, the doorbells from 1000h
  (offered as a sparse-mmap area backed by the controller's doorbell page
  fd unless ``doorbells="trap"``) and, when the client emulates the MSI-X
  table (QEMU does), a table image nobody reads and a PBA answered from the
  core's pending bits.
- MSI-X vectors are eventfds the core writes; per-vector masking arrives as
  SET_IRQS ACTION_MASK/UNMASK, since the server reports MSI-X MASKABLE.
"""

from __future__ import annotations

import errno
import logging
import os
import threading

from nvmefast.controller import Controller
from nvmefast.errors import NvmeFastError
from nvmefast.pci import CONFIG_SPACE_SIZE, PciConfigSpace
from nvmefast.registers import DOORBELLS
from nvmefast.vfio_user import protocol as p
from nvmefast.vfio_user.protocol import ProtocolError

__all__ = ["Device"]

log = logging.getLogger("nvmefast.vfio_user")


def _chunks(offset: int, count: int) -> list[tuple[int, int]]:
    """Split ``[offset, offset + count)`` into naturally aligned 1/2/4/8-byte accesses."""
    out = []
    while count:
        size = 8
        while size > count or offset % size:
            size //= 2
        out.append((offset, size))
        offset += size
        count -= size
    return out


EVENTFD_LINK = "anon_inode:[eventfd]"
"""What ``/proc/self/fd`` says an eventfd is."""


def _require_eventfds(fds: list[int]) -> None:
    """Refuse SET_IRQS fds that are not eventfds, before any is attached: the
    core writes (or reads) them from a worker, and any other kind of fd (a
    pipe nobody reads) could block it for ever. The core checks each again."""
    for i, fd in enumerate(fds):
        try:
            kind = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as e:
            raise ProtocolError(errno.EINVAL, f"SET_IRQS fd {i}: cannot tell whether it is an eventfd: {e}") from e
        if kind != EVENTFD_LINK:
            raise ProtocolError(errno.EINVAL, f"SET_IRQS fd {i} is {kind}, not an eventfd")


def _signal(fd: int) -> None:
    """One eventfd signal that never waits: the fds the core keeps are
    non-blocking, and a counter at its maximum (EAGAIN) is a signal already
    pending."""
    try:
        os.eventfd_write(fd, 1)
    except BlockingIOError:
        pass


def _drain(fd: int) -> None:
    """Empty a client's eventfd counter without waiting (made non-blocking
    again first: the client shares the flag and may have cleared it)."""
    try:
        os.set_blocking(fd, False)
        os.eventfd_read(fd)
    except OSError:
        pass


class Device:
    """The regions and interrupts of one connection's view of ``controller``."""

    def __init__(self, controller: Controller, *, doorbells: str) -> None:
        self.controller = controller
        self.doorbells = doorbells
        self.pci = PciConfigSpace(controller)
        self.lock = threading.Lock()
        """Serialises region and IRQ commands against each other (one client)."""
        layout = self.pci.msix_layout
        self._msix_bar = layout.bar
        self._table = (layout.table_offset, layout.vectors * 16)
        self._pba = (layout.pba_offset, (layout.vectors + 63) // 64 * 8)
        self._own_table = controller.msix_layout is None
        # The table image for a client that does not emulate it: entries
        # start masked (Vector Control bit 0), as after reset.
        self._table_image = bytearray(layout.vectors * 16)
        for v in range(layout.vectors):
            self._table_image[v * 16 + 12] = 1
        self._sizes = {i: 0 for i in range(p.PCI_NUM_REGIONS)}
        self._sizes.update(self.pci.bar_sizes)
        self._sizes[p.PCI_CONFIG_REGION_INDEX] = CONFIG_SPACE_SIZE
        self.msix_fds: dict[int, int] = {}
        """Our duplicate of each MSI-X vector's trigger eventfd (the core keeps its own)."""
        self._intx_trigger: int | None = None
        self._intx_resample: int | None = None  # our own eventfd, written on UNMASK
        self._intx_masked = False
        self._fds_lock = threading.Lock()
        """Guards which of our duplicates are open (``msix_fds``, the INTx
        pair), never held across a controller call: so that another thread
        can drain them while this one waits in the core
        (:meth:`unblock_interrupts`)."""

    # -- regions -------------------------------------------------------------------

    def region_sizes(self) -> dict[int, int]:
        """Size of every region by index (0 for absent ones)."""
        return dict(self._sizes)

    def region_info(self, index: int) -> tuple[int, int, int, bytes, int | None]:
        """(flags, size, fd offset, capability chain, fd or None) of region ``index``.

        The fd, when given, is new and the caller closes it after sending.
        """
        if not 0 <= index < p.PCI_NUM_REGIONS:
            raise ProtocolError(errno.EINVAL, f"region index {index} is not in 0..{p.PCI_NUM_REGIONS - 1}")
        size = self._sizes[index]
        if size == 0:
            return 0, 0, 0, b"", None
        flags = p.REGION_INFO_FLAG_READ | p.REGION_INFO_FLAG_WRITE
        if index != 0 or self.doorbells != "mmap":
            return flags, size, 0, b"", None
        fd, offset, length = self.controller.doorbell_page_fd()
        # The page's file offsets mirror BAR0 (doorbells at 1000h in both),
        # so the region's fd offset is 0 and the area is the doorbells'.
        area_len = min(length, size - offset)
        cap = p.CAP_HEADER.pack(p.REGION_INFO_CAP_SPARSE_MMAP, 1, 0)
        cap += p.SPARSE_MMAP_HEAD.pack(1, 0) + p.SPARSE_MMAP_AREA.pack(offset, area_len)
        flags |= p.REGION_INFO_FLAG_MMAP | p.REGION_INFO_FLAG_CAPS
        return flags, size, 0, cap, fd

    def _check_range(self, index: int, offset: int, count: int) -> None:
        if not 0 <= index < p.PCI_NUM_REGIONS:
            raise ProtocolError(errno.EINVAL, f"region index {index} is not in 0..{p.PCI_NUM_REGIONS - 1}")
        size = self._sizes[index]
        if count == 0 or count > p.MAX_DATA_XFER or offset + count > size:
            raise ProtocolError(
                errno.EINVAL,
                f"access of {count} bytes at {offset:#x} is outside region {index} ({size:#x} bytes)",
            )

    def region_read(self, index: int, offset: int, count: int) -> bytes:
        """Read ``count`` bytes of region ``index`` at ``offset``."""
        self._check_range(index, offset, count)
        with self.lock:
            out = bytearray()
            for at, size in _chunks(offset, count):
                out += self._read(index, at, size).to_bytes(size, "little")
            return bytes(out)

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        """Write ``data`` to region ``index`` at ``offset``."""
        self._check_range(index, offset, len(data))
        with self.lock:
            for at, size in _chunks(offset, len(data)):
                rel = at - offset
                self._write(index, at, int.from_bytes(data[rel : rel + size], "little"), size)

    def _in(self, span: tuple[int, int], offset: int) -> bool:
        return span[0] <= offset < span[0] + span[1]

    def _read(self, index: int, offset: int, size: int) -> int:
        try:
            if index == p.PCI_CONFIG_REGION_INDEX:
                if size == 8:
                    return self.pci.read(offset, 4) | self.pci.read(offset + 4, 4) << 32
                return self.pci.read(offset, size)
            if index == self._msix_bar and self._own_table:
                if self._in(self._table, offset):
                    rel = offset - self._table[0]
                    return int.from_bytes(self._table_image[rel : rel + size], "little")
                if self._in(self._pba, offset):
                    bits = sum(1 << v for v in self.controller.pending_vectors())
                    return (bits >> (8 * (offset - self._pba[0]))) & ((1 << (8 * size)) - 1)
            if index == 0:
                if offset >= self.controller.bar0_size:
                    return 0
                if size == 8 and offset >= DOORBELLS:
                    return self.controller.bar0_read(offset, 4) | self.controller.bar0_read(offset + 4, 4) << 32
                return self.controller.bar0_read(offset, size)
            if index == self._msix_bar:
                return self.controller.msix_bar_read(offset, size)
        except NvmeFastError as e:
            raise ProtocolError(errno.EINVAL, f"region {index} read at {offset:#x}: {e}") from e
        return 0

    def _write(self, index: int, offset: int, value: int, size: int) -> None:
        try:
            if index == p.PCI_CONFIG_REGION_INDEX:
                if size == 8:
                    self.pci.write(offset, value & 0xFFFFFFFF, 4)
                    self.pci.write(offset + 4, value >> 32, 4)
                else:
                    self.pci.write(offset, value, size)
                return
            if index == self._msix_bar and self._own_table:
                if self._in(self._table, offset):
                    rel = offset - self._table[0]
                    self._table_image[rel : rel + size] = value.to_bytes(size, "little")
                    if (rel % 16) <= 12 < (rel % 16) + size:
                        vector = rel // 16
                        masked = bool(self._table_image[vector * 16 + 12] & 1)
                        self.controller.mask_vector(vector, masked)
                    return
                if self._in(self._pba, offset):
                    return  # the PBA is read-only
            if index == 0:
                if offset >= self.controller.bar0_size:
                    return
                if size == 8 and offset >= DOORBELLS:
                    self.controller.bar0_write(offset, value & 0xFFFFFFFF, 4)
                    self.controller.bar0_write(offset + 4, value >> 32, 4)
                    return
                self.controller.bar0_write(offset, value, size)
                return
            if index == self._msix_bar:
                self.controller.msix_bar_write(offset, value, size)
        except NvmeFastError as e:
            raise ProtocolError(errno.EINVAL, f"region {index} write at {offset:#x}: {e}") from e

    # -- interrupts ----------------------------------------------------------------

    def irq_info(self, index: int) -> tuple[int, int]:
        """(flags, count) of IRQ index ``index``."""
        if index == p.PCI_INTX_IRQ_INDEX:
            return p.IRQ_INFO_EVENTFD | p.IRQ_INFO_MASKABLE | p.IRQ_INFO_AUTOMASKED, 1
        if index == p.PCI_MSI_IRQ_INDEX:
            return p.IRQ_INFO_EVENTFD | p.IRQ_INFO_NORESIZE, 1
        if index == p.PCI_MSIX_IRQ_INDEX:
            return p.IRQ_INFO_EVENTFD | p.IRQ_INFO_MASKABLE | p.IRQ_INFO_NORESIZE, self.pci.msix_layout.vectors
        if index in (p.PCI_ERR_IRQ_INDEX, p.PCI_REQ_IRQ_INDEX):
            # No AER or request interrupts: an error reply (QEMU then only
            # traces it, where a count of 0 draws a warning).
            raise ProtocolError(errno.ENOTSUP, f"IRQ index {index} (error/request) is not implemented")
        raise ProtocolError(errno.EINVAL, f"IRQ index {index} is not in 0..{p.PCI_NUM_IRQS - 1}")

    def set_irqs(self, flags: int, index: int, start: int, count: int, data: bytes, fds: list[int]) -> None:
        """SET_IRQS: attach, detach, mask, unmask or trigger interrupts.

        ``fds`` are borrowed (the caller closes them; the core duplicates
        what it keeps).
        """
        kind = flags & p.IRQ_SET_DATA_TYPE_MASK
        action = flags & p.IRQ_SET_ACTION_TYPE_MASK
        if kind not in (p.IRQ_SET_DATA_NONE, p.IRQ_SET_DATA_BOOL, p.IRQ_SET_DATA_EVENTFD) or action not in (
            p.IRQ_SET_ACTION_MASK,
            p.IRQ_SET_ACTION_UNMASK,
            p.IRQ_SET_ACTION_TRIGGER,
        ):
            raise ProtocolError(errno.EINVAL, f"SET_IRQS flags {flags:#x}: need exactly one data type and one action")
        if flags & ~(p.IRQ_SET_DATA_TYPE_MASK | p.IRQ_SET_ACTION_TYPE_MASK):
            raise ProtocolError(errno.EINVAL, f"SET_IRQS flags {flags:#x} has unknown bits")
        irq_flags, irq_count = self.irq_info(index)
        disable = action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_NONE and count == 0
        if not disable and (count == 0 or start >= irq_count or start + count > irq_count):
            raise ProtocolError(
                errno.EINVAL, f"SET_IRQS vectors {start}..{start + count - 1} are not within the {irq_count} of index {index}"
            )
        if kind == p.IRQ_SET_DATA_EVENTFD and len(fds) not in (0, count):
            raise ProtocolError(errno.EINVAL, f"SET_IRQS carries {len(fds)} fds for {count} vectors")
        _require_eventfds(fds)
        if kind == p.IRQ_SET_DATA_BOOL and len(data) != count:
            raise ProtocolError(errno.EINVAL, f"SET_IRQS DATA_BOOL carries {len(data)} bytes for {count} vectors")
        if kind != p.IRQ_SET_DATA_EVENTFD and fds:
            raise ProtocolError(errno.EINVAL, "SET_IRQS carries fds without DATA_EVENTFD")
        if action != p.IRQ_SET_ACTION_TRIGGER and not irq_flags & p.IRQ_INFO_MASKABLE and index != p.PCI_MSI_IRQ_INDEX:
            raise ProtocolError(errno.EINVAL, f"IRQ index {index} is not maskable")
        with self.lock:
            if index == p.PCI_MSIX_IRQ_INDEX:
                self._set_msix(kind, action, start, count, data, fds, disable)
            elif index == p.PCI_INTX_IRQ_INDEX:
                self._set_intx(kind, action, data, fds, disable)
            elif index == p.PCI_MSI_IRQ_INDEX:
                self._set_msi(kind, action, data, fds, disable)
            else:
                raise ProtocolError(errno.EINVAL, f"IRQ index {index} has no interrupts")

    @staticmethod
    def _selected(kind: int, count: int, data: bytes) -> list[bool]:
        if kind == p.IRQ_SET_DATA_BOOL:
            return [b != 0 for b in data]
        return [True] * count

    def _set_msix(self, kind: int, action: int, start: int, count: int, data: bytes, fds: list[int], disable: bool) -> None:
        c = self.controller
        if disable:
            self._drop_msix_fds()
            _, fmask = c.msix_control()
            c.set_msix_control(False, fmask)
            log.info("MSI-X disabled")
            return
        if action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_EVENTFD:
            # Attach (or, with no fds, leave detached: QEMU's "fd -1 on
            # vector 0" that only enables MSI-X) and enable.
            for i in range(count):
                self._attach_vector(start + i, fds[i] if fds else None)
            enabled, fmask = c.msix_control()
            if not enabled:
                c.set_msix_control(True, fmask)
            if c.irq_mode != "msix":
                c.set_irq_mode("msix")
            log.info("MSI-X vectors %d..%d: %s", start, start + count - 1, "eventfds" if fds else "enabled, no eventfd")
            return
        for i, sel in enumerate(self._selected(kind, count, data)):
            if not sel:
                continue
            v = start + i
            if action == p.IRQ_SET_ACTION_MASK:
                c.mask_vector(v, True)
            elif action == p.IRQ_SET_ACTION_UNMASK:
                c.mask_vector(v, False)
            else:
                # A software trigger: the client asks the device to signal.
                self._fire_msix(v)

    def _fire_msix(self, vector: int) -> None:
        # A software trigger signals the eventfd directly, as VFIO's does.
        fd = self.msix_fds.get(vector)
        log.debug("vector %d triggered by the client", vector)
        if fd is not None:
            _signal(fd)

    def _attach_vector(self, vector: int, fd: int | None) -> None:
        """Route ``vector`` to eventfd ``fd`` (borrowed), or detach it (None)."""
        self.controller.set_vector_eventfd(vector, fd)
        with self._fds_lock:
            old = self.msix_fds.pop(vector, None)
            if old is not None:
                os.close(old)
            if fd is not None:
                self.msix_fds[vector] = os.dup(fd)

    def _drop_msix_fds(self) -> None:
        for v in list(self.msix_fds):
            self._attach_vector(v, None)

    def _set_intx(self, kind: int, action: int, data: bytes, fds: list[int], disable: bool) -> None:
        c = self.controller
        if disable or (action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_EVENTFD and not fds):
            c.set_intx_eventfds(None, None)
            self._close_intx()
            log.info("INTx disabled")
            return
        if action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_EVENTFD:
            self._close_intx()
            with self._fds_lock:
                self._intx_trigger = os.dup(fds[0])
                self._intx_resample = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._intx_masked = False
            c.set_intx_eventfds(self._intx_trigger, self._intx_resample)
            log.info("INTx trigger eventfd attached")
            return
        if action == p.IRQ_SET_ACTION_UNMASK and kind == p.IRQ_SET_DATA_EVENTFD:
            # A KVM resampler: the client's eventfd replaces ours.
            if self._intx_trigger is None:
                raise ProtocolError(errno.EINVAL, "INTx unmask eventfd before a trigger eventfd")
            c.set_intx_eventfds(self._intx_trigger, fds[0] if fds else self._intx_resample)
            return
        if not all(self._selected(kind, 1, data)):
            return
        if action == p.IRQ_SET_ACTION_MASK:
            self._intx_masked = True
            c.set_intx_eventfds(None, None)
        elif action == p.IRQ_SET_ACTION_UNMASK:
            if self._intx_masked and self._intx_trigger is not None:
                self._intx_masked = False
                c.set_intx_eventfds(self._intx_trigger, self._intx_resample)
            if self._intx_resample is not None:
                # The EOI: the core looks at the level again and re-asserts if still high.
                _signal(self._intx_resample)
        elif self._intx_trigger is not None:
            _signal(self._intx_trigger)

    def _close_intx(self) -> None:
        with self._fds_lock:
            for fd in (self._intx_trigger, self._intx_resample):
                if fd is not None:
                    os.close(fd)
            self._intx_trigger = self._intx_resample = None

    def _set_msi(self, kind: int, action: int, data: bytes, fds: list[int], disable: bool) -> None:
        c = self.controller
        if disable or (action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_EVENTFD and not fds):
            self._attach_vector(0, None)
            log.info("MSI disabled")
            return
        if action == p.IRQ_SET_ACTION_TRIGGER and kind == p.IRQ_SET_DATA_EVENTFD:
            self._attach_vector(0, fds[0])
            c.set_irq_mode("msi")
            log.info("MSI eventfd attached")
            return
        if action == p.IRQ_SET_ACTION_TRIGGER:
            self._fire_msix(0)
        else:
            raise ProtocolError(errno.EINVAL, "MSI is not maskable through SET_IRQS (INTMS/INTMC mask it)")

    # -- reset and teardown ----------------------------------------------------------

    def function_reset(self) -> None:
        """DEVICE_RESET (and a client leaving): the controller's function-level
        reset, MSI-X disabled until the client enables it, and the config
        space as out of reset (Command cleared, BARs unprogrammed)."""
        with self.lock:
            self.controller.function_reset()
            self.controller.set_msix_control(False, False)
            self.pci = PciConfigSpace(self.controller)

    def unblock_interrupts(self) -> None:
        """Release a worker a client has blocked in an eventfd write: on
        disconnect (from the reader thread, which the core never holds up)
        and before the teardown's reset.

        The core makes every interrupt eventfd non-blocking, but the flag
        belongs to the open file the client shares: a client that clears it
        again and fills the counter to its maximum blocks the next write
        until the counter is read. Here it is set again and the counter
        read, which wakes that write; the reset and the next client go on
        (unless the client keeps refilling the counter as fast as it is
        drained: see docs/trust.md)."""
        with self._fds_lock:
            for fd in [*self.msix_fds.values(), self._intx_trigger]:
                if fd is not None:
                    _drain(fd)

    def detach(self) -> None:
        """Drop every interrupt route this connection attached."""
        with self.lock:
            self._drop_msix_fds()  # MSI's vector 0 too
            self.controller.set_intx_eventfds(None, None)
            self._close_intx()


def pack_region_info(argsz: int, index: int, flags: int, size: int, offset: int, caps: bytes) -> bytes:
    """The DEVICE_GET_REGION_INFO reply payload, capabilities included when they fit ``argsz``."""
    need = p.REGION_INFO.size + len(caps)
    if caps and argsz >= need:
        return p.REGION_INFO.pack(need, flags, index, p.REGION_INFO.size, size, offset) + caps
    # Too small: the client learns the size it needs from argsz and asks
    # again. No CAPS flag without the capabilities (QEMU checks cap_offset).
    return p.REGION_INFO.pack(need, flags & ~p.REGION_INFO_FLAG_CAPS, index, 0, size, offset)

