"""``Controller.trace``: what the driver did, command by command.

Off by default; while on, every I/O and admin command (time of fetch and of
completion, queue, CID, opcode, NSID, starting LBA and block count, status,
DW0, which worker) and every BAR0 write through ``Controller.bar0_write``
(offset and value; doorbells included) is recorded in a bounded ring. A full
ring drops its oldest records and counts them (``dropped``). Off, the hot
path pays one relaxed atomic load per worker pass::

    ctrl.trace.start(capacity=100_000)
    ... drive the controller ...
    for rec in ctrl.trace:          # drains, oldest first
        print(rec["kind"], rec.get("opcode"), rec.get("status"))
    ctrl.trace.write_jsonl("trace.jsonl")   # or drain to a file

Times are nanoseconds since :meth:`CommandTrace.start`. A record's
``status`` is the CQE status field without the phase tag (0: success).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from nvmefast._core import Engine
from nvmefast.errors import ConfigError

__all__ = ["CommandTrace"]

_CHUNK = 4096


class CommandTrace:
    """The trace of one controller (``Controller.trace``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.recording = False
        """Mirror of the core's flag, so ``Controller.bar0_write`` (on the
        MMIO doorbell path) checks an attribute, not a call into the core."""

    def start(self, capacity: int = 65536) -> None:
        """Start (or restart, clearing the ring) with room for ``capacity`` records."""
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise ConfigError(f"trace capacity must be an int, got {type(capacity).__name__}")
        self._engine.trace_start(capacity)
        self.recording = True

    def stop(self) -> None:
        """Stop recording; the records stay readable."""
        self._engine.trace_stop()
        self.recording = False

    @property
    def on(self) -> bool:
        """Whether records are being taken."""
        return self.recording

    @property
    def dropped(self) -> int:
        """Records lost to a full ring since :meth:`start`."""
        return self._engine.trace_dropped()

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Take up to ``limit`` records (all when None), oldest first."""
        out: list[dict[str, Any]] = []
        while limit is None or len(out) < limit:
            want = _CHUNK if limit is None else min(_CHUNK, limit - len(out))
            got = self._engine.trace_drain(want)
            out.extend(got)
            if len(got) < want:
                break
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Drain the records, oldest first (new ones arriving meanwhile too)."""
        while True:
            got = self._engine.trace_drain(_CHUNK)
            if not got:
                return
            yield from got

    def write_jsonl(self, path: str | os.PathLike[str], append: bool = True) -> int:
        """Drain the records to ``path`` as JSON Lines; returns how many."""
        n = 0
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            for rec in self:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
                n += 1
        return n

    def register_write(self, offset: int, value: int) -> None:
        """Record a BAR0 write (``Controller.bar0_write`` calls it)."""
        self._engine.trace_register(offset, value)
