"""Format NVM (80h, NVMe Base 2.0 5.23; NVM Command Set 1.0 4.1.2.1).

CDW10: LBAF bits 3:0 (with LBAFU bits 13:12 above them) picks one of the
LBA formats Identify Namespace lists (0: 512 B, 1: 4096 B, neither with
metadata); MSET bit 4, PI bits 7:5 and PIL bit 8 describe metadata and
protection information, which no format has; SES bits 11:9 is the Secure
Erase Setting. NSID FFFFFFFFh formats every namespace (FNA bit 0 is 0, so
one namespace may also be formatted alone); formatting a read-only namespace
gets Namespace is Write Protected, and a zoned one Invalid Format (its
zones are fixed in bytes; QEMU refuses it likewise). The core reformats and zeroes the
namespace; the NSIDs join the Changed Namespace List and a Namespace
Attribute Changed notice is raised (if Asynchronous Event Configuration bit
8 allows it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.identify import NSID_ALL
from nvmefast.status import Status
from nvmefast.structs import LBA_FORMATS

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["SES_NONE", "SES_USER_DATA_ERASE", "format_nvm"]

SES_NONE = 0b000
"""Secure Erase Setting: no secure erase requested."""
SES_USER_DATA_ERASE = 0b001
"""Secure Erase Setting: User Data Erase. A format zeroes every block
anyway, so this costs nothing more; Cryptographic Erase (010b) is not
supported (FNA bit 2 is 0)."""


def format_nvm(admin: Admin, cmd: AdminCommand) -> Result:
    """80h Format NVM."""
    nn = len(admin.config.namespaces)
    if cmd.nsid == NSID_ALL:
        nsids = list(range(1, nn + 1))
    elif 1 <= cmd.nsid <= nn:
        nsids = [cmd.nsid]
    else:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    dw10 = cmd.cdw10
    lbaf = (dw10 & 0xF) | ((dw10 >> 12) & 0x3) << 4
    mset, pi, ses = (dw10 >> 4) & 0x1, (dw10 >> 5) & 0x7, (dw10 >> 9) & 0x7
    if ses not in (SES_NONE, SES_USER_DATA_ERASE):
        raise Reject(Status.INVALID_FIELD, param_location(CDW10 + 1, 1))
    if lbaf >= len(LBA_FORMATS):
        raise Reject(Status.INVALID_FORMAT, param_location(CDW10))
    # No format has metadata: neither protection information nor an
    # extended LBA (metadata with the data) can be set up. PIL only
    # qualifies PI, so alone it is ignored, as QEMU does.
    if pi:
        raise Reject(Status.INVALID_FORMAT, param_location(CDW10, 5))
    if mset:
        raise Reject(Status.INVALID_FORMAT, param_location(CDW10, 4))
    lba_size = LBA_FORMATS[lbaf]
    if any(admin.config.namespaces[nsid - 1].zones is not None for nsid in nsids):
        raise Reject(Status.INVALID_FORMAT, param_location(NSID))
    if any(admin.config.namespaces[nsid - 1].readonly for nsid in nsids):
        # A format writes every block: not on a write-protected namespace.
        raise Reject(Status.NAMESPACE_WRITE_PROTECTED, param_location(NSID))
    for nsid in nsids:
        # Outside the admin lock: the core may wait for its iothreads.
        admin.engine.format_namespace(nsid, lba_size)
    admin.namespaces_changed(nsids)
    return (Status.SUCCESS, 0)
