"""``Storage``: the protocol of a namespace whose blocks come from your code.

Pass any object with these methods as ``NamespaceConfig(backend=obj)``::

    class Zeros:
        def read(self, lba: int, nlb: int) -> bytes:
            return bytes(nlb * 512)

        def write(self, lba: int, data: bytes) -> None:
            pass

        def flush(self) -> None:
            pass

    Controller(ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20, backend=Zeros())]))

The controller calls them on the I/O worker thread running the command,
taking the GIL only around each call: ``read(lba, nlb)`` must return exactly
``nlb`` blocks of the namespace's current LBA size as bytes; ``write(lba,
data)`` stores whole blocks; ``flush()`` (optional) makes completed writes
durable (Flush, FUA, shutdown). Optional ``write_zeroes(lba, nlb)`` and
``deallocate(lba, nlb)`` serve Write Zeroes and Dataset Management
deallocate (deallocated blocks must read back as zeroes); without them the
controller writes zero blocks. A Read or Write is one call for the whole
command, whatever its PRPs or SGL look like; blocks of a partial-block
access (Compare, Copy) are read and written whole.

A namespace with metadata (``NamespaceConfig(metadata_size=...)``) needs
two more: ``read_metadata(lba, nlb)`` returns exactly ``nlb *
metadata_size`` bytes, and ``write_metadata(lba, data)`` stores whole
blocks' metadata. Blocks never written should return ``FFh`` bytes (what a
deallocated block's metadata reads as; its protection information then
passes every check); deallocation and Format NVM write ``FFh`` bytes
through ``write_metadata``.

An exception, or a ``read`` returning anything but bytes of the right
length, completes the command with Internal Error, is logged on the
``nvmefast.backend`` logger and counted (``Controller.counters()``:
``storage_calls``, ``storage_errors``); the worker carries on. A call that
blocks holds up that worker's queues, as a slow disk would.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Storage"]


@runtime_checkable
class Storage(Protocol):
    """A namespace's blocks, addressed by LBA (see the module docs)."""

    def read(self, lba: int, nlb: int) -> bytes:
        """``nlb`` blocks from ``lba``, exactly ``nlb * lba_size`` bytes."""
        ...

    def write(self, lba: int, data: bytes) -> None:
        """Stores whole blocks at ``lba``."""
        ...
