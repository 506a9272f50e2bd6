"""Identify (06h).

CNS values (NVMe Base 2.0 5.17.2): 00h Identify Namespace, 01h Identify
Controller, 02h Active Namespace ID list, 03h Namespace Identification
Descriptor list, 05h I/O Command Set specific Identify Namespace, 06h I/O
Command Set specific Identify Controller, 07h Active Namespace ID list of a
command set, 08h I/O Command Set Independent Identify Namespace; for
namespace management 10h Allocated Namespace ID list, 11h Identify
Namespace of an allocated NSID, 12h the controllers a namespace is attached
to, 13h the controllers of the NVM subsystem, 1Ah/1Bh/1Fh the command set
specific and independent forms of 10h/11h; 1Ch Identify I/O Command Set data
structure. The command set specific CNS values take the CSI in CDW11 bits
31:24: the NVM Command Set (00h) and the Zoned Namespace Command Set (02h,
:mod:`nvmefast.zns`).

NSIDs 1..NN are valid (:mod:`nvmefast.namespaces`); one is active while a
namespace is allocated there, attached, and of a command set the host
selected (:mod:`nvmefast.admin.command_sets`): an NSID that is not gets
zero-filled namespace structures, as the spec and QEMU give. NSID FFFFFFFFh
with CNS 00h gives what every namespace has in common (the LBA formats):
nvme-cli's ``create-ns -b`` reads it to pick a format. The allocated forms
(11h, 1Bh, 1Fh) describe a namespace whether attached or not, a zoned one
included (its Identify Namespace is the NVM Command Set's, ZNS 1.1 4.1.5.1).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import active_nsids, allocated_nsids, is_active, namespace_csi
from nvmefast.iocs import (
    build_identify_ctrl_nvm,
    build_identify_ns_independent,
    build_identify_ns_nvm,
    build_iocs_combinations,
)
from nvmefast.lba_format import NamespaceFormat
from nvmefast.namespaces import CNTLID, NN, NSID_ALL, NamespaceEntry
from nvmefast.status import Status
from nvmefast.structs import (
    CSI_NVM,
    IDENTIFY_SIZE,
    LBA_FORMATS,
    build_active_ns_list,
    build_identify_controller,
    build_identify_namespace,
    build_ns_id_descriptors,
    namespace_ids,
)
from nvmefast.zns import CSI_ZNS, build_identify_ctrl_zns, build_identify_ns_zns, zasl_of

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["Cns", "NSID_ALL", "build_controller_list", "identify", "namespace_index"]


class Cns(enum.IntEnum):
    """Controller or Namespace Structure (CDW10 bits 7:0)."""

    NAMESPACE = 0x00
    """Identify Namespace for NSID."""
    CONTROLLER = 0x01
    """Identify Controller."""
    ACTIVE_NAMESPACE_IDS = 0x02
    """Active NSIDs greater than NSID."""
    NAMESPACE_ID_DESCRIPTORS = 0x03
    """Namespace Identification Descriptor list for NSID."""
    CSI_NAMESPACE = 0x05
    """I/O Command Set specific Identify Namespace for NSID and CSI."""
    CSI_CONTROLLER = 0x06
    """I/O Command Set specific Identify Controller for CSI."""
    CSI_ACTIVE_NAMESPACE_IDS = 0x07
    """Active NSIDs greater than NSID that use command set CSI."""
    INDEPENDENT_NAMESPACE = 0x08
    """I/O Command Set Independent Identify Namespace for NSID."""
    ALLOCATED_NAMESPACE_IDS = 0x10
    """Allocated NSIDs greater than NSID."""
    ALLOCATED_NAMESPACE = 0x11
    """Identify Namespace for an allocated NSID."""
    ATTACHED_CONTROLLERS = 0x12
    """Controller List of the controllers NSID is attached to, from CNTID up."""
    SUBSYSTEM_CONTROLLERS = 0x13
    """Controller List of the NVM subsystem's controllers, from CNTID up."""
    CSI_ALLOCATED_NAMESPACE_IDS = 0x1A
    """Allocated NSIDs greater than NSID that use command set CSI."""
    CSI_ALLOCATED_NAMESPACE = 0x1B
    """I/O Command Set specific Identify Namespace for an allocated NSID."""
    IO_COMMAND_SETS = 0x1C
    """Identify I/O Command Set data structure (command set combinations)."""
    INDEPENDENT_ALLOCATED_NAMESPACE = 0x1F
    """I/O Command Set Independent Identify Namespace for an allocated NSID."""


