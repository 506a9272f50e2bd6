"""Namespace Management (0Dh): create and delete namespaces.

The command (NVMe Base 2.0 5.20): CDW10 bits 3:0 SEL (0h Create, 1h Delete),
CDW11 bits 31:24 the CSI of the namespace to create, and for Create a
4096-byte data structure, the Host Software Specified Fields (Figure 385 of
the base spec; their offsets are those of Identify Namespace):

======  =========  ====================================================
bytes   field      here
======  =========  ====================================================
7:0     NSZE       size in logical blocks of the chosen format (> 0)
15:8    NCAP       equal to NSZE: no thin provisioning (below: 1/1Bh)
26      FLBAS      the LBA format (bits 3:0, 6:5 with LBAFEE), bit 4 extended
29      DPS        PI type bits 2:0, bit 3 PI first
30      NMIC       bit 0 shared
95:92   ANAGRPID   0 (no ANA reporting)
101:100 NVMSETID   0 (no NVM Sets)
103:102 ENDGID     0 (no Endurance Groups)
391:384 LBSTM      0 (no storage tags)
393:392 NPHNDLS    0 (no Flexible Data Placement)
499     ZNSCO      0 (zoned: no ZRWA)
511:500 RAR, ROR,  0 (zoned: the controller's resources)
        RNUMZRWA
======  =========  ====================================================

Checked in this order, each failing with the status the spec names:
SEL other than 0h/1h, Invalid Field in Command; a CSI other than NVM (00h)
or Zoned Namespace (02h), I/O Command Set Not Supported; then the structure:
a format index past NLBAF, Invalid Format; a PI type 4..7 or NMIC bits 7:1,
Invalid Field; PI in a format without room for it (8 bytes of metadata),
Invalid Format; NSZE 0 or NCAP above NSZE, Invalid Field; NCAP below NSZE,
Thin Provisioning Not Supported; ANAGRPID, NVMSETID, ENDGID, LBSTM, NPHNDLS
or the zoned fields not 0, Invalid Field; a zoned namespace with metadata,
Invalid Format, or whose size is no multiple of the zone size (the
controller's :data:`CREATED_ZONES`), Invalid Field; more than the
unallocated capacity, Namespace Insufficient Capacity; no free NSID,
Namespace Identifier Unavailable. Create returns the new NSID in dword 0;
the namespace is not attached (Namespace Attachment does that). It is RAM,
allocated as written, or an image in the namespace directory
(:mod:`nvmefast.ns_store`); its PI, if any, has the 16-bit guard.

Delete takes one NSID, or FFFFFFFFh for every allocated namespace (success
with none): NSID 0 or above NN, Invalid Namespace or Format; a valid NSID
with no namespace, Invalid Field. An attached namespace is detached first;
this controller raises no notice about it (it processed the delete), but the
effects log marks 0Dh with NIC, so Linux rescans after ``nvme delete-ns``.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.config import MIB, NamespaceConfig, ZoneConfig
from nvmefast.errors import CapacityError, ConfigError, NamespaceError
from nvmefast.lba_format import LBA_FORMATS, PI_SIZE, PIF_16B
from nvmefast.namespaces import NN, NSID_ALL
from nvmefast.status import Status
from nvmefast.structs import CSI_NVM
from nvmefast.zns import CSI_ZNS

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "CREATED_ZONES",
    "HOST_FIELDS_SIZE",
    "SEL_CREATE",
    "SEL_DELETE",
    "HostFields",
    "namespace_management",
    "requested_namespace",
]

SEL_CREATE = 0x0
"""Select: Create."""
SEL_DELETE = 0x1
"""Select: Delete."""
HOST_FIELDS_SIZE = 4096
"""The Create data structure."""
CREATED_ZONES = ZoneConfig(size_bytes=16 * MIB)
"""The zones of a zoned namespace the host creates: 16 MiB, all writable, no
open or active limit, Zone Append up to MDTS (the structure has no place for
a zone size)."""


@dataclasses.dataclass(frozen=True)
class HostFields:
    """The Host Software Specified Fields of a Create, as sent."""

    nsze: int
    ncap: int
    flbas: int
    dps: int
    nmic: int
    anagrpid: int
    nvmsetid: int
    endgid: int
    lbstm: int
    nphndls: int
    zoned_fields: bytes
    """Bytes 511:499: ZNSCO, RAR, ROR, RNUMZRWA for a zoned namespace."""

    @classmethod
    def parse(cls, data: bytes) -> HostFields:
        """Read the fields of a 4096-byte Create structure (no checks)."""
        nsze, ncap = struct.unpack_from("<QQ", data, 0)
        (anagrpid,) = struct.unpack_from("<I", data, 92)
        nvmsetid, endgid = struct.unpack_from("<HH", data, 100)
        lbstm, nphndls = struct.unpack_from("<QH", data, 384)
        return cls(nsze, ncap, data[26], data[29], data[30], anagrpid, nvmsetid, endgid, lbstm, nphndls,
                   bytes(data[499:512]))  # fmt: skip


# Parameter Error Location of each field: its byte in the data structure
# cannot be named (the location names SQE bytes), so the command's CDW10.
_WHERE = param_location(CDW10)


def requested_namespace(fields: HostFields, csi: int, lbafee: bool) -> tuple[NamespaceConfig, bool]:
    """The namespace a Create asks for and whether it is shared (NMIC bit 0);
    raises :class:`Reject` with the status of the first check that fails."""
    index = fields.flbas & 0xF
    if lbafee:
        index |= ((fields.flbas >> 5) & 0x3) << 4
    if index >= len(LBA_FORMATS):
        raise Reject(Status.INVALID_FORMAT, _WHERE)
    fmt = LBA_FORMATS[index]
    pi_type, pi_first = fields.dps & 0x7, bool(fields.dps & 0x8)
    if pi_type > 3 or fields.nmic & 0xFE:
        raise Reject(Status.INVALID_FIELD, _WHERE)
    if pi_type and fmt.metadata_size < PI_SIZE[PIF_16B]:
        raise Reject(Status.INVALID_FORMAT, _WHERE)
    if fields.nsze == 0 or fields.ncap > fields.nsze:
        raise Reject(Status.INVALID_FIELD, _WHERE)
    if fields.ncap < fields.nsze:
        raise Reject(Status.THIN_PROVISIONING_NOT_SUPPORTED, _WHERE)
    unsupported = (fields.anagrpid, fields.nvmsetid, fields.endgid, fields.lbstm, fields.nphndls)
    if any(unsupported) or (csi == CSI_ZNS and any(fields.zoned_fields)):
        raise Reject(Status.INVALID_FIELD, _WHERE)
    zones = None
    if csi == CSI_ZNS:
        if fmt.metadata_size:
            raise Reject(Status.INVALID_FORMAT, _WHERE)  # zoned namespaces have no metadata here
        zones = CREATED_ZONES
    try:
        config = NamespaceConfig(
            size_bytes=fields.nsze * fmt.lba_size,
            lba_size=fmt.lba_size,
            metadata_size=fmt.metadata_size,
            extended_lba=bool(fields.flbas & 0x10 and fmt.metadata_size),
            pi_type=pi_type,
            pi_first=bool(pi_type and pi_first),
            zones=zones,
        )
    except ConfigError:
        # What is left: a zoned size that is no whole number of zones.
        raise Reject(Status.INVALID_FIELD, _WHERE) from None
    return config, bool(fields.nmic & 0x1)


def _create(admin: Admin, cmd: AdminCommand) -> Result:
    csi = cmd.cdw11 >> 24
    if csi not in (CSI_NVM, CSI_ZNS):
        raise Reject(Status.IOCS_NOT_SUPPORTED, param_location(CDW11 + 3))
    status, data = admin.engine.read_prp(cmd.prp1, cmd.prp2, HOST_FIELDS_SIZE)
    if status != Status.SUCCESS:
        return (status, 0)
    config, shared = requested_namespace(HostFields.parse(data), csi, bool(admin.features.host_behavior.lbafee))
    try:
        nsid = admin.namespaces.create(config, shared=shared)
    except CapacityError:
        raise Reject(Status.NAMESPACE_INSUFFICIENT_CAPACITY, _WHERE) from None
    except NamespaceError:  # every NSID has a namespace
        raise Reject(Status.NAMESPACE_ID_UNAVAILABLE, _WHERE) from None
    return (Status.SUCCESS, nsid)


def _delete(admin: Admin, cmd: AdminCommand) -> Result:
    if cmd.nsid != NSID_ALL and not 1 <= cmd.nsid <= NN:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    table = admin.namespaces.table
    # Looked up and deleted under the table's lock: an embedder's or the
    # control socket's change cannot fall between.
    with table.lock:
        if cmd.nsid == NSID_ALL:
            nsids = table.allocated()
        elif table.get(cmd.nsid) is None:
            raise Reject(Status.INVALID_FIELD, param_location(NSID))
        else:
            nsids = [cmd.nsid]
        admin.namespaces.delete(nsids, notify=False)
    return (Status.SUCCESS, 0)


def namespace_management(admin: Admin, cmd: AdminCommand) -> Result:
    """0Dh Namespace Management."""
    match cmd.cdw10 & 0xF:
        case 0x0:
            return _create(admin, cmd)
        case 0x1:
            return _delete(admin, cmd)
        case _:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
