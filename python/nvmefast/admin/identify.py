"""Identify (06h).

CNS values (NVMe Base 2.0 5.17.2): 00h Identify Namespace, 01h Identify
Controller, 02h Active Namespace ID list, 03h Namespace Identification
Descriptor list, 05h I/O Command Set specific Identify Namespace, 06h I/O
Command Set specific Identify Controller, 07h Active Namespace ID list of a
command set, 08h I/O Command Set Independent Identify Namespace, 1Ch
Identify I/O Command Set data structure. The command set specific CNS values
take the CSI in CDW11 bits 31:24: the NVM Command Set (00h) and the Zoned
Namespace Command Set (02h, :mod:`nvmefast.zns`). NSIDs 1..NN are valid
(no namespace management); which of them are active depends on the command
sets the host selected (:mod:`nvmefast.admin.command_sets`): an inactive
one gets zero-filled namespace structures, as the spec and QEMU give.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import active_nsids, is_active, namespace_csi
from nvmefast.iocs import (
    build_identify_ctrl_nvm,
    build_identify_ns_independent,
    build_identify_ns_nvm,
    build_iocs_combinations,
)
from nvmefast.lba_format import NamespaceFormat
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

__all__ = ["Cns", "NSID_ALL", "identify", "namespace_index"]

NSID_ALL = 0xFFFFFFFF
"""The broadcast NSID."""


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
    IO_COMMAND_SETS = 0x1C
    """Identify I/O Command Set data structure (command set combinations)."""


def namespace_index(admin: Admin, nsid: int) -> int:
    """The 0-based index of valid namespace ``nsid``; Invalid Namespace otherwise."""
    if not 1 <= nsid <= len(admin.config.namespaces):
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return nsid - 1


INACTIVE = bytes(IDENTIFY_SIZE)
"""What a namespace structure of an inactive NSID holds: zeroes."""


def _csi(cmd: AdminCommand) -> int:
    csi = cmd.cdw11 >> 24
    if csi not in (CSI_NVM, CSI_ZNS):
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 3))
    return csi


def _active_list(admin: Admin, cmd: AdminCommand, csi: int | None = None) -> bytes:
    if cmd.nsid >= 0xFFFFFFFE:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return build_active_ns_list(active_nsids(admin, csi), cmd.nsid)


def _csi_namespace(admin: Admin, cmd: AdminCommand) -> bytes:
    """CNS 05h: the NVM structure of any namespace, the ZNS one of a zoned namespace."""
    ns = admin.config.namespaces[namespace_index(admin, cmd.nsid)]
    csi = _csi(cmd)
    if csi == CSI_NVM:
        return build_identify_ns_nvm(ns.guard) if is_active(admin, cmd.nsid) else INACTIVE
    if ns.zones is None:
        # A conventional namespace has no Zoned Namespace structure (QEMU: Invalid Field).
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 3))
    if not is_active(admin, cmd.nsid):
        return INACTIVE
    zones = ns.zones
    return build_identify_ns_zns(
        zone_bytes=zones.size_bytes,
        lba_sizes=LBA_FORMATS,
        max_open=zones.max_open,
        max_active=zones.max_active,
        cross_read=zones.cross_read,
        descriptor_extension_bytes=zones.descriptor_extension_bytes,
    )


def _csi_controller(admin: Admin, cmd: AdminCommand) -> bytes:
    """CNS 06h: the NVM Command Set's limits, or the Zone Append Size Limit."""
    if _csi(cmd) == CSI_NVM:
        return build_identify_ctrl_nvm()
    limits = [ns.zones.append_size_limit for ns in admin.config.namespaces if ns.zones is not None]
    return build_identify_ctrl_zns(zasl_of(limits, admin.config.mdts_bytes))


def identify(admin: Admin, cmd: AdminCommand) -> Result:
    """06h Identify: build the structure CNS names and transfer it."""
    config = admin.config
    match cmd.cdw10 & 0xFF:
        case Cns.NAMESPACE:
            if cmd.nsid == NSID_ALL:
                data = build_identify_namespace(None, None, LBA_FORMATS[0])
            else:
                ns = config.namespaces[namespace_index(admin, cmd.nsid)]
                if not is_active(admin, cmd.nsid):
                    data = INACTIVE
                else:
                    ids = namespace_ids(config.serial, cmd.nsid)
                    # The core owns the current format: Format NVM changes it.
                    fmt = NamespaceFormat.of_engine(admin.engine.namespace_format(cmd.nsid))
                    data = build_identify_namespace(ns, ids, fmt, shared=config.multi_controller)
        case Cns.CONTROLLER:
            data = build_identify_controller(config)
        case Cns.ACTIVE_NAMESPACE_IDS:
            data = _active_list(admin, cmd)
        case Cns.NAMESPACE_ID_DESCRIPTORS:
            ns = config.namespaces[namespace_index(admin, cmd.nsid)]
            if not is_active(admin, cmd.nsid):
                raise Reject(Status.INVALID_FIELD, param_location(NSID))  # QEMU: no descriptors to give
            data = build_ns_id_descriptors(namespace_ids(config.serial, cmd.nsid), namespace_csi(ns))
        case Cns.CSI_NAMESPACE:
            data = _csi_namespace(admin, cmd)
        case Cns.CSI_CONTROLLER:
            data = _csi_controller(admin, cmd)
        case Cns.CSI_ACTIVE_NAMESPACE_IDS:
            data = _active_list(admin, cmd, _csi(cmd))
        case Cns.INDEPENDENT_NAMESPACE:
            ns = config.namespaces[namespace_index(admin, cmd.nsid)]
            if not is_active(admin, cmd.nsid):
                data = INACTIVE
            else:
                data = build_identify_ns_independent(shared=config.multi_controller, write_protected=ns.readonly)
        case Cns.IO_COMMAND_SETS:
            data = build_iocs_combinations()
        case _:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return (admin.engine.write_prp(cmd.prp1, cmd.prp2, data), 0)
