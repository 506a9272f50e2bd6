"""The namespaces of a running controller: which NSIDs are allocated, which
are attached, and the NVM capacity they draw on (NVMe Base 2.0 3.2.1
Namespaces, 8.11 Namespace Management).

Every NSID from 1 to :data:`NN` is valid. A valid NSID is *allocated* once a
namespace exists for it (configured, created by Namespace Management, or
added by :meth:`nvmefast.Controller.add_namespace`) and *attached* while the
controller may use it (Namespace Attachment); an allocated, attached
namespace of a command set the host enabled is *active*
(:mod:`nvmefast.admin.command_sets`).

The capacity namespaces draw on is their size in bytes (NSZE times the LBA
data size; metadata is not counted, so Format NVM never changes it).
``ControllerConfig.capacity_bytes`` is the total (TNVMCAP); without one, the
total is what the configured namespaces take, and it grows when the embedder
adds a namespace beyond it (the operator added media): only Namespace
Management is held to it then.

The table is read by admin commands on the controller's worker and changed
by management on any thread: changes are serialised by :attr:`NamespaceTable.lock`
and published as a new dict, so a reader never sees one half done.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nvmefast.config import NamespaceConfig

__all__ = [
    "CNTLID",
    "MNAN",
    "NN",
    "NSID_ALL",
    "NamespaceEntry",
    "NamespaceTable",
    "Origin",
    "engine_spec",
]

NN = 256
"""Number of Namespaces (Identify Controller NN): the highest valid NSID."""
MNAN = NN
"""Maximum Number of Allocated Namespaces (Identify Controller MNAN)."""
NSID_ALL = 0xFFFFFFFF
"""The broadcast NSID."""
CNTLID = 0
"""This controller's Controller ID (Identify Controller CNTLID), the only one
in its NVM subsystem: the one a Controller List may name."""


class Origin:
    """Where an allocated namespace came from."""

    CONFIGURED = "configured"
    """``ControllerConfig.namespaces``: there again on every start."""
    CREATED = "created"
    """Namespace Management (a host's create-ns)."""
    ADDED = "added"
    """``Controller.add_namespace`` (the embedder, or ``nvmefast ctl``)."""


@dataclasses.dataclass(frozen=True)
class NamespaceEntry:
    """One allocated namespace."""

    nsid: int
    config: NamespaceConfig
    """What it is; ``size_bytes`` always resolved (a resize replaces it)."""
    origin: str = Origin.CONFIGURED
    attached: bool = True
    """Attached to this controller (Namespace Attachment)."""
    shared: bool = False
    """NMIC bit 0: may be attached to more than one controller."""
    generation: int = 0
    """0 for a configured namespace; a created or added one gets a new
    number, so its identifiers (EUI-64, NGUID, UUID) differ from those of an
    earlier namespace with the same NSID."""
    image: str | None = None
    """The image's file name in the namespace directory, for a namespace the
    controller made there (deleted with it)."""

    @property
    def size(self) -> int:
        """Bytes it draws from the NVM capacity (NVMCAP)."""
        return self.config.size


def engine_spec(ns: NamespaceConfig) -> dict[str, Any]:
    """A namespace as the core's ``Engine`` takes it, by key: size_bytes,
    lba_size, backend, plus path, readonly, cache, io for a file, storage for
    a custom one, the metadata keys and ``zones``. A file namespace of no
    given size is 0: the file's own."""
    entry: dict[str, Any] = {"lba_size": ns.lba_size}
    if not isinstance(ns.backend, str):
        entry.update(backend="custom", size_bytes=ns.size, storage=ns.backend)
    elif ns.backend == "file":
        assert ns.path is not None  # NamespaceConfig guarantees it for "file"
        entry.update(
            backend="file", size_bytes=ns.size_bytes or 0, path=os.fspath(ns.path),
            readonly=ns.readonly, cache=ns.cache, io=ns.io,
        )  # fmt: skip
    else:
        entry.update(backend=ns.backend, size_bytes=ns.size)
    if ns.metadata_size:
        entry.update(
            metadata_size=ns.metadata_size, extended_lba=ns.extended_lba, pi_type=ns.pi_type,
            pi_first=ns.pi_first, guard=ns.guard,
        )  # fmt: skip
    if ns.zones is not None:
        entry["zones"] = ns.zones.engine_dict()
    return entry


class NamespaceTable:
    """Allocated namespaces by NSID and the capacity they draw on.

    ``configured`` are NSIDs 1.. in order, their sizes resolved. Only state
    lives here: :class:`nvmefast.ns_manager.NamespaceManager` changes it
    together with the core and the namespace directory.
    """

    def __init__(self, configured: Sequence[NamespaceConfig], capacity_bytes: int | None, shared: bool) -> None:
        self.lock = threading.RLock()
        """Held by whoever changes the table (and the core with it)."""
        self._entries: Mapping[int, NamespaceEntry] = {
            nsid: NamespaceEntry(nsid, ns, shared=shared) for nsid, ns in enumerate(configured, start=1)
        }
        self.capacity_fixed = capacity_bytes is not None
        """Whether ``capacity_bytes`` was given (otherwise the total follows the embedder's adds)."""
        self._total = capacity_bytes if capacity_bytes is not None else self.allocated_bytes()

    # -- reading (any thread, no lock) ------------------------------------------------

    def get(self, nsid: int) -> NamespaceEntry | None:
        """The namespace allocated at ``nsid``, or None."""
        return self._entries.get(nsid)

    def entries(self) -> list[NamespaceEntry]:
        """Every allocated namespace, by NSID."""
        entries = self._entries
        return [entries[n] for n in sorted(entries)]

    def allocated(self) -> list[int]:
        """Allocated NSIDs, ascending."""
        return sorted(self._entries)

    def attached(self) -> list[int]:
        """Allocated NSIDs attached to this controller, ascending."""
        entries = self._entries
        return sorted(n for n, e in entries.items() if e.attached)

    def allocated_bytes(self) -> int:
        """Capacity the allocated namespaces draw on."""
        return sum(e.size for e in self._entries.values())

    @property
    def total_bytes(self) -> int:
        """Total NVM capacity (TNVMCAP)."""
        return self._total

    @property
    def unallocated_bytes(self) -> int:
        """Unallocated NVM capacity (UNVMCAP)."""
        return max(self._total - self.allocated_bytes(), 0)

    def free_nsid(self) -> int | None:
        """The lowest valid NSID with no namespace, or None when every one has one."""
        entries = self._entries
        return next((n for n in range(1, NN + 1) if n not in entries), None)

    # -- changing (under :attr:`lock`) -------------------------------------------------

    def put(self, entry: NamespaceEntry) -> None:
        """Publish ``entry`` (new or replacing the one at its NSID)."""
        entries = dict(self._entries)
        entries[entry.nsid] = entry
        self._entries = entries

    def drop(self, nsids: Iterable[int]) -> None:
        """Forget the namespaces at ``nsids``."""
        gone = set(nsids)
        self._entries = {n: e for n, e in self._entries.items() if n not in gone}

    def grow_total(self, needed: int) -> None:
        """Without a fixed capacity: raise the total so ``needed`` more bytes fit."""
        if not self.capacity_fixed:
            self._total = max(self._total, self.allocated_bytes() + needed)
