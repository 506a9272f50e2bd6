"""What a controller must do with protection information, per NVM Command Set
1.0 section 5.2, as plain Python over the tests' reference CRCs
(:mod:`piref`): the tuple PRACT inserts, what each PRCHK bit compares, the
escapes, the reference tag each block expects. The conformance tests compare
the device with this, never with nvmefast's own code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from nvmefast import NamespaceConfig
from nvmefast.testing import pi as hpi
from piref import Tuple, guard, pattern, pi_size, tuple_bytes

__all__ = [
    "APP_CHECK",
    "GUARD_CHECK",
    "INVALID_FIELD",
    "INVALID_FORMAT",
    "INVALID_NS_OR_FORMAT",
    "INVALID_PI",
    "REF_CHECK",
    "Fmt",
    "all_formats",
    "status",
]

# Status values (SCT << 8 | SC): NVMe Base 2.0 Figures 101/102/103, NVM Command Set 1.0 Figure 16/17.
INVALID_FIELD = 0x002
INVALID_NS_OR_FORMAT = 0x00B
METADATA_SGL_LENGTH_INVALID = 0x010
INVALID_FORMAT = 0x10A
INVALID_PI = 0x181
GUARD_CHECK = 0x282
APP_CHECK = 0x283
REF_CHECK = 0x284

PRACT, PRCHK_GUARD, PRCHK_APP, PRCHK_REF = 0b1000, 0b0100, 0b0010, 0b0001


@dataclasses.dataclass(frozen=True)
class Fmt:
    """A namespace format with metadata."""

    lba: int
    ms: int
    pi: int = 0
    pi_first: bool = False
    guard: str = "crc16"
    extended: bool = False

    @property
    def psize(self) -> int:
        return pi_size(self.guard) if self.pi else 0

    @property
    def off(self) -> int:
        """Where the PI starts in a block's metadata."""
        return 0 if self.pi_first else self.ms - self.psize

    @property
    def ref_bits(self) -> int:
        return 32 if self.guard == "crc16" else 48

    @property
    def all_ones_ref(self) -> int:
        return (1 << self.ref_bits) - 1

    def namespace(self, size: int) -> NamespaceConfig:
        """A RAM namespace of ``size`` bytes in this format."""
        return NamespaceConfig(size_bytes=size, lba_size=self.lba, metadata_size=self.ms, extended_lba=self.extended,
                               pi_type=self.pi, pi_first=self.pi_first, guard=self.guard)

    def host_format(self) -> hpi.PiFormat:
        """The host driver's view of this format (what Identify says)."""
        return hpi.PiFormat(self.lba, self.ms, self.extended, self.pi, self.pi_first, self.guard)

    def id(self) -> str:
        text = f"{self.lba}+{self.ms}"
        if self.pi:
            text += f"-t{self.pi}-{self.guard}-{'first' if self.pi_first else 'last'}"
        return text + ("-ext" if self.extended else "-sep")

    def stripped(self, prinfo: int) -> bool:
        """PRACT with metadata that is only the PI: nothing of it moves."""
        return bool(prinfo & PRACT) and self.pi != 0 and self.ms == self.psize

    def data(self, nlb: int, seed: int = 7) -> bytes:
        return pattern(nlb * self.lba, seed)

    def metadata(self, nlb: int, seed: int = 11) -> bytes:
        return pattern(nlb * self.ms, seed)

    def block(self, buf: bytes, i: int, size: int) -> bytes:
        return buf[i * size : (i + 1) * size]

    def guard_of(self, data: bytes, md: bytes) -> int:
        """The guard of one block: its data, and with PI last the metadata bytes before it."""
        return guard(self.guard, data + (b"" if self.pi_first else md[: self.off]))

    def tuple_in(self, md: bytes) -> Tuple:
        return Tuple.parse(self.guard, md[self.off : self.off + self.psize])

    def with_tuple(self, md: bytes, t: Tuple) -> bytes:
        """One block's metadata ``md`` with its PI replaced by ``t``."""
        return md[: self.off] + tuple_bytes(self.guard, t) + md[self.off + self.psize :]

    def ref(self, ilbrt: int, i: int) -> int:
        """The reference tag block ``i`` of a command gets (PRACT) or is checked against:
        (E)ILBRT + i for Types 1 and 2, wrapping; (E)ILBRT for Type 3."""
        return ilbrt & self.all_ones_ref if self.pi == 3 else (ilbrt + i) & self.all_ones_ref

    def inserted(self, data: bytes, md: bytes, nlb: int, lbat: int, ilbrt: int) -> bytes:
        """The metadata PRACT stores for ``nlb`` blocks written with ``data`` and ``md`` (zeroes
        when the host sends none)."""
        out = []
        for i in range(nlb):
            d, m = self.block(data, i, self.lba), self.block(md, i, self.ms) if md else bytes(self.ms)
            out.append(self.with_tuple(m, Tuple(self.guard_of(d, m), lbat, self.ref(ilbrt, i))))
        return b"".join(out)

    def good(self, data: bytes, nlb: int, lbat: int, ilbrt: int, md: bytes | None = None) -> bytes:
        """Metadata with correct PI (as PRACT would insert) over ``md`` (default: a pattern)."""
        return self.inserted(data, self.metadata(nlb) if md is None else md, nlb, lbat, ilbrt)

    def escaped(self, t: Tuple) -> bool:
        """NVMCS 5.2.1.x: Types 1/2 skip every check with application tag FFFFh; Type 3 when the
        reference tag is all ones too."""
        if t.app != 0xFFFF:
            return False
        return self.pi != 3 or t.ref == self.all_ones_ref

    def check(self, data: bytes, md: bytes, nlb: int, prchk: int, ilbrt: int, lbat: int, lbatm: int) -> int:
        """The status checking ``nlb`` stored blocks should give (0: success); the first failing
        block decides, and within a block guard, then application tag, then reference tag."""
        for i in range(nlb):
            d, m = self.block(data, i, self.lba), self.block(md, i, self.ms)
            t = self.tuple_in(m)
            if self.escaped(t):
                continue
            if prchk & PRCHK_GUARD and t.guard != self.guard_of(d, m):
                return GUARD_CHECK
            if prchk & PRCHK_APP and (t.app ^ lbat) & lbatm:
                return APP_CHECK
            if prchk & PRCHK_REF and self.pi != 3 and t.ref != self.ref(ilbrt, i):
                return REF_CHECK
        return 0

    def prinfo_status(self, slba: int, prinfo: int, ilbrt: int) -> int:
        """Invalid Protection Information for PRINFO the format cannot take: Type 1 with a
        reference check whose ILBRT is not the SLBA's low bits; Type 3 with a reference check."""
        if not self.pi or not prinfo & PRCHK_REF:
            return 0
        if self.pi == 1 and ilbrt != slba & self.all_ones_ref:
            return INVALID_PI
        if self.pi == 3:
            return INVALID_PI
        return 0


def status(r: hpi.PiResult) -> int:
    """The 11-bit status (SCT << 8 | SC) of a command."""
    return r.completion.sct << 8 | r.completion.sc


def all_formats() -> Iterator[Fmt]:
    """Every format with metadata, PI type (0-3), guard the format allows, PI location where
    it matters, separate and extended."""
    for lba, ms in ((512, 8), (512, 16), (4096, 8), (4096, 16), (4096, 64)):
        for extended in (False, True):
            yield Fmt(lba, ms, extended=extended)
            for pi in (1, 2, 3):
                for g in ("crc16", "crc64"):
                    if pi_size(g) > ms or (g == "crc64" and lba < 4096):
                        continue
                    firsts = (False,) if ms == pi_size(g) else (False, True)
                    for first in firsts:
                        yield Fmt(lba, ms, pi, first, g, extended)
