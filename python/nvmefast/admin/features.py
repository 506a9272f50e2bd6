"""Set Features (09h) and Get Features (0Ah).

Supported Feature Identifiers (NVMe 1.4 5.21.1): 01h Arbitration, 02h Power
Management, 04h Temperature Threshold, 05h Error Recovery, 06h Volatile Write
Cache, 07h Number of Queues, 08h Interrupt Coalescing, 09h Interrupt Vector
Configuration, 0Bh Asynchronous Event Configuration. None is saveable, all
are changeable. Values live in :class:`Features`; a controller reset puts
them back to defaults except Number of Queues, which the spec says shall not
change between resets.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, AdminCommand, Reject, Result, param_location
from nvmefast.config import ControllerConfig
from nvmefast.status import Status
from nvmefast.structs import WCTEMP

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["FeatureId", "Features", "Select", "get_features", "set_features"]


class FeatureId(enum.IntEnum):
    """Feature Identifiers this controller supports."""

    ARBITRATION = 0x01
    """Arbitration."""
    POWER_MANAGEMENT = 0x02
    """Power Management."""
    TEMPERATURE_THRESHOLD = 0x04
    """Temperature Threshold."""
    ERROR_RECOVERY = 0x05
    """Error Recovery."""
    VOLATILE_WRITE_CACHE = 0x06
    """Volatile Write Cache."""
    NUMBER_OF_QUEUES = 0x07
    """Number of Queues."""
    INTERRUPT_COALESCING = 0x08
    """Interrupt Coalescing."""
    INTERRUPT_VECTOR_CONFIGURATION = 0x09
    """Interrupt Vector Configuration."""
    ASYNC_EVENT_CONFIGURATION = 0x0B
    """Asynchronous Event Configuration."""


class Select(enum.IntEnum):
    """Get Features Select (SEL, CDW10 bits 10:8)."""

    CURRENT = 0
    """The value in use."""
    DEFAULT = 1
    """The value after a reset."""
    SAVED = 2
    """The saved value; nothing is saveable, so the default."""
    SUPPORTED_CAPABILITIES = 3
    """Saveable (bit 0), namespace specific (bit 1), changeable (bit 2)."""


CAPABILITY_SAVEABLE = 1 << 0
"""Supported capabilities bit: the feature is saveable."""
CAPABILITY_NAMESPACE_SPECIFIC = 1 << 1
"""Supported capabilities bit: the feature is namespace specific."""
CAPABILITY_CHANGEABLE = 1 << 2
"""Supported capabilities bit: the feature is changeable."""

_ARBITRATION_NO_LIMIT = 0x7  # AB 111b: no Arbitration Burst limit
_SET_SAVE = 1 << 31
_THSEL_OVER, _THSEL_UNDER = 0, 1
_TMPSEL_COMPOSITE, _TMPSEL_ALL = 0x0, 0xF


@dataclasses.dataclass
class Features:
    """Current feature values; defaults come from the controller config."""

    config: ControllerConfig
    arbitration: int = _ARBITRATION_NO_LIMIT
    power_management: int = 0
    over_temperature_threshold: int = WCTEMP
    under_temperature_threshold: int = 0
    error_recovery: int = 0
    write_cache_enabled: bool = False
    nsqa: int = 0
    """Number of I/O Submission Queues Allocated, 0-based."""
    ncqa: int = 0
    """Number of I/O Completion Queues Allocated, 0-based."""
    interrupt_coalescing: int = 0
    coalescing_disabled: set[int] = dataclasses.field(default_factory=set)
    """Vectors whose Interrupt Vector Configuration has Coalescing Disable set."""
    async_event_configuration: int = 0

    def __post_init__(self) -> None:
        self.nsqa = self.ncqa = self.config.max_io_queue_pairs - 1
        self.reset()

    def reset(self) -> None:
        """Controller reset: every feature but Number of Queues to its default."""
        self.arbitration = _ARBITRATION_NO_LIMIT
        self.power_management = 0
        self.over_temperature_threshold = WCTEMP
        self.under_temperature_threshold = 0
        self.error_recovery = 0
        self.write_cache_enabled = self.config.volatile_write_cache
        self.interrupt_coalescing = 0
        self.coalescing_disabled = set()
        self.async_event_configuration = 0

    def get(self, fid: int, cdw11: int, default: bool) -> int:
        """Dword 0 of Get Features for ``fid`` (current or default value)."""
        base = Features(self.config) if default else self
        match fid:
            case FeatureId.ARBITRATION:
                return base.arbitration
            case FeatureId.POWER_MANAGEMENT:
                return base.power_management
            case FeatureId.TEMPERATURE_THRESHOLD:
                tmpsel, thsel = _temperature_selectors(cdw11, for_set=False)
                value = (
                    base.over_temperature_threshold
                    if thsel == _THSEL_OVER
                    else base.under_temperature_threshold
                )
                return value | (cdw11 & 0x3F0000)
            case FeatureId.ERROR_RECOVERY:
                return base.error_recovery
            case FeatureId.VOLATILE_WRITE_CACHE:
                return int(base.write_cache_enabled)
            case FeatureId.NUMBER_OF_QUEUES:
                return base.ncqa << 16 | base.nsqa
            case FeatureId.INTERRUPT_COALESCING:
                return base.interrupt_coalescing
            case FeatureId.INTERRUPT_VECTOR_CONFIGURATION:
                iv = self.vector_of(cdw11)
                return iv | (int(iv in base.coalescing_disabled) << 16)
            case FeatureId.ASYNC_EVENT_CONFIGURATION:
                return base.async_event_configuration
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))

    def vector_of(self, cdw11: int) -> int:
        """The Interrupt Vector (IV, bits 15:0) of ``cdw11``, checked against the table size."""
        iv = cdw11 & 0xFFFF
        if iv >= self.config.vectors:
            raise Reject(Status.INVALID_FIELD, param_location(CDW11))
        return iv


def _temperature_selectors(cdw11: int, *, for_set: bool) -> tuple[int, int]:
    tmpsel = (cdw11 >> 16) & 0xF
    thsel = (cdw11 >> 20) & 0x3
    # Only the composite temperature exists; "all sensors" is a Set-only value.
    allowed = (_TMPSEL_COMPOSITE, _TMPSEL_ALL) if for_set else (_TMPSEL_COMPOSITE,)
    if tmpsel not in allowed:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 2))
    if thsel not in (_THSEL_OVER, _THSEL_UNDER):
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 2, 4))
    return tmpsel, thsel


def _fid(admin: Admin, cmd: AdminCommand) -> int:
    fid = cmd.cdw10 & 0xFF
    if fid not in FeatureId._value2member_map_:
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    if fid == FeatureId.VOLATILE_WRITE_CACHE and not admin.config.volatile_write_cache:
        # Without a volatile write cache the feature does not exist (5.21.1.6).
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return fid


def get_features(admin: Admin, cmd: AdminCommand) -> Result:
    """0Ah Get Features."""
    fid = _fid(admin, cmd)
    sel = (cmd.cdw10 >> 8) & 0x7
    with admin.lock:
        match sel:
            case Select.CURRENT:
                return (Status.SUCCESS, admin.features.get(fid, cmd.cdw11, default=False))
            case Select.DEFAULT | Select.SAVED:
                return (Status.SUCCESS, admin.features.get(fid, cmd.cdw11, default=True))
            case Select.SUPPORTED_CAPABILITIES:
                return (Status.SUCCESS, CAPABILITY_CHANGEABLE)
    raise Reject(Status.INVALID_FIELD, param_location(CDW10 + 1))


def set_features(admin: Admin, cmd: AdminCommand) -> Result:
    """09h Set Features."""
    fid = _fid(admin, cmd)
    if cmd.cdw10 & _SET_SAVE:
        raise Reject(Status.FID_NOT_SAVEABLE, param_location(CDW10 + 3, 7))
    dw11 = cmd.cdw11
    with admin.lock:
        f = admin.features
        match fid:
            case FeatureId.ARBITRATION:
                f.arbitration = dw11 & 0xFFFFFF07
            case FeatureId.POWER_MANAGEMENT:
                if dw11 & 0x1F:  # PS: NPSS is 0, power state 0 is the only one
                    raise Reject(Status.INVALID_FIELD, param_location(CDW11))
                f.power_management = dw11 & 0xFF
            case FeatureId.TEMPERATURE_THRESHOLD:
                _tmpsel, thsel = _temperature_selectors(dw11, for_set=True)
                if thsel == _THSEL_OVER:
                    f.over_temperature_threshold = dw11 & 0xFFFF
                else:
                    f.under_temperature_threshold = dw11 & 0xFFFF
            case FeatureId.ERROR_RECOVERY:
                if dw11 & (1 << 16):  # DULBE needs NSFEAT bit 2, which is 0
                    raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 2))
                f.error_recovery = dw11 & 0xFFFF
            case FeatureId.VOLATILE_WRITE_CACHE:
                f.write_cache_enabled = bool(dw11 & 1)
            case FeatureId.NUMBER_OF_QUEUES:
                return _set_number_of_queues(admin, dw11)
            case FeatureId.INTERRUPT_COALESCING:
                f.interrupt_coalescing = dw11 & 0xFFFF
                # THR bits 7:0, TIME bits 15:8: the core holds interrupts back.
                admin.engine.set_coalescing(dw11 & 0xFF, (dw11 >> 8) & 0xFF)
            case FeatureId.INTERRUPT_VECTOR_CONFIGURATION:
                iv = f.vector_of(dw11)
                cd = bool(dw11 & (1 << 16))
                if cd:
                    f.coalescing_disabled.add(iv)
                else:
                    f.coalescing_disabled.discard(iv)
                admin.engine.set_coalescing_disabled(iv, cd)
            case FeatureId.ASYNC_EVENT_CONFIGURATION:
                # Bits 7:0 are the SMART critical warnings; OAES is 0, so the
                # notice bits above are reserved.
                f.async_event_configuration = dw11 & 0xFF
        return (Status.SUCCESS, 0)


def _set_number_of_queues(admin: Admin, dw11: int) -> Result:
    # Called with admin.lock held.
    if admin.io_sqs or admin.io_cqs:
        # 5.21.1.7: only before any I/O queue is created.
        raise Reject(Status.COMMAND_SEQUENCE_ERROR)
    nsqr, ncqr = dw11 & 0xFFFF, dw11 >> 16
    if nsqr == 0xFFFF:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11))
    if ncqr == 0xFFFF:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 2))
    limit = admin.config.max_io_queue_pairs - 1
    f = admin.features
    f.nsqa, f.ncqa = min(nsqr, limit), min(ncqr, limit)
    return (Status.SUCCESS, f.ncqa << 16 | f.nsqa)
