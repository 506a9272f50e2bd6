"""Abort (08h).

I/O commands complete synchronously inside the core, so by the time an Abort
is fetched the only admin-visible command that can still be outstanding is
an Asynchronous Event Request. Dword 0 bit 0 of the Abort completion is 0
when the command was aborted and 1 when it was not (NVMe 1.4 5.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import AdminCommand, Result
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["abort"]

NOT_ABORTED = 1
"""Abort dword 0: the command was not aborted."""


def abort(admin: Admin, cmd: AdminCommand) -> Result:
    """08h Abort: complete an outstanding AER with Command Abort Requested."""
    sqid, cid = cmd.cdw10 & 0xFFFF, cmd.cdw10 >> 16
    if sqid == 0:
        with admin.lock:
            aborted = admin.events.abort(cid)
        if aborted:
            # The aborted command completes first, then the Abort itself.
            admin.engine.complete_admin(cid, Status.ABORT_REQUESTED, 0)
            return (Status.SUCCESS, 0)
    return (Status.SUCCESS, NOT_ABORTED)
