"""Type stubs for the compiled Rust core, ``nvmefast._core``.

Users never import this module; ``nvmefast`` re-exports what is public.
Checked against the compiled module by ``mypy.stubtest`` (tests/test_stubs.py).
"""

from collections.abc import Callable, Sequence
from typing import Any, final

__version__: str
__all__ = [
    "__version__",
    "CapacityError",
    "ConfigError",
    "DmaMapError",
    "Engine",
    "FaultTable",
    "NamespaceError",
    "NvmeFastError",
    "QueueError",
    "RegisterAccessError",
    "StateError",
    "VectorError",
    "VfioUserBench",
    "bench_io",
    "floor_eventfd_pingpong",
    "floor_file_uring",
    "floor_guard",
    "floor_memcpy_4k",
    "floor_shm_pingpong",
    "floor_unix_socket_rtt",
    "measure_irq_delivery",
]

class NvmeFastError(Exception):
    """Root of every error nvmefast raises."""

class ConfigError(NvmeFastError, ValueError):
    """A configuration value is out of range or inconsistent."""

class DmaMapError(NvmeFastError):
    """A DMA map/unmap request is invalid (overlap, bad fd, size, alignment)."""

class RegisterAccessError(NvmeFastError):
    """A BAR0 access the embedder should never make (bad size, offset past BAR0)."""

class VectorError(NvmeFastError):
    """An interrupt vector number or notifier fd is invalid."""

class QueueError(NvmeFastError):
    """A queue operation on the core is invalid (qid in use, unknown CQ, ...)."""

class StateError(NvmeFastError):
    """The object is in the wrong state for the call (closed, not running, ...)."""

class NamespaceError(NvmeFastError):
    """A namespace table change that cannot be made (NSID taken or out of range, not allocated, none free)."""

class CapacityError(NamespaceError):
    """Not enough unallocated NVM capacity for the namespace (Namespace Insufficient Capacity)."""

# An admin command handler receives the 64-byte SQE and returns
# (status, dw0) to complete it now, or None to complete it later with
# Engine.complete_admin (AER). ``status`` is the 15-bit CQE status field:
# DNR << 14 | M << 13 | CRD << 11 | SCT << 8 | SC.
_AdminHandler = Callable[[bytes], tuple[int, int] | None]

