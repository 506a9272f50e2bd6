"""A vfio-user server for the controller: ``nvmefast serve`` and :class:`VfioUserServer`.

QEMU (>= 10.1.1) attaches it with ``-device vfio-user-pci``: the guest's own
NVMe driver then drives the emulated controller, its memory shared with the
server through DMA_MAP fds, its doorbells through a shared page and its
interrupts through eventfds. The wire protocol is QEMU's
``docs/interop/vfio-user.rst``; see :mod:`nvmefast.vfio_user.protocol`.
"""

from __future__ import annotations

from nvmefast.vfio_user.server import VfioUserServer

__all__ = ["VfioUserServer"]
