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

import logging
from types import TracebackType

from nvmefast._core import Engine
from nvmefast.admin import Admin
from nvmefast.config import ControllerConfig
from nvmefast.errors import DmaMapError, NvmeFastError, StateError, VectorError
from nvmefast.registers import Registers

__all__ = ["Controller"]

log = logging.getLogger(__name__)


def _check_u64(name: str, value: int) -> None:
    # Same reason as _check_vector: keep OverflowError/TypeError from the
    # binding out of the embedder's way.
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise DmaMapError(f"{name} must be an int in 0..2**64-1, got {value!r}")


class Controller:
    """One emulated NVMe controller.

    ``Controller()`` gives a controller with one 64 MiB RAM namespace; pass a
    :class:`ControllerConfig` for anything else. Use it as a context manager
    or call :meth:`close`; every method but :meth:`close` raises
    :class:`StateError` once it is closed.
    """

    def __init__(self, config: ControllerConfig | None = None) -> None:
        self._config = config if config is not None else ControllerConfig()
        cfg = self._config
        self._engine: Engine | None = Engine(
            namespaces=[(ns.size_bytes, ns.lba_size, ns.backend) for ns in cfg.namespaces],
            msix_vectors=cfg.vectors,
            max_qid=cfg.max_io_queue_pairs,
            max_queue_entries=cfg.max_queue_entries,
            mdts_bytes=cfg.mdts_bytes,
            poll_us=cfg.poll_us,
        )
        self._admin = Admin(cfg, self._engine)
        self._registers = Registers(cfg, self._engine, self._admin)
        self._engine.set_admin_handler(self._admin.handle)
        self._engine.start()

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
        except NvmeFastError:
            log.debug("engine refused to drop the admin handler after close", exc_info=True)

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
        """The configuration the controller was built with."""
        return self._config

    @property
    def bar0_size(self) -> int:
        """BAR0 size in bytes: registers, then doorbells, rounded up to a power of two."""
        return self._registers.size

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

    def unmap_dma(self, iova: int, size: int) -> None:
        """Remove the mapping that exactly covers ``[iova, iova + size)``."""
        engine = self._live()
        _check_u64("iova", iova)
        _check_u64("size", size)
        engine.unmap_dma(iova, size)

    # -- BAR0 ------------------------------------------------------------------

    def bar0_read(self, offset: int, size: int) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes of BAR0 at ``offset``."""
        self._live()
        return self._registers.read(offset, size)

    def bar0_write(self, offset: int, value: int, size: int) -> None:
        """Write ``size`` (1, 2, 4 or 8) bytes of ``value`` to BAR0 at ``offset``."""
        self._live()
        self._registers.write(offset, value, size)

    # -- interrupts ------------------------------------------------------------

    def set_vector_eventfd(self, vector: int, fd: int | None) -> None:
        """Signal MSI-X ``vector`` by writing eventfd ``fd`` (duplicated); None detaches."""
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

    # -- observation -----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Event counters of the core, the register file and the admin layer."""
        out = dict(self._live().counters())
        out.update(self._registers.counters)
        out.update(self._admin.counters())
        return out
