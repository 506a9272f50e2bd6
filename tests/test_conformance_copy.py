"""Copy (19h), Source Range Entries Descriptor Format 0h (NVM Command Set 2.0, 3.3.2).

The destination must equal the source ranges concatenated in order; the
limits Identify Namespace advertises (MSRC, MSSRL, MCL) are enforced with
Command Size Limit Exceeded (SCT 1h, SC 83h). Overlapping source and
destination ranges are undefined by the spec and not tested.
"""

from __future__ import annotations

import pytest

from nvmutil import (
    COMMAND_SIZE_LIMIT_EXCEEDED, COMMAND_SPECIFIC, DATA_TRANSFER_ERROR, GENERIC, INVALID_FIELD, INVALID_NSID,
    LBA, LBA_OUT_OF_RANGE, NSIDS, NSZE, TWO_NAMESPACES, UNMAPPED, assert_ok, assert_status,
    assert_still_works, fill, read,
)
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import sqe as op
from nvmefast.testing.nvm import copy, copy_cdws, copy_range

pytestmark = TWO_NAMESPACES


def _expected(before: bytes, lba: int, ranges: list[tuple[int, int]], base: int = 0) -> bytes:
    return b"".join(before[(s - base) * lba : (s - base + n) * lba] for s, n in ranges)


@pytest.mark.parametrize("nsid", NSIDS)
def test_copy_concatenates_sources(host: Host, nsid: int) -> None:
    lba = LBA[nsid]
    before = fill(host, nsid, 0, 64)
    ranges = [(40, 3), (0, 1), (10, 7), (63, 1), (10, 2)]  # out of order, one repeated
    dest_before = fill(host, nsid, 200, 16)
    assert_ok(copy(host, nsid, 201, ranges))
    total = sum(n for _, n in ranges)
    got = read(host, nsid, 200, 16)
    assert got[lba : (1 + total) * lba] == _expected(before, lba, ranges)
    # the blocks around the destination and every source are untouched
    assert got[:lba] == dest_before[:lba]
    assert got[(1 + total) * lba :] == dest_before[(1 + total) * lba :]
    assert read(host, nsid, 0, 64) == before


@pytest.mark.parametrize("nsid", NSIDS)
def test_copy_single_block_at_the_ends(host: Host, nsid: int) -> None:
    nsze = NSZE[nsid]
    first = fill(host, nsid, 0, 1)
    assert_ok(copy(host, nsid, nsze - 1, [(0, 1)]))
    assert host.read(nsid, nsze - 1, 1) == first
    last = fill(host, nsid, nsze - 2, 1)
    assert_ok(copy(host, nsid, 5, [(nsze - 2, 1)]))
    assert host.read(nsid, 5, 1) == last


@pytest.mark.parametrize("nsid", NSIDS)
def test_copy_at_every_limit(host: Host, nsid: int) -> None:
    # MSRC + 1 = 128 ranges of 32 blocks = MCL (4096 blocks); then one range of MSSRL (256).
    ns = host.identify_namespace(nsid)
    lba = LBA[nsid]
    count, per = ns.msrc + 1, ns.mcl // (ns.msrc + 1)
    before = fill(host, nsid, 0, ns.mcl)
    # reverse order, so a controller that ignores the order is caught
    ranges = [(i * per, per) for i in reversed(range(count))]
    dest = ns.mcl + 100
    assert_ok(copy(host, nsid, dest, ranges))
    assert read(host, nsid, dest, ns.mcl) == _expected(before, lba, ranges)
    assert_ok(copy(host, nsid, dest, [(1000, ns.mssrl)]))
    assert read(host, nsid, dest, ns.mssrl) == before[1000 * lba : (1000 + ns.mssrl) * lba]


