"""Abort (08h, NVMe Base 2.0 5.1).

CDW10 names the command: SQID bits 15:0, CID bits 31:16. An outstanding
Asynchronous Event Request (SQID 0) is completed here with Command Abort
Requested; any other command is aborted by the core if it still sits
unfetched in its SQ (I/O executes as soon as it is fetched, so a command
already running is never aborted). Dword 0 bit 0 of the Abort completion is
0 when the command was aborted and 1 when it was not, which is also the
answer for an SQ that does not exist (as QEMU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import AdminCommand, Result
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["ABORTED", "NOT_ABORTED", "abort"]

ABORTED = 0
"""Abort dword 0: the command was aborted."""
NOT_ABORTED = 1
"""Abort dword 0: the command was not aborted."""


def abort(admin: Admin, cmd: AdminCommand) -> Result:
    """08h Abort."""
    sqid, cid = cmd.cdw10 & 0xFFFF, cmd.cdw10 >> 16
    if sqid == 0:
        with admin.lock:
            aborted = admin.events.abort(cid)
        if aborted:
            # The aborted command completes first, then the Abort itself.
            admin.engine.complete_admin(cid, Status.ABORT_REQUESTED, 0)
            return (Status.SUCCESS, ABORTED)
    elif not admin.engine.sq_exists(sqid):
        return (Status.SUCCESS, NOT_ABORTED)
    # The core completes the aborted command itself when its worker reaches it.
    if admin.engine.abort_command(sqid, cid):
        return (Status.SUCCESS, ABORTED)
    return (Status.SUCCESS, NOT_ABORTED)
