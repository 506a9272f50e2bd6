"""How the test host rings doorbells: MMIO, shadow doorbells, the doorbell page, ioeventfds.

A real host reaches an NVMe controller's doorbells in one of these ways, and
:class:`HostDoorbells` does each of them the way its real user does:

- ``"mmio"``: a 4-byte write to BAR0 at 1000h + index * stride (every driver).
- ``"shadow"``: after Doorbell Buffer Config (7Ch), write the value into the
  shadow doorbell buffer, then ring MMIO only when the EventIdx the device
  published says it is waiting for it (Linux ``nvme_dbbuf_update_and_check_event``).
- ``"page"``: write the value into the device's doorbell page (a vfio-user
  client's sparse-mmap of BAR0 from 1000h); no MMIO, the device polls it.
- ``"shadow-page"``: shadow doorbells whose ring, when EventIdx asks for
  one, is a store to the doorbell page instead of MMIO: Linux in a guest
  whose vfio-user client mapped the page (QEMU's ``vfio-user-pci``). With
  shadow buffers in force, ``"page"`` is how that guest rings the admin
  queue (Linux never shadows it).
- ``"ioeventfd"``: write the value where the device reads it (the page, or
  the shadow buffer once one is configured) and then the doorbell's
  ioeventfd, which is what KVM does for a guest MMIO write it caught.

Doorbell ``index`` is ``2 * qid`` for SQ ``qid``'s tail and ``2 * qid + 1`` for
CQ ``qid``'s head. Like Linux, the host uses shadow doorbells for I/O queues
only unless asked to use them for the admin queue too.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nvmefast.controller import Controller
from nvmefast.errors import NvmeFastError, StateError
from nvmefast.testing.bar0 import DOORBELL_BASE, REG_CAP
from nvmefast.testing.memory import PAGE_SIZE, GuestMemory
from nvmefast.testing.sqe import build_sqe

if TYPE_CHECKING:
    from nvmefast.testing.host import Host

__all__ = [
    "ADMIN_DOORBELL_BUFFER_CONFIG",
    "MODES",
    "OACS_DBBUF",
    "HostDoorbells",
    "ShadowBuffers",
    "dbbuf_set",
    "need_event",
]

ADMIN_DOORBELL_BUFFER_CONFIG = 0x7C
"""Doorbell Buffer Config admin opcode (NVMe Base 2.0, Figure 28)."""
OACS_DBBUF = 1 << 8
"""Identify Controller OACS bit 8: Doorbell Buffer Config supported."""
MODES = ("mmio", "shadow", "page", "shadow-page", "ioeventfd")
"""The ways the host can ring a doorbell."""

# The device reads doorbells as native u32 loads; the host's stores must be
# single aligned 4-byte stores too (see _store), which memoryview 'I' gives
# us only on a little-endian machine, where it also is the wire format.
assert sys.byteorder == "little", "the test host writes little-endian doorbells with native stores"


def need_event(event_idx: int, new: int, old: int) -> bool:
    """Linux ``nvme_dbbuf_need_event``: does moving a doorbell from ``old`` to
    ``new`` pass ``event_idx``? u16 arithmetic, exactly as the driver does it."""
    return (new - event_idx - 1) & 0xFFFF < (new - old) & 0xFFFF


@dataclass(frozen=True)
class ShadowBuffers:
    """The two buffers Doorbell Buffer Config handed to the controller."""

    db: int
    """IOVA of the shadow doorbell buffer (PRP1)."""
    ei: int
    """IOVA of the EventIdx buffer (PRP2)."""
    size: int
    """Bytes of each (whole memory pages)."""


def _store(view: memoryview, value: int) -> None:
    # One aligned 4-byte store (memoryview 'I' packs with a fixed-size
    # memcpy): the device must never see half of an old and half of a new
    # value, which struct.pack_into('<I') (byte by byte) would allow.
    with view.cast("I") as word:
        word[0] = value


def _load(view: memoryview) -> int:
    with view.cast("I") as word:
        return int(word[0])


class HostDoorbells:
    """The host's doorbell writer for one controller.

    ``mode`` applies to I/O queues, ``admin_mode`` to the admin queue (as
    Linux, which never uses shadow doorbells for the admin queue). Counts
    what it did: :attr:`mmio_writes`, :attr:`eventfd_writes` and
    :attr:`skipped` (shadow updates that needed no notification).
    """

    def __init__(self, controller: Controller, mem: GuestMemory) -> None:
        self.controller = controller
        self.mem = mem
        cap = controller.bar0_read(REG_CAP, 8)
        self.stride = 4 << ((cap >> 32) & 0xF)
        """Bytes between doorbells: 4 << CAP.DSTRD."""
        self._mode = "mmio"
        self._admin_mode = "mmio"
        self.shadow: ShadowBuffers | None = None
        """The shadow buffers in force (None before 7Ch and after a controller reset)."""
        self.shadow_pages: ShadowBuffers | None = None
        """The pages last given to 7Ch: kept across a controller reset, as Linux
        keeps ``dbbuf_dbs``, and reused (zeroed) by the next :func:`dbbuf_set`."""
        self.mmio_writes = 0
        """MMIO doorbell writes made."""
        self.eventfd_writes = 0
        """ioeventfd signals made."""
        self.skipped = 0
        """Shadow doorbell updates after which EventIdx said no ring was needed."""
        self._page: mmap.mmap | None = None
        self._eventfds: dict[int, int] = {}
        self._lock = threading.Lock()
        # Several host threads ring different queues; += is not atomic.
        self._count_lock = threading.Lock()
        # Python has no mb(); an uncontended lock acquire is a locked
        # read-modify-write (a full barrier on x86), which is what Linux's
        # mb() between the shadow store and the EventIdx load must be.
        self._fence = threading.Lock()

    # -- modes -----------------------------------------------------------------

    @property
    def mode(self) -> str:
        """How I/O queue doorbells are rung: one of :data:`MODES`."""
        return self._mode

    @property
    def admin_mode(self) -> str:
        """How admin queue doorbells are rung: one of :data:`MODES`."""
        return self._admin_mode

    def set_mode(self, mode: str, *, admin: bool = False) -> None:
        """Ring I/O queue doorbells (and with ``admin`` the admin queue's) by ``mode``.

        ``"shadow"`` and ``"shadow-page"`` need shadow buffers in force
        (:func:`dbbuf_set`). ``"page"`` writes reach a sleeping worker only
        through a polling worker (``polling="poll"``) or the controller's
        doorbell scan (``Controller.set_doorbell_scan``): the admin worker
        never polls, so use ``"ioeventfd"`` or the scan for the admin queue.
        """
        if mode not in MODES:
            raise StateError(f"doorbell mode must be one of {MODES}, got {mode!r}")
        if mode in ("shadow", "shadow-page") and self.shadow is None:
            raise StateError(f"doorbell mode {mode!r} needs Doorbell Buffer Config first (enable_shadow_doorbells)")
        if mode in ("page", "shadow-page", "ioeventfd"):
            self._open_page()
        with self._lock:
            self._mode = mode
            if admin:
                self._admin_mode = mode

    def attach_shadow(self, shadow: ShadowBuffers, admin: bool) -> None:
        """7Ch succeeded: I/O queues (and with ``admin`` the admin queue) in
        mode ``"mmio"`` or ``"page"`` switch to ``"shadow"``."""
        with self._lock:
            self.shadow = self.shadow_pages = shadow
            if self._mode in ("mmio", "page"):
                self._mode = "shadow"
            if admin and self._admin_mode in ("mmio", "page"):
                self._admin_mode = "shadow"

    def controller_reset(self) -> None:
        """The controller was reset: its shadow buffers are gone (NVMe Base 5.8),
        so shadow modes fall back to MMIO; the pages stay allocated."""
        with self._lock:
            self.shadow = None
            if self._mode in ("shadow", "shadow-page"):
                self._mode = "mmio" if self._mode == "shadow" else "page"
            if self._admin_mode in ("shadow", "shadow-page"):
                self._admin_mode = "mmio" if self._admin_mode == "shadow" else "page"

    # -- reading the buffers (for tests) -------------------------------------------

    def shadow_value(self, index: int, *, buffers: ShadowBuffers | None = None) -> int:
        """Doorbell ``index`` as it stands in the shadow doorbell buffer."""
        return _load(self.mem.view(self._buffers(buffers).db + index * self.stride, 4))

    def event_idx(self, index: int, *, buffers: ShadowBuffers | None = None) -> int:
        """EventIdx of doorbell ``index`` as the device last published it."""
        return _load(self.mem.view(self._buffers(buffers).ei + index * self.stride, 4))

    def _buffers(self, buffers: ShadowBuffers | None) -> ShadowBuffers:
        found = buffers or self.shadow or self.shadow_pages
        if found is None:
            raise StateError("no shadow doorbell buffers were ever configured")
        return found

    def page_value(self, index: int) -> int:
        """Doorbell ``index`` as it stands in the device's doorbell page."""
        page = self._open_page()
        with memoryview(page) as whole:
            return _load(whole[index * self.stride : index * self.stride + 4])

    # -- ringing ---------------------------------------------------------------

    def ring(self, index: int, value: int) -> None:
        """Publish ``value`` for doorbell ``index`` the way the current mode does.

        The caller serialises rings of one doorbell (the host does, under the
        SQ lock or the CQ's poll lock), as a driver does per queue.
        """
        mode = self._admin_mode if index < 2 else self._mode
        shadow = self.shadow
        if mode == "mmio":
            self.mmio(index, value)
        elif mode == "shadow":
            if shadow is None or self._shadow_update(shadow, index, value):
                self.mmio(index, value)
        elif mode == "page":
            self._page_store(index, value)
        elif mode == "shadow-page":
            if shadow is None or self._shadow_update(shadow, index, value):
                self._page_store(index, value)
        elif shadow is not None:  # ioeventfd, value in the shadow buffer
            if self._shadow_update(shadow, index, value):
                self.signal(index)
        else:  # ioeventfd, value in the doorbell page
            self._page_store(index, value)
            self.signal(index)

    def mmio(self, index: int, value: int) -> None:
        """An MMIO write of doorbell ``index`` (whatever the mode)."""
        with self._count_lock:
            self.mmio_writes += 1
        self.controller.bar0_write(DOORBELL_BASE + index * self.stride, value, 4)

    def signal(self, index: int) -> None:
        """Write doorbell ``index``'s ioeventfd (registering one on first use)."""
        fd = self._eventfds.get(index)
        if fd is None:
            fd = self.eventfd(index)
        with self._count_lock:
            self.eventfd_writes += 1
        os.eventfd_write(fd, 1)

    def eventfd(self, index: int) -> int:
        """The ioeventfd of doorbell ``index``, created and registered with
        ``set_doorbell_eventfd`` on first use."""
        with self._lock:
            fd = self._eventfds.get(index)
            if fd is None:
                fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                try:
                    self.controller.set_doorbell_eventfd(index, fd)
                except BaseException:
                    os.close(fd)
                    raise
                self._eventfds[index] = fd
            return fd

    def _shadow_update(self, shadow: ShadowBuffers, index: int, value: int) -> bool:
        # nvme_dbbuf_update_and_check_event: (wmb: the SQE/CQ consumption is
        # already in memory, Python stores are not reordered with stores on
        # x86) old = *db; *db = value; mb(); event_idx = *ei; need_event?
        db = self.mem.view(shadow.db + index * self.stride, 4)
        old = _load(db)
        _store(db, value)
        with self._fence:
            pass
        event_idx = _load(self.mem.view(shadow.ei + index * self.stride, 4))
        if need_event(event_idx, value, old):
            return True
        with self._count_lock:
            self.skipped += 1
        return False

    def _open_page(self) -> mmap.mmap:
        with self._lock:
            if self._page is None:
                fd, offset, length = self.controller.doorbell_page_fd()
                try:
                    self._page = mmap.mmap(
                        fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
                    )
                finally:
                    os.close(fd)
            return self._page

    def write_page(self, index: int, value: int) -> None:
        """Store ``value`` as doorbell ``index`` in the doorbell page, nothing else."""
        self._page_store(index, value)

    def write_shadow(self, index: int, value: int) -> None:
        """Store ``value`` as doorbell ``index`` in the shadow buffer, nothing else."""
        _store(self.mem.view(self._buffers(None).db + index * self.stride, 4), value)

    def _page_store(self, index: int, value: int) -> None:
        page = self._page or self._open_page()
        with memoryview(page) as whole:
            _store(whole[index * self.stride : index * self.stride + 4], value)

    def close(self) -> None:
        """Detach and close the ioeventfds and unmap the doorbell page."""
        with self._lock:
            fds, self._eventfds = self._eventfds, {}
            page, self._page = self._page, None
        for index, fd in fds.items():
            # The controller may be closed already; its notifiers went with it.
            with contextlib.suppress(NvmeFastError):
                self.controller.set_doorbell_eventfd(index, None)
            os.close(fd)
        if page is not None:
            page.close()


def dbbuf_set(host: Host, admin: bool = False) -> ShadowBuffers:
    """Doorbell Buffer Config as Linux ``nvme_dbbuf_dma_alloc`` + ``nvme_dbbuf_set`` do.

    Checks OACS bit 8, allocates (or reuses and zeroes) a shadow doorbell
    page and an EventIdx page sized for every doorbell, issues 7Ch with
    PRP1/PRP2 pointing at them and, on success, switches the host's
    doorbells to them. Raises CommandError if the controller refuses.
    """
    from nvmefast.testing.host import command_error

    doorbells = host.doorbells
    if not host.identify_controller().oacs & OACS_DBBUF:
        raise StateError("the controller does not support Doorbell Buffer Config (OACS bit 8 clear)")
    pages = doorbells.shadow_pages
    fresh = pages is None
    if pages is None:
        queues = host.controller.config.max_io_queue_pairs + 1
        size = -(-(queues * 2 * doorbells.stride) // PAGE_SIZE) * PAGE_SIZE
        pages = ShadowBuffers(host.alloc(size), host.alloc(size), size)
    else:
        # nvme_dbbuf_dma_alloc after a reset: same pages, zeroed.
        host.write_mem(pages.db, bytes(pages.size))
        host.write_mem(pages.ei, bytes(pages.size))
    sqe = build_sqe(ADMIN_DOORBELL_BUFFER_CONFIG, prp1=pages.db, prp2=pages.ei)
    completion = host.admin(sqe)
    if not completion.ok:
        if fresh:  # nvme_dbbuf_set: "Free memory and continue on"
            host.free(pages.db)
            host.free(pages.ei)
        raise command_error(completion, ADMIN_DOORBELL_BUFFER_CONFIG, "Doorbell Buffer Config")
    doorbells.attach_shadow(pages, admin)
    return pages
