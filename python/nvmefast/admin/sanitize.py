"""Sanitize (84h), the Sanitize Status log (81h), and what the controller
accepts while a sanitize runs.

The command (NVMe Base 2.0 5.24, 8.1.26): CDW10 bits 2:0 SANACT (001b Exit
Failure Mode, 010b Block Erase, 011b Overwrite, 100b Crypto Erase), bit 3
AUSE (a failure may be left with Exit Failure Mode), bits 7:4 OWPASS
(overwrite passes, 0h meaning 16), bit 8 OIPBP (invert the pattern between
passes), bit 9 NDAS (leave the blocks allocated); CDW11 the 32-bit overwrite
pattern. SANICAP offers Block Erase and Overwrite (no Crypto Erase: Invalid
Field) and honours NDAS (NDI clear). The operation covers every namespace
of the subsystem, runs in the background (the command completes once it
started, and the log already says so), cannot be aborted and goes on across
controller resets. Block Erase leaves every block reading zeroes;
Overwrite leaves the pattern (its last pass's, inverted or not); both
deallocate the blocks unless NDAS, and leave zoned namespaces' zones Empty.

While it runs, I/O commands other than Flush fail with Sanitize In Progress
(the core's part), and so does every admin command outside the list of
Figure 143: Abort, Asynchronous Event Request, Create/Delete I/O SQ and CQ,
Get and Set Features, Identify, Keep Alive, Get Log Page of the Error
Information, SMART / Health, Changed Namespace List and Sanitize Status logs
(:data:`ALLOWED_ADMIN`, :data:`ALLOWED_LOGS`); a Sanitize too. A running
device self-test is aborted when a sanitize starts (result 9h). When it
completes the controller reports an I/O Command Specific Status event, info
01h (Sanitize Operation Completed), log 81h.

A sanitize that fails leaves the controller in the sanitize failure mode:
the same commands fail, with Sanitize Failed, until a new Sanitize succeeds
or, when the failed one had AUSE set, Exit Failure Mode.

The log (512 bytes, Figure 267): SPROG (bytes 1:0, progress in 65536ths,
FFFFh when none runs), SSTAT (3:2: bits 2:0 the state, 7:3 overwrite passes
done, bit 8 Global Data Erased: nothing written since the last sanitize),
SCDW10 (7:4, the CDW10 of the command that started it), and the time
estimates (FFFFFFFFh: not reported).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import struct
import threading
import time
from typing import TYPE_CHECKING

from nvmefast.admin.aer import AsyncEventType
from nvmefast.admin.command import CDW10, AdminCommand, Reject, Result, param_location
from nvmefast.admin.self_test import SelfTestResult
from nvmefast.admin.self_test import abort as abort_self_test
from nvmefast.status import Status
from nvmefast.structs import SANICAP, SANICAP_BES, SANICAP_OWS

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "ALLOWED_ADMIN",
    "ALLOWED_LOGS",
    "SANITIZE_LOG_SIZE",
    "SanitizeAction",
    "SanitizeLog",
    "SanitizeState",
    "Sanitizer",
    "sanitize",
]

log = logging.getLogger(__name__)

SANITIZE_LOG_SIZE = 512
"""The Sanitize Status log page."""
NOT_REPORTED = 0xFFFFFFFF
"""A time estimate the controller does not report."""
SANITIZE_COMPLETED = 0x01
"""Asynchronous Event Information: Sanitize Operation Completed."""
LOG_SANITIZE_STATUS = 0x81
"""Log Page Identifier of the Sanitize Status log."""
MIN_SECONDS = 1.0
"""The least a sanitize takes: a host polling the log sees it in progress."""
_POLL = 0.02

ALLOWED_ADMIN = frozenset((0x08, 0x0C, 0x00, 0x01, 0x04, 0x05, 0x09, 0x0A, 0x06, 0x18, 0x02))
"""Admin opcodes allowed while a sanitize runs (Figure 143): Abort, AER,
Delete/Create I/O SQ, Delete/Create I/O CQ, Set/Get Features, Identify, Keep
Alive and Get Log Page (of :data:`ALLOWED_LOGS` only)."""
ALLOWED_LOGS = frozenset((0x01, 0x02, 0x04, 0x81))
"""Logs Get Log Page may read while a sanitize runs (of those this
controller has): Error Information, SMART / Health, Changed Namespace List,
Sanitize Status."""


class SanitizeAction(enum.IntEnum):
    """Sanitize Action (CDW10 bits 2:0)."""

    EXIT_FAILURE_MODE = 0b001
    """Leave the sanitize failure mode."""
    BLOCK_ERASE = 0b010
    """Start a Block Erase."""
    OVERWRITE = 0b011
    """Start an Overwrite."""
    CRYPTO_ERASE = 0b100
    """Start a Crypto Erase (not supported)."""


class SanitizeState(enum.IntEnum):
    """Sanitize Operation Status (SSTAT bits 2:0)."""

    NEVER = 0b000
    """The NVM subsystem has never been sanitized."""
    COMPLETED = 0b001
    """The last sanitize completed successfully."""
    IN_PROGRESS = 0b010
    """A sanitize is running."""
    FAILED = 0b011
    """The last sanitize failed."""


_SUPPORTED: dict[int, str] = {
    action: kind
    for action, kind, cap in (
        (SanitizeAction.BLOCK_ERASE, "block-erase", SANICAP_BES),
        (SanitizeAction.OVERWRITE, "overwrite", SANICAP_OWS),
    )
    if SANICAP & cap
}
"""The actions SANICAP offers, by the core's name."""


