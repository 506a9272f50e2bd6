"""Keep Alive (18h, NVMe Base 2.0 5.25).

The host sends it within the Keep Alive Timeout (feature 0Fh) to show it is
alive. On PCIe nothing else depends on it: the controller records when it
came and does not act on an expired timer (the spec's expiry action is for
fabrics associations), so Keep Alive always succeeds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nvmefast.admin.command import AdminCommand, Result
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["keep_alive"]


def keep_alive(admin: Admin, cmd: AdminCommand) -> Result:
    """18h Keep Alive: restart the Keep Alive Timer."""
    with admin.lock:
        admin.last_keep_alive = time.monotonic()
    return (Status.SUCCESS, 0)
