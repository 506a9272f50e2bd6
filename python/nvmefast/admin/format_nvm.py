"""Format NVM (80h, NVMe Base 2.0 5.23; NVM Command Set 1.0 4.1.2, Figure 78).

CDW10: LBAF bits 3:0 (with LBAFU bits 13:12 above them, honoured only once
the host set Host Behavior Support LBAFEE) picks one of the LBA formats
Identify Namespace lists (:data:`nvmefast.lba_format.LBA_FORMATS`); MSET bit
4 puts the metadata at the end of each block's data (an extended LBA)
instead of a separate buffer (no meaning without metadata); PI bits 7:5
enables protection information of Type 1, 2 or 3; PIL bit 8 puts it in the
first bytes of the metadata instead of the last (no meaning without PI); SES
bits 11:9 is the Secure Erase Setting.

What it gets, checked in this order (QEMU ``nvme_format_check`` and the
specs agree on each):

- an NSID that is neither valid (1..NN) nor FFFFFFFFh: Invalid Namespace or
  Format; a valid one that is not active (unallocated or detached): Invalid
  Field in Command;
- SES other than none or User Data Erase (no Cryptographic Erase, FNA bit 2
  is 0), or PI 100b-111b (reserved): Invalid Field in Command;
- an index past NLBAF: Invalid Format;
- a zoned namespace: Invalid Format (its zones are fixed in bytes; QEMU
  refuses it likewise);
- a format whose PI carries the 64-bit guard while LBAFEE is clear: Invalid
  Namespace or Format (NVM Command Set 1.0 4.1.2);
- PI with a format whose metadata has no room for it (8 bytes for the
  16-bit guard, 16 for the 64-bit one), or metadata where the namespace's
  storage cannot keep it (:func:`nvmefast.lba_format.metadata_available`):
  Invalid Format;
- a read-only namespace: Namespace is Write Protected.

NSID FFFFFFFFh formats every active namespace, after all pass the checks (FNA bit 0
is 0, so one namespace may also be formatted alone). The core reformats the
namespace: user data reads back zero and every block's metadata is
deallocated (all FFh, so PI reads as the escape). A format erases user data
whatever SES says, so User Data Erase costs nothing more. The NSIDs join the
Changed Namespace List and a Namespace Attribute Changed notice is raised (if
Asynchronous Event Configuration bit 8 allows it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, NSID, AdminCommand, Reject, Result, param_location
from nvmefast.admin.command_sets import active_nsids, is_active
from nvmefast.namespaces import NN, NSID_ALL
from nvmefast.errors import ConfigError
from nvmefast.lba_format import LBA_FORMATS, PI_SIZE, PIF_64B, NamespaceFormat, metadata_available, pif
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["PI_TYPES", "SES_NONE", "SES_USER_DATA_ERASE", "format_nvm"]

SES_NONE = 0b000
"""Secure Erase Setting: no secure erase requested."""
SES_USER_DATA_ERASE = 0b001
"""Secure Erase Setting: User Data Erase. A format zeroes every block
anyway, so this costs nothing more; Cryptographic Erase (010b) is not
supported (FNA bit 2 is 0)."""
PI_TYPES = (0, 1, 2, 3)
"""Format NVM PI values: none, Type 1, 2, 3 (DPC reports all three)."""


def _requested(admin: Admin, dw10: int) -> tuple[int, int, int, int, int]:
    """(format index, MSET, PI, PIL, SES) of CDW10, reserved values refused."""
    index = dw10 & 0xF
    if admin.features.host_behavior.lbafee:
        index |= ((dw10 >> 12) & 0x3) << 4
    mset, pi, pil, ses = (dw10 >> 4) & 0x1, (dw10 >> 5) & 0x7, (dw10 >> 8) & 0x1, (dw10 >> 9) & 0x7
    if ses not in (SES_NONE, SES_USER_DATA_ERASE):
        raise Reject(Status.INVALID_FIELD, param_location(CDW10 + 1, 1))
    if pi not in PI_TYPES:
        raise Reject(Status.INVALID_FIELD, param_location(CDW10, 5))
    if index >= len(LBA_FORMATS):
        raise Reject(Status.INVALID_FORMAT, param_location(CDW10))
    return index, mset, pi, pil, ses


def format_nvm(admin: Admin, cmd: AdminCommand) -> Result:
    """80h Format NVM."""
    table = admin.namespaces.table
    if cmd.nsid == NSID_ALL:
        nsids = active_nsids(admin)
    elif 1 <= cmd.nsid <= NN:
        if not is_active(admin, cmd.nsid):
            # An unallocated or detached NSID: inactive, as for I/O (QEMU: Invalid Field).
            raise Reject(Status.INVALID_FIELD, param_location(NSID))
        nsids = [cmd.nsid]
    else:
        raise Reject(Status.INVALID_NSID, param_location(NSID))
    namespaces = {nsid: entry.config for nsid in nsids if (entry := table.get(nsid)) is not None}
    index, mset, pi, pil, _ = _requested(admin, cmd.cdw10)
    if any(ns.zones is not None for ns in namespaces.values()):
        # Its zones are fixed in bytes; QEMU refuses it likewise.
        raise Reject(Status.INVALID_FORMAT, param_location(NSID))
    chosen = LBA_FORMATS[index]
    formats: dict[int, NamespaceFormat] = {}
    for nsid, ns in namespaces.items():
        guard_format = pif(ns.guard, chosen)
        if pi and guard_format == PIF_64B and not admin.features.host_behavior.lbafee:
            raise Reject(Status.INVALID_NSID, param_location(CDW10))
        if pi and chosen.metadata_size < PI_SIZE[guard_format]:
            raise Reject(Status.INVALID_FORMAT, param_location(CDW10, 5))
        if chosen.metadata_size and not metadata_available(ns):
            raise Reject(Status.INVALID_FORMAT, param_location(CDW10))
        formats[nsid] = NamespaceFormat(
            chosen.lba_size,
            chosen.metadata_size,
            extended_lba=bool(mset and chosen.metadata_size),
            pi_type=pi,
            pi_first=bool(pi and pil),
            guard="crc64" if pi and guard_format == PIF_64B else "crc16",
        )
    if any(ns.readonly for ns in namespaces.values()):
        # A format writes every block: not on a write-protected namespace.
        raise Reject(Status.NAMESPACE_WRITE_PROTECTED, param_location(NSID))
    for nsid, fmt in formats.items():
        try:
            # Outside the admin lock: the core may wait for its iothreads.
            admin.engine.format_namespace(
                nsid, fmt.lba_size, metadata_size=fmt.metadata_size, extended_lba=fmt.extended_lba,
                pi_type=fmt.pi_type, pi_first=fmt.pi_first, guard=fmt.guard,
            )  # fmt: skip
        except ConfigError:
            # The core refused a format the checks above let through (its storage cannot
            # keep metadata after all): the host asked for a format this namespace lacks.
            raise Reject(Status.INVALID_FORMAT, param_location(CDW10)) from None
    admin.formatted(list(formats))
    return (Status.SUCCESS, 0)