@dataclasses.dataclass(frozen=True)
class SanitizeLog:
    """The Sanitize Status log's fields."""

    sprog: int = 0xFFFF
    state: int = SanitizeState.NEVER
    passes: int = 0
    """Overwrite passes completed (SSTAT bits 7:3)."""
    global_data_erased: bool = False
    scdw10: int = 0
    estimates: tuple[int, int, int, int, int, int] = (NOT_REPORTED,) * 6
    """ETO, ETBE, ETCE, ETODMM, ETBENMM, ETCENMM in seconds."""

    def to_bytes(self) -> bytes:
        """The 512-byte page."""
        sstat = (self.state & 0x7) | (self.passes & 0x1F) << 3 | int(self.global_data_erased) << 8
        head = struct.pack("<HHI6I", self.sprog, sstat, self.scdw10, *self.estimates)
        return head + bytes(SANITIZE_LOG_SIZE - len(head))


class Sanitizer:
    """The sanitize state of the NVM subsystem, under the admin lock (a reset leaves it alone)."""

    def __init__(self) -> None:
        self.state = SanitizeState.NEVER
        self.scdw10 = 0
        self.passes = 0
        self.failure_restricted: bool | None = None
        """In the failure mode: True when only a Sanitize may leave it, False
        when Exit Failure Mode may too; None outside it."""
        self.writes_at_erase: int | None = None
        """SMART Host Write Commands when the last sanitize completed."""

    @property
    def running(self) -> bool:
        """A sanitize runs."""
        return self.state == SanitizeState.IN_PROGRESS

    def restriction(self) -> int | None:
        """The status commands outside the allowed list get now, or None."""
        if self.running:
            return Status.SANITIZE_IN_PROGRESS
        if self.failure_restricted is not None:
            return Status.SANITIZE_FAILED
        return None


def restricted(admin: Admin, cmd: AdminCommand) -> int | None:
    """The status ``cmd`` fails with because of a sanitize (running or
    failed), or None when it may run."""
    with admin.lock:
        status = admin.sanitizer.restriction()
    if status is None:
        return None
    if cmd.opcode == 0x84:
        return status if admin.sanitizer.running else None  # a Sanitize may leave the failure mode
    if cmd.opcode not in ALLOWED_ADMIN or (cmd.opcode == 0x02 and cmd.cdw10 & 0xFF not in ALLOWED_LOGS):
        return status
    return None


