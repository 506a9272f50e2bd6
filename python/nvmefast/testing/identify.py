"""Host-side parsers for the Identify data structures a driver reads at bring-up.

Kept independent of the device's own builders (``nvmefast.structs``) on
purpose: tests parse what the controller DMA'd with the spec's byte offsets
(NVMe Base 2.0 Figure 275, NVM Command Set 1.0 Figure 97), so a wrong offset
in a builder is caught instead of mirrored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

IDENTIFY_SIZE = 4096


def _ascii(raw: bytes) -> str:
    # Identify strings are ASCII, space padded on the right (NVMe Base 2.0 §1.5).
    return raw.decode("ascii", errors="replace").rstrip(" ")


@dataclass(frozen=True)
class IdentifyController:
    """The Identify Controller fields (CNS 01h) a driver and our tests use."""

    raw: bytes
    vid: int
    ssvid: int
    sn: str
    mn: str
    fr: str
    cmic: int
    mdts: int
    cntlid: int
    ver: int
    oacs: int
    acl: int
    aerl: int
    lpa: int
    elpe: int
    sqes: int
    cqes: int
    maxcmd: int
    nn: int
    oncs: int
    vwc: int
    sgls: int

    @classmethod
    def parse(cls, raw: bytes) -> IdentifyController:
        """Parse a 4096-byte Identify Controller data structure."""
        if len(raw) != IDENTIFY_SIZE:
            raise ValueError(f"Identify Controller is {IDENTIFY_SIZE} bytes, got {len(raw)}")
        vid, ssvid = struct.unpack_from("<HH", raw, 0)
        return cls(
            raw=bytes(raw),
            vid=vid,
            ssvid=ssvid,
            sn=_ascii(raw[4:24]),
            mn=_ascii(raw[24:64]),
            fr=_ascii(raw[64:72]),
            cmic=raw[76],
            mdts=raw[77],
            cntlid=struct.unpack_from("<H", raw, 78)[0],
            ver=struct.unpack_from("<I", raw, 80)[0],
            oacs=struct.unpack_from("<H", raw, 256)[0],
            acl=raw[258],
            aerl=raw[259],
            lpa=raw[261],
            elpe=raw[262],
            sqes=raw[512],
            cqes=raw[513],
            maxcmd=struct.unpack_from("<H", raw, 514)[0],
            nn=struct.unpack_from("<I", raw, 516)[0],
            oncs=struct.unpack_from("<H", raw, 520)[0],
            vwc=raw[525],
            sgls=struct.unpack_from("<I", raw, 536)[0],
        )

    @property
    def ctratt(self) -> int:
        """Controller Attributes (bytes 99:96); bit 15 ELBAS: extended LBA formats (64-bit guard)."""
        return int(struct.unpack_from("<I", self.raw, 96)[0])


@dataclass(frozen=True)
class LbaFormat:
    """One LBA Format entry: metadata size, LBA data size (2**lbads) and relative performance."""

    ms: int
    lbads: int
    rp: int

    @property
    def lba_size(self) -> int:
        """LBA data size in bytes."""
        return 1 << self.lbads


@dataclass(frozen=True)
class IdentifyNamespace:
    """The Identify Namespace fields (CNS 00h) a driver and our tests use."""

    raw: bytes
    nsze: int
    ncap: int
    nuse: int
    nsfeat: int
    nlbaf: int
    flbas: int
    nmic: int
    lbaf: tuple[LbaFormat, ...]

    @classmethod
    def parse(cls, raw: bytes) -> IdentifyNamespace:
        """Parse a 4096-byte Identify Namespace data structure."""
        if len(raw) != IDENTIFY_SIZE:
            raise ValueError(f"Identify Namespace is {IDENTIFY_SIZE} bytes, got {len(raw)}")
        nsze, ncap, nuse = struct.unpack_from("<QQQ", raw, 0)
        nlbaf = raw[25]
        formats = []
        # NLBAF is 0's based; the table starts at byte 128, 4 bytes per entry.
        for i in range(min(nlbaf + 1, 64)):
            (entry,) = struct.unpack_from("<I", raw, 128 + 4 * i)
            formats.append(LbaFormat(ms=entry & 0xFFFF, lbads=(entry >> 16) & 0xFF, rp=(entry >> 24) & 0x3))
        return cls(
            raw=bytes(raw),
            nsze=nsze,
            ncap=ncap,
            nuse=nuse,
            nsfeat=raw[24],
            nlbaf=nlbaf,
            flbas=raw[26],
            nmic=raw[30],
            lbaf=tuple(formats),
        )

    @property
    def format_index(self) -> int:
        """The LBA format in use: FLBAS bits 3:0, plus bits 6:5 as the upper two bits."""
        return (self.flbas & 0xF) | ((self.flbas >> 5) & 0x3) << 4

    @property
    def lba_size(self) -> int:
        """Bytes per logical block of the format in use."""
        return self.lbaf[self.format_index].lba_size

    @property
    def size_bytes(self) -> int:
        """Namespace size in bytes (NSZE blocks)."""
        return self.nsze * self.lba_size

    @property
    def dlfeat(self) -> int:
        """Deallocate Logical Block Features (byte 33); bits 2:0 = 001b: deallocated blocks read 00h."""
        return self.raw[33]

    @property
    def mssrl(self) -> int:
        """Maximum Single Source Range Length of Copy, in LBAs (bytes 74-75)."""
        return int(struct.unpack_from("<H", self.raw, 74)[0])

    @property
    def mcl(self) -> int:
        """Maximum Copy Length, in LBAs (bytes 76-79)."""
        return int(struct.unpack_from("<I", self.raw, 76)[0])

    @property
    def msrc(self) -> int:
        """Maximum Source Range Count of Copy, 0's based (byte 80)."""
        return self.raw[80]

    @property
    def mc(self) -> int:
        """Metadata Capabilities (byte 27): bit 0 extended LBAs, bit 1 a separate buffer."""
        return self.raw[27]

    @property
    def dpc(self) -> int:
        """End-to-end Data Protection Capabilities (byte 28): Types 1-3 (bits 2:0), PI first (3), last (4)."""
        return self.raw[28]

    @property
    def dps(self) -> int:
        """End-to-end Data Protection Type Settings (byte 29): PI type bits 2:0, bit 3 PI first."""
        return self.raw[29]

    @property
    def metadata_size(self) -> int:
        """Metadata bytes per block of the format in use (its LBAF MS)."""
        return self.lbaf[self.format_index].ms

    @property
    def extended_lba(self) -> bool:
        """FLBAS bit 4: metadata at the end of each block's data (when there is metadata)."""
        return bool(self.flbas & 0x10) and self.metadata_size > 0

    @property
    def pi_type(self) -> int:
        """DPS bits 2:0: the protection information type, 0 for none."""
        return self.dps & 0x7

    @property
    def pi_first(self) -> bool:
        """DPS bit 3: PI in the first bytes of the metadata (else the last)."""
        return bool(self.dps & 0x8)

    @property
    def nsattr(self) -> int:
        """Namespace Attributes (byte 99); bit 0: the namespace is write protected."""
        return self.raw[99]

    @property
    def write_protected(self) -> bool:
        """NSATTR bit 0."""
        return bool(self.nsattr & 1)


