"""Get Log Page (02h) and the Error Information log behind it.

Log pages (NVMe Base 2.0 5.16.1): 01h Error Information, 02h SMART / Health
Information, 03h Firmware Slot Information, 04h Changed Namespace List, 05h
Commands Supported and Effects (LPA bit 1) of the command set CSI (CDW14
bits 31:24) names when the host selected every command set (CC.CSS 110b;
otherwise CSI is ignored), 06h Device Self-test (:mod:`nvmefast.admin.self_test`),
81h Sanitize Status (:mod:`nvmefast.admin.sanitize`), and BFh Changed Zone List (ZNS 1.1 5.3.1, one
per zoned namespace: NSID names it). The extended form is supported
(LPA bit 2): NUMD is NUMDU:NUMDL and the offset LPOU:LPOL, in bytes and
dword aligned; an offset past the log's end is an Invalid Field, bytes past
it read as zero. Reading a page with Retain Asynchronous Event cleared
unmasks the event type that points at it, and empties the Changed Namespace
List or that namespace's Changed Zone List.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nvmefast.admin.aer import LOG_PAGE_EVENT_TYPE
from nvmefast.admin.sanitize import sanitize_log
from nvmefast.admin.self_test import self_test_log
from nvmefast.admin.command import CDW10, CDW12, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import CSS_ALL, CSS_NVM, is_active, namespace_csi
from nvmefast.iocs import IO_OPCODE_EFFECTS, build_changed_ns_list, build_command_effects_log
from nvmefast.status import Status
from nvmefast.structs import (
    COMPOSITE_TEMPERATURE,
    CSI_NVM,
    ELPE,
    ErrorLogEntry,
    SmartLog,
    build_error_log,
    build_firmware_slot_log,
    build_smart_log,
)
from nvmefast.zns import CHANGED_ZONE_LIST_MAX, CSI_ZNS, ZONED_OPCODE_EFFECTS, build_changed_zone_list

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["ChangedZones", "ErrorLog", "LogPageId", "get_log_page"]


class LogPageId:
    """Log Page Identifiers this controller supports."""

    ERROR_INFORMATION = 0x01
    """Error Information (64-byte entries, ELPE+1 of them)."""
    SMART_HEALTH = 0x02
    """SMART / Health Information."""
    FIRMWARE_SLOT = 0x03
    """Firmware Slot Information."""
    CHANGED_NAMESPACE_LIST = 0x04
    """Changed Namespace List."""
    COMMANDS_SUPPORTED_AND_EFFECTS = 0x05
    """Commands Supported and Effects."""
    DEVICE_SELF_TEST = 0x06
    """Device Self-test."""
    SANITIZE_STATUS = 0x81
    """Sanitize Status."""
    CHANGED_ZONE_LIST = 0xBF
    """Changed Zone List (Zoned Namespace Command Set, per namespace)."""


SUPPORTED = frozenset(
    (
        LogPageId.ERROR_INFORMATION,
        LogPageId.SMART_HEALTH,
        LogPageId.FIRMWARE_SLOT,
        LogPageId.CHANGED_NAMESPACE_LIST,
        LogPageId.COMMANDS_SUPPORTED_AND_EFFECTS,
        LogPageId.DEVICE_SELF_TEST,
        LogPageId.SANITIZE_STATUS,
        LogPageId.CHANGED_ZONE_LIST,
    )
)
"""Log Page Identifiers Get Log Page accepts."""
_CDW14 = 56


NO_MDTS_LOG_LIMIT = 1 << 20
"""Largest Get Log Page transfer when MDTS is 0 (unlimited): a guest cannot
make the controller build a multi-gigabyte buffer of zeroes."""


class ErrorLog:
    """The Error Information log: the newest ELPE+1 errors, each numbered.

    Entries come from two places: failed I/O commands the core reports
    (``engine.take_errors``) and admin commands this layer failed. The error
    count increases by one per error over the controller's life, so a host
    can tell new entries from ones it has seen.
    """

    def __init__(self) -> None:
        self._entries: collections.deque[ErrorLogEntry] = collections.deque(maxlen=ELPE + 1)
        self.count = 0
        """Errors recorded over the controller's life (the newest entry's error count)."""

    def record(self, sqid: int, cid: int, status: int, location: int, lba: int = 0, nsid: int = 0) -> None:
        """Add an entry for a command that completed with ``status``."""
        self.count += 1
        self._entries.appendleft(ErrorLogEntry(self.count, sqid, cid, status, location, lba, nsid))

    def entries(self) -> list[ErrorLogEntry]:
        """Entries, newest first."""
        return list(self._entries)


class ChangedZones:
    """The Changed Zone List of each zoned namespace: ZSLBAs of the zones the
    controller itself changed, kept until the host reads the log with RAE=0.
    More than :data:`~nvmefast.zns.CHANGED_ZONE_LIST_MAX` make it an
    overflow, which the log reports as FFFFh and a read clears."""

    def __init__(self) -> None:
        self._zones: dict[int, list[int]] = {}
        self._overflow: set[int] = set()

    def add(self, nsid: int, zslbas: Sequence[int] | None) -> None:
        """Record changed zones of ``nsid``; None: more than the core could list."""
        if zslbas is None:
            self._overflow.add(nsid)
            return
        listed = self._zones.setdefault(nsid, [])
        listed.extend(z for z in zslbas if z not in listed)
        if len(listed) > CHANGED_ZONE_LIST_MAX:
            self._overflow.add(nsid)

    def report(self, nsid: int) -> list[int] | None:
        """What the log of ``nsid`` shows now: the ZSLBAs, or None for an overflow."""
        if nsid in self._overflow:
            return None
        return list(self._zones.get(nsid, ()))

    def clear(self, nsid: int, reported: list[int] | None) -> None:
        """The host read ``reported`` with RAE=0: forget it (a change since stays)."""
        if reported is None:
            self._overflow.discard(nsid)
            self._zones.pop(nsid, None)
            return
        remaining = [z for z in self._zones.get(nsid, ()) if z not in reported]
        if remaining:
            self._zones[nsid] = remaining
        else:
            self._zones.pop(nsid, None)


def _io_effects(admin: Admin, cmd: AdminCommand) -> Mapping[int, int]:
    """The I/O opcodes' effects of the command set CDW14 CSI names."""
    if admin.css == CSS_NVM:
        return IO_OPCODE_EFFECTS  # CSI is ignored unless every command set is selected
    if admin.css != CSS_ALL:
        return {}  # Admin Command Set only: no I/O command is supported
    csi = cmd.cdw14 >> 24
    if csi == CSI_NVM:
        return IO_OPCODE_EFFECTS
    if csi == CSI_ZNS:
        return ZONED_OPCODE_EFFECTS
    raise Reject(Status.INVALID_FIELD, param_location(_CDW14 + 3))