CONTROLLER_LIST_MAX = 2047
"""Identifiers a Controller List holds after its count."""


def build_controller_list(cntlids: Sequence[int]) -> bytes:
    """A Controller List (NVMe Base 2.0 Figure 134): the count, then the IDs ascending."""
    chosen = sorted(cntlids)[:CONTROLLER_LIST_MAX]
    buf = bytearray(IDENTIFY_SIZE)
    struct.pack_into(f"<H{len(chosen)}H", buf, 0, len(chosen), *chosen)
    return bytes(buf)


def namespace_index(admin: Admin, nsid: int) -> int:
    """The 0-based index of valid NSID ``nsid`` (1..NN, allocated or not); Invalid Namespace otherwise."""
    if not 1 <= nsid <= NN:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return nsid - 1


INACTIVE = bytes(IDENTIFY_SIZE)
"""What a namespace structure of an inactive NSID holds: zeroes."""


def _csi(cmd: AdminCommand) -> int:
    csi = cmd.cdw11 >> 24
    if csi not in (CSI_NVM, CSI_ZNS):
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 3))
    return csi


def _nsid_list(cmd: AdminCommand, nsids: Sequence[int]) -> bytes:
    if cmd.nsid >= 0xFFFFFFFE:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return build_active_ns_list(nsids, cmd.nsid)


def _entry(admin: Admin, cmd: AdminCommand) -> NamespaceEntry | None:
    """The namespace allocated at a valid NSID (None: none is)."""
    namespace_index(admin, cmd.nsid)
    return admin.namespaces.table.get(cmd.nsid)


def _namespace(admin: Admin, entry: NamespaceEntry) -> bytes:
    """Identify Namespace (CNS 00h/11h) of an allocated namespace, in the format the core holds."""
    ids = namespace_ids(admin.config.serial, entry.nsid, entry.generation)
    # The core owns the current format: Format NVM changes it.
    fmt = NamespaceFormat.of_engine(admin.engine.namespace_format(entry.nsid))
    return build_identify_namespace(entry.config, ids, fmt, shared=entry.shared)


def _csi_namespace(admin: Admin, cmd: AdminCommand, *, allocated: bool) -> bytes:
    """CNS 05h (active) / 1Bh (allocated): the NVM structure of any namespace, the ZNS one of a zoned one."""
    entry = _entry(admin, cmd)
    csi = _csi(cmd)
    described = entry is not None and (allocated or is_active(admin, cmd.nsid))
    if csi == CSI_NVM:
        return build_identify_ns_nvm(entry.config.guard) if described and entry is not None else INACTIVE
    if entry is None:
        return INACTIVE
    if entry.config.zones is None:
        # A conventional namespace has no Zoned Namespace structure (QEMU: Invalid Field).
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 3))
    if not described:
        return INACTIVE
    zones = entry.config.zones
    return build_identify_ns_zns(
        zone_bytes=zones.size_bytes,
        lba_sizes=LBA_FORMATS,
        max_open=zones.max_open,
        max_active=zones.max_active,
        cross_read=zones.cross_read,
        descriptor_extension_bytes=zones.descriptor_extension_bytes,
    )


def _independent(admin: Admin, cmd: AdminCommand, *, allocated: bool) -> bytes:
    """CNS 08h (active) / 1Fh (allocated)."""
    entry = _entry(admin, cmd)
    if entry is None or not (allocated or is_active(admin, cmd.nsid)):
        return INACTIVE
    return build_identify_ns_independent(shared=entry.shared, write_protected=entry.config.readonly)