@dataclass(frozen=True)
class ExtendedLbaFormat:
    """One Extended LBA Format of the NVM Command Set Identify Namespace (NVM Command Set 1.0
    Figure 101): storage tag size in bits and the Protection Information Format."""

    sts: int
    pif: int
    """00b 16-bit guard, 01b 32-bit guard, 10b 64-bit guard."""

    @property
    def guard(self) -> str:
        """``crc16``, ``crc32c`` or ``crc64``: the guard of this format's PI."""
        return {0: "crc16", 1: "crc32c", 2: "crc64"}.get(self.pif, "reserved")

    @property
    def pi_size(self) -> int:
        """Bytes of one PI tuple: 8 with the 16-bit guard, 16 with the 32- and 64-bit guards."""
        return 8 if self.pif == 0 else 16


@dataclass(frozen=True)
class IdentifyNamespaceNvm:
    """The NVM Command Set Identify Namespace (CNS 05h, CSI 00h; NVM Command Set 1.0 Figure 100)."""

    raw: bytes
    lbstm: int
    pic: int
    elbaf: tuple[ExtendedLbaFormat, ...]
    """All 64 entries (only those up to NLBAF of Identify Namespace mean anything)."""

    @classmethod
    def parse(cls, raw: bytes) -> IdentifyNamespaceNvm:
        """Parse a 4096-byte NVM Command Set Identify Namespace data structure."""
        if len(raw) != IDENTIFY_SIZE:
            raise ValueError(f"Identify Namespace (NVM) is {IDENTIFY_SIZE} bytes, got {len(raw)}")
        entries = struct.unpack_from("<64I", raw, 12)
        return cls(
            raw=bytes(raw),
            lbstm=struct.unpack_from("<Q", raw, 0)[0],
            pic=raw[8],
            elbaf=tuple(ExtendedLbaFormat(sts=e & 0x7F, pif=(e >> 7) & 0x3) for e in entries),
        )


def parse_nsid_list(raw: bytes) -> list[int]:
    """Parse an Active Namespace ID list (CNS 02h): NSIDs until the first zero."""
    ids = struct.unpack_from("<1024I", raw, 0)
    out = []
    for nsid in ids:
        if nsid == 0:
            break
        out.append(nsid)
    return out


def parse_ns_descriptors(raw: bytes) -> list[tuple[int, bytes]]:
    """Parse a Namespace Identification Descriptor list (CNS 03h) into (NIDT, NID)."""
    out = []
    offset = 0
    while offset + 4 <= len(raw):
        nidt, nidl = raw[offset], raw[offset + 1]
        if nidt == 0:
            break
        out.append((nidt, bytes(raw[offset + 4 : offset + 4 + nidl])))
        offset += 4 + nidl
    return out