def _check_zoned_nsid(admin: Admin, nsid: int) -> None:
    # The Changed Zone List is per namespace: an active zoned one.
    entry = admin.namespaces.table.get(nsid)
    if not (entry is not None and is_active(admin, nsid) and namespace_csi(entry.config) == CSI_ZNS):
        raise Reject(Status.INVALID_FIELD, param_location(NSID))


def _smart(admin: Admin, smart: Mapping[str, int]) -> bytes:
    with admin.lock:
        critical_warning = admin.features.critical_warning()
    log = SmartLog(
        critical_warning=critical_warning,
        composite_temperature=COMPOSITE_TEMPERATURE,
        available_spare=100,
        available_spare_threshold=10,
        percentage_used=0,
        # The core reports Data Units already in the spec's unit: thousands
        # of 512-byte units, rounded up.
        data_units_read=smart.get("data_units_read", 0),
        data_units_written=smart.get("data_units_written", 0),
        host_read_commands=smart.get("host_read_commands", 0),
        host_write_commands=smart.get("host_write_commands", 0),
        controller_busy_time=smart.get("controller_busy_time", 0),
        power_cycles=smart.get("power_cycles", 1),
        power_on_hours=int((time.monotonic() - admin.created) // 3600),
        unsafe_shutdowns=0,
        media_errors=smart.get("media_errors", 0),
        num_err_log_entries=admin.errors.count,
    )
    return build_smart_log(log)


def get_log_page(admin: Admin, cmd: AdminCommand) -> Result:
    """02h Get Log Page."""
    lid = cmd.cdw10 & 0xFF
    rae = bool(cmd.cdw10 & (1 << 15))
    numd = (cmd.cdw11 & 0xFFFF) << 16 | cmd.cdw10 >> 16
    length = (numd + 1) * 4
    offset = cmd.cdw13 << 32 | cmd.cdw12
    if lid not in SUPPORTED:
        raise Reject(Status.INVALID_LOG_PAGE, param_location(CDW10))
    io_effects = _io_effects(admin, cmd) if lid == LogPageId.COMMANDS_SUPPORTED_AND_EFFECTS else {}
    if lid == LogPageId.CHANGED_ZONE_LIST:
        _check_zoned_nsid(admin, cmd.nsid)
    if lid == LogPageId.SMART_HEALTH and cmd.nsid not in (0, 0xFFFFFFFF):
        # LPA bit 0 is clear: SMART is kept for the controller as a whole only
        # (5.14.1.2), so a namespace-specific request is an invalid field.
        raise Reject(Status.INVALID_FIELD, param_location(NSID))
    limit = admin.config.mdts_bytes or NO_MDTS_LOG_LIMIT
    if length > limit:
        raise Reject(Status.INVALID_FIELD, param_location(CDW10 + 2))
    # Errors (and zone changes) the core saw come first: they happened before this command.
    admin.collect_engine_errors()
    if lid == LogPageId.CHANGED_ZONE_LIST:
        admin.collect_changed_zones(cmd.nsid)
    reported: frozenset[int] = frozenset()
    zones: list[int] | None = []
    with admin.lock:
        match lid:
            case LogPageId.ERROR_INFORMATION:
                log = build_error_log(admin.errors.entries())
            case LogPageId.SMART_HEALTH | LogPageId.DEVICE_SELF_TEST | LogPageId.SANITIZE_STATUS:
                log = b""  # built below, outside the lock: it calls the engine
            case LogPageId.FIRMWARE_SLOT:
                log = build_firmware_slot_log(admin.config.firmware)
            case LogPageId.CHANGED_NAMESPACE_LIST:
                reported = frozenset(admin.changed_nsids)
                log = build_changed_ns_list(reported)
            case LogPageId.CHANGED_ZONE_LIST:
                zones = admin.changed_zones.report(cmd.nsid)
                log = build_changed_zone_list(zones)
            case _:
                log = build_command_effects_log(admin.command_effects(), io_effects)
    if lid == LogPageId.SMART_HEALTH:
        log = _smart(admin, admin.engine.smart())
    elif lid == LogPageId.DEVICE_SELF_TEST:
        log = self_test_log(admin)
    elif lid == LogPageId.SANITIZE_STATUS:
        log = sanitize_log(admin)
    if offset & 0x3 or offset > len(log):
        raise Reject(Status.INVALID_FIELD, param_location(CDW12))
    data = log[offset : offset + length]
    data += bytes(length - len(data))
    status = admin.engine.write_prp(cmd.prp1, cmd.prp2, data)
    if status != Status.SUCCESS:
        return (status, 0)
    if not rae:
        if lid == LogPageId.CHANGED_NAMESPACE_LIST:
            # Only what was reported: a change since then stays for the next read.
            with admin.lock:
                admin.changed_nsids -= reported
        if lid == LogPageId.CHANGED_ZONE_LIST:
            with admin.lock:
                admin.changed_zones.clear(cmd.nsid, zones)
        if lid in LOG_PAGE_EVENT_TYPE:
            admin.clear_event(LOG_PAGE_EVENT_TYPE[lid])
    return (Status.SUCCESS, 0)
