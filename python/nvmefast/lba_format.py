"""LBA formats: the data and metadata size of a logical block, and how a
namespace is formatted (NVM Command Set 1.0 4.1.5.1, Figures 97, 98, 100,
101; 5.2 End-to-end Data Protection).

Every namespace offers the same LBA Format table (Identify Namespace
NLBAF/LBAF): indexes 0 and 1 keep their meaning from before metadata existed
(512 and 4096 bytes, no metadata), the rest add 8, 16 or 64 bytes of
metadata. FLBAS names the format in use (bits 3:0, bits 6:5 above them) and
whether its metadata travels with the data (bit 4, an extended LBA) or in a
separate buffer; DPS names the protection information type and whether PI
is the first (bit 3) or the last bytes of the metadata. The NVM Command Set
Identify Namespace (CNS 05h) adds an Extended LBA Format per index: its
Protection Information Format (PIF) says which guard a format's PI carries.
A namespace configured ``guard="crc64"`` reports the 64-bit guard (CRC-64/
NVME, PIF 10b) for its formats with at least 16 bytes of metadata and
4096-byte blocks (the spec allows that guard only from 4 KiB up); every
other format has the 16-bit guard (CRC-16 T10-DIF, PIF 00b). No format has a
storage tag (STS 0).

Which format a namespace is in belongs to the core (Format NVM changes it);
:class:`NamespaceFormat` is its description, read from the core or a
:class:`~nvmefast.NamespaceConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Mapping
from typing import Any

from nvmefast.config import NamespaceConfig

__all__ = [
    "CTRATT_ELBAS",
    "DPC",
    "GUARDS",
    "LBA_FORMATS",
    "MC",
    "PIF_16B",
    "PIF_64B",
    "PI_SIZE",
    "LbaFormat",
    "NamespaceFormat",
    "elbaf",
    "lbaf",
    "metadata_available",
    "pif",
]


@dataclasses.dataclass(frozen=True)
class LbaFormat:
    """One LBA Format: data bytes and metadata bytes per logical block."""

    lba_size: int
    metadata_size: int = 0


LBA_FORMATS: tuple[LbaFormat, ...] = (
    LbaFormat(512),
    LbaFormat(4096),
    LbaFormat(512, 8),
    LbaFormat(512, 16),
    LbaFormat(4096, 8),
    LbaFormat(4096, 16),
    LbaFormat(4096, 64),
)
"""The LBA Format table, by index (NLBAF = 6). Fewer than 17 entries, so
FLBAS bits 6:5 stay 0 and Host Behavior Support LBAFEE changes no count."""

MC = 0b11
"""Metadata Capabilities: bit 0 extended LBAs, bit 1 a separate buffer (MPTR)."""
DPC = 0x1F
"""End-to-end Data Protection Capabilities: Types 1, 2 and 3 (bits 2:0), PI in
the first (bit 3) or last (bit 4) bytes of the metadata."""
CTRATT_ELBAS = 1 << 15
"""Identify Controller CTRATT bit 15: Extended LBA Formats Supported (the
64-bit guard; a host enables them with Host Behavior Support LBAFEE)."""

PIF_16B = 0b00
"""Protection Information Format: 16-bit guard (CRC-16 T10-DIF), 8-byte PI."""
PIF_64B = 0b10
"""Protection Information Format: 64-bit guard (CRC-64/NVME), 16-byte PI."""
GUARDS: Mapping[str, int] = {"crc16": PIF_16B, "crc64": PIF_64B}
"""``NamespaceConfig.guard`` values and their PIF."""
PI_SIZE: Mapping[int, int] = {PIF_16B: 8, PIF_64B: 16}
"""Bytes of one PI tuple by PIF."""

_LBAF_LBADS_SHIFT = 16
_ELBAF_PIF_SHIFT = 7


def pif(guard: str, fmt: LbaFormat) -> int:
    """The PIF of LBA format ``fmt`` on a namespace configured with ``guard``."""
    if guard == "crc64" and fmt.metadata_size >= PI_SIZE[PIF_64B] and fmt.lba_size >= 4096:
        return PIF_64B
    return PIF_16B


def lbaf(fmt: LbaFormat, available: bool = True) -> int:
    """An LBA Format entry: MS bits 15:0, LBADS bits 23:16 (0: not currently
    available), RP bits 25:24 = 0 (best performance)."""
    if not available:
        return fmt.metadata_size
    return fmt.metadata_size | int(math.log2(fmt.lba_size)) << _LBAF_LBADS_SHIFT


def elbaf(guard: str, fmt: LbaFormat) -> int:
    """An Extended LBA Format entry (CNS 05h): STS bits 6:0 = 0, PIF bits 8:7."""
    return pif(guard, fmt) << _ELBAF_PIF_SHIFT


def metadata_available(ns: NamespaceConfig) -> bool:
    """Whether the namespace's storage can keep metadata: a storage object
    needs ``read_metadata``/``write_metadata``, a file namespace a regular
    file (its metadata lives in a companion file beside it, which a block
    device has no place for). Formats with metadata are reported unavailable
    (LBADS 0) otherwise, and Format NVM refuses them."""
    if not isinstance(ns.backend, str):
        return all(callable(getattr(ns.backend, m, None)) for m in ("read_metadata", "write_metadata"))
    if ns.backend == "file" and ns.path is not None:
        try:
            return not stat.S_ISBLK(os.stat(ns.path).st_mode)
        except OSError:
            return True  # created when the controller opens it: a regular file
    return True


@dataclasses.dataclass(frozen=True)
class NamespaceFormat:
    """How a namespace is formatted: its LBA format, where its metadata
    travels, and its protection information."""

    lba_size: int
    metadata_size: int = 0
    extended_lba: bool = False
    pi_type: int = 0
    pi_first: bool = False
    guard: str = "crc16"
    """The guard of the PI in use (``crc16`` also when there is no PI)."""

    @classmethod
    def of_config(cls, ns: NamespaceConfig) -> NamespaceFormat:
        """The format a namespace is configured with (what it has until a Format NVM)."""
        return cls(ns.lba_size, ns.metadata_size, ns.extended_lba, ns.pi_type, ns.pi_first,
                   ns.guard if ns.pi_type else "crc16")

    @classmethod
    def of_engine(cls, info: Mapping[str, Any]) -> NamespaceFormat:
        """From the core's ``Engine.namespace_format`` dict."""
        return cls(
            int(info["lba_size"]),
            int(info["metadata_size"]),
            bool(info["extended_lba"]),
            int(info["pi_type"]),
            bool(info["pi_first"]),
            str(info["guard"]),
        )

    @property
    def lba_format(self) -> LbaFormat:
        """The LBA Format in use."""
        return LbaFormat(self.lba_size, self.metadata_size)

    @property
    def index(self) -> int:
        """Its index in :data:`LBA_FORMATS`."""
        return LBA_FORMATS.index(self.lba_format)

    @property
    def flbas(self) -> int:
        """Formatted LBA Size: index bits 3:0 (and 5:4 in bits 6:5), bit 4 extended LBA."""
        extended = 1 << 4 if self.extended_lba and self.metadata_size else 0
        return (self.index & 0xF) | extended | (self.index >> 4) << 5

    def describe(self) -> str:
        """``512+16 bytes, metadata separate, PI type 1 (CRC-16 guard, last)``: how a person says it."""
        if not self.metadata_size:
            return f"{self.lba_size}-byte blocks"
        text = f"{self.lba_size}+{self.metadata_size} bytes, metadata {'extended' if self.extended_lba else 'separate'}"
        if self.pi_type:
            guard = "CRC-64" if self.guard == "crc64" else "CRC-16"
            # Where the PI sits says something only when the metadata has room for more.
            where = "" if self.metadata_size == PI_SIZE[GUARDS[self.guard]] else (
                ", first" if self.pi_first else ", last")
            text += f", PI type {self.pi_type} ({guard} guard{where})"
        return text

    @property
    def dps(self) -> int:
        """End-to-end Data Protection Type Settings: type bits 2:0, bit 3 PI first."""
        return self.pi_type | (1 << 3 if self.pi_type and self.pi_first else 0)