@final
class Engine:
    """The device's hot path: guest memory, queues, doorbells, vectors, the worker.

    ``namespaces`` is a sequence of dicts with keys ``size_bytes``,
    ``lba_size``, ``backend`` and, for a file, ``path``, ``readonly``,
    ``cache``, ``io`` (for ``"custom"``: ``storage``, a storage object;
    ``zones``: None or a dict of ``size_bytes`` (required),
    ``capacity_bytes``, ``max_open``, ``max_active``, ``append_size_limit``,
    ``descriptor_extension_bytes``, ``cross_read`` (0/False: the zone size,
    no limit, MDTS, no extension) for a zoned namespace; an unknown key is a
    ConfigError), or of the older tuples
    ``(size_bytes, lba_size, backend)`` or
    ``(size_bytes, lba_size, backend, path, readonly, cache, io)``;
    namespace IDs are 1-based in that order. ``backend`` is ``"ram"``,
    ``"null"`` or ``"file"`` (the 7-tuple: ``path`` an image file or block
    device, ``size_bytes`` 0 for the file's own size or the size to create
    or extend a sparse file to; ``cache`` ``"auto"``/``"direct"``/
    ``"buffered"``; ``io`` ``"auto"``/``"io_uring"``/``"threads"``, with
    ``NVMEFAST_FILE_IO`` overriding ``"auto"``). A file that cannot serve
    raises ConfigError naming the path and the fix.
    ``max_qid`` is the highest queue ID (admin queue 0 included) the engine
    will accept; ``mdts_bytes`` the largest data transfer (0 = unlimited).
    ``poll_us`` is how long an I/O worker polls after its last work before
    it sleeps until a doorbell write (``polling="adaptive"``; ``"interrupt"``
    never polls, ``"poll"`` never sleeps). ``iothreads`` I/O workers serve the
    I/O queues (``affinity[i]`` is CQ ``i+1``'s iothread, the rest round
    robin); the admin queue has its own worker. ``doorbell_stride`` is
    ``4 << CAP.DSTRD`` bytes. ``cpus``: CPUs the I/O workers are pinned
    to, round robin (empty: none; each must be in the affinity mask,
    else ConfigError). ``msix_embedder_managed``: the embedder
    owns the MSI-X capability and table (vectors start enabled and
    unmasked); otherwise the device starts in the PCI reset state (MSI-X
    disabled, every table entry masked). ``nn``: NN, the highest NSID
    (``len(namespaces)``..1024; None: ``len(namespaces)``); NSIDs past the
    configured namespaces start unallocated (inactive). ``capacity_bytes``:
    TNVMCAP, the NVM capacity every namespace draws on (0: exactly what
    ``namespaces`` take); ConfigError when they take more.
    """

    def __new__(
        cls,
        *,
        namespaces: Sequence[
            dict[str, Any]
            | tuple[int, int, str]
            | tuple[int, int, str, Any]
            | tuple[int, int, str, str | None, bool, str, str]
        ],
        msix_vectors: int,
        max_qid: int,
        max_queue_entries: int,
        mdts_bytes: int,
        poll_us: int,
        msix_embedder_managed: bool = True,
        polling: str = "adaptive",
        iothreads: int = 1,
        affinity: Sequence[int] = ...,
        doorbell_stride: int = 4,
        cpus: Sequence[int] = ...,
        nn: int | None = None,
        capacity_bytes: int = 0,
    ) -> Engine: ...
    # lifecycle
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
    def stop(self) -> None:
        """Stop and join the worker thread; releases the GIL while waiting."""
    def close(self) -> None:
        """Stop the worker, delete every queue and drop every DMA mapping."""
    @property
    def running(self) -> bool: ...
    def set_admin_handler(self, handler: _AdminHandler | None) -> None:
        """Install the callable that executes admin SQEs (run on the worker)."""
    # guest memory
    def map_dma(self, iova: int, size: int, fd: int, offset: int = 0, writable: bool = True) -> None:
        """Map ``size`` bytes of ``fd`` at ``offset`` as guest memory at ``iova``."""
    def map_dma_remote(self, iova: int, size: int, writable: bool = True) -> None:
        """Add ``[iova, iova + size)`` as remote guest memory, reached through the DMA transport."""
    def set_dma_transport(
        self,
        read: Callable[[int, int], bytes] | None,
        write: Callable[[int, bytes], object] | None,
    ) -> None:
        """The callables that read/write remote guest memory (run on worker threads); None removes."""
    def unmap_dma(self, iova: int, size: int) -> None:
        """Remove the mapping (fd-backed or remote) that exactly covers ``[iova, iova + size)``."""
    def dma_regions(self) -> list[tuple[int, int, bool]]:
        """The current mappings, fd-backed and remote, as ``(iova, size, writable)``, sorted by iova."""
    def dma_region_info(self) -> list[tuple[int, int, bool, str]]:
        """The mappings as ``(iova, size, writable, kind)``: kind ``sealed``, ``guarded``, ``remote`` or ``lost``."""
    def set_memory_loss_handler(self, handler: Callable[[int, int], object] | None) -> None:
        """Called as ``handler(iova, size)`` from a worker, once per guest memory region lost under the device."""
    # controller state driven by the register file
    def set_page_size(self, page_size: int) -> None:
        """The memory page size from CC.MPS, used for PRP walking."""
    def reset(self) -> None:
        """Controller reset: delete every queue, clear doorbells and CFS."""
    @property
    def fatal(self) -> bool:
        """True once the controller hit a fatal error (CSTS.CFS)."""
    # queues (called by the admin layer after it validated the command)
    def create_cq(self, qid: int, iova: int, size: int, vector: int, ien: bool) -> None: ...
    def create_sq(self, qid: int, iova: int, size: int, cqid: int) -> None: ...
    def delete_sq(self, qid: int) -> None: ...
    def delete_cq(self, qid: int) -> None: ...
    def sq_exists(self, qid: int) -> bool: ...
    def cq_exists(self, qid: int) -> bool: ...
    def cq_in_use(self, qid: int) -> bool:
        """True while some SQ posts to CQ ``qid``."""
    # doorbells
    def doorbell_write(self, index: int, value: int) -> int | None:
        """Doorbell ``index`` (SQ y tail = 2y, CQ y head = 2y + 1) gets ``value``.

        Returns None, or the Asynchronous Event Information code (00h write to
        an invalid doorbell register, 01h invalid doorbell write value) of an
        Error event the caller must report through AER.
        """
    def doorbell_page_fd(self) -> tuple[int, int, int]:
        """A new fd of the doorbell page (caller closes it), the doorbells' file offset (1000h) and length."""
    def set_doorbell_scan(self, us: int) -> None:
        """Sleeping workers look at the doorbells every ``us`` microseconds (backing off to 16x); 0: never."""
    def doorbell_scan(self) -> int:
        """The interval set by :meth:`set_doorbell_scan`."""
    def set_doorbell_eventfd(self, index: int, fd: int | None) -> None:
        """An ioeventfd for doorbell ``index`` (duplicated); None detaches."""
    def set_shadow_doorbells(self, db: int, ei: int) -> int:
        """Doorbell Buffer Config: shadow buffer and EventIdx buffer; returns an NVMe status."""
    @property
    def shadow_doorbells(self) -> tuple[int, int] | None: ...
    def set_event_handler(self, handler: Callable[[int], object] | None) -> None:
        """Called with an AER info code when a worker finds an invalid doorbell value in memory."""
    def iothread_of(self, qid: int) -> int | None:
        """The iothread (0-based) serving queue ``qid``; None for the admin queue or none."""
    # namespaces and commands the admin layer drives
    def abort_command(self, sqid: int, cid: int) -> bool:
        """Abort command ``cid`` if it still sits unfetched in SQ ``sqid``.

        The worker then completes it with Command Abort Requested (00h/07h)
        instead of executing it. False when no such command is queued (it
        already ran: I/O executes as soon as it is fetched).
        """
    def format_namespace(
        self,
        nsid: int,
        lba_size: int,
        metadata_size: int = 0,
        extended_lba: bool = False,
        pi_type: int = 0,
        pi_first: bool = False,
        guard: str = "crc16",
    ) -> None:
        """Format NVM: namespace ``nsid`` gets ``lba_size`` (512 or 4096) and
        the metadata format given (none by default); its data reads as zeroes
        and every block's metadata is deallocated (reads back all FFh, the PI
        escape). ConfigError for a combination that is not an LBA format."""
    def namespace_format(self, nsid: int) -> dict[str, Any]:
        """The current format of namespace ``nsid``: lba_size, metadata_size,
        extended_lba, pi_type, pi_first, guard ("crc16" or "crc64")."""
    def namespace_lba_size(self, nsid: int) -> int:
        """The current LBA data size of namespace ``nsid``."""
    def namespace_size(self, nsid: int) -> int:
        """The size in bytes of namespace ``nsid`` (a file's, as opened)."""
    def namespace_info(self, nsid: int) -> dict[str, Any]:
        """How namespace ``nsid`` is served.

        backend ("ram", "null", "file"), size_bytes, path (None for memory),
        io ("io_uring", "threads", "memory"), cache ("direct", "buffered",
        "memory"), readonly.
        """
    def flush_all(self) -> None:
        """fdatasync every writable file namespace through the engine's own
        descriptors (a normal shutdown does it); ConfigError names the errno
        when one fails."""
    def set_write_cache(self, enabled: bool) -> None:
        """Volatile Write Cache (Set Features 06h) for the file namespaces:
        disabled, every write is durable (RWF_DSYNC) before its completion."""
    def write_cache(self) -> bool:
        """The Volatile Write Cache setting (initially enabled)."""
    # admin data movement and completion
    def write_prp(self, prp1: int, prp2: int, data: bytes) -> int:
        """Copy ``data`` to the host buffer the PRPs describe; returns an NVMe status."""
    def read_prp(self, prp1: int, prp2: int, length: int) -> tuple[int, bytes]:
        """Copy ``length`` bytes from the host buffer; returns (status, data)."""
    def complete_admin(self, cid: int, status: int, dw0: int = 0, dw1: int = 0) -> None:
        """Post the completion of an outstanding admin command, with ``dw0``
        and ``dw1`` in CQE dwords 0 and 1 (an AER's Zone Descriptor Changed
        notice carries the NSID in dword 1).

        Any admin command fetched and not yet completed is accepted, including
        one whose handler is still running (it then returns None and nothing
        more is posted); QueueError for any other ``cid``.
        """
    def drop_deferred(self) -> int:
        """Forget every deferred admin command (controller reset); returns how many."""
    # interrupts
    def set_vector_eventfd(self, vector: int, fd: int | None) -> None:
        """Signal ``vector`` by writing this eventfd (duplicated, made non-blocking;
        VectorError for an fd that is not an eventfd); None detaches."""
    def mask_vector(self, vector: int, masked: bool) -> None:
        """Mask or unmask ``vector``; unmask with pending set signals exactly once."""
    def pending_vectors(self) -> list[int]:
        """Vectors whose pending bit (PBA) is set, ascending."""
    def set_vector_kvm_msi(self, vector: int, vm_fd: int) -> None:
        """Deliver ``vector`` by KVM_SIGNAL_MSI on ``vm_fd`` (duplicated) with its table message."""
    def set_vector_callback(self, vector: int, callback: Callable[[int], object] | None) -> None:
        """Deliver ``vector`` by calling ``callback(vector)`` on the worker; None detaches."""
    def msix_entry(self, vector: int) -> tuple[int, int, bool]:
        """MSI-X table entry: (message address, message data, mask bit)."""
    def set_msix_entry(self, vector: int, address: int, data: int, masked: bool) -> None:
        """Write an MSI-X table entry; unmasking a pending vector delivers once."""
    def msix_table_dword(self, vector: int, field: int) -> int:
        """Dword ``field`` (0 address low, 4 high, 8 data, 12 vector control) of an entry."""
    def write_msix_table_dword(self, vector: int, field: int, value: int) -> None:
        """Write one dword of an entry, atomically with respect to ``mask_vector``."""
    def set_msix_control(self, enabled: bool, function_masked: bool) -> None:
        """MSI-X Enable and Function Mask (MXC.MXE, MXC.FM)."""
    def msix_control(self) -> tuple[bool, bool]:
        """(enabled, function_masked)."""
    def msix_reset(self) -> None:
        """PCI reset of MSI-X: disabled, table zeroed and masked, PBA cleared."""
    def set_irq_mode(self, mode: str) -> None:
        """``"msix"``, ``"msi"`` (INTMS masks vectors) or ``"intx"`` (level-triggered pin)."""
    @property
    def irq_mode(self) -> str: ...
    def set_interrupt_mask(self, mask: int) -> None:
        """The INTMS value: masks vectors in MSI mode, the pin (bit 0) in INTx mode."""
    @property
    def interrupt_mask(self) -> int: ...
    def set_intx_eventfds(self, trigger: int | None, resample: int | None = None) -> None:
        """Signal INTx through a KVM-style trigger/resample eventfd pair (duplicated,
        made non-blocking; VectorError for an fd that is not an eventfd)."""
    def set_intx_callback(self, callback: Callable[[bool], object] | None) -> None:
        """Call ``callback(level)`` on every INTx level change (on the worker)."""
    @property
    def intx_asserted(self) -> bool: ...
    def set_coalescing(self, thr: int, time: int) -> None:
        """Interrupt Coalescing (Feature 08h): THR (0's based entries), TIME (100 us units)."""
    def coalescing(self) -> tuple[int, int]:
        """(THR, TIME)."""
    def set_coalescing_disabled(self, vector: int, disabled: bool) -> None:
        """Feature 09h Coalescing Disable for ``vector``."""
    # the command trace
    def trace_start(self, capacity: int) -> None:
        """Start the trace into a ring of ``capacity`` records (1..2**24),
        clearing it; ConfigError outside that range."""
    def trace_stop(self) -> None:
        """Stop recording (records stay)."""
    def trace_on(self) -> bool:
        """Whether the trace records."""
    def trace_drain(self, max: int) -> list[dict[str, Any]]:
        """Up to ``max`` records, oldest first: kind ("io", "admin",
        "register"), fetch_ns, done_ns, and qid, cid, opcode, nsid, slba,
        nlb, status, worker, dw0 (commands) or offset, value (registers)."""
    def trace_dropped(self) -> int:
        """Records dropped by a full ring since trace_start."""
    def trace_register(self, offset: int, value: int) -> None:
        """Record a BAR0 write (when the trace is on)."""
    # fault injection
    def faults(self) -> FaultTable:
        """The fault rule table and power state of this engine."""
    # observation
    def counters(self) -> dict[str, int]:
        """Event counters.

        io_commands, admin_commands, io_errors, batches (worker passes that
        did work), cq_full_stalls, sqe_fetch_errors, cqe_post_errors,
        worker_sleeps, doorbell_writes, invalid_doorbell_writes,
        worker_wakeups, interrupts (deliveries), masked_notifications,
        unrouted_notifications (unmasked vector with no notifier),
        notify_errors, coalesced_completions, coalescing_timeouts,
        intx_assertions, intx_deassertions; file_ops, file_errors (requests sent to
        file namespaces and the ones that failed), file_ops_io_uring,
        file_ops_threads, file_ops_inline (the same requests by the path that
        served them).
        """
    def smart(self) -> dict[str, int]:
        """SMART/Health counters.

        bytes_read, bytes_written; data_units_read, data_units_written (already
        in the spec's unit: thousands of 512-byte units, rounded up);
        host_read_commands, host_write_commands, media_errors.
        """
    def take_errors(self) -> list[tuple[int, int, int, int, int, int]]:
        """Failed I/O commands since the last call: (sqid, cid, status, param_loc, lba, nsid)."""
    # zoned namespaces
    def zone_geometry(self, nsid: int) -> dict[str, Any] | None:
        """None for a conventional namespace; else zone_lbas, capacity_lbas, zones,
        max_open, max_active (counts, 0 = no limit), zasl_bytes (0 = MDTS),
        zde_bytes, cross_read."""
    def zone_report(self, nsid: int) -> list[tuple[int, int, int, int, int]] | None:
        """Every zone as (zslba, zcap, wp, state, attrs): ZS and ZA values, wp as Zone
        Management Receive reports it (all ones for Full, Read Only, Offline)."""
    def take_changed_zones(self, nsid: int, clear: bool = True) -> tuple[list[int], bool] | None:
        """The Changed Zone List (ZSLBAs, each once) and whether it overflowed (more
        than 511); ``clear`` empties it."""
    def set_zone_event_handler(self, handler: Callable[[int], object] | None) -> None:
        """``handler(nsid)`` runs (on a worker, no lock held) when the controller
        changes a zone of ``nsid`` by itself (fault rules, zone_action)."""
    def zone_action(self, nsid: int, zone: int, action: str) -> bool:
        """The controller's own change to zone index ``zone``: "readonly", "offline",
        "finish-recommended" or "reset-recommended"; True when the zone changed."""
    def set_io_command_sets(self, nvm: bool, zoned: bool) -> None:
        """Which I/O command sets are enabled (CC.CSS); namespaces of the others are
        inactive: I/O to them completes with Invalid Field in Command (DNR)."""
    # the namespace table
    def add_namespace(
        self,
        namespace: dict[str, Any] | tuple[int, int, str] | tuple[int, int, str, str | None, bool, str, str],
        nsid: int | None = None,
        attached: bool = True,
    ) -> int:
        """Allocate a namespace (an entry as in ``namespaces``) at ``nsid`` (None: the lowest
        free NSID) and return its NSID; I/O may reach it at once when ``attached``.
        CapacityError: not enough unallocated capacity; NamespaceError: ``nsid`` out of
        1..NN or allocated, or no NSID free; ConfigError: the entry cannot serve."""
    def remove_namespace(self, nsid: int) -> None:
        """Deallocate ``nsid`` while I/O runs on the others: commands fetched before complete,
        later ones get Invalid Field in Command. Returns once nothing touches its storage
        (a file is synced and closed, never deleted). NamespaceError: not allocated."""
    def resize_namespace(self, nsid: int, size_bytes: int) -> None:
        """Grow or shrink ``nsid`` to ``size_bytes`` (a multiple of its LBA size) while I/O
        runs; commands fetched after it returns see the new NSZE. CapacityError, NamespaceError;
        ConfigError: a device, read-only file, storage object or zoned namespace."""
    def set_namespace_attached(self, nsid: int, attached: bool) -> bool:
        """Attach or detach ``nsid`` (detached: inactive, Invalid Field in Command); True when
        that changed. NamespaceError: not allocated."""
    def namespace_attached(self, nsid: int) -> bool | None:
        """Whether ``nsid`` is attached (None: not allocated)."""
    def allocated_nsids(self) -> list[int]:
        """Allocated NSIDs, ascending (attached or not)."""
    @property
    def nn(self) -> int:
        """NN: the highest NSID."""
    def capacity(self) -> dict[str, int]:
        """total_bytes (TNVMCAP), allocated_bytes, unallocated_bytes (UNVMCAP)."""
    def namespace_capacity(self, nsid: int) -> int:
        """NVMCAP of ``nsid``: NSZE x (LBA data size + metadata size) bytes."""
    def self_test_start(self, nsids: list[int], extended: bool, min_seconds: float = 0.0) -> None:
        """Start a Device Self-test reading namespaces ``nsids`` (empty: the controller alone) in
        the background, taking at least ``min_seconds``; ``extended`` reads all of each, short up
        to 64 MiB spread over it; both check every Write Uncorrectable mark. StateError while a
        self-test or a sanitize runs; NamespaceError for an NSID not allocated."""
    def self_test_status(self) -> dict[str, Any]:
        """running, extended, percent (0..100), result ("none", "passed", "failed", "aborted"),
        nsid, lba (the first uncorrectable LBA of a failed test, else None), segment."""
    def self_test_abort(self) -> bool:
        """Abort the self-test running (result "aborted"; no background handler call); False
        when none ran. Returns once it has stopped reading."""
    def sanitize_start(
        self,
        action: str,
        pattern: int = 0,
        passes: int = 1,
        invert: bool = False,
        deallocate: bool = True,
        min_seconds: float = 0.0,
    ) -> None:
        """Sanitize every namespace in the background: ``action`` "block-erase" or "overwrite"
        (32-bit ``pattern``, ``passes`` 1..16, ``invert`` between passes). Before it returns every
        I/O command but Flush completes Sanitize In Progress, until it ends; a reset does not stop
        it; a running self-test is aborted. StateError while one runs; ConfigError for a bad
        argument or a read-only namespace (Namespace Is Write Protected)."""
    def sanitize_status(self) -> dict[str, Any]:
        """state ("idle", "running", "done", "failed"), progress (0..65535), passes_done."""
    def set_background_handler(self, handler: Callable[[str], object] | None) -> None:
        """Call ``handler("self-test")`` / ``handler("sanitize")`` on the operation's thread when
        one finishes by itself (not when aborted); None: nobody."""
    def uncorrectable_ranges(self, nsid: int) -> list[tuple[int, int]]:
        """The blocks Write Uncorrectable marked on ``nsid``, as (SLBA, NLB) in LBA order."""

