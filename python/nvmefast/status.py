"""NVMe completion status values.

A status here is the 15-bit Status Field of a completion queue entry
(CQE dword 3 bits 31:17), laid out as ``DNR << 14 | M << 13 | CRD << 11 |
SCT << 8 | SC``: the same integer the core's ``complete_admin`` and the admin
handler's return value carry. Names follow NVMe Base Specification 1.4,
section 4.6.1.2 (Generic Command Status) and 4.6.1.2.2 (Command Specific
Status).
"""

from __future__ import annotations

import enum

__all__ = [
    "DNR",
    "MORE",
    "SCT_COMMAND_SPECIFIC",
    "SCT_GENERIC",
    "SCT_MEDIA",
    "Status",
    "describe",
    "dnr_of",
    "sc_of",
    "sct_of",
    "with_dnr",
]

SCT_GENERIC = 0x0
"""Status Code Type 0h: Generic Command Status."""
SCT_COMMAND_SPECIFIC = 0x1
"""Status Code Type 1h: Command Specific Status."""
SCT_MEDIA = 0x2
"""Status Code Type 2h: Media and Data Integrity Errors."""

DNR = 1 << 14
"""Do Not Retry: the same command would fail again."""
MORE = 1 << 13
"""More: more status information is in the Error Information log page."""


def _code(sct: int, sc: int) -> int:
    return sct << 8 | sc


