"""SGL data pointers (PSDT = 01b): Data Block, Bit Bucket, Segment and Last
Segment descriptors for Read, Write, Compare and the range lists of Dataset
Management and Copy, and each malformed SGL's status (NVMe Base 2.0 4.1.2,
Generic Command Status 0Dh-11h; QEMU ``nvme_map_sgl`` where the spec leaves
the choice open).
"""

from __future__ import annotations

import os
import random

import pytest

from nvmutil import (
    COMPARE_FAILURE, DATA_SGL_LENGTH_INVALID, DATA_TRANSFER_ERROR, GENERIC, INVALID_FIELD,
    INVALID_NUMBER_OF_SGL_DESCRIPTORS, INVALID_SGL_SEGMENT_DESCRIPTOR, LBA, MEDIA, NSIDS,
    SGL_DESCRIPTOR_TYPE_INVALID, TWO_NAMESPACES, UNMAPPED, assert_ok, assert_status,
    assert_still_works, fill, read,
)
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import sqe as op
from nvmefast.testing.nvm import (
    DSM_AD, compare, copy, dataset_management, lba_fields, sgl_io,
)
from nvmefast.testing.sgl import (
    SGL_DATA_BLOCK, SGL_KEYED_DATA_BLOCK, SGL_LAST_SEGMENT, SGL_SEGMENT,
    SGL_TRANSPORT_DATA_BLOCK, SglDescriptor, bit_bucket, build_sgl, data_block, encode_list,
    gather, last_segment, scatter, segment, sgl_dptr, split_data_blocks,
)

pytestmark = TWO_NAMESPACES
READ, WRITE = op.IO_READ, op.IO_WRITE


# the builder itself, against a dict standing in for guest memory

def _build(descriptors: list[SglDescriptor], per_segment: int) -> tuple[SglDescriptor, dict[int, bytes]]:
    memory: dict[int, bytes] = {}
    nxt = [0x10_0000]

    def alloc(n: int) -> int:
        nxt[0] += 0x1000
        return nxt[0]

    sgls = build_sgl(descriptors, alloc, memory.__setitem__, per_segment=per_segment)
    return sgls.sgl1, memory


def _walk(sgl1: SglDescriptor, memory: dict[int, bytes]) -> tuple[list[SglDescriptor], list[int]]:
    """Follow the chain as the spec describes it; returns data descriptors and list sizes."""
    if sgl1.is_data:
        return [sgl1], []
    out: list[SglDescriptor] = []
    sizes = []
    current = sgl1
    while True:
        raw = memory[current.address]
        assert len(raw) == current.length
        entries = [SglDescriptor.decode(raw[i : i + 16]) for i in range(0, len(raw), 16)]
        sizes.append(len(entries))
        for e in entries[:-1]:
            assert e.is_data, "a segment descriptor before the end of a list"
        last = entries[-1]
        if current.type == SGL_LAST_SEGMENT:
            assert last.is_data, "a Last Segment list chains on"
            return out + entries, sizes
        assert current.type == SGL_SEGMENT
        if last.is_data:
            return out + entries, sizes
        out += entries[:-1]
        current = last


@pytest.mark.parametrize(("count", "per_segment", "sizes"), [
    (1, 256, []), (2, 256, [2]), (256, 256, [256]), (257, 256, [256, 2]),
    (10, 4, [4, 4, 4]), (11, 4, [4, 4, 4, 2]), (600, 256, [256, 256, 90]),
])
def test_builder_chains(count: int, per_segment: int, sizes: list[int]) -> None:
    descriptors = [data_block(0x2000_0000 + i * 0x1000, 100 + i) for i in range(count)]
    sgl1, memory = _build(descriptors, per_segment)
    got, list_sizes = _walk(sgl1, memory)
    assert got == descriptors
    assert list_sizes == sizes
    if count > 1:
        assert sgl1.type == (SGL_LAST_SEGMENT if len(sizes) == 1 else SGL_SEGMENT)


