"""Namespace Attachment (15h): attach a namespace to controllers, or detach it.

The command (NVMe Base 2.0 5.19): NSID the namespace, CDW10 bits 3:0 SEL
(0h Controller Attach, 1h Controller Detach) and a 4096-byte Controller
List (bytes 1:0 the number of identifiers, then 2-byte CNTLIDs). This NVM
subsystem has one controller, :data:`~nvmefast.namespaces.CNTLID`.

Checked in this order: SEL other than 0h/1h, Invalid Field in Command; NSID
0 or above NN, Invalid Namespace or Format; FFFFFFFFh (no single namespace)
or a valid NSID with no namespace, Invalid Field (as QEMU); then the list:
no identifiers, more than 2047, one that names no controller of the
subsystem, or one named twice, Controller List Invalid; then attach: already
attached, Namespace Already Attached; a zoned namespace while the host
selected the NVM Command Set only (CC.CSS), I/O Command Set Not Enabled;
detach: not attached, Namespace Not Attached. (Namespace Is Private needs a
second controller to attach a private namespace to: none exists.)

Attachment outlives controller resets. Each change is reported to the
controller it affects, this one included (8.1.16.1): the Changed Namespace
List names the NSID and a Namespace Attribute Changed notice is raised if
the host enabled it. The effects log marks 15h with NIC, so Linux rescans
after ``nvme attach-ns`` / ``detach-ns`` on its own.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import enabled_csis, namespace_csi
from nvmefast.admin.identify import CONTROLLER_LIST_MAX
from nvmefast.namespaces import CNTLID, NN
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["SEL_ATTACH", "SEL_DETACH", "namespace_attachment", "parse_controller_list"]

SEL_ATTACH = 0x0
"""Select: Controller Attach."""
SEL_DETACH = 0x1
"""Select: Controller Detach."""
CONTROLLER_LIST_SIZE = 4096
"""The Controller List data structure."""
_WHERE = param_location(CDW10)


def parse_controller_list(data: bytes) -> list[int]:
    """The identifiers of a 4096-byte Controller List; Controller List Invalid
    when it holds none, more than 2047, or one twice."""
    (count,) = struct.unpack_from("<H", data, 0)
    if not 1 <= count <= CONTROLLER_LIST_MAX:
        raise Reject(Status.CONTROLLER_LIST_INVALID, _WHERE)
    ids = list(struct.unpack_from(f"<{count}H", data, 2))
    if len(set(ids)) != len(ids):
        raise Reject(Status.CONTROLLER_LIST_INVALID, _WHERE)
    return ids


def namespace_attachment(admin: Admin, cmd: AdminCommand) -> Result:
    """15h Namespace Attachment."""
    sel = cmd.cdw10 & 0xF
    if sel not in (SEL_ATTACH, SEL_DETACH):
        raise Reject(Status.INVALID_FIELD, param_location(CDW10))
    if not 1 <= cmd.nsid <= NN and cmd.nsid != 0xFFFFFFFF:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    if admin.namespaces.table.get(cmd.nsid) is None:
        raise Reject(Status.INVALID_FIELD, param_location(NSID))
    status, data = admin.engine.read_prp(cmd.prp1, cmd.prp2, CONTROLLER_LIST_SIZE)
    if status != Status.SUCCESS:
        return (status, 0)
    if any(cntlid != CNTLID for cntlid in parse_controller_list(data)):
        raise Reject(Status.CONTROLLER_LIST_INVALID, _WHERE)
    attach = sel == SEL_ATTACH
    # Checked again and changed under the table's lock: the embedder or the
    # control socket may have changed the namespace while the list was read.
    with admin.namespaces.table.lock:
        entry = admin.namespaces.table.get(cmd.nsid)
        if entry is None:
            raise Reject(Status.INVALID_FIELD, param_location(NSID))
        if attach and entry.attached:
            raise Reject(Status.NAMESPACE_ALREADY_ATTACHED, param_location(NSID))
        if not attach and not entry.attached:
            raise Reject(Status.NAMESPACE_NOT_ATTACHED, param_location(NSID))
        if attach and namespace_csi(entry.config) not in enabled_csis(admin.css):
            raise Reject(Status.IOCS_NOT_ENABLED, param_location(NSID))
        admin.namespaces.set_attached(cmd.nsid, attach)
    return (Status.SUCCESS, 0)
