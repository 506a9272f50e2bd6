"""Identify (06h).

CNS values (NVMe Base 2.0 5.17.2): 00h Identify Namespace, 01h Identify
Controller, 02h Active Namespace ID list, 03h Namespace Identification
Descriptor list, 05h I/O Command Set specific Identify Namespace, 06h I/O
Command Set specific Identify Controller, 07h Active Namespace ID list of a
command set, 08h I/O Command Set Independent Identify Namespace, 1Ch
Identify I/O Command Set data structure. The command set specific CNS values
take the CSI in CDW11 bits 31:24; only the NVM Command Set (00h) exists.
Every namespace 1..NN is active (no namespace management), so an NSID
outside that range is invalid rather than inactive.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, NSID, AdminCommand, Reject, Result, param_location
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
    LBA_FORMATS,
    build_active_ns_list,
    build_identify_controller,
    build_identify_namespace,
    build_ns_id_descriptors,
    namespace_ids,
)

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
    """The 0-based index of active namespace ``nsid``; Invalid Namespace otherwise."""
    if not 1 <= nsid <= len(admin.config.namespaces):
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return nsid - 1


def _check_csi(cmd: AdminCommand) -> None:
    if cmd.cdw11 >> 24 != CSI_NVM:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11 + 3))


def _active_list(admin: Admin, cmd: AdminCommand) -> bytes:
    if cmd.nsid >= 0xFFFFFFFE:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return build_active_ns_list(range(1, len(admin.config.namespaces) + 1), cmd.nsid)


def identify(admin: Admin, cmd: AdminCommand) -> Result:
    """06h Identify: build the structure CNS names and transfer it."""
    config = admin.config
    match cmd.cdw10 & 0xFF:
        case Cns.NAMESPACE:
            if cmd.nsid == NSID_ALL:
                data = build_identify_namespace(None, None, LBA_FORMATS[0])
            else:
                ns = config.namespaces[namespace_index(admin, cmd.nsid)]
                ids = namespace_ids(config.serial, cmd.nsid)
                # The core owns the current format: Format NVM changes it.
                fmt = NamespaceFormat.of_engine(admin.engine.namespace_format(cmd.nsid))
                data = build_identify_namespace(ns, ids, fmt, shared=config.multi_controller)
        case Cns.CONTROLLER:
            data = build_identify_controller(config)
        case Cns.ACTIVE_NAMESPACE_IDS:
            data = _active_list(admin, cmd)
        case Cns.NAMESPACE_ID_DESCRIPTORS:
            namespace_index(admin, cmd.nsid)
            data = build_ns_id_descriptors(namespace_ids(config.serial, cmd.nsid))
        case Cns.CSI_NAMESPACE:
            ns = config.namespaces[namespace_index(admin, cmd.nsid)]
            _check_csi(cmd)
            data = build_identify_ns_nvm(ns.guard)
        case Cns.CSI_CONTROLLER:
            _check_csi(cmd)
            data = build_identify_ctrl_nvm()
        case Cns.CSI_ACTIVE_NAMESPACE_IDS:
            _check_csi(cmd)
            data = _active_list(admin, cmd)
        case Cns.INDEPENDENT_NAMESPACE:
            ns = config.namespaces[namespace_index(admin, cmd.nsid)]
            data = build_identify_ns_independent(shared=config.multi_controller, write_protected=ns.readonly)
        case Cns.IO_COMMAND_SETS:
            data = build_iocs_combinations()
        case _:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return (admin.engine.write_prp(cmd.prp1, cmd.prp2, data), 0)