@final
class FaultTable:
    """An engine's fault rules (built and checked by ``nvmefast.faults``)."""

    def add(
        self,
        *,
        queue: int | str,
        opcode: int | None,
        nsid: int | None,
        lba: tuple[int, int] | None,
        action: str,
        status: int,
        delay_ns: int,
        abortable: bool,
        byte: int,
        xor: int,
        count: int,
        skip: int,
        probability: float,
        seed: int,
        pi_field: str = "",
        zone: int | None = None,
    ) -> int:
        """Add a rule after the others; its id. ConfigError for a contradiction.
        ``pi_field`` ("guard", "app", "ref") is the field of a ``corrupt-pi`` action."""
    def remove(self, id: int) -> bool:
        """Remove rule ``id``; False when there is none."""
    def clear(self) -> None:
        """Remove every rule (held commands stay held)."""
    def rules(self) -> list[dict[str, Any]]:
        """The rules in order: id, action, matched, hits."""
    def held(self) -> int:
        """Commands whose completion a rule holds back now."""
    def track_unflushed(self, on: bool) -> list[int]:
        """Start/stop keeping pre-images of unflushed writes; the NSIDs that cannot be tracked."""
    def unflushed_blocks(self) -> int:
        """Blocks holding writes no Flush has made durable (while tracked)."""
    def power_loss(self) -> int:
        """Power loss now: commands dropped, unflushed writes rolled back
        (the blocks returned), controller off until power_on."""
    @property
    def powered_off(self) -> bool:
        """True while off after a power loss."""
    def power_on(self) -> None:
        """Power back on: the engine in its reset state."""