class Status(enum.IntEnum):
    """Status Code Type and Status Code, without the DNR/M/CRD bits."""

    # Generic Command Status (SCT 0h)
    SUCCESS = _code(SCT_GENERIC, 0x00)
    """Successful Completion."""
    INVALID_OPCODE = _code(SCT_GENERIC, 0x01)
    """Invalid Command Opcode."""
    INVALID_FIELD = _code(SCT_GENERIC, 0x02)
    """Invalid Field in Command."""
    CID_CONFLICT = _code(SCT_GENERIC, 0x03)
    """Command ID Conflict."""
    DATA_TRANSFER_ERROR = _code(SCT_GENERIC, 0x04)
    """Data Transfer Error."""
    INTERNAL = _code(SCT_GENERIC, 0x06)
    """Internal Error."""
    ABORT_REQUESTED = _code(SCT_GENERIC, 0x07)
    """Command Abort Requested."""
    ABORT_SQ_DELETED = _code(SCT_GENERIC, 0x08)
    """Command Aborted due to SQ Deletion."""
    INVALID_NSID = _code(SCT_GENERIC, 0x0B)
    """Invalid Namespace or Format."""
    COMMAND_SEQUENCE_ERROR = _code(SCT_GENERIC, 0x0C)
    """Command Sequence Error."""
    INVALID_PRP_OFFSET = _code(SCT_GENERIC, 0x13)
    """PRP Offset Invalid."""
    SANITIZE_FAILED = _code(SCT_GENERIC, 0x1C)
    """Sanitize Failed: the last sanitize operation failed; the controller is in its failure mode."""
    SANITIZE_IN_PROGRESS = _code(SCT_GENERIC, 0x1D)
    """Sanitize In Progress: the command is prohibited while a sanitize operation runs."""
    NAMESPACE_WRITE_PROTECTED = _code(SCT_GENERIC, 0x20)
    """Namespace is Write Protected."""
    METADATA_SGL_LENGTH_INVALID = _code(SCT_GENERIC, 0x10)
    """Metadata SGL Length Invalid."""
    LBA_RANGE = _code(SCT_GENERIC, 0x80)
    """LBA Out of Range."""
    CAPACITY_EXCEEDED = _code(SCT_GENERIC, 0x81)
    """Capacity Exceeded."""

    # Command Specific Status (SCT 1h)
    INVALID_CQ = _code(SCT_COMMAND_SPECIFIC, 0x00)
    """Completion Queue Invalid."""
    INVALID_QID = _code(SCT_COMMAND_SPECIFIC, 0x01)
    """Invalid Queue Identifier."""
    INVALID_QSIZE = _code(SCT_COMMAND_SPECIFIC, 0x02)
    """Invalid Queue Size."""
    ACL_EXCEEDED = _code(SCT_COMMAND_SPECIFIC, 0x03)
    """Abort Command Limit Exceeded."""
    AERL_EXCEEDED = _code(SCT_COMMAND_SPECIFIC, 0x05)
    """Asynchronous Event Request Limit Exceeded."""
    INVALID_VECTOR = _code(SCT_COMMAND_SPECIFIC, 0x08)
    """Invalid Interrupt Vector."""
    INVALID_LOG_PAGE = _code(SCT_COMMAND_SPECIFIC, 0x09)
    """Invalid Log Page."""
    INVALID_QUEUE_DELETION = _code(SCT_COMMAND_SPECIFIC, 0x0C)
    """Invalid Queue Deletion."""
    FID_NOT_SAVEABLE = _code(SCT_COMMAND_SPECIFIC, 0x0D)
    """Feature Identifier Not Saveable."""
    INVALID_FORMAT = _code(SCT_COMMAND_SPECIFIC, 0x0A)
    """Invalid Format (Format NVM: an LBA format or protection setting not supported)."""
    NAMESPACE_INSUFFICIENT_CAPACITY = _code(SCT_COMMAND_SPECIFIC, 0x15)
    """Namespace Insufficient Capacity (Namespace Management create: not enough unallocated NVM)."""
    NAMESPACE_ID_UNAVAILABLE = _code(SCT_COMMAND_SPECIFIC, 0x16)
    """Namespace Identifier Unavailable (Namespace Management create: every NSID is allocated)."""
    NAMESPACE_ALREADY_ATTACHED = _code(SCT_COMMAND_SPECIFIC, 0x18)
    """Namespace Already Attached (Namespace Attachment)."""
    NAMESPACE_IS_PRIVATE = _code(SCT_COMMAND_SPECIFIC, 0x19)
    """Namespace Is Private (Namespace Attachment: a private namespace attached elsewhere)."""
    NAMESPACE_NOT_ATTACHED = _code(SCT_COMMAND_SPECIFIC, 0x1A)
    """Namespace Not Attached (Namespace Attachment detach)."""
    THIN_PROVISIONING_NOT_SUPPORTED = _code(SCT_COMMAND_SPECIFIC, 0x1B)
    """Thin Provisioning Not Supported (Namespace Management create with NCAP below NSZE)."""
    CONTROLLER_LIST_INVALID = _code(SCT_COMMAND_SPECIFIC, 0x1C)
    """Controller List Invalid (Namespace Attachment)."""
    DEVICE_SELF_TEST_IN_PROGRESS = _code(SCT_COMMAND_SPECIFIC, 0x1D)
    """Device Self-test In Progress."""
    INVALID_PROTECTION_INFO = _code(SCT_COMMAND_SPECIFIC, 0x81)
    """Invalid Protection Information (PRINFO not valid for the format, a type 1 ILBRT that is not the SLBA)."""
    FEATURE_NOT_CHANGEABLE = _code(SCT_COMMAND_SPECIFIC, 0x0E)
    """Feature Not Changeable."""
    FEATURE_NOT_NS_SPECIFIC = _code(SCT_COMMAND_SPECIFIC, 0x0F)
    """Feature Not Namespace Specific."""
    IOCS_NOT_SUPPORTED = _code(SCT_COMMAND_SPECIFIC, 0x29)
    """I/O Command Set Not Supported."""
    IOCS_NOT_ENABLED = _code(SCT_COMMAND_SPECIFIC, 0x2A)
    """I/O Command Set Not Enabled."""
    IOCS_COMBINATION_REJECTED = _code(SCT_COMMAND_SPECIFIC, 0x2B)
    """I/O Command Set Combination Rejected (I/O Command Set Profile feature)."""
    INVALID_IOCS = _code(SCT_COMMAND_SPECIFIC, 0x2C)
    """Invalid I/O Command Set."""
    # Zoned Namespace Command Set 1.1, Figure 11 (SCT 1h)
    ZONE_BOUNDARY_ERROR = _code(SCT_COMMAND_SPECIFIC, 0xB8)
    """Zone Boundary Error: the LBA range crosses a zone's writable capacity (or zones)."""
    ZONE_IS_FULL = _code(SCT_COMMAND_SPECIFIC, 0xB9)
    """Zone Is Full."""
    ZONE_IS_READ_ONLY = _code(SCT_COMMAND_SPECIFIC, 0xBA)
    """Zone Is Read Only."""
    ZONE_IS_OFFLINE = _code(SCT_COMMAND_SPECIFIC, 0xBB)
    """Zone Is Offline."""
    ZONE_INVALID_WRITE = _code(SCT_COMMAND_SPECIFIC, 0xBC)
    """Zone Invalid Write: not at the write pointer."""
    TOO_MANY_ACTIVE_ZONES = _code(SCT_COMMAND_SPECIFIC, 0xBD)
    """Too Many Active Zones."""
    TOO_MANY_OPEN_ZONES = _code(SCT_COMMAND_SPECIFIC, 0xBE)
    """Too Many Open Zones."""
    INVALID_ZONE_STATE_TRANSITION = _code(SCT_COMMAND_SPECIFIC, 0xBF)
    """Invalid Zone State Transition."""

    # Media and Data Integrity Errors (SCT 2h)
    WRITE_FAULT = _code(SCT_MEDIA, 0x80)
    """Write Fault: the backing file failed a write (EIO)."""
    UNRECOVERED_READ_ERROR = _code(SCT_MEDIA, 0x81)
    """Unrecovered Read Error: the backing file failed a read (EIO)."""
    END_TO_END_GUARD_CHECK_ERROR = _code(SCT_MEDIA, 0x82)
    """End-to-end Guard Check Error: a PI guard does not match the data's CRC."""
    END_TO_END_APP_TAG_CHECK_ERROR = _code(SCT_MEDIA, 0x83)
    """End-to-end Application Tag Check Error."""
    END_TO_END_REF_TAG_CHECK_ERROR = _code(SCT_MEDIA, 0x84)
    """End-to-end Reference Tag Check Error."""


