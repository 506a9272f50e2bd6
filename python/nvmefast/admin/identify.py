"""Identify (06h).

CNS values (NVMe 1.4 5.15.1): 00h Identify Namespace, 01h Identify
Controller, 02h Active Namespace ID list, 03h Namespace Identification
Descriptor list. Every namespace 1..NN is active (no namespace management),
so an NSID outside that range is invalid rather than inactive.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.status import Status
from nvmefast.structs import (
    build_active_ns_list,
    build_identify_controller,
    build_identify_namespace,
    build_ns_id_descriptors,
    namespace_ids,
)

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["Cns", "identify"]

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


def _namespace_index(admin: Admin, nsid: int) -> int:
    if not 1 <= nsid <= len(admin.config.namespaces):
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    return nsid - 1


def identify(admin: Admin, cmd: AdminCommand) -> Result:
    """06h Identify: build the structure CNS names and transfer it."""
    config = admin.config
    match cmd.cdw10 & 0xFF:
        case Cns.NAMESPACE:
            if cmd.nsid == NSID_ALL:
                data = build_identify_namespace(None, None, config.namespaces[0].lba_size)
            else:
                ns = config.namespaces[_namespace_index(admin, cmd.nsid)]
                ids = namespace_ids(config.serial, cmd.nsid)
                data = build_identify_namespace(ns, ids, ns.lba_size)
        case Cns.CONTROLLER:
            data = build_identify_controller(config)
        case Cns.ACTIVE_NAMESPACE_IDS:
            if cmd.nsid >= 0xFFFFFFFE:
                raise Reject(Status.INVALID_NSID, param_location(NSID))
            data = build_active_ns_list(range(1, len(config.namespaces) + 1), cmd.nsid)
        case Cns.NAMESPACE_ID_DESCRIPTORS:
            _namespace_index(admin, cmd.nsid)
            data = build_ns_id_descriptors(namespace_ids(config.serial, cmd.nsid))
        case _:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    return (admin.engine.write_prp(cmd.prp1, cmd.prp2, data), 0)
