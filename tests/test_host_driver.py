"""The test host's own building blocks, checked against the spec without a controller.

PRP lists must follow NVMe Base 2.0 §4.1.1 (entries per page, chaining through
the last slot), the allocator must hand out aligned, disjoint, reusable pages,
and CQE decoding must follow the Common Completion Queue Entry layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from nvmefast.testing import PAGE_SIZE, Completion, GuestMemory, GuestMemoryError, build_prps, build_sqe
from nvmefast.testing.prp import data_pointers

REGION = 8 << 20


@pytest.fixture
def mem() -> Iterator[GuestMemory]:
    memory = GuestMemory()
    memory.add_region(0x10_0000, REGION)
    yield memory
    memory.close()


def walk_prps(mem: GuestMemory, prp1: int, prp2: int, length: int) -> list[int]:
    """The controller's view: the data page pointers a PRP1/PRP2 pair describes."""
    entries = [prp1]
    remaining = length - (PAGE_SIZE - prp1 % PAGE_SIZE)
    if remaining <= 0:
        return entries
    if remaining <= PAGE_SIZE:
        return entries + [prp2]
    count = -(-remaining // PAGE_SIZE)
    slot = prp2
    while count:
        (entry,) = struct.unpack("<Q", mem.read(slot, 8))
        slot += 8
        if slot % PAGE_SIZE == 0 and count > 1:
            slot = entry  # the last slot of a list page chains to the next one
            continue
        entries.append(entry)
        count -= 1
    return entries


@pytest.mark.parametrize("pages", [1, 2, 3, 512, 513, 514, 1023, 1024, 1025])
@pytest.mark.parametrize("offset", [0, 0x200])
def test_prps_round_trip(mem: GuestMemory, pages: int, offset: int) -> None:
    buf = mem.alloc(pages * PAGE_SIZE + PAGE_SIZE) + offset
    length = pages * PAGE_SIZE - offset
    entries = data_pointers(buf, length)
    assert len(entries) == pages
    prps = build_prps(entries, lambda: mem.alloc(PAGE_SIZE), mem.write)
    assert prps.prp1 == buf
    if pages == 1:
        assert prps.prp2 == 0 and not prps.list_pages
    elif pages == 2:
        assert prps.prp2 == entries[1] and not prps.list_pages
    else:
        # 512 pointers per list page; every page but the last spends its last
        # slot on the chain, so n entries take ceil((n - 1) / 511) pages
        list_entries = pages - 1
        expected = -(-(list_entries - 1) // 511)
        assert len(prps.list_pages) == expected
        assert prps.prp2 == prps.list_pages[0]
    assert walk_prps(mem, prps.prp1, prps.prp2, length) == entries


def test_allocator_alignment_and_reuse(mem: GuestMemory) -> None:
    a = mem.alloc(1)
    b = mem.alloc(PAGE_SIZE + 1)
    c = mem.alloc(PAGE_SIZE, align=64 * 1024)
    assert a % PAGE_SIZE == 0 and b % PAGE_SIZE == 0 and c % (64 * 1024) == 0
    spans = sorted([(a, PAGE_SIZE), (b, 2 * PAGE_SIZE), (c, PAGE_SIZE)])
    for (s1, n1), (s2, _) in zip(spans, spans[1:]):
        assert s1 + n1 <= s2, "allocations overlap"
    mem.write(b, b"\xaa" * 16)
    mem.free(b)
    again = mem.alloc(2 * PAGE_SIZE)
    assert again == b  # first fit reuses the freed run
    assert mem.read(again, 16) == bytes(16)  # and hands it out zeroed
    with pytest.raises(GuestMemoryError):
        mem.free(again + 8)
    with pytest.raises(GuestMemoryError):
        mem.alloc(REGION)
    with pytest.raises(GuestMemoryError):
        mem.read(0x10_0000 + REGION - 4, 8)  # crosses the end of the region


def test_completion_decode() -> None:
    # DW0, DW1, DW2 = SQHD 15:0 | SQID 31:16, DW3 = CID 15:0 | P 16 | status 31:17
    status = 1 << 14 | 0x1 << 8 | 0x02  # DNR, SCT 1, SC 02h
    raw = struct.pack("<IIII", 0xDEADBEEF, 7, 0x0003_0011, 0xBEEF | 1 << 16 | status << 17)
    c = Completion.decode(raw)
    assert (c.dw0, c.dw1, c.sqhd, c.sqid, c.cid, c.phase) == (0xDEADBEEF, 7, 0x11, 3, 0xBEEF, 1)
    assert (c.status, c.sct, c.sc, c.dnr, c.ok) == (status, 1, 0x02, True, False)


def test_build_sqe_layout() -> None:
    sqe = build_sqe(0x02, cid=0x1234, nsid=5, prp1=0x1000, prp2=0x2000, cdw10=1, cdw12=7, psdt=0, fuse=1)
    assert len(sqe) == 64
    cdw0, nsid = struct.unpack_from("<II", sqe, 0)
    assert cdw0 == 0x02 | 1 << 8 | 0x1234 << 16
    assert nsid == 5
    assert struct.unpack_from("<QQ", sqe, 24) == (0x1000, 0x2000)
    assert struct.unpack_from("<IIIIII", sqe, 40) == (1, 0, 7, 0, 0, 0)
