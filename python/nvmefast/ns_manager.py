"""Namespaces created, deleted, attached, detached and resized while the
controller runs: the one place that changes the core, the namespace table
and the namespace directory together.

Two kinds of caller share it. The admin commands (Namespace Management 0Dh,
Namespace Attachment 15h) turn a :class:`~nvmefast.errors.CapacityError`
into Namespace Insufficient Capacity and a
:class:`~nvmefast.errors.NamespaceError` into Namespace Identifier
Unavailable (create) or Invalid Field (a namespace gone meanwhile); the embedder (:meth:`nvmefast.Controller.add_namespace`,
``resize_namespace``, ``remove_namespace``, and through them the control
socket) gets the exception and its message. What differs between them:

- capacity: Namespace Management is held to the unallocated capacity; the
  embedder is too when ``capacity_bytes`` was given, otherwise adding beyond
  it raises the total (:mod:`nvmefast.namespaces`);
- attachment: a created namespace starts detached (the host attaches it); an
  added one starts attached;
- notices: whatever changes a namespace attached to this controller raises
  the Namespace Attribute Changed notice (the Changed Namespace List names
  it), except a Namespace Management delete, which the controller that
  processed it does not report to itself (NVMe Base 2.0 8.1.16.2); creating a
  namespace attaches it nowhere, so it reports nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Iterable

from nvmefast._core import Engine
from nvmefast.config import NamespaceConfig, size_text
from nvmefast.errors import CapacityError, ConfigError, NamespaceError
from nvmefast.lba_format import NamespaceFormat
from nvmefast.namespaces import NN, NamespaceEntry, NamespaceTable, Origin, engine_spec
from nvmefast.ns_store import NamespaceStore

__all__ = ["NamespaceManager"]

log = logging.getLogger(__name__)


def _ignore(nsids: list[int]) -> None:
    pass


class NamespaceManager:
    """Namespace changes of one controller (see the module's docstring)."""

    def __init__(self, table: NamespaceTable, engine: Engine, store: NamespaceStore | None) -> None:
        self.table = table
        """The namespace table it keeps."""
        self.engine = engine
        self.store = store
        """The namespace directory, or None: created namespaces live in RAM."""
        self.notify: Callable[[list[int]], None] = _ignore
        """Raises the Namespace Attribute Changed notice for ``nsids`` (the admin layer's)."""
        self.removing: Callable[[list[int]], None] = _ignore
        """Called before namespaces go (a self-test on them is aborted)."""

    def disconnect(self) -> None:
        """Forget the admin layer's callbacks (the controller is closing)."""
        self.notify = _ignore
        self.removing = _ignore

    # -- start ------------------------------------------------------------------------

    def restore(self) -> list[int]:
        """Bring back the namespaces the namespace directory lists; their NSIDs."""
        if self.store is None:
            return []
        restored = []
        with self.table.lock:
            for s in self.store.load():
                taken = self.table.get(s.nsid)
                if taken is not None:
                    raise ConfigError(
                        f"namespace {s.nsid} of {self.store.manifest} clashes with configured namespace {s.nsid}; "
                        f"configure fewer namespaces (NSIDs 1..{s.nsid - 1}), or move that image away"
                    )
                self.engine.add_namespace(engine_spec(s.config), s.nsid, s.attached)
                entry = NamespaceEntry(s.nsid, s.config, s.origin, s.attached, s.shared, s.generation, s.image)
                self.table.put(entry)
                restored.append(s.nsid)
            over = self.table.allocated_bytes() - self.table.total_bytes
            if self.table.capacity_fixed and over > 0:
                raise ConfigError(
                    f"the configured namespaces and those of {self.store.manifest} take "
                    f"{size_text(self.table.allocated_bytes())}, {size_text(over)} more than capacity_bytes "
                    f"{size_text(self.table.total_bytes)}; raise capacity_bytes"
                )
            self.table.grow_total(0)
        return restored

    # -- allocation -------------------------------------------------------------------

    def _reserve(self, size: int, *, strict: bool) -> int:
        """A free NSID for a namespace of ``size`` bytes, capacity checked (under the lock)."""
        unallocated = self.table.unallocated_bytes
        if size > unallocated and (strict or self.table.capacity_fixed):
            raise CapacityError(
                f"a {size_text(size)} namespace does not fit: {size_text(unallocated)} of "
                f"{size_text(self.table.total_bytes)} is unallocated; remove a namespace or give more capacity",
            )
        nsid = self.table.free_nsid()
        if nsid is None:
            raise NamespaceError(
                f"every NSID (1..{NN}) has a namespace; remove one first"
            )
        return nsid

    def create(self, config: NamespaceConfig, *, shared: bool) -> int:
        """Namespace Management create: a namespace like ``config`` (its
        backend is ignored: RAM, or an image in the namespace directory),
        allocated, not attached. Returns its NSID."""
        with self.table.lock:
            nsid = self._reserve(config.size, strict=True)
            generation = secrets.randbits(32) + 1
            image = None
            if self.store is not None:
                image = self.store.image_name(nsid, generation)
                config = dataclasses.replace(config, backend="file", path=str(self.store.image_path(image)))
            else:
                config = dataclasses.replace(config, backend="ram")
            try:
                self.engine.add_namespace(engine_spec(config), nsid, False)
                try:
                    self.table.put(NamespaceEntry(nsid, config, Origin.CREATED, False, shared, generation, image))
                    self._save()
                except BaseException:
                    # Not in the manifest: not created at all.
                    self.table.drop([nsid])
                    self.engine.remove_namespace(nsid)
                    raise
            except BaseException:
                if self.store is not None and image is not None:
                    self.store.remove_image(image)
                raise
        log.info("namespace %d created: %s", nsid, size_text(config.size))
        return nsid

    def add(self, config: NamespaceConfig) -> int:
        """The embedder's new namespace, attached at once. Returns its NSID."""
        if not isinstance(config, NamespaceConfig):
            raise ConfigError(f"add_namespace takes a NamespaceConfig, got {type(config).__name__}")
        with self.table.lock:
            known = config.size_bytes
            nsid = self._reserve(known or 0, strict=False)
            self.engine.add_namespace(engine_spec(config), nsid, True)
            if known is None:
                # A file of its own size: known once the core opened it.
                config = dataclasses.replace(config, size_bytes=self.engine.namespace_size(nsid))
                try:
                    self._reserve(config.size, strict=False)
                except CapacityError:
                    self.engine.remove_namespace(nsid)
                    raise
            self.table.grow_total(config.size)
            entry = NamespaceEntry(nsid, config, Origin.ADDED, True, False, secrets.randbits(32) + 1)
            self.table.put(entry)
            self._save()
        log.info("namespace %d added: %s %s", nsid, config.backend, size_text(config.size))
        self.notify([nsid])
        return nsid

    def _entry(self, nsid: int) -> NamespaceEntry:
        entry = self.table.get(nsid)
        if entry is None:
            have = ", ".join(map(str, self.table.allocated())) or "none"
            raise NamespaceError(f"there is no namespace {nsid} (allocated: {have})")
        return entry

    def delete(self, nsids: Iterable[int], *, notify: bool) -> list[int]:
        """Namespace Management delete (``notify`` False: this controller
        processed it) or the embedder's removal (``notify`` True). Each NSID
        must be allocated; attached ones are detached first. Returns the
        NSIDs that were attached."""
        with self.table.lock:
            entries = [self._entry(n) for n in nsids]
            gone = [e.nsid for e in entries]
            self.removing(gone)
            for e in entries:
                self.engine.remove_namespace(e.nsid)
            self.table.drop(gone)
            self._save()
            if self.store is not None:
                for e in entries:
                    if e.image is not None:
                        self.store.remove_image(e.image)
        attached = [e.nsid for e in entries if e.attached]
        for e in entries:
            log.info("namespace %d %s", e.nsid, "removed" if notify else "deleted")
        if notify and attached:
            self.notify(attached)
        return attached

    # -- attachment ---------------------------------------------------------------------

    def set_attached(self, nsid: int, attached: bool) -> None:
        """Attach or detach ``nsid`` (the caller checked it is the other way)."""
        with self.table.lock:
            entry = self._entry(nsid)
            self.engine.set_namespace_attached(nsid, attached)
            self.table.put(dataclasses.replace(entry, attached=attached))
            self._save()
        log.info("namespace %d %s", nsid, "attached" if attached else "detached")
        self.notify([nsid])

    # -- size -------------------------------------------------------------------------

    def resize(self, nsid: int, size_bytes: int) -> None:
        """Grow or shrink ``nsid`` to ``size_bytes``."""
        if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes < 1:
            raise ConfigError(f"resize_namespace: size_bytes must be a positive int, got {size_bytes!r}")
        with self.table.lock:
            entry = self._entry(nsid)
            ns = entry.config
            lba_size = NamespaceFormat.of_engine(self.engine.namespace_format(nsid)).lba_size
            if size_bytes % lba_size:
                raise ConfigError(
                    f"namespace {nsid}: {size_bytes} bytes is not a multiple of its {lba_size}-byte LBA size"
                )
            if ns.zones is not None:
                ns.zones.check(lba_size, size_bytes)
            if ns.readonly:
                raise ConfigError(f"namespace {nsid} is read-only (its file is opened for reading); it cannot be resized")
            growth = size_bytes - entry.size
            if growth > 0:
                self._reserve_growth(nsid, growth)
            self.engine.resize_namespace(nsid, size_bytes)
            self.table.grow_total(max(growth, 0))
            # Now that the file (if any) has the new size, the config agrees with it.
            self.table.put(dataclasses.replace(entry, config=dataclasses.replace(ns, size_bytes=size_bytes)))
            self._save()
        log.info("namespace %d resized: %s -> %s", nsid, size_text(entry.size), size_text(size_bytes))
        if entry.attached:
            self.notify([nsid])

    def _reserve_growth(self, nsid: int, growth: int) -> None:
        unallocated = self.table.unallocated_bytes
        if self.table.capacity_fixed and growth > unallocated:
            raise CapacityError(
                f"namespace {nsid} cannot grow by {size_text(growth)}: {size_text(unallocated)} of "
                f"{size_text(self.table.total_bytes)} is unallocated; remove a namespace or give more capacity",
            )

    # -- persistence ------------------------------------------------------------------

    def formatted(self) -> None:
        """Format NVM changed formats: the manifest records the new ones."""
        with self.table.lock:
            self._save()

    def _save(self) -> None:
        if self.store is None:
            return
        formats = {
            e.nsid: NamespaceFormat.of_engine(self.engine.namespace_format(e.nsid))
            for e in self.table.entries()
            if e.origin != Origin.CONFIGURED and e.config.backend == "file"
        }
        self.store.save(self.table.entries(), formats)
