"""Admin command set: decoding, dispatch and the state commands share.

The core's worker hands every admin SQE to :meth:`Admin.handle`, which runs
the handler for its opcode (one module per command family) and returns
``(status, dw0)`` or None for a deferred completion. Register writes on the
embedder's thread touch the same state (controller reset, asynchronous
events from doorbell writes), so it is guarded by :attr:`Admin.lock`. The
lock is never held across an engine call that waits for the worker
(``reset``, ``stop``, ``close``), and AER completions are posted only after
it is released: the worker may be the one waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from nvmefast._core import Engine

from nvmefast.admin.abort import abort
from nvmefast.admin.aer import (
    AsyncEvent,
    AsyncEvents,
    AsyncEventType,
    NoticeEventInfo,
    SmartEventInfo,
    async_event_request,
)
from nvmefast.admin.command import CDW0, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import CSS_NVM, enabled_csis
from nvmefast.admin.doorbell_buffer import doorbell_buffer_config
from nvmefast.admin.features import (
    AEC_NAMESPACE_ATTRIBUTE,
    AEC_ZONE_DESCRIPTOR_CHANGED,
    CRITICAL_WARNING_TEMPERATURE,
    Features,
    get_features,
    set_features,
)
from nvmefast.admin.format_nvm import format_nvm
from nvmefast.admin.identify import identify
from nvmefast.admin.keep_alive import keep_alive
from nvmefast.admin.log_page import ChangedZones, ErrorLog, LogPageId, get_log_page
from nvmefast.admin.queues import create_io_cq, create_io_sq, delete_io_cq, delete_io_sq
from nvmefast.config import ControllerConfig
from nvmefast.errors import QueueError
from nvmefast.admin.ns_attachment import namespace_attachment
from nvmefast.admin.ns_management import namespace_management
from nvmefast.admin.sanitize import Sanitizer, restricted, sanitize
from nvmefast.admin.self_test import SelfTestResult, SelfTests, device_self_test
from nvmefast.admin.self_test import abort as abort_self_test
from nvmefast.iocs import (
    EFFECTS_CCC,
    EFFECTS_CSE_ANY_NAMESPACE,
    EFFECTS_CSUPP,
    EFFECTS_LBCC,
    EFFECTS_NCC,
    EFFECTS_NIC,
)
from nvmefast.ns_manager import NamespaceManager
from nvmefast.status import Status, with_dnr
from nvmefast.structs import CSI_NVM
from nvmefast.zns import CSI_ZNS

__all__ = ["Admin", "AdminCommand", "Opcode"]

log = logging.getLogger(__name__)



class Opcode:
    """Admin command opcodes (NVMe Base 2.0 Figure 28, NVM Command Set 1.0 Figure 27)."""

    DELETE_IO_SQ = 0x00
    """Delete I/O Submission Queue."""
    CREATE_IO_SQ = 0x01
    """Create I/O Submission Queue."""
    GET_LOG_PAGE = 0x02
    """Get Log Page."""
    DELETE_IO_CQ = 0x04
    """Delete I/O Completion Queue."""
    CREATE_IO_CQ = 0x05
    """Create I/O Completion Queue."""
    IDENTIFY = 0x06
    """Identify."""
    ABORT = 0x08
    """Abort."""
    DOORBELL_BUFFER_CONFIG = 0x7C
    """Doorbell Buffer Config (shadow doorbells)."""
    SET_FEATURES = 0x09
    """Set Features."""
    GET_FEATURES = 0x0A
    """Get Features."""
    ASYNC_EVENT_REQUEST = 0x0C
    """Asynchronous Event Request."""
    NAMESPACE_MANAGEMENT = 0x0D
    """Namespace Management."""
    DEVICE_SELF_TEST = 0x14
    """Device Self-test."""
    NAMESPACE_ATTACHMENT = 0x15
    """Namespace Attachment."""
    KEEP_ALIVE = 0x18
    """Keep Alive."""
    FORMAT_NVM = 0x80
    """Format NVM."""
    SANITIZE = 0x84
    """Sanitize."""


Handler = Callable[["Admin", AdminCommand], Result]

_HANDLERS: dict[int, Handler] = {
    Opcode.DELETE_IO_SQ: delete_io_sq,
    Opcode.CREATE_IO_SQ: create_io_sq,
    Opcode.GET_LOG_PAGE: get_log_page,
    Opcode.DELETE_IO_CQ: delete_io_cq,
    Opcode.CREATE_IO_CQ: create_io_cq,
    Opcode.IDENTIFY: identify,
    Opcode.ABORT: abort,
    Opcode.SET_FEATURES: set_features,
    Opcode.GET_FEATURES: get_features,
    Opcode.ASYNC_EVENT_REQUEST: async_event_request,
    Opcode.DOORBELL_BUFFER_CONFIG: doorbell_buffer_config,
    Opcode.KEEP_ALIVE: keep_alive,
    Opcode.FORMAT_NVM: format_nvm,
    Opcode.NAMESPACE_MANAGEMENT: namespace_management,
    Opcode.NAMESPACE_ATTACHMENT: namespace_attachment,
    Opcode.DEVICE_SELF_TEST: device_self_test,
    Opcode.SANITIZE: sanitize,
}

_ADMIN_EFFECTS: dict[int, int] = {opcode: EFFECTS_CSUPP for opcode in _HANDLERS}
# Format NVM rewrites every block and changes Identify Namespace (FLBAS, NSZE).
_ADMIN_EFFECTS[Opcode.FORMAT_NVM] |= EFFECTS_LBCC | EFFECTS_NCC
# Namespace Management and Attachment change which namespaces there are (NIC:
# Linux rescans after them) and the capacity Identify Controller reports (CCC).
_ADMIN_EFFECTS[Opcode.NAMESPACE_MANAGEMENT] |= EFFECTS_NIC | EFFECTS_CCC
_ADMIN_EFFECTS[Opcode.NAMESPACE_ATTACHMENT] |= EFFECTS_NIC | EFFECTS_CCC
# Sanitize erases every namespace, with nothing else outstanding.
_ADMIN_EFFECTS[Opcode.SANITIZE] |= EFFECTS_LBCC | EFFECTS_CSE_ANY_NAMESPACE


class Admin:
    """The admin command set of one controller and the state it keeps.

    Internal: :class:`nvmefast.Controller` creates one and installs
    :meth:`handle` as the engine's admin handler.
    """

    def __init__(self, config: ControllerConfig, engine: Engine, namespaces: NamespaceManager) -> None:
        self.config = config
        """The controller's configuration."""
        self.engine = engine
        """The core engine commands act on."""
        self.namespaces = namespaces
        """The namespaces and their management (:mod:`nvmefast.ns_manager`)."""
        namespaces.notify = self.namespaces_changed
        namespaces.removing = self._namespaces_removing
        self.lock = threading.Lock()
        """Guards the state below against the embedder's thread."""
        self.page_size = 4096
        """Memory page size from CC.MPS, set when the controller is enabled."""
        self.created = time.monotonic()
        """When the controller was powered on, for SMART Power On Hours."""
        self.features = Features(config)
        """Current feature values."""
        # The core starts with its write cache on; without a volatile write
        # cache (VWC 0) every write must be durable at once.
        engine.set_write_cache(self.features.write_cache_enabled)
        self.events = AsyncEvents(config.aerl)
        """Outstanding AERs and queued asynchronous events."""
        self.errors = ErrorLog()
        """The Error Information log."""
        self.queues_created = False
        """An I/O queue was created since the last reset (Number of Queues is
        then a Command Sequence Error, even once they are deleted)."""
        self.changed_nsids: set[int] = set()
        """NSIDs for the Changed Namespace List log, until it is read with RAE=0."""
        self.changed_zones = ChangedZones()
        """Zones the controller itself changed, per zoned NSID, for the Changed Zone List log."""
        self.css = CSS_NVM
        """CC.CSS when the controller was last enabled: the I/O Command Sets selected."""
        self.last_keep_alive = 0.0
        """When the last Keep Alive command came (monotonic seconds), 0 if none."""
        self.commands = 0
        """Admin commands handled."""
        self.failures = 0
        """Admin commands completed with an error status."""
        self.internal_errors = 0
        """Admin commands that hit a bug in this layer (completed Internal Error)."""
        self.self_tests = SelfTests()
        """The running device self-test and the results log."""
        self.sanitizer = Sanitizer()
        """The sanitize state of the NVM subsystem."""

    def handle(self, sqe: bytes) -> Result:
        """Execute one admin SQE; never raises (runs on the core's worker)."""
        cmd: AdminCommand | None = None
        try:
            cmd = AdminCommand.parse(sqe)
            self.commands += 1
            handler = _HANDLERS.get(cmd.opcode)
            if handler is None:
                raise Reject(Status.INVALID_OPCODE, param_location(CDW0))
            if cmd.fuse:
                # Fused operations exist only for the NVM command set.
                raise Reject(Status.INVALID_FIELD, param_location(CDW0 + 1))
            if cmd.psdt:
                # Admin commands on PCIe use PRPs (PSDT 00b) only.
                raise Reject(Status.INVALID_FIELD, param_location(CDW0 + 1, 6))
            refused = restricted(self, cmd)
            if refused is not None:
                raise Reject(refused, param_location(CDW0))
            result = handler(self, cmd)
            if result is not None and result[0] != Status.SUCCESS:
                self._record(cmd, result[0], 0xFFFF)
            return result
        except Reject as reject:
            self._record(cmd, reject.status, reject.location)
            return (reject.status, 0)
        except Exception:
            log.exception("admin command failed: %r", cmd if cmd is not None else sqe.hex())
            self.internal_errors += 1
            status = with_dnr(Status.INTERNAL)
            self._record(cmd, status, 0xFFFF)
            return (status, 0)

    def _record(self, cmd: AdminCommand | None, status: int, location: int) -> None:
        # Must not raise: it runs inside handle's exception handlers.
        try:
            self.failures += 1
            self.collect_engine_errors()
            cid = cmd.cid if cmd is not None else 0xFFFF
            nsid = cmd.nsid if cmd is not None else 0
            with self.lock:
                self.errors.record(0, cid, status, location, 0, nsid)
        except Exception:
            log.exception("recording an admin error failed")

    def collect_engine_errors(self) -> None:
        """Move the core's failed I/O commands into the Error Information log."""
        taken = self.engine.take_errors()
        if not taken:
            return
        with self.lock:
            for sqid, cid, status, location, lba, nsid in taken:
                self.errors.record(sqid, cid, status, location, lba, nsid)

    def post_event(self, event_type: int, info: int, log_page: int, dw1: int = 0) -> None:
        """Report an asynchronous event (from any thread)."""
        with self.lock:
            completions = self.events.post(AsyncEvent(event_type, info, log_page, dw1))
        self.complete_events(completions)

    def command_effects(self) -> dict[int, int]:
        """Commands Supported and Effects of each admin opcode (log 05h)."""
        return dict(_ADMIN_EFFECTS)

    def namespaces_changed(self, nsids: Iterable[int]) -> None:
        """Namespaces' Identify data changed: record them in the Changed
        Namespace List and raise a Namespace Attribute Changed notice unless
        Asynchronous Event Configuration bit 8 masks it (the log is kept
        either way)."""
        with self.lock:
            self.changed_nsids.update(nsids)
            notify = bool(self.features.async_event_configuration & AEC_NAMESPACE_ATTRIBUTE)
        if notify:
            self.post_event(
                AsyncEventType.NOTICE,
                NoticeEventInfo.NAMESPACE_ATTRIBUTE_CHANGED,
                LogPageId.CHANGED_NAMESPACE_LIST,
            )

    def formatted(self, nsids: list[int]) -> None:
        """Format NVM reformatted ``nsids``: a self-test reading them ends,
        the namespace directory records their formats, the host hears of it."""
        abort_self_test(self, SelfTestResult.ABORTED_BY_FORMAT, nsids)
        self.namespaces.formatted()
        self.namespaces_changed(nsids)

    def _namespaces_removing(self, nsids: list[int]) -> None:
        abort_self_test(self, SelfTestResult.ABORTED_BY_NAMESPACE_REMOVAL, nsids)

    def set_command_sets(self, css: int) -> None:
        """The host enabled the controller with CC.CSS ``css`` (one of
        :data:`~nvmefast.admin.command_sets.SUPPORTED_CSS`): namespaces of
        the command sets it selected are attached from now on."""
        csis = enabled_csis(css)
        with self.lock:
            self.css = css
        self.engine.set_io_command_sets(CSI_NVM in csis, CSI_ZNS in csis)

    def collect_changed_zones(self, nsid: int) -> None:
        """Move the zones the core changed on its own into the Changed Zone List of ``nsid``."""
        taken = self.engine.take_changed_zones(nsid)
        if taken is None:
            return  # not a zoned namespace
        zslbas, overflow = taken
        with self.lock:
            self.changed_zones.add(nsid, None if overflow else zslbas)

    def zone_descriptors_changed(self, nsid: int) -> None:
        """The core moved zones of namespace ``nsid`` on its own (read only,
        offline, finish or reset recommended): collect them for the Changed
        Zone List and raise a Zone Descriptor Changed notice unless
        Asynchronous Event Configuration bit 27 masks it (the log is kept
        either way)."""
        self.collect_changed_zones(nsid)
        with self.lock:
            notify = bool(self.features.async_event_configuration & AEC_ZONE_DESCRIPTOR_CHANGED)
        if notify:
            self.post_event(
                AsyncEventType.NOTICE,
                NoticeEventInfo.ZONE_DESCRIPTOR_CHANGED,
                LogPageId.CHANGED_ZONE_LIST,
                dw1=nsid,
            )

    def smart_event(self, critical_warning: int) -> None:
        """SMART critical warning bits came on: a SMART / Health event for
        those Asynchronous Event Configuration bits 7:0 enable."""
        with self.lock:
            enabled = critical_warning & self.features.async_event_configuration
        if enabled & CRITICAL_WARNING_TEMPERATURE:
            self.post_event(AsyncEventType.SMART, SmartEventInfo.TEMPERATURE_THRESHOLD, LogPageId.SMART_HEALTH)

    def report_error_event(self, info: int) -> None:
        """Report an Error status event whose details are in log page 01h."""
        self.post_event(AsyncEventType.ERROR, info, 0x01)

    def clear_event(self, event_type: int) -> None:
        """Unmask ``event_type`` after its log page was read with RAE=0."""
        with self.lock:
            completions = self.events.clear(event_type)
        self.complete_events(completions)

    def complete_events(self, completions: list[tuple[int, AsyncEvent]]) -> None:
        """Post AER completions (called without the admin lock held)."""
        for cid, event in completions:
            self._complete_deferred(cid, event)

    def _complete_deferred(self, cid: int, event: AsyncEvent) -> None:
        # The engine accepts a completion for any admin command it fetched and
        # has not completed, including one whose handler is still returning:
        # an event raised on another thread in that window is not lost.
        try:
            self.engine.complete_admin(cid, Status.SUCCESS, event.dw0, event.dw1)
        except QueueError:
            # A reset dropped the command: the event went with it, as every
            # queued event does on reset.
            log.warning("AER cid %d is no longer outstanding; event dropped", cid)
        except Exception:
            log.exception("completing AER cid %d failed", cid)

    def reset(self) -> None:
        """Controller reset (CC.EN 1 -> 0), after the engine's own reset.
        A short device self-test ends with it; an extended one, a sanitize,
        and namespaces' attachment go on."""
        with self.lock:
            run = self.self_tests.running
        if run is not None and run.code == 0x1:
            abort_self_test(self, SelfTestResult.ABORTED_BY_RESET)
        with self.lock:
            self.events.reset()
            self.features.reset()
            self.queues_created = False
            self.page_size = 4096
            write_cache = self.features.write_cache_enabled
        self.engine.set_write_cache(write_cache)

    def counters(self) -> dict[str, int]:
        """Admin event counters, merged into ``Controller.counters()``."""
        return {
            "admin_commands": self.commands,
            "admin_failures": self.failures,
            "admin_internal_errors": self.internal_errors,
            "aer_events_dropped": self.events.dropped,
        }
