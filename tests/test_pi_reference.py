"""The tests' own protection-information reference (tests/piref.py) against the
published values, so every PI test's expectation stands on the specification,
not on nvmefast.

Sources: the CRC catalogue check values ("123456789"), NVM Command Set 1.0
Figure 121 (CRC-64 of four 4 KiB patterns), Linux crypto/testmgr.h
(crct10dif "abc"; crc64-rocksoft of 4 KiB of 00h and FFh), and the 16-bit
guard of 4 KiB patterns listed with Figure 121's in the PI research note.
"""

from __future__ import annotations

import pytest

from piref import Tuple, crc16_t10dif, crc64_nvme, tuple_bytes

PATTERNS = {
    "zeros": bytes(4096),
    "ones": b"\xff" * 4096,
    "incrementing": bytes(i & 0xFF for i in range(4096)),
    "decrementing": bytes(0xFF - (i & 0xFF) for i in range(4096)),
}


def test_check_values() -> None:
    assert crc16_t10dif(b"123456789") == 0xD0DB
    # CRC-64/NVME (reveng; Linux crc64-rocksoft). NVMCS 5.2.1.3.4 prints 11199E506128D175h
    # as its check, which is what RefOut=false would give: an erratum.
    assert crc64_nvme(b"123456789") == 0xAE8B14860A799888


def test_linux_testmgr_vectors() -> None:
    assert crc16_t10dif(b"abc") == 0x443B


@pytest.mark.parametrize(
    ("name", "crc64"),
    [
        ("zeros", 0x6482D367EB22B64E),
        ("ones", 0xC0DDBA7302ECA3AC),
        ("incrementing", 0x3E729F5F6750449C),
        ("decrementing", 0x9A2DF64B8E9E517E),
    ],
)
def test_nvm_command_set_figure_121(name: str, crc64: int) -> None:
    assert crc64_nvme(PATTERNS[name]) == crc64


@pytest.mark.parametrize(
    ("name", "crc16"), [("zeros", 0x0000), ("ones", 0x8B5D), ("incrementing", 0x8F6D), ("decrementing", 0x0430)]
)
def test_16b_guard_of_4k_patterns(name: str, crc16: int) -> None:
    assert crc16_t10dif(PATTERNS[name]) == crc16


def test_512_byte_blocks() -> None:
    assert crc16_t10dif(bytes(512)) == 0
    assert crc16_t10dif(b"\xff" * 512) == 0xE6A1
    assert crc64_nvme(bytes(512)) == 0x1DE60E2868A782E9
    assert crc64_nvme(b"\xff" * 512) == 0x5277682DDAEB44B6


def test_tuples_are_big_endian() -> None:
    # Figure 114: guard 1:0, application tag 3:2, reference tag 7:4, most significant byte first.
    assert tuple_bytes("crc16", Tuple(0x1234, 0x5678, 0x9ABCDEF0)) == bytes.fromhex("123456789abcdef0")
    # Figure 118: guard 7:0, application tag 9:8, 48-bit reference tag 15:10.
    raw = tuple_bytes("crc64", Tuple(0x0102030405060708, 0x090A, 0x0B0C0D0E0F10))
    assert raw == bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
    assert Tuple.parse("crc64", raw) == Tuple(0x0102030405060708, 0x090A, 0x0B0C0D0E0F10)