def sanitize(admin: Admin, cmd: AdminCommand) -> Result:
    """84h Sanitize."""
    action = cmd.cdw10 & 0x7
    ause = bool(cmd.cdw10 & (1 << 3))
    s = admin.sanitizer
    if action == SanitizeAction.EXIT_FAILURE_MODE:
        with admin.lock:
            if s.failure_restricted:
                raise Reject(Status.SANITIZE_FAILED, param_location(CDW10))
            s.failure_restricted = None
        return (Status.SUCCESS, 0)
    kind = _SUPPORTED.get(action)
    if kind is None:
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))  # crypto erase, reserved actions
    with admin.lock:
        if s.failure_restricted and ause:
            # Restricted failure: only a Sanitize in restricted mode (AUSE 0) may retry.
            raise Reject(Status.SANITIZE_FAILED, param_location(CDW10))
    if any(e.config.readonly for e in admin.namespaces.table.entries()):
        raise Reject(Status.NAMESPACE_WRITE_PROTECTED, param_location(CDW10))
    passes = (cmd.cdw10 >> 4) & 0xF or 16
    invert = bool(cmd.cdw10 & (1 << 8))
    deallocate = not cmd.cdw10 & (1 << 9)
    abort_self_test(admin, SelfTestResult.ABORTED_BY_SANITIZE)
    with admin.lock:
        before = (s.state, s.scdw10, s.passes, s.failure_restricted)
        s.state = SanitizeState.IN_PROGRESS
        s.scdw10 = cmd.cdw10
        s.passes = 0
        s.failure_restricted = None
        admin.events.discard(AsyncEventType.IO_COMMAND_SPECIFIC)
    try:
        admin.engine.sanitize_start(kind, cmd.cdw11, passes if kind == "overwrite" else 1, invert, deallocate,
                                    MIN_SECONDS)  # fmt: skip
    except BaseException:
        with admin.lock:  # it never started: the log says what it said before
            s.state, s.scdw10, s.passes, s.failure_restricted = before
        raise
    threading.Thread(target=_watch, args=(admin, ause), name="nvmefast-sanitize", daemon=True).start()
    log.info("sanitize started: %s%s", kind, f", {passes} passes" if kind == "overwrite" else "")
    return (Status.SUCCESS, 0)


def _watch(admin: Admin, ause: bool) -> None:
    # Until the core says it is done: then the log's state, and the event.
    try:
        while True:
            status = admin.engine.sanitize_status()
            if status["state"] != "running":
                break
            time.sleep(_POLL)
        writes = int(admin.engine.smart().get("host_write_commands", 0))
    except Exception:  # the controller closed under it
        log.debug("sanitize watcher stopped", exc_info=True)
        return
    s = admin.sanitizer
    with admin.lock:
        if status["state"] == "failed":
            s.state = SanitizeState.FAILED
            s.failure_restricted = not ause
        else:
            s.state = SanitizeState.COMPLETED
            s.passes = int(status.get("passes_done", 0))
            s.writes_at_erase = writes
    log.info("sanitize %s", "failed" if s.state == SanitizeState.FAILED else "completed")
    if s.state == SanitizeState.COMPLETED:
        admin.post_event(AsyncEventType.IO_COMMAND_SPECIFIC, SANITIZE_COMPLETED, LOG_SANITIZE_STATUS)


def sanitize_log(admin: Admin) -> bytes:
    """Log page 81h now."""
    with admin.lock:
        s = admin.sanitizer
        state, scdw10, passes, erased = s.state, s.scdw10, s.passes, s.writes_at_erase
    sprog = 0xFFFF
    if state == SanitizeState.IN_PROGRESS:
        status = admin.engine.sanitize_status()
        sprog = min(int(status.get("progress", 0)), 0xFFFE)
        passes = int(status.get("passes_done", 0))
    gde = erased is not None and state == SanitizeState.COMPLETED and (
        int(admin.engine.smart().get("host_write_commands", 0)) == erased
    )
    return SanitizeLog(sprog, state, passes if scdw10 & 0x7 == SanitizeAction.OVERWRITE else 0, gde, scdw10).to_bytes()