@pytest.mark.parametrize("nsid", NSIDS)
def test_copy_size_limits(host: Host, nsid: int) -> None:
    ns = host.identify_namespace(nsid)
    dest = NSZE[nsid] // 2
    cases = {
        "MSRC + 2 ranges": [(i, 1) for i in range(ns.msrc + 2)],
        "256 ranges (NR = 255)": [(i, 1) for i in range(256)],
        "a range of MSSRL + 1": [(0, 1), (0, ns.mssrl + 1)],
        "MCL + 1 in all": [(0, ns.mssrl)] * (ns.mcl // ns.mssrl) + [(0, 1)],
    }
    for what, ranges in cases.items():
        completion = copy(host, nsid, dest, ranges)
        assert (completion.sct, completion.sc) == (COMMAND_SPECIFIC, COMMAND_SIZE_LIMIT_EXCEEDED), \
            f"{what}: {completion}"
        assert completion.dnr, f"{what}: {completion}"
    assert_still_works(host, nsid)


@pytest.mark.parametrize("desfmt", [2, 3, 4, 0xF])
def test_copy_descriptor_format_unsupported(host: Host, desfmt: int) -> None:
    assert_status(copy(host, 1, 100, [(0, 1)], desfmt=desfmt), GENERIC, INVALID_FIELD)
    assert_still_works(host)


def test_copy_format_1_is_for_the_64_bit_guard(host: Host) -> None:
    """Format 1 is supported (OCFS bit 1), for namespaces whose PI has the 64-bit guard; on
    any other (16-bit guard formats, as these without PI are) it is Invalid Namespace or
    Format (NVM Command Set 1.0 3.2.2)."""
    assert_status(copy(host, 1, 100, [(0, 1)], desfmt=1), GENERIC, INVALID_NSID)
    assert_still_works(host)


@pytest.mark.parametrize("nsid", NSIDS)
def test_copy_lba_out_of_range(host: Host, nsid: int) -> None:
    nsze = NSZE[nsid]
    cases = {
        "source past the end": (0, [(nsze, 1)]),
        "source straddles the end": (0, [(0, 1), (nsze - 1, 2)]),
        "source wraps": (0, [(2**64 - 1, 2)]),
        "destination past the end": (nsze, [(0, 1)]),
        "destination straddles the end": (nsze - 3, [(0, 2), (10, 2)]),
        "destination wraps": (2**64 - 1, [(0, 2)]),
    }
    for what, (sdlba, ranges) in cases.items():
        completion = copy(host, nsid, sdlba, ranges)
        assert (completion.sct, completion.sc) == (GENERIC, LBA_OUT_OF_RANGE), f"{what}: {completion}"
        assert completion.dnr, f"{what}: {completion}"
    assert_still_works(host, nsid)


def test_copy_range_list_outside_guest_memory(host: Host) -> None:
    sqe = build_sqe(op.IO_COPY, nsid=1, prp1=UNMAPPED, **copy_cdws(100, 2))
    assert_status(host.io(sqe), GENERIC, DATA_TRANSFER_ERROR)
    # the list's second page is unmapped: 2 entries straddle a page end
    region = host.mem.regions[0]
    last = region.iova + region.size - 32
    host.write_mem(last, copy_range(0, 1))
    sqe = build_sqe(op.IO_COPY, nsid=1, prp1=last, prp2=last + 32, **copy_cdws(100, 2))
    assert_status(host.io(sqe), GENERIC, DATA_TRANSFER_ERROR)
    assert_still_works(host)


def test_copy_range_list_in_prp_pages(host: Host) -> None:
    # 128 entries = 4 KiB of range list starting mid-page: PRP1 plus PRP2.
    before = fill(host, 1, 0, 128)
    buf = host.alloc(8192)
    start = buf + 4096 - 64
    ranges = [(127 - i, 1) for i in range(128)]
    host.write_mem(start, b"".join(copy_range(s, n) for s, n in ranges))
    sqe = build_sqe(op.IO_COPY, nsid=1, prp1=start, prp2=buf + 4096, **copy_cdws(1000, 128))
    assert_ok(host.io(sqe))
    assert read(host, 1, 1000, 128) == _expected(before, 512, ranges)
