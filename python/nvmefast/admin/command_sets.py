"""I/O Command Set selection (NVMe Base 2.0 3.1.4.5 CC.CSS, 5.27.1.21 I/O
Command Set Profile) and which namespaces it makes active.

A namespace is active when it is allocated, attached to the controller
(:mod:`nvmefast.namespaces`) and of a command set the host selected.

CAP.CSS reports three selections: the NVM Command Set alone (CC.CSS 000b),
every supported I/O Command Set (110b: NVM and Zoned Namespace) and the
Admin Command Set only (111b). A namespace is attached, and so active, only
while the host selected its command set: with 000b a zoned namespace is an
inactive NSID (zero-filled Identify data, absent from the active lists, I/O
commands Invalid Field), as QEMU's ``nvme_csi_supported`` does; with 111b
no namespace is. The selection is taken when CC.EN goes to 1 and holds
until the next enable.

The I/O Command Set Profile feature (19h) indexes the combinations of the
Identify I/O Command Set data structure (CNS 1Ch): there is one, index 0
(NVM and Zoned Namespace), so it is the only index Set Features accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.config import NamespaceConfig
from nvmefast.structs import CSI_NVM
from nvmefast.zns import CSI_ZNS

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = [
    "CSS_ADMIN_ONLY",
    "CSS_ALL",
    "CSS_NVM",
    "SUPPORTED_CSS",
    "active_nsids",
    "allocated_nsids",
    "enabled_csis",
    "is_active",
    "namespace_csi",
]

CSS_NVM = 0b000
"""CC.CSS: the NVM Command Set."""
CSS_ALL = 0b110
"""CC.CSS: all supported I/O Command Sets (NVM and Zoned Namespace)."""
CSS_ADMIN_ONLY = 0b111
"""CC.CSS: the Admin Command Set only; no I/O Command Set."""
SUPPORTED_CSS = (CSS_NVM, CSS_ALL, CSS_ADMIN_ONLY)
"""CC.CSS values CAP.CSS reports (bits 0, 6 and 7)."""


def enabled_csis(css: int) -> frozenset[int]:
    """The Command Set Identifiers a CC.CSS selection enables."""
    if css == CSS_ALL:
        return frozenset((CSI_NVM, CSI_ZNS))
    if css == CSS_NVM:
        return frozenset((CSI_NVM,))
    return frozenset()


def namespace_csi(ns: NamespaceConfig) -> int:
    """The Command Set Identifier of a namespace: zoned ones use the Zoned Namespace Command Set."""
    return CSI_ZNS if ns.zones is not None else CSI_NVM


def is_active(admin: Admin, nsid: int) -> bool:
    """Whether ``nsid`` names a namespace allocated, attached to this
    controller, and of a command set the current selection enables."""
    entry = admin.namespaces.table.get(nsid)
    return entry is not None and entry.attached and namespace_csi(entry.config) in enabled_csis(admin.css)


def active_nsids(admin: Admin, csi: int | None = None) -> list[int]:
    """Active NSIDs in order, those of command set ``csi`` only when given."""
    return [
        e.nsid
        for e in admin.namespaces.table.entries()
        if is_active(admin, e.nsid) and (csi is None or namespace_csi(e.config) == csi)
    ]


def allocated_nsids(admin: Admin, csi: int | None = None) -> list[int]:
    """Allocated NSIDs in order (attached or not), those of command set ``csi`` only when given."""
    return [e.nsid for e in admin.namespaces.table.entries() if csi is None or namespace_csi(e.config) == csi]
