"""An independent reference for protection information, for the tests: the
two guard CRCs computed bit by bit from their polynomials (NVM Command Set
1.0 5.2.1.3: CRC-16 T10-DIF for the 16-bit guard, CRC-64/NVME for the 64-bit
guard) and the PI tuples built from them (Figures 114 and 118), slow and
obviously written from the specification rather than from nvmefast's core.

The published check values these must reproduce (``test_pi_reference.py``
asserts them): CRC-16/T10-DIF of "123456789" is D0DBh; the CRC-64 of four
4 KiB blocks is NVMCS Figure 121 (the "Check" line of 5.2.1.3.4 is an
erratum: it is what RefOut=false gives). Linux's ``crypto/testmgr.h`` vectors
agree.
"""

from __future__ import annotations

import dataclasses
import struct

__all__ = [
    "CRC16_POLY",
    "CRC64_POLY",
    "Tuple",
    "crc16_t10dif",
    "crc64_nvme",
    "guard",
    "pattern",
    "pi_size",
    "tuple_bytes",
]

CRC16_POLY = 0x8BB7
"""CRC-16 T10-DIF: x^16 + x^15 + x^11 + x^9 + x^8 + x^7 + x^5 + x^4 + x^2 + x + 1,
MSB first, init 0, no final XOR, no reflection."""
CRC64_POLY = 0xAD93D23594C93659
"""CRC-64/NVME (Rocksoft): the polynomial MSB first; init all ones, final XOR all
ones, input and output reflected."""


def crc16_t10dif(data: bytes, crc: int = 0) -> int:
    """CRC-16 T10-DIF of ``data``, one bit at a time, most significant bit first."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _reflect(value: int, width: int) -> int:
    return int(f"{value:0{width}b}"[::-1], 2)


_CRC64_POLY_REFLECTED = _reflect(CRC64_POLY, 64)


def crc64_nvme(data: bytes) -> int:
    """CRC-64/NVME of ``data``: reflected (least significant bit first), init and
    final XOR all ones."""
    crc = 0xFFFF_FFFF_FFFF_FFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY_REFLECTED if crc & 1 else crc >> 1
    return crc ^ 0xFFFF_FFFF_FFFF_FFFF


def pi_size(guard_kind: str) -> int:
    """Bytes of one PI tuple: 8 with the 16-bit guard, 16 with the 64-bit guard."""
    return {"crc16": 8, "crc64": 16}[guard_kind]


def guard(guard_kind: str, data: bytes) -> int:
    """The guard of ``data`` (the block's data, plus any metadata before the PI when PI is last)."""
    return crc16_t10dif(data) if guard_kind == "crc16" else crc64_nvme(data)


@dataclasses.dataclass(frozen=True)
class Tuple:
    """One PI tuple, fields as integers."""

    guard: int
    app: int
    ref: int

    @classmethod
    def parse(cls, guard_kind: str, raw: bytes) -> Tuple:
        """Read a tuple: big-endian fields (16b guard: 2+2+4 bytes; 64b guard: 8+2+6)."""
        if guard_kind == "crc16":
            g, a, r = struct.unpack(">HHI", raw[:8])
            return cls(g, a, r)
        g, a = struct.unpack(">QH", raw[:10])
        return cls(g, a, int.from_bytes(raw[10:16], "big"))


def tuple_bytes(guard_kind: str, t: Tuple) -> bytes:
    """The wire bytes of tuple ``t``."""
    if guard_kind == "crc16":
        return struct.pack(">HHI", t.guard, t.app, t.ref & 0xFFFF_FFFF)
    return struct.pack(">QH", t.guard, t.app) + (t.ref & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking bytes (a 32-bit xorshift), the same on every run."""
    out = bytearray()
    x = seed & 0xFFFF_FFFF or 1
    while len(out) < size:
        x ^= (x << 13) & 0xFFFF_FFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFF_FFFF
        out += x.to_bytes(4, "little")
    return bytes(out[:size])
