"""``Controller``: the embedding contract.

A VMM, a vfio-user server or a test embeds one :class:`Controller` per
emulated NVMe device and needs nothing else: guest memory in
(``map_dma``), BAR0 accesses in (``bar0_read``/``bar0_write``), interrupts
out (an eventfd per MSI-X vector, with mask and pending state). Behind it
the core's :class:`~nvmefast._core.Engine` runs the queues on its own
worker, the register file runs the CC/CSTS state machine and the admin
layer executes admin commands.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple

from nvmefast._core import Engine
from nvmefast.admin import Admin
from nvmefast.config import ControllerConfig, NamespaceConfig
from nvmefast.errors import (
    ConfigError,
    DmaMapError,
    NamespaceError,
    NvmeFastError,
    RegisterAccessError,
    StateError,
    VectorError,
)
from nvmefast.faults import Faults
from nvmefast.namespaces import NN, NamespaceEntry, NamespaceTable, engine_spec
from nvmefast.ns_manager import NamespaceManager
from nvmefast.ns_store import NamespaceStore
from nvmefast.msix import MsixLayout, MsixRegisters, bar_size, layout_after
from nvmefast.registers import Registers
from nvmefast.trace import CommandTrace

__all__ = ["Controller", "DmaRegion"]

ENGINE_CAPACITY = (1 << 64) - 1
"""The NVM capacity the core is told: no limit of its own."""

log = logging.getLogger(__name__)


class DmaRegion(NamedTuple):
    """One guest memory mapping, as :meth:`Controller.dma_regions` reports it."""

    iova: int
    size: int
    writable: bool
    kind: str
    """``sealed``: a memfd sealed against shrinking (F_SEAL_SHRINK), trusted
    and not guarded; ``guarded``: any other fd, whose file may shrink under
    the device (a SIGBUS there fails the access, not the process);
    ``remote``: no fd, reached by DMA transport messages; ``lost``: its
    file shrank under the device, every access fails until it is unmapped."""


def _check_u64(name: str, value: int) -> None:
    # Same reason as _check_vector: keep OverflowError/TypeError from the
    # binding out of the embedder's way.
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise DmaMapError(f"{name} must be an int in 0..2**64-1, got {value!r}")


def _resolve_sizes(cfg: ControllerConfig, engine: Engine) -> ControllerConfig:
    if all(ns.backend != "file" for ns in cfg.namespaces):
        return cfg
    namespaces = []
    for nsid, ns in enumerate(cfg.namespaces, start=1):
        if ns.backend == "file":
            ns = dataclasses.replace(ns, size_bytes=engine.namespace_size(nsid))
        namespaces.append(ns)
    return dataclasses.replace(cfg, namespaces=tuple(namespaces))


def _log_memory_loss(serial: str, iova: int, size: int) -> None:
    # Runs on a worker thread, once per lost region.
    log.warning(
        "controller %s: guest memory %#x+%#x shrank under the device (its file was truncated): region lost; "
        "commands touching it fail with Data Transfer Error, queues in it with CSTS.CFS, until it is unmapped",
        serial,
        iova,
        size,
    )


class Controller:
    """One emulated NVMe controller.

    ``Controller()`` gives a controller with one 64 MiB RAM namespace; pass a
    :class:`ControllerConfig` for anything else. Use it as a context manager
    or call :meth:`close`; every method but :meth:`close` raises
    :class:`StateError` once it is closed.
    """

    def __init__(self, config: ControllerConfig | None = None) -> None:
        cfg = config if config is not None else ControllerConfig()
        self._trace: CommandTrace | None = None
        self._faults: Faults | None = None
        self._engine: Engine | None = Engine(
            namespaces=[engine_spec(ns) for ns in cfg.namespaces],
            msix_vectors=cfg.vectors,
            max_qid=cfg.max_io_queue_pairs,
            max_queue_entries=cfg.max_queue_entries,
            mdts_bytes=cfg.mdts_bytes,
            poll_us=cfg.poll_us,
            msix_embedder_managed=cfg.msix_bar is None,
            polling=cfg.polling,
            iothreads=cfg.iothreads,
            affinity=list(cfg.iothread_affinity),
            doorbell_stride=4 << cfg.doorbell_stride,
            cpus=list(cfg.cpus or ()),
            nn=NN,
            # The capacity is accounted here (nvmefast.namespaces: sizes
            # without metadata, a total that may follow the embedder's adds),
            # so the core's own check is given all it can count.
            capacity_bytes=ENGINE_CAPACITY,
        )
        # A file namespace's size is the file's unless the config gave one:
        # from here on the config carries the size the core opened, so
        # Identify (NSZE/NCAP/NUSE) and every user see the real one.
        self._store: NamespaceStore | None = None
        try:
            self._config = cfg = _resolve_sizes(cfg, self._engine)
            self._namespaces = self._restore_namespaces(cfg, self._engine)
        except BaseException:
            self._engine.close()
            if self._store is not None:
                self._store.close()
            raise
        self._admin = Admin(cfg, self._engine, self._namespaces)
        self._registers = Registers(cfg, self._engine, self._admin)
        # The MSI-X table/PBA: in BAR0 (the register file routes it), in a
        # BAR of their own (msix_bar_read/write), or the embedder's.
        if self._registers.msix is not None:
            self._msix: MsixRegisters | None = self._registers.msix
        elif cfg.msix_bar is not None:
            self._msix = MsixRegisters(self._engine, layout_after(cfg.msix_bar, 0, cfg.vectors))
        else:
            self._msix = None
        # Kept apart from the objects close() drops: both hold after close.
        self._bar0_size = self._registers.size
        self._msix_layout = None if self._msix is None else self._msix.layout
        self._engine.set_admin_handler(self._admin.handle)
        # Invalid values a worker finds in the doorbell page or the shadow
        # buffer (no MMIO write to refuse) are reported like refused writes.
        self._engine.set_event_handler(self._registers.doorbell_event)
        # Not a bound method: the engine would keep the Controller alive.
        self._engine.set_memory_loss_handler(functools.partial(_log_memory_loss, cfg.serial))
        # Zones the controller moves on its own (fault rules) reach the
        # Changed Zone List and the Zone Descriptor Changed notice.
        self._engine.set_zone_event_handler(self._admin.zone_descriptors_changed)
        self._engine.start()

    def _restore_namespaces(self, cfg: ControllerConfig, engine: Engine) -> NamespaceManager:
        # The namespace table starts as configured; a namespace directory adds what it kept.
        table = NamespaceTable(cfg.namespaces, cfg.capacity_bytes, shared=cfg.multi_controller)
        if cfg.capacity_bytes is not None and table.allocated_bytes() > cfg.capacity_bytes:
            raise ConfigError(
                f"ControllerConfig.capacity_bytes {cfg.capacity_bytes} is less than the configured namespaces "
                f"take once their files are opened ({table.allocated_bytes()}); raise it"
            )
        if cfg.namespace_dir is not None:
            self._store = NamespaceStore(cfg.namespace_dir)
        manager = NamespaceManager(table, engine, self._store)
        manager.restore()
        return manager

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Controller:
        self._live()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker and release queues, mappings and notifiers (idempotent)."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.close()
        # The handler refers back to the engine through Admin; dropping it
        # breaks the cycle so the engine's memory goes now, not at GC time.
        try:
            engine.set_admin_handler(None)
            engine.set_zone_event_handler(None)
        except NvmeFastError:
            log.debug("engine refused to drop the admin handler after close", exc_info=True)
        # The register file, admin layer and MSI-X registers hold the engine
        # too: drop them, so the engine (and its doorbell memfd, epoll and
        # eventfds) goes now rather than whenever this Controller does.
        # The admin layer and the namespace manager refer to each other (its notices): part them.
        self._namespaces.disconnect()
        del self._registers, self._admin, self._namespaces
        self._msix = None
        if self._store is not None:
            self._store.close()

    def __del__(self) -> None:
        # A forgotten close() must not leave the worker running: the engine is
        # kept alive by its own admin handler (a cycle through Rust that the
        # garbage collector cannot see), so the Controller is its last owner.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing may escape __del__
            pass

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._engine is None

    def _live(self) -> Engine:
        if self._engine is None:
            raise StateError("the Controller is closed; create a new one")
        return self._engine

    # -- properties ----------------------------------------------------------

    @property
    def config(self) -> ControllerConfig:
        """The configuration the controller was built with, every namespace's
        ``size_bytes`` resolved (a file namespace's is the file's size when
        the config left it None)."""
        return self._config

    def namespace_info(self, nsid: int) -> dict[str, object]:
        """How namespace ``nsid`` is served: ``backend``, ``path`` (None
        unless a file), ``io`` (``"io_uring"``, ``"threads"`` or
        ``"memory"``), ``cache`` (``"direct"``, ``"buffered"`` or
        ``"memory"``), ``readonly``, and ``size_bytes``."""
        engine = self._live()
        entry = self._namespace(nsid)
        info: dict[str, object] = dict(engine.namespace_info(nsid))
        info["size_bytes"] = entry.size
        return info

    def _namespace(self, nsid: int) -> NamespaceEntry:
        self._live()
        entry = self._namespaces.table.get(nsid) if isinstance(nsid, int) and not isinstance(nsid, bool) else None
        if entry is None:
            have = ", ".join(map(str, self._namespaces.table.allocated())) or "none"
            raise NamespaceError(
                f"nsid must name an allocated namespace (allocated: {have}), got {nsid!r}"
            )
        return entry

    # -- namespaces while serving ---------------------------------------------

    def add_namespace(self, namespace: NamespaceConfig) -> int:
        """Add ``namespace`` while the controller runs; returns its NSID (the
        lowest free one). It is attached at once and the host hears of it:
        the Changed Namespace List names it and, if the host enabled it, a
        Namespace Attribute Changed notice is raised (Linux rescans and the
        block device appears). I/O on the other namespaces goes on.

        It draws on ``capacity_bytes`` when one was configured
        (:class:`NamespaceError` if it does not fit), else raises the total.
        A file namespace is listed in the namespace directory (if
        configured), so a restarted controller finds it again; a RAM one is
        not. Raises :class:`NamespaceError` when every NSID is in use and
        :class:`ConfigError` when the core cannot open it."""
        self._live()
        return self._namespaces.add(namespace)

    def resize_namespace(self, nsid: int, size_bytes: int) -> None:
        """Grow or shrink namespace ``nsid`` to ``size_bytes`` (a multiple of
        its LBA size; not a zoned namespace, the core cannot yet) while the controller runs.
        The host hears of it as of :meth:`add_namespace`; commands already
        running finish, later ones past a shrunk end get LBA Out of Range.
        Raises :class:`NamespaceError` for an unallocated NSID or growth the
        capacity cannot hold, :class:`ConfigError` for a size the namespace
        cannot take."""
        self._live()
        self._namespace(nsid)
        self._namespaces.resize(nsid, size_bytes)

    def remove_namespace(self, nsid: int) -> None:
        """Remove namespace ``nsid`` while the controller runs: commands
        already running on it finish, later ones get Invalid Field (an
        inactive NSID); its capacity returns to the unallocated pool and the
        host hears of it as of :meth:`add_namespace`. An image the controller
        made in its namespace directory is deleted; a file the embedder gave
        is left alone. Raises :class:`NamespaceError` for an unallocated NSID."""
        self._live()
        self._namespace(nsid)
        self._namespaces.delete([nsid], notify=True)

    def namespaces(self) -> dict[int, NamespaceConfig]:
        """The allocated namespaces by NSID, sizes resolved (configured,
        created by the host, added), attached or not."""
        self._live()
        return {e.nsid: e.config for e in self._namespaces.table.entries()}

    def namespace_state(self, nsid: int) -> dict[str, object]:
        """What :meth:`namespace_info` says, plus ``nsid``, ``origin``
        (``configured``, ``created`` or ``added``), ``attached``, ``lba_size``
        and ``metadata_size`` (the current format)."""
        entry = self._namespace(nsid)
        info = self.namespace_info(nsid)
        fmt = self._live().namespace_format(nsid)
        info.update(nsid=nsid, origin=entry.origin, attached=entry.attached, lba_size=int(fmt["lba_size"]),
                    metadata_size=int(fmt["metadata_size"]))  # fmt: skip
        return info

    def capacity(self) -> tuple[int, int]:
        """(total, unallocated) NVM capacity in bytes: Identify TNVMCAP and UNVMCAP."""
        self._live()
        table = self._namespaces.table
        return table.total_bytes, table.unallocated_bytes

    @property
    def bar0_size(self) -> int:
        """BAR0 size in bytes: registers, then doorbells, rounded up to a power of two."""
        return self._bar0_size

    @property
    def engine(self) -> Engine:
        """The core engine. Internal: for ``nvmefast.testing`` and benchmarks only."""
        return self._live()

    # -- guest memory ----------------------------------------------------------

    def map_dma(self, iova: int, size: int, fd: int, offset: int = 0, writable: bool = True) -> None:
        """Map ``size`` bytes of ``fd`` from ``offset`` as guest memory at ``iova``."""
        engine = self._live()
        _check_u64("iova", iova)
        _check_u64("size", size)
        _check_u64("offset", offset)
        engine.map_dma(iova, size, fd, offset, writable)

    def dma_regions(self) -> list[DmaRegion]:
        """The guest memory mappings, sorted by IOVA, with what each is.

        A memfd sealed against shrinking is trusted (``sealed``); any other
        fd is ``guarded``: if its file shrinks under the device (a client
        truncates it), the commands touching it complete with Data Transfer
        Error, queues in it make the controller fatal (CSTS.CFS), and the
        region turns ``lost`` (logged once, counted in ``counters()`` as
        ``dma_regions_lost``) until it is unmapped. See docs/trust.md.
        """
        return [DmaRegion(*r) for r in self._live().dma_region_info()]

    def unmap_dma(self, iova: int, size: int) -> None:
        """Remove the mapping (fd-backed or remote) that exactly covers ``[iova, iova + size)``."""
        engine = self._live()
        _check_u64("iova", iova)
        _check_u64("size", size)
        engine.unmap_dma(iova, size)

    def map_dma_remote(self, iova: int, size: int, writable: bool = True) -> None:
        """Add ``[iova, iova + size)`` as remote guest memory: no fd, reached by messages.

        For a vfio-user client's DMA_MAP without an fd: every device access
        to the range (queue entries, PRP and SGL lists, data, completions)
        calls the transport set with :meth:`set_dma_transport`. Same rules as
        :meth:`map_dma`: a range overlapping any mapping, of size 0 or
        wrapping past 2**64 raises :class:`DmaMapError`; :meth:`unmap_dma`
        removes it. ``writable=False`` makes device writes to it fail (Data
        Transfer Error). Shadow doorbells cannot live there: Doorbell Buffer
        Config on remote memory fails with Data Transfer Error.
        """
        engine = self._live()
        _check_u64("iova", iova)
        _check_u64("size", size)
        engine.map_dma_remote(iova, size, writable)

    def set_dma_transport(
        self,
        read: Callable[[int, int], bytes] | None,
        write: Callable[[int, bytes], object] | None,
    ) -> None:
        """Set the callables that move the bytes of remote guest memory.

        ``read(iova, length)`` returns exactly ``length`` bytes (``bytes`` or
        ``bytearray``); ``write(iova, data)`` stores ``data``. Each call lies
        inside one region added by :meth:`map_dma_remote`. They run on the
        controller's worker threads, which take the GIL for the call only,
        and may block (a vfio-user DMA_READ/DMA_WRITE round trip) as long as
        whatever they wait for does not itself wait for the controller (queue
        creation, reset): the worker holds its queues meanwhile. An
        exception (printed, as an admin handler's is) or a result of the
        wrong length fails the command with Data Transfer Error; the
        controller keeps going. ``None`` for either makes that direction
        fail; ``(None, None)`` removes the transport. Raises
        :class:`ConfigError` for an argument that is not callable.
        """
        self._live().set_dma_transport(read, write)

    # -- BAR0 ------------------------------------------------------------------

    def bar0_read(self, offset: int, size: int) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes of BAR0 at ``offset`` (all
        ones while powered off after a power loss, as a device gone from the
        bus reads)."""
        self._live()
        if self._faults is not None and self._faults.powered_off:
            self._registers.check_access(offset, size)
            return (1 << (8 * size)) - 1
        return self._registers.read(offset, size)

    def bar0_write(self, offset: int, value: int, size: int) -> None:
        """Write ``size`` (1, 2, 4 or 8) bytes of ``value`` to BAR0 at
        ``offset`` (ignored while powered off after a power loss)."""
        self._live()
        if self._faults is not None and self._faults.powered_off:
            self._registers.check_access(offset, size)
            return
        trace = self._trace
        if trace is not None and trace.recording:
            trace.register_write(offset, value)
        self._registers.write(offset, value, size)

    def function_reset(self) -> None:
        """Reset the function as a PCI FLR (or a vfio-user DEVICE_RESET) does.

        The controller resets (queues deleted, commands in flight dropped,
        CSTS.RDY clear), every BAR0 register returns to its power-on value,
        and the MSI-X state to that of a new controller (vector masks and
        pending bits clear; enabled when the embedder manages the table, as
        at construction).
        DMA mappings and interrupt eventfds are the embedder's wiring, not
        device state: they stay. Namespace data stays too.
        """
        engine = self._live()
        self._registers.function_reset()
        engine.msix_reset()

    # -- doorbells ---------------------------------------------------------------

    def doorbell_page_fd(self) -> tuple[int, int, int]:
        """A new fd of the doorbell page, the doorbells' offset in it and their length.

        The caller closes the fd. File offsets mirror BAR0: the doorbells
        start at file offset 1000h, their BAR0 offset (SQ y tail at
        ``1000h + 2y * stride``, CQ y head at ``1000h + (2y+1) * stride``,
        stride ``4 << doorbell_stride``), and the first 4 KiB of the file is
        an unused hole. A vfio-user server therefore offers the fd as BAR0's
        region fd at offset 0 with a sparse-mmap area at 1000h: the client's
        doorbell writes land here with no message. Nothing wakes a sleeping
        worker then: poll (``polling="poll"``), attach ioeventfds, or set
        :meth:`set_doorbell_scan`.
        """
        return self._live().doorbell_page_fd()

    def set_doorbell_scan(self, microseconds: int) -> None:
        """Make sleeping workers look at the doorbells every ``microseconds``.

        For doorbells that change with nothing to wake a worker (a doorbell
        page a vfio-user client maps): the interval doubles with each look
        that finds nothing, up to 16x, and returns to ``microseconds`` once
        work arrives. 0 (the default) sleeps until woken.
        """
        if not isinstance(microseconds, int) or not 0 <= microseconds <= 10_000_000:
            raise ConfigError(f"doorbell scan interval must be an int in 0..10000000 microseconds, got {microseconds!r}")
        self._live().set_doorbell_scan(microseconds)

    @property
    def doorbell_scan(self) -> int:
        """The interval set by :meth:`set_doorbell_scan` (0: none)."""
        return self._live().doorbell_scan()

    def set_doorbell_eventfd(self, index: int, fd: int | None) -> None:
        """Wake the worker when ``fd`` is written: an ioeventfd for doorbell ``index``
        (SQ y tail = 2y, CQ y head = 2y + 1). An eventfd carries no value: the
        worker reads it from the shadow doorbell buffer or the doorbell page.
        ``fd`` is duplicated; None detaches."""
        engine = self._live()
        if not isinstance(index, int) or index < 0:
            raise VectorError(f"doorbell index must be a non-negative int, got {index!r}")
        engine.set_doorbell_eventfd(index, fd)

    def iothread_of(self, qid: int) -> int | None:
        """The iothread (0-based) serving I/O queue ``qid``, or None."""
        return self._live().iothread_of(qid)

    # -- interrupts ------------------------------------------------------------

    def set_vector_eventfd(self, vector: int, fd: int | None) -> None:
        """Signal MSI-X ``vector`` by writing eventfd ``fd`` (duplicated); None detaches.

        ``fd`` must be an eventfd (``os.eventfd``, a KVM irqfd): any other fd
        raises :class:`VectorError`. It is made non-blocking, so the worker's
        write never waits (a counter at its maximum is a signal already
        pending); O_NONBLOCK belongs to the open file, so the caller's copy
        becomes non-blocking too: wait for it with ``select``/``poll``.
        """
        engine = self._live()
        self._check_vector(vector)
        engine.set_vector_eventfd(vector, fd)

    def mask_vector(self, vector: int, masked: bool) -> None:
        """Mask or unmask ``vector``; unmasking with its pending bit set signals once."""
        engine = self._live()
        self._check_vector(vector)
        engine.mask_vector(vector, masked)

    def _check_vector(self, vector: int) -> None:
        # The core takes an unsigned vector; a negative one would surface as
        # OverflowError instead of the documented VectorError.
        n = self._config.vectors
        if not isinstance(vector, int) or not 0 <= vector < n:
            raise VectorError(
                f"MSI-X vector {vector!r} is out of range: this controller has {n} vectors (0..{n - 1})"
            )

    def pending_vectors(self) -> set[int]:
        """Vectors whose pending bit (MSI-X PBA) is set."""
        return set(self._live().pending_vectors())

    def set_vector_callback(self, vector: int, callback: Callable[[int], object] | None) -> None:
        """Deliver ``vector`` by calling ``callback(vector)`` instead of an eventfd.

        Runs on the controller's worker thread with no internal lock held, so
        the callback may call back into the controller. This is what an
        emulator's ``msix_notify`` costs when it runs in the interpreter.
        """
        engine = self._live()
        self._check_vector(vector)
        engine.set_vector_callback(vector, callback)

    def set_vector_kvm_msi(self, vector: int, vm_fd: int) -> None:
        """Deliver ``vector`` with the KVM_SIGNAL_MSI ioctl on KVM VM ``vm_fd``,
        sending the message address/data programmed in its MSI-X table entry."""
        engine = self._live()
        self._check_vector(vector)
        engine.set_vector_kvm_msi(vector, vm_fd)

    # -- MSI-X capability, table and PBA ----------------------------------------

    def set_msix_control(self, enable: bool, function_mask: bool) -> None:
        """MSI-X Enable and Function Mask, as a PCI config write of MXC sets them.

        Clearing the function mask (or enabling) delivers, once each, the
        vectors held pending that are no longer masked.
        """
        self._live().set_msix_control(enable, function_mask)

    def msix_control(self) -> tuple[bool, bool]:
        """(MSI-X enabled, function masked)."""
        return self._live().msix_control()

    @property
    def msix_layout(self) -> MsixLayout | None:
        """Where the device's MSI-X table and PBA sit (None: the embedder's)."""
        return self._msix_layout

    def _msix_regs(self, what: str) -> MsixRegisters:
        self._live()
        if self._msix is None:
            raise StateError(
                f"{what}: this controller has no MSI-X table of its own; "
                "set ControllerConfig(msix_bar=0..5) to emulate one, or use mask_vector/pending_vectors"
            )
        return self._msix

    def msix_table_read(self, offset: int, size: int = 4) -> int:
        """Read the MSI-X table at ``offset`` bytes from its start (dword or qword)."""
        regs = self._msix_regs("msix_table_read")
        self._check_msix_access(offset, size, regs.layout.table_size, "msix_table_read")
        return regs.read(regs.layout.table_offset + offset, size)

    def msix_table_write(self, offset: int, value: int, size: int = 4) -> None:
        """Write the MSI-X table at ``offset`` bytes from its start (dword or qword)."""
        regs = self._msix_regs("msix_table_write")
        self._check_msix_access(offset, size, regs.layout.table_size, "msix_table_write")
        regs.write(regs.layout.table_offset + offset, value & ((1 << (8 * size)) - 1), size)

    def msix_pba_read(self, offset: int, size: int = 8) -> int:
        """Read the Pending Bit Array at ``offset`` bytes from its start."""
        regs = self._msix_regs("msix_pba_read")
        self._check_msix_access(offset, size, regs.layout.pba_size, "msix_pba_read")
        return regs.read(regs.layout.pba_offset + offset, size)

    @property
    def msix_bar_size(self) -> int:
        """Size of the MSI-X BAR when it is separate (``msix_bar`` 1..5), else 0."""
        if self._msix is None or self._msix.layout.bar == 0:
            return 0
        return bar_size(self._msix.layout.end, 0x1000)

    def _msix_bar(self, what: str) -> MsixRegisters:
        regs = self._msix_regs(what)
        if regs.layout.bar == 0:
            raise StateError(
                f"{what}: this controller's MSI-X table lives in BAR0 (msix_bar=0); "
                "reach it through bar0_read/bar0_write or msix_table_read/write"
            )
        return regs

    def msix_bar_read(self, offset: int, size: int) -> int:
        """A guest read of the separate MSI-X BAR (table at 0, PBA after it)."""
        regs = self._msix_bar("msix_bar_read")
        self._check_msix_access(offset, size, self.msix_bar_size, "msix_bar_read")
        return regs.read(offset, size)

    def msix_bar_write(self, offset: int, value: int, size: int) -> None:
        """A guest write of the separate MSI-X BAR."""
        regs = self._msix_bar("msix_bar_write")
        self._check_msix_access(offset, size, self.msix_bar_size, "msix_bar_write")
        regs.write(offset, value & ((1 << (8 * size)) - 1), size)

    @staticmethod
    def _check_msix_access(offset: int, size: int, limit: int, what: str) -> None:
        if size not in (1, 2, 4, 8) or not isinstance(offset, int) or offset < 0 or offset + size > limit:
            raise RegisterAccessError(
                f"{what}: access of {size} bytes at {offset!r} must use size 1, 2, 4 or 8 "
                f"within 0..{limit:#x} (dword or aligned qword for real effect)"
            )

    # -- MSI and INTx (hosts without MSI-X) ---------------------------------------

    def set_irq_mode(self, mode: str) -> None:
        """Select ``"msix"``, ``"msi"`` or ``"intx"``, as the PCI config's enables do.

        With MSI, INTMS/INTMC mask and unmask vectors (held interrupts are
        sent on unmask). With INTx the pin is level triggered: asserted while
        a CQ with interrupts enabled holds unconsumed entries and INTMS bit 0
        is clear.
        """
        if mode not in ("msix", "msi", "intx"):
            raise ConfigError(f"irq mode must be 'msix', 'msi' or 'intx', got {mode!r}")
        self._live().set_irq_mode(mode)

    @property
    def irq_mode(self) -> str:
        """The interrupt delivery mode."""
        return self._live().irq_mode

    def set_intx_eventfds(self, trigger: int | None, resample: int | None = None) -> None:
        """Signal INTx through a KVM irqfd pair: ``trigger`` asserts; after the
        guest's EOI KVM signals ``resample`` and the line is asserted again if
        it is still high. Both are duplicated; None detaches. Both must be
        eventfds and are made non-blocking, as for :meth:`set_vector_eventfd`."""
        self._live().set_intx_eventfds(trigger, resample)

    def set_intx_callback(self, callback: Callable[[bool], object] | None) -> None:
        """Call ``callback(level)`` on every INTx level change (on the worker)."""
        self._live().set_intx_callback(callback)

    @property
    def intx_asserted(self) -> bool:
        """True while the INTx line is asserted."""
        return self._live().intx_asserted

    # -- observation -----------------------------------------------------------

    @property
    def trace(self) -> CommandTrace:
        """The opt-in command trace (:class:`nvmefast.trace.CommandTrace`)."""
        if self._trace is None:
            self._trace = CommandTrace(self._live())
        return self._trace

    @property
    def faults(self) -> Faults:
        """Fault injection (:class:`nvmefast.faults.Faults`): rules that fail,
        delay, hold or corrupt commands, drop or delay interrupts, set
        CSTS.CFS or cut the power."""
        engine = self._live()
        if self._faults is None:
            self._faults = Faults(engine, power_on=self.function_reset)
        return self._faults

    def counters(self) -> dict[str, int]:
        """Event counters of the core, the register file and the admin layer."""
        out = dict(self._live().counters())
        out.update(self._registers.counters)
        out.update(self._admin.counters())
        return out
