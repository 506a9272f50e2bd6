"""Set Features (09h) and Get Features (0Ah).

Supported Feature Identifiers (NVMe Base 2.0 5.27.1, as QEMU ``hw/nvme``):
01h Arbitration, 02h Power Management, 04h Temperature Threshold, 05h Error
Recovery, 06h Volatile Write Cache, 07h Number of Queues, 08h Interrupt
Coalescing, 09h Interrupt Vector Configuration, 0Ah Write Atomicity Normal,
0Bh Asynchronous Event Configuration, 0Eh Timestamp, 0Fh Keep Alive Timer,
16h Host Behavior Support, 19h I/O Command Set Profile. None is saveable (Save gets Feature Identifier
Not Saveable) and all are changeable. Error Recovery is the one namespace
specific feature; any other given the NSID of a namespace gets Feature Not
Namespace Specific. Timestamp and Host Behavior Support move their value
through a data buffer (:mod:`nvmefast.admin.feature_data`). A controller
reset puts every value back to its default except Number of Queues, which
the spec says shall not change between resets.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import is_active
from nvmefast.admin.feature_data import HostBehavior, Timestamp
from nvmefast.admin.identify import NSID_ALL, namespace_index
from nvmefast.config import ControllerConfig
from nvmefast.namespaces import NN
from nvmefast.status import Status
from nvmefast.structs import COMPOSITE_TEMPERATURE, WCTEMP

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "AEC_NAMESPACE_ATTRIBUTE",
    "AEC_ZONE_DESCRIPTOR_CHANGED",
    "FeatureId",
    "Features",
    "Select",
    "get_features",
    "set_features",
]


class FeatureId(enum.IntEnum):
    """Feature Identifiers this controller supports."""

    ARBITRATION = 0x01
    """Arbitration."""
    POWER_MANAGEMENT = 0x02
    """Power Management."""
    TEMPERATURE_THRESHOLD = 0x04
    """Temperature Threshold."""
    ERROR_RECOVERY = 0x05
    """Error Recovery (namespace specific)."""
    VOLATILE_WRITE_CACHE = 0x06
    """Volatile Write Cache."""
    NUMBER_OF_QUEUES = 0x07
    """Number of Queues."""
    INTERRUPT_COALESCING = 0x08
    """Interrupt Coalescing."""
    INTERRUPT_VECTOR_CONFIGURATION = 0x09
    """Interrupt Vector Configuration."""
    WRITE_ATOMICITY_NORMAL = 0x0A
    """Write Atomicity Normal."""
    ASYNC_EVENT_CONFIGURATION = 0x0B
    """Asynchronous Event Configuration."""
    TIMESTAMP = 0x0E
    """Timestamp (8-byte data buffer)."""
    KEEP_ALIVE_TIMER = 0x0F
    """Keep Alive Timer."""
    HOST_BEHAVIOR_SUPPORT = 0x16
    """Host Behavior Support (512-byte data buffer)."""
    IO_COMMAND_SET_PROFILE = 0x19
    """I/O Command Set Profile: the I/O Command Set Combination Index in use."""


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

CAPABILITIES: dict[int, int] = {fid: CAPABILITY_CHANGEABLE for fid in FeatureId}
"""Supported capabilities of each feature: none saveable (QEMU saves none)."""
CAPABILITIES[FeatureId.ERROR_RECOVERY] |= CAPABILITY_NAMESPACE_SPECIFIC

AEC_SMART_MASK = 0xFF
"""Asynchronous Event Configuration bits 7:0: one per SMART critical warning bit."""
AEC_NAMESPACE_ATTRIBUTE = 1 << 8
"""Asynchronous Event Configuration bit 8: Namespace Attribute Notices (OAES bit 8)."""
AEC_ZONE_DESCRIPTOR_CHANGED = 1 << 27
"""Asynchronous Event Configuration bit 27: Zone Descriptor Changed Notices (OAES bit 27)."""
IOCSCI_MASK = 0x1FF
"""I/O Command Set Profile CDW11 bits 8:0: the I/O Command Set Combination Index."""
CRITICAL_WARNING_TEMPERATURE = 1 << 1
"""SMART Critical Warning bit 1: a temperature is at or past a threshold."""

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
    error_recovery: list[int] = dataclasses.field(default_factory=list)
    """Error Recovery of namespace ``i + 1``."""
    write_cache_enabled: bool = False
    nsqa: int = 0
    """Number of I/O Submission Queues Allocated, 0-based."""
    ncqa: int = 0
    """Number of I/O Completion Queues Allocated, 0-based."""
    interrupt_coalescing: int = 0
    coalescing_disabled: set[int] = dataclasses.field(default_factory=set)
    """Vectors whose Interrupt Vector Configuration has Coalescing Disable set."""
    write_atomicity_normal: int = 0
    async_event_configuration: int = 0
    timestamp: Timestamp = dataclasses.field(default_factory=Timestamp)
    keep_alive_timeout: int = 0
    """KATO in milliseconds; 0: the Keep Alive Timer is disabled."""
    host_behavior: HostBehavior = dataclasses.field(default_factory=HostBehavior)
    io_command_set_profile: int = 0
    """The I/O Command Set Combination Index in use (CNS 1Ch has one, index 0)."""

    def __post_init__(self) -> None:
        self.nsqa = self.ncqa = self.config.max_io_queue_pairs - 1
        self.reset()

    def reset(self) -> None:
        """Controller reset: every feature but Number of Queues to its default."""
        self.arbitration = _ARBITRATION_NO_LIMIT
        self.power_management = 0
        self.over_temperature_threshold = WCTEMP
        self.under_temperature_threshold = 0
        self.error_recovery = [0] * NN
        self.write_cache_enabled = self.config.volatile_write_cache
        self.interrupt_coalescing = 0
        self.coalescing_disabled = set()
        self.write_atomicity_normal = 0
        self.async_event_configuration = 0
        # Timestamp origin 000b: "initialized to 0h by a Controller Level Reset".
        self.timestamp = Timestamp()
        self.keep_alive_timeout = 0
        self.host_behavior = HostBehavior()
        self.io_command_set_profile = 0

    def critical_warning(self) -> int:
        """SMART Critical Warning bits the feature values imply (temperature only)."""
        if (
            COMPOSITE_TEMPERATURE >= self.over_temperature_threshold
            or COMPOSITE_TEMPERATURE <= self.under_temperature_threshold
        ):
            return CRITICAL_WARNING_TEMPERATURE
        return 0

    def get(self, fid: int, cmd: AdminCommand, default: bool) -> int:
        """Dword 0 of Get Features for ``fid`` (current or default value)."""
        base = Features(self.config) if default else self
        cdw11 = cmd.cdw11
        match fid:
            case FeatureId.ARBITRATION:
                return base.arbitration
            case FeatureId.POWER_MANAGEMENT:
                return base.power_management
            case FeatureId.TEMPERATURE_THRESHOLD:
                _tmpsel, thsel = _temperature_selectors(cdw11, for_set=False)
                value = (
                    base.over_temperature_threshold
                    if thsel == _THSEL_OVER
                    else base.under_temperature_threshold
                )
                return value | (cdw11 & 0x3F0000)
            case FeatureId.ERROR_RECOVERY:
                return base.error_recovery[cmd.nsid - 1]
            case FeatureId.VOLATILE_WRITE_CACHE:
                return int(base.write_cache_enabled)
            case FeatureId.NUMBER_OF_QUEUES:
                return base.ncqa << 16 | base.nsqa
            case FeatureId.INTERRUPT_COALESCING:
                return base.interrupt_coalescing
            case FeatureId.INTERRUPT_VECTOR_CONFIGURATION:
                iv = self.vector_of(cdw11)
                return iv | (int(iv in base.coalescing_disabled) << 16)
            case FeatureId.WRITE_ATOMICITY_NORMAL:
                return base.write_atomicity_normal
            case FeatureId.ASYNC_EVENT_CONFIGURATION:
                return base.async_event_configuration
            case FeatureId.KEEP_ALIVE_TIMER:
                return base.keep_alive_timeout
            case FeatureId.IO_COMMAND_SET_PROFILE:
                return base.io_command_set_profile
            case FeatureId.TIMESTAMP | FeatureId.HOST_BEHAVIOR_SUPPORT:
                return 0  # the value travels in the data buffer
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
        # Without a volatile write cache the feature does not exist (5.27.1.4).
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return fid


def _check_nsid(admin: Admin, fid: int, nsid: int, *, for_set: bool) -> None:
    # QEMU nvme_get_feature / nvme_set_feature: a namespace specific feature
    # needs an active NSID (Set also takes FFFFFFFFh: every namespace); any
    # other feature refuses a namespace's NSID on Set and ignores it on Get.
    if CAPABILITIES[fid] & CAPABILITY_NAMESPACE_SPECIFIC:
        if not (for_set and nsid == NSID_ALL):
            namespace_index(admin, nsid)
            if not is_active(admin, nsid):
                raise Reject(Status.INVALID_FIELD, param_location(NSID))  # QEMU: no namespace there
    elif for_set and nsid not in (0, NSID_ALL):
        namespace_index(admin, nsid)
        if not is_active(admin, nsid):
            raise Reject(Status.INVALID_FIELD, param_location(NSID))
        raise Reject(Status.FEATURE_NOT_NS_SPECIFIC, param_location(NSID))


def get_features(admin: Admin, cmd: AdminCommand) -> Result:
    """0Ah Get Features."""
    fid = _fid(admin, cmd)
    sel = (cmd.cdw10 >> 8) & 0x7
    if sel == Select.SUPPORTED_CAPABILITIES:
        return (Status.SUCCESS, CAPABILITIES[fid])
    if sel not in (Select.CURRENT, Select.DEFAULT, Select.SAVED):
        raise Reject(Status.INVALID_FIELD, param_location(CDW10 + 1))
    _check_nsid(admin, fid, cmd.nsid, for_set=False)
    default = sel != Select.CURRENT
    with admin.lock:
        dw0 = admin.features.get(fid, cmd, default=default)
        match fid:
            case FeatureId.TIMESTAMP:
                # Always the running clock: a default of a clock means nothing.
                data: bytes | None = admin.features.timestamp.to_bytes()
            case FeatureId.HOST_BEHAVIOR_SUPPORT:
                data = (HostBehavior() if default else admin.features.host_behavior).to_bytes()
            case _:
                data = None
    if data is not None:
        status = admin.engine.write_prp(cmd.prp1, cmd.prp2, data)
        if status != Status.SUCCESS:
            return (status, 0)
    return (Status.SUCCESS, dw0)


def set_features(admin: Admin, cmd: AdminCommand) -> Result:
    """09h Set Features."""
    fid = _fid(admin, cmd)
    _check_nsid(admin, fid, cmd.nsid, for_set=True)
    if not CAPABILITIES[fid] & CAPABILITY_CHANGEABLE:
        raise Reject(Status.FEATURE_NOT_CHANGEABLE, param_location(CDW10))
    if cmd.cdw10 & _SET_SAVE and not CAPABILITIES[fid] & CAPABILITY_SAVEABLE:
        raise Reject(Status.FID_NOT_SAVEABLE, param_location(CDW10 + 3, 7))
    dw11 = cmd.cdw11
    if fid in (FeatureId.TIMESTAMP, FeatureId.HOST_BEHAVIOR_SUPPORT):
        return _set_from_buffer(admin, cmd, fid)
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
                if cmd.nsid == NSID_ALL:
                    f.error_recovery = [dw11 & 0xFFFF] * len(f.error_recovery)
                else:
                    f.error_recovery[cmd.nsid - 1] = dw11 & 0xFFFF
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
            case FeatureId.WRITE_ATOMICITY_NORMAL:
                # DN (bit 0): AWUN/NAWUN need not be honoured. Both are 0
                # (one block), which every write is atomic to anyway.
                f.write_atomicity_normal = dw11 & 0x1
            case FeatureId.ASYNC_EVENT_CONFIGURATION:
                # Bits 7:0 the SMART critical warnings, bit 8 Namespace
                # Attribute Notices (OAES bit 8), bit 27 Zone Descriptor
                # Changed Notices (OAES bit 27); the other notices are reserved.
                f.async_event_configuration = dw11 & (
                    AEC_SMART_MASK | AEC_NAMESPACE_ATTRIBUTE | AEC_ZONE_DESCRIPTOR_CHANGED
                )
            case FeatureId.KEEP_ALIVE_TIMER:
                f.keep_alive_timeout = dw11
            case FeatureId.IO_COMMAND_SET_PROFILE:
                # Index 0 is the only combination CNS 1Ch lists; any other
                # names an all-zero vector (QEMU rejects it likewise).
                if dw11 & IOCSCI_MASK:
                    raise Reject(Status.IOCS_COMBINATION_REJECTED, param_location(CDW11))
                f.io_command_set_profile = 0
        warning = f.critical_warning() if fid == FeatureId.TEMPERATURE_THRESHOLD else 0
        write_cache = f.write_cache_enabled
    if fid == FeatureId.VOLATILE_WRITE_CACHE:
        # WCE (bit 0) off makes the core write file namespaces with
        # RWF_DSYNC: every write durable before its completion. Outside the
        # lock, as the core may wait for writes in flight.
        admin.engine.set_write_cache(write_cache)
    if warning:
        admin.smart_event(warning)
    return (Status.SUCCESS, 0)


def _set_from_buffer(admin: Admin, cmd: AdminCommand, fid: int) -> Result:
    size = Timestamp.SIZE if fid == FeatureId.TIMESTAMP else HostBehavior.SIZE
    status, data = admin.engine.read_prp(cmd.prp1, cmd.prp2, size)
    if status != Status.SUCCESS:
        return (status, 0)
    if fid == FeatureId.TIMESTAMP:
        timestamp = Timestamp.from_host(data)
        with admin.lock:
            admin.features.timestamp = timestamp
    else:
        behavior = HostBehavior.from_host(data)
        with admin.lock:
            admin.features.host_behavior = behavior
    return (Status.SUCCESS, 0)


def _set_number_of_queues(admin: Admin, dw11: int) -> Result:
    # Called with admin.lock held.
    if admin.queues_created:
        # 5.27.1.5: only before any I/O queue is created (since reset).
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
