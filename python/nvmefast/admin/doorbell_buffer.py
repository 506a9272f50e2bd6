"""Doorbell Buffer Config (7Ch, NVMe Base 2.0 5.8): shadow doorbells.

PRP1 is the Shadow Doorbell buffer and PRP2 the EventIdx buffer, each one
memory page, page aligned. From then on the host writes doorbell values
into the shadow buffer and rings MMIO only when a value passes the EventIdx
the device publishes; the core reads the values there. The buffers' life
ends at a controller reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import PRP1, AdminCommand, Reject, Result, param_location
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["doorbell_buffer_config"]

_PRP2 = 32


def doorbell_buffer_config(admin: Admin, cmd: AdminCommand) -> Result:
    """7Ch Doorbell Buffer Config."""
    page = admin.page_size
    for offset, addr in ((PRP1, cmd.prp1), (_PRP2, cmd.prp2)):
        # QEMU: either address with a page offset (or none at all) is an
        # Invalid Field; the core also checks the pages are mapped.
        if addr == 0 or addr & (page - 1):
            raise Reject(Status.INVALID_FIELD, param_location(offset))
    status = admin.engine.set_shadow_doorbells(cmd.prp1, cmd.prp2)
    if status != Status.SUCCESS:
        raise Reject(status, param_location(PRP1))
    return (Status.SUCCESS, 0)