@final
class VfioUserBench:
    """A vfio-user client (Rust) connected to a server at ``socket``, its
    NVMe controller brought up through BAR0 messages: guest memory is a
    memfd of ``mem_bytes`` DMA-mapped with its fd, the doorbell sparse-mmap
    area mapped, MSI-X interrupts routed to eventfds.

    ConfigError for a bad ``mem_bytes`` (a multiple of 4096 in 16 MiB..16
    GiB); StateError when the server cannot be reached or refuses.
    """

    def __new__(cls, socket: str, *, mem_bytes: int = ...) -> VfioUserBench: ...
    @property
    def socket(self) -> str:
        """The server's socket path."""
    def info(self) -> dict[str, Any]:
        """Namespace 1 and the transport: lbas, lba_size, max_entries,
        doorbell_page (whether the server offered a mappable page)."""
    def point(
        self, *, qd: int, mode: str, doorbell: str, seconds: float, workload: str = "randread"
    ) -> dict[str, float]:
        """One point of the sweep on a fresh I/O queue pair: ``qd`` (1..1023)
        4 KiB commands in flight for ``seconds``, completions by ``mode``
        ("irq" or "poll"), doorbells by ``doorbell`` ("page": the mapped
        page, "shadow": shadow doorbells with EventIdx, ringing the page only
        when asked, "trap": a REGION_WRITE message each), ``workload``
        "randread" or "randwrite". Keys: ios, errors, seconds, iops,
        mean_ns, p50_ns, p99_ns, interrupts, doorbells, mmio_doorbells,
        messages (socket messages sent in the point)."""
    def fill(self) -> dict[str, float]:
        """Writes every block of namespace 1 once; the keys of ``point``."""
    def verify(self, blocks: int = 64, seed: int = 1) -> int:
        """Writes ``blocks`` random blocks with a pattern and reads them
        back; returns how many came back different (0 when right)."""
    def close(self) -> None:
        """Disconnects; later calls raise StateError."""