def _csi_controller(admin: Admin, cmd: AdminCommand) -> bytes:
    """CNS 06h: the NVM Command Set's limits, or the Zone Append Size Limit."""
    if _csi(cmd) == CSI_NVM:
        return build_identify_ctrl_nvm()
    limits = [e.config.zones.append_size_limit for e in admin.namespaces.table.entries() if e.config.zones is not None]
    return build_identify_ctrl_zns(zasl_of(limits, admin.config.mdts_bytes))


def _attached_controllers(admin: Admin, cmd: AdminCommand) -> bytes:
    """CNS 12h: this controller, if the namespace is attached to it and CNTID allows."""
    entry = admin.namespaces.table.get(cmd.nsid) if 1 <= cmd.nsid <= NN else None
    if entry is None:
        # QEMU likewise: FFFFFFFFh, an invalid or an unallocated NSID names no namespace to list for.
        raise Reject(Status.INVALID_FIELD, param_location(NSID))
    return build_controller_list([CNTLID] if entry.attached and cmd.cdw10 >> 16 <= CNTLID else [])


def identify(admin: Admin, cmd: AdminCommand) -> Result:
    """06h Identify: build the structure CNS names and transfer it."""
    table = admin.namespaces.table
    match cmd.cdw10 & 0xFF:
        case Cns.NAMESPACE:
            if cmd.nsid == NSID_ALL:
                data = build_identify_namespace(None, None, LBA_FORMATS[0])
            else:
                entry = _entry(admin, cmd)
                data = _namespace(admin, entry) if entry is not None and is_active(admin, cmd.nsid) else INACTIVE
        case Cns.CONTROLLER:
            data = build_identify_controller(admin.config, table.total_bytes, table.unallocated_bytes)
        case Cns.ACTIVE_NAMESPACE_IDS:
            data = _nsid_list(cmd, active_nsids(admin))
        case Cns.NAMESPACE_ID_DESCRIPTORS:
            entry = _entry(admin, cmd)
            if entry is None or not is_active(admin, cmd.nsid):
                raise Reject(Status.INVALID_FIELD, param_location(NSID))  # QEMU: no descriptors to give
            ids = namespace_ids(admin.config.serial, cmd.nsid, entry.generation)
            data = build_ns_id_descriptors(ids, namespace_csi(entry.config))
        case Cns.CSI_NAMESPACE:
            data = _csi_namespace(admin, cmd, allocated=False)
        case Cns.CSI_CONTROLLER:
            data = _csi_controller(admin, cmd)
        case Cns.CSI_ACTIVE_NAMESPACE_IDS:
            data = _nsid_list(cmd, active_nsids(admin, _csi(cmd)))
        case Cns.INDEPENDENT_NAMESPACE:
            data = _independent(admin, cmd, allocated=False)
        case Cns.ALLOCATED_NAMESPACE_IDS:
            data = _nsid_list(cmd, allocated_nsids(admin))
        case Cns.ALLOCATED_NAMESPACE:
            entry = _entry(admin, cmd)
            data = _namespace(admin, entry) if entry is not None else INACTIVE
        case Cns.ATTACHED_CONTROLLERS:
            data = _attached_controllers(admin, cmd)
        case Cns.SUBSYSTEM_CONTROLLERS:
            data = build_controller_list([CNTLID] if cmd.cdw10 >> 16 <= CNTLID else [])
        case Cns.CSI_ALLOCATED_NAMESPACE_IDS:
            data = _nsid_list(cmd, allocated_nsids(admin, _csi(cmd)))
        case Cns.CSI_ALLOCATED_NAMESPACE:
            data = _csi_namespace(admin, cmd, allocated=True)
        case Cns.INDEPENDENT_ALLOCATED_NAMESPACE:
            data = _independent(admin, cmd, allocated=True)
        case Cns.IO_COMMAND_SETS:
            data = build_iocs_combinations()
        case _:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return (admin.engine.write_prp(cmd.prp1, cmd.prp2, data), 0)