_NAMES: dict[int, str] = {
    Status.SUCCESS: "Successful Completion",
    Status.INVALID_OPCODE: "Invalid Command Opcode",
    Status.INVALID_FIELD: "Invalid Field in Command",
    Status.CID_CONFLICT: "Command ID Conflict",
    Status.DATA_TRANSFER_ERROR: "Data Transfer Error",
    Status.INTERNAL: "Internal Error",
    Status.ABORT_REQUESTED: "Command Abort Requested",
    Status.ABORT_SQ_DELETED: "Command Aborted due to SQ Deletion",
    Status.INVALID_NSID: "Invalid Namespace or Format",
    Status.COMMAND_SEQUENCE_ERROR: "Command Sequence Error",
    Status.INVALID_PRP_OFFSET: "PRP Offset Invalid",
    Status.SANITIZE_FAILED: "Sanitize Failed",
    Status.SANITIZE_IN_PROGRESS: "Sanitize In Progress",
    Status.NAMESPACE_WRITE_PROTECTED: "Namespace is Write Protected",
    Status.METADATA_SGL_LENGTH_INVALID: "Metadata SGL Length Invalid",
    Status.LBA_RANGE: "LBA Out of Range",
    Status.CAPACITY_EXCEEDED: "Capacity Exceeded",
    Status.INVALID_CQ: "Completion Queue Invalid",
    Status.INVALID_QID: "Invalid Queue Identifier",
    Status.INVALID_QSIZE: "Invalid Queue Size",
    Status.ACL_EXCEEDED: "Abort Command Limit Exceeded",
    Status.AERL_EXCEEDED: "Asynchronous Event Request Limit Exceeded",
    Status.INVALID_VECTOR: "Invalid Interrupt Vector",
    Status.INVALID_LOG_PAGE: "Invalid Log Page",
    Status.INVALID_QUEUE_DELETION: "Invalid Queue Deletion",
    Status.FID_NOT_SAVEABLE: "Feature Identifier Not Saveable",
    Status.INVALID_FORMAT: "Invalid Format",
    Status.NAMESPACE_INSUFFICIENT_CAPACITY: "Namespace Insufficient Capacity",
    Status.NAMESPACE_ID_UNAVAILABLE: "Namespace Identifier Unavailable",
    Status.NAMESPACE_ALREADY_ATTACHED: "Namespace Already Attached",
    Status.NAMESPACE_IS_PRIVATE: "Namespace Is Private",
    Status.NAMESPACE_NOT_ATTACHED: "Namespace Not Attached",
    Status.THIN_PROVISIONING_NOT_SUPPORTED: "Thin Provisioning Not Supported",
    Status.CONTROLLER_LIST_INVALID: "Controller List Invalid",
    Status.DEVICE_SELF_TEST_IN_PROGRESS: "Device Self-test In Progress",
    Status.INVALID_PROTECTION_INFO: "Invalid Protection Information",
    Status.FEATURE_NOT_CHANGEABLE: "Feature Not Changeable",
    Status.FEATURE_NOT_NS_SPECIFIC: "Feature Not Namespace Specific",
    Status.IOCS_NOT_SUPPORTED: "I/O Command Set Not Supported",
    Status.IOCS_NOT_ENABLED: "I/O Command Set Not Enabled",
    Status.IOCS_COMBINATION_REJECTED: "I/O Command Set Combination Rejected",
    Status.INVALID_IOCS: "Invalid I/O Command Set",
    Status.ZONE_BOUNDARY_ERROR: "Zone Boundary Error",
    Status.ZONE_IS_FULL: "Zone Is Full",
    Status.ZONE_IS_READ_ONLY: "Zone Is Read Only",
    Status.ZONE_IS_OFFLINE: "Zone Is Offline",
    Status.ZONE_INVALID_WRITE: "Zone Invalid Write",
    Status.TOO_MANY_ACTIVE_ZONES: "Too Many Active Zones",
    Status.TOO_MANY_OPEN_ZONES: "Too Many Open Zones",
    Status.INVALID_ZONE_STATE_TRANSITION: "Invalid Zone State Transition",
    Status.WRITE_FAULT: "Write Fault",
    Status.UNRECOVERED_READ_ERROR: "Unrecovered Read Error",
    Status.END_TO_END_GUARD_CHECK_ERROR: "End-to-end Guard Check Error",
    Status.END_TO_END_APP_TAG_CHECK_ERROR: "End-to-end Application Tag Check Error",
    Status.END_TO_END_REF_TAG_CHECK_ERROR: "End-to-end Reference Tag Check Error",
}


def with_dnr(status: int) -> int:
    """``status`` with the Do Not Retry bit set."""
    return status | DNR


def sct_of(status: int) -> int:
    """The Status Code Type (bits 10:8) of a 15-bit status field."""
    return (status >> 8) & 0x7


def sc_of(status: int) -> int:
    """The Status Code (bits 7:0) of a 15-bit status field."""
    return status & 0xFF


def dnr_of(status: int) -> bool:
    """Whether the Do Not Retry bit of a 15-bit status field is set."""
    return bool(status & DNR)


def describe(status: int) -> str:
    """A readable name for a 15-bit status field, e.g. ``"Invalid Queue
    Identifier (SCT 1h, SC 01h, DNR)"``."""
    code = status & 0x7FF
    name = _NAMES.get(code, "Unknown Status")
    flags = [f"SCT {sct_of(status):X}h", f"SC {sc_of(status):02X}h"]
    if status & DNR:
        flags.append("DNR")
    if status & MORE:
        flags.append("M")
    crd = (status >> 11) & 0x3
    if crd:
        flags.append(f"CRD {crd}")
    return f"{name} ({', '.join(flags)})"