def bench_io(
    engine: Engine,
    *,
    mem_fd: int,
    mem_iova: int,
    mem_size: int,
    sqid: int,
    sq_iova: int,
    cq_iova: int,
    qsize: int,
    buf_iova: int,
    nsid: int,
    ns_lbas: int,
    lba_size: int,
    block_size: int,
    qd: int,
    seconds: float,
    mode: str,
    eventfd: int | None,
    workload: str = "randread",
    ring_each: bool = False,
    doorbell: str = "mmio",
    shadow: tuple[int, int] | None = None,
    page_fd: tuple[int, int, int] | None = None,
    doorbell_eventfds: tuple[int, int] | None = None,
    doorbell_stride: int = 4,
    prinfo: int = 0,
) -> dict[str, float]:
    """Drive one I/O queue pair from a Rust host thread.

    ``prinfo``: PRINFO (CDW12 bits 29:26) of every command, with ILBRT the
    SLBA (type 1 reference tags).

    ``workload`` is ``"randread"`` or ``"randwrite"`` (random block reads or
    writes until ``seconds``
    pass) or ``"fill"`` (write every block once, in order); ``bench --zoned``'s
    ``"seqwrite"`` (sequential writes, wrapping), and on a zoned namespace
    ``"zonewrite"`` (sequential writes zone by zone), ``"zoneappend"`` (Zone
    Appends zone by zone), ``"zonefill"`` (every zone written once) and
    ``"zonemgmt"`` (QD 1 write, Finish, Reset per zone); the zoned ones reset
    every zone first and between laps, and add ``zone_resets``,
    ``zone_reset_ns``, ``zone_finishes``, ``zone_finish_ns`` to the figures.

    The queues must already exist (created through the admin queue); guest
    memory ``mem_fd`` is mapped by the driver itself. ``mode`` is ``"irq"``
    (wait on ``eventfd``) or ``"poll"`` (spin on the CQ phase). Returns
    ios, seconds, iops, mean_ns, p50_ns, p99_ns, interrupts, doorbells.
    Releases the GIL for the whole run.
    """