def test_descriptor_wire_format() -> None:
    raw = SglDescriptor(0x1122_3344_5566_7788, 0x99AA_BBCC, SGL_LAST_SEGMENT, 0x1).encode()
    assert raw == bytes.fromhex("8877665544332211" "ccbbaa99" "000000" "31")
    assert sgl_dptr(data_block(0x1000, 0x200)) == {"prp1": 0x1000, "prp2": 0x200, "psdt": 1}


# success paths

def _sizes(rng: random.Random, total: int, count: int, granularity: int) -> list[int]:
    cuts = sorted(rng.sample(range(1, total // granularity), count - 1))
    points = [0] + [c * granularity for c in cuts] + [total]
    return [b - a for a, b in zip(points, points[1:])]


@pytest.fixture
def granularity(host: Host) -> int:
    # SGLS 1:0 = 01b: no alignment or granularity; 10b: dword granularity
    return 1 if host.identify_controller().sgls & 0x3 == 0b01 else 4


@pytest.mark.parametrize(("blocks", "per_segment"), [(1, 256), (8, 256), (300, 256), (40, 3), (64, 2)],
                         ids=["one", "last-segment", "two-lists", "long-chain", "chain-of-1"])
@pytest.mark.parametrize("nsid", NSIDS)
def test_sgl_write_then_read(host: Host, nsid: int, blocks: int, per_segment: int,
                             granularity: int) -> None:
    lba = LBA[nsid]
    nlb = 32 if nsid == 2 else 64
    total = nlb * lba
    rng = random.Random(blocks * 1000 + nsid)
    data = os.urandom(total)
    # data blocks of random sizes at odd spots, with gaps, so nothing is page shaped
    area = host.alloc(total + blocks * 64 + 4096)
    descriptors = split_data_blocks(area + 4 * rng.randrange(1, 8) * granularity,
                                    _sizes(rng, total, blocks, granularity), gap=3 * granularity)
    scatter(host.write_mem, descriptors, data)
    assert_ok(sgl_io(host, WRITE, nsid, 10, nlb, descriptors, per_segment=per_segment))
    assert host.read(nsid, 10, nlb) == data
    # and back through another SGL of another shape
    area2 = host.alloc(total + blocks * 64 + 4096)
    descriptors2 = split_data_blocks(area2 + 8, _sizes(rng, total, blocks, granularity), gap=16)
    assert_ok(sgl_io(host, READ, nsid, 10, nlb, descriptors2, per_segment=per_segment))
    assert gather(host.read_mem, descriptors2) == data
    # nothing before the first buffer or in a gap was written
    assert host.read_mem(area2, 8) == bytes(8)
    for a, b in zip(descriptors2, descriptors2[1:]):
        assert host.read_mem(a.address + a.length, 16) == bytes(16)
    host.free(area)
    host.free(area2)


@pytest.mark.parametrize("layout", ["middle", "first", "last", "many"])
@pytest.mark.parametrize("nsid", NSIDS)
def test_bit_bucket_read(host: Host, nsid: int, layout: str) -> None:
    lba = LBA[nsid]
    nlb = 8
    data = fill(host, nsid, 50, nlb)
    buf = host.alloc(2 * nlb * lba)
    host.write_mem(buf, b"\xee" * (2 * nlb * lba))
    if layout == "middle":
        spans = [("d", lba + 7), ("b", 2 * lba), ("d", 5 * lba - 7)]
    elif layout == "first":
        spans = [("b", 3 * lba), ("d", 5 * lba)]
    elif layout == "last":
        spans = [("d", 5 * lba), ("b", 3 * lba)]
    else:
        spans = [("d" if i % 2 else "b", lba) for i in range(nlb)]
    descriptors = []
    expected = bytearray()
    at = buf
    done = 0
    for kind, n in spans:
        if kind == "b":
            descriptors.append(bit_bucket(n))
        else:
            descriptors.append(data_block(at, n))
            expected += data[done : done + n]
            at += n
        done += n
    per_segment = 3 if layout == "many" else 256
    assert_ok(sgl_io(host, READ, nsid, 50, nlb, descriptors, per_segment=per_segment))
    assert host.read_mem(buf, len(expected)) == bytes(expected)
    # the discarded bytes went nowhere: the buffer beyond what was wanted is untouched
    assert host.read_mem(buf + len(expected), 64) == b"\xee" * 64
    host.free(buf)


@pytest.mark.parametrize("nsid", NSIDS)
def test_sgl_compare(host: Host, nsid: int) -> None:
    data = fill(host, nsid, 70, 6)
    for sgl in (True, 5, 40):
        assert_ok(compare(host, nsid, 70, data, sgl=sgl))
    changed = bytearray(data)
    changed[len(data) // 2 + 1] ^= 0x80
    assert_status(compare(host, nsid, 70, bytes(changed), sgl=7), MEDIA, COMPARE_FAILURE)


@pytest.mark.parametrize("nsid", NSIDS)
def test_sgl_range_lists(host: Host, nsid: int) -> None:
    lba = LBA[nsid]
    before = fill(host, nsid, 0, 48)
    # Dataset Management's 3 ranges (48 bytes) in 3 data blocks
    assert_ok(dataset_management(host, nsid, [(0, 2), (5, 1), (9, 3)], attributes=DSM_AD, sgl=3))
    expected = bytearray(before)
    for slba, nlb in [(0, 2), (5, 1), (9, 3)]:
        expected[slba * lba : (slba + nlb) * lba] = bytes(nlb * lba)
    # Copy's 2 source ranges (64 bytes) in 2 data blocks of 32 bytes
    assert_ok(copy(host, nsid, 40, [(20, 4), (30, 2)], sgl=2))
    expected[40 * lba : 46 * lba] = before[20 * lba : 24 * lba] + before[30 * lba : 32 * lba]
    assert read(host, nsid, 0, 48) == bytes(expected)


def test_sgl_and_prp_commands_in_flight_together(host: Host) -> None:
    # Alternate PRP and SGL commands with many in flight on one queue.
    rng = random.Random(7)
    blocks = {slba: os.urandom(4 * 512) for slba in range(0, 256, 4)}
    cids = []
    buffers = []
    for i, (slba, data) in enumerate(blocks.items()):
        buf = host.alloc(len(data) + 64)
        buffers.append(buf)
        if i % 2:
            host.write_mem(buf, data)
            sqe = build_sqe(WRITE, nsid=1, prp1=buf, **lba_fields(slba, 4))
        else:
            descriptors = split_data_blocks(buf, _sizes(rng, len(data), 5, 4), gap=4)
            scatter(host.write_mem, descriptors, data)
            sgls = host.build_sgl(descriptors)
            sqe = build_sqe(WRITE, nsid=1, **lba_fields(slba, 4), **sgls.dptr())
        cids.append(host.submit(sqe, 1))
    for cid in cids:
        assert_ok(host.wait(1, cid))
    reads = []
    for i, slba in enumerate(blocks):
        buf = host.alloc(4 * 512)
        if i % 2 == 0:
            sqe = build_sqe(READ, nsid=1, prp1=buf, **lba_fields(slba, 4))
            reads.append((host.submit(sqe, 1), slba, [data_block(buf, 4 * 512)]))
        else:
            descriptors = [data_block(buf, 512), data_block(buf + 512, 3 * 512)]
            sgls = host.build_sgl(descriptors)
            sqe = build_sqe(READ, nsid=1, **lba_fields(slba, 4), **sgls.dptr())
            reads.append((host.submit(sqe, 1), slba, descriptors))
    for cid, slba, descriptors in reads:
        assert_ok(host.wait(1, cid))
        assert gather(host.read_mem, descriptors) == blocks[slba], f"slba {slba}"


# malformed SGLs

def _expect(host: Host, sgl1: SglDescriptor, sc: int, *, opcode: int = READ, nlb: int = 1) -> None:
    sqe = build_sqe(opcode, nsid=1, **lba_fields(0, nlb), **sgl_dptr(sgl1))
    assert_status(host.io(sqe, 1), GENERIC, sc)


def _list(host: Host, descriptors: list[SglDescriptor]) -> int:
    at = host.alloc(len(descriptors) * 16)
    host.write_mem(at, encode_list(descriptors))
    return at


@pytest.mark.parametrize("kind", [SGL_KEYED_DATA_BLOCK, SGL_TRANSPORT_DATA_BLOCK, 0x6, 0xE])
@pytest.mark.parametrize("opcode", [READ, WRITE])
def test_unsupported_descriptor_type(host: Host, kind: int, opcode: int) -> None:
    buf = host.alloc(4096)
    bad = SglDescriptor(buf, 512, kind)
    # as SGL1 and inside a segment list
    _expect(host, bad, SGL_DESCRIPTOR_TYPE_INVALID, opcode=opcode)
    lst = _list(host, [data_block(buf, 256), bad])
    _expect(host, last_segment(lst, 2), SGL_DESCRIPTOR_TYPE_INVALID, opcode=opcode)
    assert_still_works(host)


@pytest.mark.parametrize("subtype", [0x1, 0xA, 0xF])
def test_data_block_subtype_must_be_address(host: Host, subtype: int) -> None:
    buf = host.alloc(4096)
    bad = SglDescriptor(buf, 512, SGL_DATA_BLOCK, subtype)
    _expect(host, bad, SGL_DESCRIPTOR_TYPE_INVALID)
    lst = _list(host, [data_block(buf, 256), SglDescriptor(buf + 256, 256, SGL_DATA_BLOCK, subtype)])
    _expect(host, last_segment(lst, 2), SGL_DESCRIPTOR_TYPE_INVALID, opcode=WRITE)
    assert_still_works(host)


def test_bit_bucket_in_a_write(host: Host) -> None:
    buf = host.alloc(4096)
    lst = _list(host, [data_block(buf, 256), bit_bucket(256)])
    _expect(host, last_segment(lst, 2), SGL_DESCRIPTOR_TYPE_INVALID, opcode=WRITE)
    # and in Compare, which also carries host data to the controller
    _expect(host, last_segment(lst, 2), SGL_DESCRIPTOR_TYPE_INVALID, opcode=op.IO_COMPARE)
    assert_still_works(host)


@pytest.mark.parametrize("length", [0, 8, 24, 33])
@pytest.mark.parametrize("kind", [SGL_SEGMENT, SGL_LAST_SEGMENT], ids=["segment", "last-segment"])
def test_segment_length_invalid(host: Host, kind: int, length: int) -> None:
    # "an SGL Last Segment descriptor contains an invalid length (i.e., a length
    # of zero or one that is not a multiple of 16)": Invalid SGL Segment
    # Descriptor (0Dh); QEMU applies the same to Segment descriptors.
    buf = host.alloc(4096)
    lst = _list(host, [data_block(buf, 256), data_block(buf + 256, 256)])
    _expect(host, SglDescriptor(lst, length, kind), INVALID_SGL_SEGMENT_DESCRIPTOR)
    # the same descriptor as the last entry of a Segment list
    outer = _list(host, [data_block(buf, 256), SglDescriptor(lst, length, kind)])
    _expect(host, segment(outer, 2), INVALID_SGL_SEGMENT_DESCRIPTOR)
    assert_still_works(host)


def test_segment_descriptor_after_last_segment(host: Host) -> None:
    buf = host.alloc(4096)
    tail = _list(host, [data_block(buf + 256, 256)])
    lst = _list(host, [data_block(buf, 256), segment(tail, 1)])
    _expect(host, last_segment(lst, 2), INVALID_SGL_SEGMENT_DESCRIPTOR)
    lst = _list(host, [data_block(buf, 256), last_segment(tail, 1)])
    _expect(host, last_segment(lst, 2), INVALID_SGL_SEGMENT_DESCRIPTOR)
    # the correct chain works
    _expect(host, segment(lst, 2), 0x00)
    assert_still_works(host)


def test_segment_descriptor_before_the_end_of_a_list(host: Host) -> None:
    # Only the last descriptor of a segment may point to another segment;
    # QEMU: Invalid Number of SGL Descriptors (0Eh).
    buf = host.alloc(4096)
    tail = _list(host, [data_block(buf + 256, 128)])
    lst = _list(host, [data_block(buf, 256), last_segment(tail, 1), data_block(buf + 384, 128)])
    _expect(host, segment(lst, 3), INVALID_NUMBER_OF_SGL_DESCRIPTORS)
    assert_still_works(host)


@pytest.mark.parametrize("opcode", [READ, WRITE, op.IO_COMPARE])
def test_sgl_too_short(host: Host, opcode: int) -> None:
    buf = host.alloc(8192)
    _expect(host, data_block(buf, 511), DATA_SGL_LENGTH_INVALID, opcode=opcode)
    _expect(host, data_block(buf, 4095), DATA_SGL_LENGTH_INVALID, opcode=opcode, nlb=8)
    lst = _list(host, [data_block(buf, 1024), data_block(buf + 2048, 1024)])
    _expect(host, last_segment(lst, 2), DATA_SGL_LENGTH_INVALID, opcode=opcode, nlb=5)
    # the same list is right for 4 blocks
    _expect(host, last_segment(lst, 2), 0x00, opcode=opcode, nlb=4)
    assert_still_works(host)


@pytest.mark.parametrize("opcode", [READ, WRITE])
def test_sgl_outside_guest_memory(host: Host, opcode: int) -> None:
    buf = host.alloc(4096)
    _expect(host, data_block(UNMAPPED, 512), DATA_TRANSFER_ERROR, opcode=opcode)
    # a segment list that is not mapped
    _expect(host, last_segment(UNMAPPED, 4), DATA_TRANSFER_ERROR, opcode=opcode)
    # a data block in the list that is not mapped
    lst = _list(host, [data_block(buf, 256), data_block(UNMAPPED, 256)])
    _expect(host, last_segment(lst, 2), DATA_TRANSFER_ERROR, opcode=opcode)
    # a data block straddling the end of guest memory
    region = host.mem.regions[0]
    _expect(host, data_block(region.iova + region.size - 256, 512), DATA_TRANSFER_ERROR, opcode=opcode)
    # a chain whose next list pointer is not mapped
    lst = _list(host, [data_block(buf, 256), last_segment(UNMAPPED, 1)])
    _expect(host, segment(lst, 2), DATA_TRANSFER_ERROR, opcode=opcode)
    assert_still_works(host)


def test_psdt_reserved(host: Host) -> None:
    buf = host.alloc(4096)
    sqe = build_sqe(READ, nsid=1, prp1=buf, psdt=0b11, **lba_fields(0, 1))
    assert_status(host.io(sqe, 1), GENERIC, INVALID_FIELD)
    assert_still_works(host)


def test_self_referencing_segment_ends(host: Host) -> None:
    # A Segment list whose last entry points back at itself must fail, not loop.
    at = host.alloc(4096)
    host.write_mem(at, encode_list([segment(at, 1)]))
    completion = host.io(build_sqe(READ, nsid=1, **lba_fields(0, 1), **sgl_dptr(segment(at, 1))), 1)
    assert not completion.ok and completion.dnr, str(completion)
    assert_still_works(host)
