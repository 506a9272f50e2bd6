"""Device Self-test (14h) and the Device Self-test log (06h).

The command (NVMe Base 2.0 5.14, 8.1.8): CDW10 bits 3:0 STC, 1h a short
test, 2h an extended one, Fh abort the running one; NSID 0 tests the
controller alone, an active NSID the controller and that namespace,
FFFFFFFFh the controller and every active namespace. A test reads all the
storage of the namespaces it covers, in the background (the command
completes when it starts); a block made uncorrectable by Write
Uncorrectable fails it: result 7h, failed segment :data:`SEGMENT_MEDIA`, the
NSID and LBA of the first such block, SCT 2h / SC 81h (Unrecovered Read
Error). One test runs at a time (DSTO bit 0): another start while one runs
is Device Self-test In Progress; STC Fh with none running succeeds and logs
nothing. A short test takes at least :data:`SHORT_SECONDS`, so a host
polling the log once a second sees it in progress (nvme-cli's ``--wait``
gives up on a test that never shows progress); an extended one at least
:data:`EXTENDED_SECONDS`, within EDSTT.

A short test ends, result 2h, at a controller reset (an extended one goes
on); any test ends, 4h, at a Format NVM, 9h at the start of a sanitize, and
3h when a namespace it reads is deleted or removed.

The log (564 bytes, Figure 235): byte 0 the current operation (0h none, 1h
short, 2h extended), byte 1 its percent complete, then 20 result entries of
28 bytes, newest first; an unused entry has result Fh.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import struct
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from nvmefast.admin.command import CDW10, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import active_nsids, is_active
from nvmefast.namespaces import NN, NSID_ALL
from nvmefast.status import Status, sc_of

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "EXTENDED_SECONDS",
    "SEGMENT_MEDIA",
    "SELF_TEST_LOG_SIZE",
    "SHORT_SECONDS",
    "SelfTestCode",
    "SelfTestEntry",
    "SelfTestResult",
    "SelfTests",
    "build_self_test_log",
    "device_self_test",
]

SELF_TEST_LOG_SIZE = 564
"""The Device Self-test log page."""
ENTRIES = 20
"""Result entries the log keeps."""
ENTRY_SIZE = 28
SHORT_SECONDS = 3.0
"""The least a short test takes."""
EXTENDED_SECONDS = 6.0
"""The least an extended test takes."""
SEGMENT_MEDIA = 3
"""The segment that reads the namespaces: 1 checks the controller's memory, 2
its SMART data (both always pass here), 3 reads every block."""


class SelfTestCode(enum.IntEnum):
    """Self-test Code (CDW10 bits 3:0, and of a log entry)."""

    NONE = 0x0
    """No test (the log's current operation when idle)."""
    SHORT = 0x1
    """Short device self-test."""
    EXTENDED = 0x2
    """Extended device self-test."""
    ABORT = 0xF
    """Abort the running test (command only)."""


class SelfTestResult(enum.IntEnum):
    """Device Self-test Result of a log entry (byte 0 bits 3:0)."""

    NO_ERROR = 0x0
    """Completed without error."""
    ABORTED_BY_COMMAND = 0x1
    """Aborted by a Device Self-test command."""
    ABORTED_BY_RESET = 0x2
    """Aborted by a Controller Level Reset."""
    ABORTED_BY_NAMESPACE_REMOVAL = 0x3
    """Aborted: a namespace it tested was removed."""
    ABORTED_BY_FORMAT = 0x4
    """Aborted by a Format NVM command."""
    FATAL = 0x5
    """A fatal error or unknown test error."""
    FAILED_UNKNOWN_SEGMENT = 0x6
    """Completed with a failed segment that is not known."""
    FAILED_SEGMENT = 0x7
    """Completed with one or more failed segments (the first in byte 1)."""
    ABORTED_UNKNOWN = 0x8
    """Aborted for an unknown reason."""
    ABORTED_BY_SANITIZE = 0x9
    """Aborted by a sanitize operation."""
    UNUSED = 0xF
    """The entry holds no result."""


_VALID_NSID, _VALID_FLBA, _VALID_SCT, _VALID_SC = 1 << 0, 1 << 1, 1 << 2, 1 << 3


@dataclasses.dataclass(frozen=True)
class SelfTestEntry:
    """One Self-test Result entry (Figure 236)."""

    code: int
    result: int
    power_on_hours: int = 0
    segment: int = 0
    nsid: int | None = None
    lba: int | None = None
    status: int | None = None
    """The status of the failure (SCT and SC), when one is reported."""

    def to_bytes(self) -> bytes:
        """The 28-byte entry."""
        valid = (
            (_VALID_NSID if self.nsid is not None else 0)
            | (_VALID_FLBA if self.lba is not None else 0)
            | (_VALID_SCT | _VALID_SC if self.status is not None else 0)
        )
        sct = (self.status >> 8) & 0x7 if self.status is not None else 0
        sc = sc_of(self.status) if self.status is not None else 0
        return struct.pack(
            "<BBBxQIQBBxx",
            (self.code & 0xF) << 4 | (self.result & 0xF),
            self.segment,
            valid,
            self.power_on_hours,
            self.nsid or 0,
            self.lba or 0,
            sct,
            sc,
        )


_UNUSED = SelfTestEntry(SelfTestCode.NONE, SelfTestResult.UNUSED)


def build_self_test_log(current: int, percent: int, entries: Sequence[SelfTestEntry]) -> bytes:
    """The Device Self-test log: the running test and its progress, then the
    newest :data:`ENTRIES` results, unused ones marked Fh."""
    chosen = list(entries[:ENTRIES]) + [_UNUSED] * (ENTRIES - min(len(entries), ENTRIES))
    head = struct.pack("<BBxx", current & 0xF, percent & 0x7F if current else 0)
    return head + b"".join(e.to_bytes() for e in chosen)


@dataclasses.dataclass
class _Running:
    code: int
    nsids: list[int]


class SelfTests:
    """The running test and the results, under the admin lock."""

    def __init__(self) -> None:
        self.running: _Running | None = None
        self.results: collections.deque[SelfTestEntry] = collections.deque(maxlen=ENTRIES)
        """Newest first."""

    def record(self, admin: Admin, entry_of: dict[str, Any] | None, result: int | None = None) -> None:
        """The running test ended: log ``result``, or what the core's status says."""
        run, self.running = self.running, None
        if run is None:
            return
        hours = int((time.monotonic() - admin.created) // 3600)
        core = entry_of or {}
        if result is None:
            if core.get("result") == "failed":
                self.results.appendleft(SelfTestEntry(
                    run.code, SelfTestResult.FAILED_SEGMENT, hours, segment=SEGMENT_MEDIA,
                    nsid=int(core["nsid"]), lba=int(core["lba"]), status=Status.UNRECOVERED_READ_ERROR,
                ))  # fmt: skip
                return
            result = SelfTestResult.NO_ERROR if core.get("result") == "passed" else SelfTestResult.ABORTED_UNKNOWN
        self.results.appendleft(SelfTestEntry(run.code, result, hours))


def poll(admin: Admin) -> tuple[int, int]:
    """(current operation, percent): ends the running test in the log if the core finished it."""
    with admin.lock:
        run = admin.self_tests.running
    if run is None:
        return (SelfTestCode.NONE, 0)
    status = admin.engine.self_test_status()
    if status["running"]:
        return (run.code, int(status["percent"]))
    with admin.lock:
        admin.self_tests.record(admin, status)
    return (SelfTestCode.NONE, 0)


def abort(admin: Admin, result: int, nsids: Iterable[int] | None = None) -> None:
    """End a running test with ``result`` (one reading any of ``nsids``, if given)."""
    with admin.lock:
        run = admin.self_tests.running
        if run is None or (nsids is not None and not set(nsids) & set(run.nsids)):
            return
    if not admin.engine.self_test_abort():
        # The core had finished it, unread: logged with its own result.
        poll(admin)
        return
    with admin.lock:
        admin.self_tests.record(admin, None, result)


def device_self_test(admin: Admin, cmd: AdminCommand) -> Result:
    """14h Device Self-test."""
    stc = cmd.cdw10 & 0xF
    if stc not in (SelfTestCode.SHORT, SelfTestCode.EXTENDED, SelfTestCode.ABORT):
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    if cmd.nsid == NSID_ALL:
        nsids = active_nsids(admin)
    elif cmd.nsid == 0:
        nsids = []
    elif cmd.nsid <= NN:
        if not is_active(admin, cmd.nsid):
            raise Reject(Status.INVALID_FIELD, param_location(NSID))  # an inactive NSID
        nsids = [cmd.nsid]
    else:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    current, _ = poll(admin)
    if stc == SelfTestCode.ABORT:
        abort(admin, SelfTestResult.ABORTED_BY_COMMAND)
        return (Status.SUCCESS, 0)
    if current != SelfTestCode.NONE:
        raise Reject(Status.DEVICE_SELF_TEST_IN_PROGRESS, param_location(CDW10))
    extended = stc == SelfTestCode.EXTENDED
    with admin.lock:
        admin.self_tests.running = _Running(stc, nsids)
    try:
        admin.engine.self_test_start(nsids, extended, EXTENDED_SECONDS if extended else SHORT_SECONDS)
    except BaseException:
        with admin.lock:  # it never started: nothing runs, nothing to log
            admin.self_tests.running = None
        raise
    return (Status.SUCCESS, 0)


def self_test_log(admin: Admin) -> bytes:
    """Log page 06h now."""
    current, percent = poll(admin)
    with admin.lock:
        entries = list(admin.self_tests.results)
    return build_self_test_log(current, percent, entries)