def floor_eventfd_pingpong(iterations: int, max_seconds: float = 2.0) -> float:
    """Mean round trip in ns of two threads bouncing one eventfd each way
    (``iterations`` round trips, fewer if ``max_seconds`` run out)."""

def floor_shm_pingpong(iterations: int, max_seconds: float = 2.0) -> float:
    """Mean round trip in ns of two threads bouncing a shared-memory flag
    (bounded like floor_eventfd_pingpong)."""

def floor_unix_socket_rtt(iterations: int, max_seconds: float = 2.0) -> float:
    """Mean round trip in ns of a 16-byte request and reply over a UNIX
    socket pair between two threads (bounded like floor_eventfd_pingpong)."""

def floor_guard(guard: str, seconds: float = 0.5) -> float:
    """GB/s of the PI guard (``"crc16"`` or ``"crc64"``) over 4 KiB blocks."""

def floor_memcpy_4k(buffer_bytes: int, seconds: float) -> float:
    """Random 4 KiB memcpys per second out of a buffer of ``buffer_bytes``."""

def floor_file_uring(
    path: str, *, rw: str, qd: int, block_size: int, direct: bool, seconds: float
) -> dict[str, float]:
    """The file backend's floor without fio: ``rw`` ("randread" or
    "randwrite") of ``block_size`` bytes at random aligned offsets, ``qd``
    in flight, on ``path`` (O_DIRECT if ``direct``) through a raw io_uring
    loop. Keys: ios, errors, seconds, iops, mean_ns, p50_ns, p99_ns.
    ConfigError for bad arguments or an unopenable file; StateError when
    io_uring refuses."""

def measure_irq_delivery(
    kind: str,
    target: int | Callable[[int], object],
    iterations: int,
    max_seconds: float = 1.0,
    address: int = 0,
    data: int = 0,
) -> float:
    """Mean ns per interrupt delivery on the worker's notify path.

    ``kind`` ``"eventfd"`` (``target`` an eventfd or KVM irqfd), ``"kvm_msi"``
    (``target`` a KVM VM fd; ``address``/``data`` the MSI message) or
    ``"callback"`` (``target`` a callable, run with the GIL re-taken per call).
    """
