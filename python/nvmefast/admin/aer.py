"""Asynchronous Event Request (opcode 0Ch) and the event queue behind it.

The host keeps up to AERL+1 AER commands outstanding; the controller
completes one per event with dword 0 = type | info << 8 | log page << 16
(NVMe 1.4 5.2, Figure 146) and, for a Zone Descriptor Changed notice, the
zoned namespace's NSID in dword 1 (ZNS 1.1 Figure 43). After an event of
some type has been reported, that type is masked until the host reads the
event's log page with Retain Asynchronous Event (RAE) cleared; events of a
masked type wait in a queue.
This is QEMU's ``nvme_process_aers`` / ``nvme_clear_events`` contract.

Everything here runs under the admin lock; the completions a state change
makes are returned to the caller, which posts them with
``engine.complete_admin`` after releasing the lock (the engine may need the
worker, and the worker may be waiting for this lock).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import AdminCommand, Reject, Result
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "AsyncEvent",
    "AsyncEventType",
    "AsyncEvents",
    "ErrorEventInfo",
    "NoticeEventInfo",
    "SmartEventInfo",
    "async_event_request",
]

MAX_QUEUED = 64
"""Events kept while their type is masked or no AER is outstanding; more are dropped."""


class AsyncEventType(enum.IntEnum):
    """Asynchronous Event Type (dword 0 bits 2:0)."""

    ERROR = 0
    """Error status."""
    SMART = 1
    """SMART / Health status."""
    NOTICE = 2
    """Notice."""
    IO_COMMAND_SPECIFIC = 6
    """I/O Command specific status."""
    VENDOR = 7
    """Vendor specific."""


class SmartEventInfo(enum.IntEnum):
    """Asynchronous Event Information for SMART / Health status events."""

    RELIABILITY = 0x00
    """NVM subsystem reliability."""
    TEMPERATURE_THRESHOLD = 0x01
    """Temperature threshold."""
    SPARE_BELOW_THRESHOLD = 0x02
    """Available spare below threshold."""


class NoticeEventInfo(enum.IntEnum):
    """Asynchronous Event Information for Notice events."""

    NAMESPACE_ATTRIBUTE_CHANGED = 0x00
    """Namespace Attribute Changed: see the Changed Namespace List log (04h)."""
    FIRMWARE_ACTIVATION_STARTING = 0x01
    """Firmware Activation Starting."""
    ZONE_DESCRIPTOR_CHANGED = 0xEF
    """Zone Descriptor Changed: see the Changed Zone List log (BFh) of the NSID in dword 1."""


class ErrorEventInfo(enum.IntEnum):
    """Asynchronous Event Information for Error status events (Figure 147)."""

    INVALID_DOORBELL_REGISTER = 0x00
    """Write to Invalid Doorbell Register."""
    INVALID_DOORBELL_VALUE = 0x01
    """Invalid Doorbell Write Value."""
    DIAGNOSTIC_FAILURE = 0x02
    """Diagnostic Failure."""
    PERSISTENT_INTERNAL_ERROR = 0x03
    """Persistent Internal Error."""
    TRANSIENT_INTERNAL_ERROR = 0x04
    """Transient Internal Error."""


LOG_PAGE_EVENT_TYPE = {
    0x01: AsyncEventType.ERROR,
    0x02: AsyncEventType.SMART,
    0x03: AsyncEventType.NOTICE,
    0x04: AsyncEventType.NOTICE,
    0xBF: AsyncEventType.NOTICE,
    0x81: AsyncEventType.IO_COMMAND_SPECIFIC,
}
"""Which event type reading a log page (with RAE=0) clears."""


@dataclasses.dataclass(frozen=True)
class AsyncEvent:
    """One asynchronous event waiting to be reported."""

    type: int
    info: int
    log_page: int
    dw1: int = 0
    """The AER completion's dword 1 (the NSID of a Zone Descriptor Changed notice)."""

    @property
    def dw0(self) -> int:
        """The AER completion's dword 0."""
        return (self.type & 0x7) | (self.info & 0xFF) << 8 | (self.log_page & 0xFF) << 16


class AsyncEvents:
    """Outstanding AER commands, queued events and masked event types."""

    def __init__(self, aerl: int) -> None:
        self._limit = aerl + 1
        self._outstanding: collections.deque[int] = collections.deque()
        self._queued: list[AsyncEvent] = []
        self._masked: set[int] = set()
        self.dropped = 0
        """Events dropped because the queue was full."""

    @property
    def outstanding(self) -> tuple[int, ...]:
        """CIDs of outstanding AER commands, oldest first."""
        return tuple(self._outstanding)

    @property
    def queued(self) -> tuple[AsyncEvent, ...]:
        """Events not yet reported, oldest first."""
        return tuple(self._queued)

    def request(self, cid: int) -> tuple[Result, list[tuple[int, AsyncEvent]]]:
        """A new AER command: complete it now with a queued event, or keep it.

        Returns the handler's result and the completions to post: an event
        with a dword 1 cannot travel in a handler's ``(status, dw0)``, so its
        command is deferred and comes back here to be completed at once.
        """
        if len(self._outstanding) >= self._limit:
            raise Reject(Status.AERL_EXCEEDED)
        event = self._take_deliverable()
        if event is None:
            self._outstanding.append(cid)
            return None, []
        if event.dw1:
            return None, [(cid, event)]
        return (Status.SUCCESS, event.dw0), []

    def post(self, event: AsyncEvent) -> list[tuple[int, AsyncEvent]]:
        """Queue ``event``; returns the ``(cid, event)`` AER completions to post."""
        # The same event twice while the first is still unreported tells the
        # host nothing more (QEMU coalesces likewise by masking).
        if event not in self._queued:
            if len(self._queued) >= MAX_QUEUED:
                self.dropped += 1
            else:
                self._queued.append(event)
        return self._deliver()

    def clear(self, event_type: int) -> list[tuple[int, AsyncEvent]]:
        """The host read the log page of ``event_type`` with RAE=0: unmask it."""
        self._masked.discard(event_type)
        return self._deliver()

    def discard(self, event_type: int) -> None:
        """Forget queued, unreported events of ``event_type`` (a sanitize
        starting clears its predecessor's completion)."""
        self._queued = [e for e in self._queued if e.type != event_type]

    def abort(self, cid: int) -> bool:
        """Forget outstanding AER ``cid``; False if there is none."""
        try:
            self._outstanding.remove(cid)
        except ValueError:
            return False
        return True

    def reset(self) -> None:
        """Controller reset: outstanding AERs, queued events and masks are gone."""
        self._outstanding.clear()
        self._queued.clear()
        self._masked.clear()

    def _take_deliverable(self) -> AsyncEvent | None:
        for i, event in enumerate(self._queued):
            if event.type not in self._masked:
                del self._queued[i]
                self._masked.add(event.type)
                return event
        return None

    def _deliver(self) -> list[tuple[int, AsyncEvent]]:
        completions: list[tuple[int, AsyncEvent]] = []
        while self._outstanding:
            event = self._take_deliverable()
            if event is None:
                break
            completions.append((self._outstanding.popleft(), event))
        return completions


def async_event_request(admin: Admin, cmd: AdminCommand) -> Result:
    """0Ch Asynchronous Event Request: deferred until an event occurs."""
    with admin.lock:
        result, completions = admin.events.request(cmd.cid)
    admin.complete_events(completions)
    return result
