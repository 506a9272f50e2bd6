"""NVM command set conformance: Write Zeroes, Dataset Management, Verify, Compare.

Each command's success path is checked byte for byte against random data on
both LBA data sizes (NSID 1: 512 bytes, NSID 2: 4096 bytes), and each error
path against the status NVM Command Set 2.0 names. Copy and SGLs have files
of their own (test_conformance_copy.py, test_conformance_sgl.py).
"""

from __future__ import annotations

import os
import random

import pytest

from nvmutil import (
    COMPARE_FAILURE, DATA_TRANSFER_ERROR, GENERIC, INVALID_FIELD, INVALID_NSID,
    LBA, LBA_OUT_OF_RANGE, MEDIA, NSIDS, NSZE, TWO_NAMESPACES, TWO_NULL_NAMESPACES, UNMAPPED,
    assert_ok, assert_status, assert_still_works, fill, read,
)
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import sqe as op
from nvmefast.testing.nvm import (
    DSM_AD, DSM_IDR, DSM_IDW, compare, copy, copy_cdws, copy_range, dataset_management, dsm_cdws,
    dsm_range, lba_fields, verify, verify_sqe, write_zeroes, write_zeroes_sqe,
)

pytestmark = TWO_NAMESPACES

# ONCS bits (NVMe Base 2.0, Identify Controller bytes 521:520)
ONCS_COMPARE, ONCS_DSM, ONCS_WRITE_ZEROES, ONCS_VERIFY, ONCS_COPY = 1 << 0, 1 << 2, 1 << 3, 1 << 7, 1 << 8


def test_identify_advertises_the_commands(host: Host) -> None:
    ctrl = host.identify_controller()
    for bit, name in ((ONCS_COMPARE, "Compare"), (ONCS_DSM, "Dataset Management"),
                      (ONCS_WRITE_ZEROES, "Write Zeroes"), (ONCS_VERIFY, "Verify"),
                      (ONCS_COPY, "Copy")):
        assert ctrl.oncs & bit, f"ONCS {ctrl.oncs:#x} does not advertise {name}"
    # OCFS (bytes 535:534) bit 0: Copy Descriptor Format 0h supported
    assert int.from_bytes(ctrl.raw[534:536], "little") & 1, "OCFS does not advertise format 0"
    # SGLS bits 1:0: 01b (no alignment) or 10b (dword granularity); bit 16: Bit Bucket
    assert ctrl.sgls & 0x3 in (0b01, 0b10), f"SGLS {ctrl.sgls:#x}: SGLs not supported"
    assert ctrl.sgls & 1 << 16, f"SGLS {ctrl.sgls:#x}: no Bit Bucket descriptor"
    for nsid in (1, 2):
        ns = host.identify_namespace(nsid)
        # DLFEAT 2:0 = 001b: a deallocated block reads as all 00h
        assert ns.dlfeat & 0x7 == 0b001, f"NSID {nsid} DLFEAT {ns.dlfeat:#x}"
        assert (ns.msrc, ns.mssrl, ns.mcl) == (127, 256, 4096), f"NSID {nsid} Copy limits"


# Write Zeroes (08h)

@pytest.mark.parametrize("flags", [{}, {"deac": True}, {"fua": True}, {"lr": True},
                                   {"deac": True, "fua": True, "lr": True}],
                         ids=["plain", "deac", "fua", "lr", "all"])
@pytest.mark.parametrize("nlb", [1, 17])
@pytest.mark.parametrize("nsid", NSIDS)
def test_write_zeroes(host: Host, nsid: int, nlb: int, flags: dict[str, bool]) -> None:
    lba = LBA[nsid]
    before = fill(host, nsid, 100, nlb + 4)
    assert_ok(write_zeroes(host, nsid, 102, nlb, **flags))
    expected = before[: 2 * lba] + bytes(nlb * lba) + before[(nlb + 2) * lba :]
    assert read(host, nsid, 100, nlb + 4) == expected


@pytest.mark.parametrize("nsid", NSIDS)
def test_write_zeroes_is_not_limited_by_mdts(host: Host, nsid: int) -> None:
    # NLB is 16 bits: up to 65536 blocks, far beyond MDTS (128 KiB); NSID 1
    # is exactly 65536 blocks, so the largest Write Zeroes covers it all.
    nlb = min(NSZE[nsid], 65536)
    marks = [0, nlb // 3, nlb - 1]
    for slba in marks:
        fill(host, nsid, slba, 1)
    assert_ok(write_zeroes(host, nsid, 0, nlb))
    for slba in marks:
        assert host.read(nsid, slba, 1) == bytes(LBA[nsid]), f"slba {slba}"


# (SLBA, NLB) with SLBA as an offset from NSZE when negative or zero; "wrap"
# makes SLBA + NLB overflow 64 bits.
OUT_OF_RANGE = [
    pytest.param(0, 1, id="nsze"),
    pytest.param(-1, 2, id="straddle"),
    pytest.param(-8, 16, id="straddle16"),
    pytest.param(2**64 - 1, 2, id="wrap"),
]


def _slba(nsid: int, slba: int) -> int:
    return NSZE[nsid] + slba if slba <= 0 else slba


@pytest.mark.parametrize(("slba", "nlb"), OUT_OF_RANGE)
@pytest.mark.parametrize("nsid", NSIDS)
def test_write_zeroes_lba_out_of_range(host: Host, nsid: int, slba: int, nlb: int) -> None:
    assert_status(write_zeroes(host, nsid, _slba(nsid, slba), nlb), GENERIC, LBA_OUT_OF_RANGE)
    assert_still_works(host, nsid)


# Dataset Management (09h)

@pytest.mark.parametrize("nsid", NSIDS)
def test_dsm_deallocate_reads_zeroes(host: Host, nsid: int) -> None:
    lba = LBA[nsid]
    before = fill(host, nsid, 0, 64)
    ranges = [(3, 5), (20, 1), (40, 24)]
    assert_ok(dataset_management(host, nsid, ranges, attributes=DSM_AD))
    expected = bytearray(before)
    for slba, nlb in ranges:
        expected[slba * lba : (slba + nlb) * lba] = bytes(nlb * lba)
    assert read(host, nsid, 0, 64) == bytes(expected)
    # deallocated blocks take new writes like any other
    data = fill(host, nsid, 41, 2)
    assert host.read(nsid, 41, 2) == data


@pytest.mark.parametrize("attributes", [0, DSM_IDR, DSM_IDW, DSM_IDR | DSM_IDW],
                         ids=["none", "idr", "idw", "idr+idw"])
@pytest.mark.parametrize("nsid", NSIDS)
def test_dsm_without_deallocate_changes_nothing(host: Host, nsid: int, attributes: int) -> None:
    before = fill(host, nsid, 0, 32)
    assert_ok(dataset_management(host, nsid, [(0, 8), (10, 22)], attributes=attributes))
    assert read(host, nsid, 0, 32) == before


@pytest.mark.parametrize("nsid", NSIDS)
def test_dsm_256_ranges(host: Host, nsid: int) -> None:
    # NR = 255 (0's based): 256 ranges, a full 4 KiB page of range entries.
    lba = LBA[nsid]
    before = fill(host, nsid, 0, 512)
    ranges = [(2 * i, 1) for i in range(256)]
    assert_ok(dataset_management(host, nsid, ranges))
    got = read(host, nsid, 0, 512)
    for block in range(512):
        want = bytes(lba) if block % 2 == 0 else before[block * lba : (block + 1) * lba]
        assert got[block * lba : (block + 1) * lba] == want, f"block {block}"


@pytest.mark.parametrize("nsid", NSIDS)
def test_dsm_context_attributes_are_hints(host: Host, nsid: int) -> None:
    # Context attributes (bytes 3:0 of a range) never change what is deallocated.
    lba = LBA[nsid]
    before = fill(host, nsid, 0, 8)
    buf = host.alloc(64)
    host.write_mem(buf, dsm_range(1, 2, attributes=0xFF00_0F0F) + dsm_range(6, 1, 0xFFFF_FFFF))
    sqe = build_sqe(op.IO_DATASET_MANAGEMENT, nsid=nsid, prp1=buf, **dsm_cdws(2, DSM_AD))
    assert_ok(host.io(sqe))
    expected = before[:lba] + bytes(2 * lba) + before[3 * lba : 6 * lba] + bytes(lba) + before[7 * lba :]
    assert read(host, nsid, 0, 8) == expected


@pytest.mark.parametrize(("slba", "nlb"), OUT_OF_RANGE)
@pytest.mark.parametrize("nsid", NSIDS)
def test_dsm_lba_out_of_range(host: Host, nsid: int, slba: int, nlb: int) -> None:
    for attributes in (DSM_AD, 0):
        completion = dataset_management(host, nsid, [(0, 1), (_slba(nsid, slba), nlb)],
                                        attributes=attributes)
        assert_status(completion, GENERIC, LBA_OUT_OF_RANGE)
    assert_still_works(host, nsid)


def test_dsm_range_list_unmapped(host: Host) -> None:
    sqe = build_sqe(op.IO_DATASET_MANAGEMENT, nsid=1, prp1=UNMAPPED, **dsm_cdws(4, DSM_AD))
    assert_status(host.io(sqe), GENERIC, DATA_TRANSFER_ERROR)
    assert_still_works(host)


# Verify (0Ch)

@pytest.mark.parametrize("nsid", NSIDS)
def test_verify_in_range(host: Host, nsid: int) -> None:
    fill(host, nsid, 0, 8)
    nsze = NSZE[nsid]
    for slba, nlb in [(0, 1), (0, 8), (nsze - 1, 1), (nsze - 32, 32), (1000, 32)]:
        assert_ok(verify(host, nsid, slba, nlb))


@pytest.mark.parametrize("nsid", NSIDS)
def test_verify_lba_out_of_range(host: Host, nsid: int) -> None:
    nsze = NSZE[nsid]
    for slba, nlb in [(nsze, 1), (nsze - 1, 2), (2**64 - 1, 2), (2**63, 1)]:
        assert_status(verify(host, nsid, slba, nlb), GENERIC, LBA_OUT_OF_RANGE)
    assert_still_works(host, nsid)


# Compare (05h)

@pytest.mark.parametrize("nsid", NSIDS)
def test_compare_after_write(host: Host, nsid: int) -> None:
    lba = LBA[nsid]
    for slba, nlb in [(0, 1), (7, 3), (NSZE[nsid] - 4, 4), (200, 128 * 1024 // lba)]:
        data = fill(host, nsid, slba, nlb)
        assert_ok(compare(host, nsid, slba, data))


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("nsid", NSIDS)
def test_compare_failure_on_one_byte(host: Host, nsid: int, where: str) -> None:
    nlb = 5
    rng = random.Random(f"{nsid}{where}")
    data = fill(host, nsid, 30, nlb)
    index = {"first": 0, "middle": rng.randrange(1, len(data) - 1), "last": len(data) - 1}[where]
    changed = bytearray(data)
    changed[index] ^= 1 << rng.randrange(8)
    assert_status(compare(host, nsid, 30, bytes(changed)), MEDIA, COMPARE_FAILURE)
    # a failed Compare changes nothing, and the original data still compares equal
    assert host.read(nsid, 30, nlb) == data
    assert_ok(compare(host, nsid, 30, data))


@pytest.mark.parametrize("nsid", NSIDS)
def test_compare_against_zeroes(host: Host, nsid: int) -> None:
    # never written, written zeroes and deallocated blocks all compare equal to 00h
    lba = LBA[nsid]
    assert_ok(compare(host, nsid, 3000, bytes(4 * lba)))
    fill(host, nsid, 0, 8)
    assert_ok(write_zeroes(host, nsid, 0, 4))
    assert_ok(dataset_management(host, nsid, [(4, 4)]))
    assert_ok(compare(host, nsid, 0, bytes(8 * lba)))
    assert_status(compare(host, nsid, 0, bytes(7 * lba) + b"\x01" + bytes(lba - 1)),
                  MEDIA, COMPARE_FAILURE)


@pytest.mark.parametrize("nsid", NSIDS)
def test_compare_errors(host: Host, nsid: int) -> None:
    lba = LBA[nsid]
    nsze = NSZE[nsid]
    assert_status(compare(host, nsid, nsze, bytes(lba)), GENERIC, LBA_OUT_OF_RANGE)
    assert_status(compare(host, nsid, nsze - 1, bytes(2 * lba)), GENERIC, LBA_OUT_OF_RANGE)
    # larger than MDTS (128 KiB), like Read and Write: Invalid Field
    assert_status(compare(host, nsid, 0, bytes(128 * 1024 + lba)), GENERIC, INVALID_FIELD)
    sqe = build_sqe(op.IO_COMPARE, nsid=nsid, prp1=UNMAPPED, **lba_fields(0, 1))
    assert_status(host.io(sqe), GENERIC, DATA_TRANSFER_ERROR)
    assert_still_works(host, nsid)


# every new command: namespaces that do not exist

@pytest.mark.parametrize(
    ("nsid", "sc"),
    # NN is 256: past it Invalid Namespace or Format, a valid NSID with no
    # namespace is inactive, Invalid Field (NVMe Base 2.0 3.2.1.5).
    [(0, INVALID_NSID), (3, INVALID_FIELD), (256, INVALID_FIELD), (257, INVALID_NSID), (0xFFFF_FFFE, INVALID_NSID),
     (0xFFFF_FFFF, INVALID_NSID)],
)  # fmt: skip
def test_invalid_nsid(host: Host, nsid: int, sc: int) -> None:
    buf = host.alloc(4096)
    host.write_mem(buf, dsm_range(0, 1) + copy_range(0, 1))
    sqes = {
        "compare": build_sqe(op.IO_COMPARE, nsid=nsid, prp1=buf, **lba_fields(0, 1)),
        "write zeroes": write_zeroes_sqe(nsid, 0, 1),
        "dsm": build_sqe(op.IO_DATASET_MANAGEMENT, nsid=nsid, prp1=buf, **dsm_cdws(1, DSM_AD)),
        "verify": verify_sqe(nsid, 0, 1),
        "copy": build_sqe(op.IO_COPY, nsid=nsid, prp1=buf + 16, **copy_cdws(100, 1)),
    }
    for name, sqe in sqes.items():
        completion = host.io(sqe)
        assert (completion.sct, completion.sc) == (GENERIC, sc), f"{name}: {completion}"
        assert completion.dnr, f"{name}: {completion}"
    host.free(buf)
    assert_still_works(host)


# the null backend: every command is accepted, sizes are still checked

@TWO_NULL_NAMESPACES
@pytest.mark.parametrize("nsid", NSIDS)
def test_null_backend_accepts_commands(host: Host, nsid: int) -> None:
    lba = host.lba_size(nsid)
    nsze = 4 * 1024 * 1024 // lba
    host.write(nsid, 0, os.urandom(8 * lba))
    assert_ok(write_zeroes(host, nsid, 0, 8, deac=True))
    assert_ok(write_zeroes(host, nsid, 0, nsze))
    assert_ok(dataset_management(host, nsid, [(0, 8), (nsze - 1, 1)]))
    assert_ok(dataset_management(host, nsid, [(0, 8)], attributes=DSM_IDR))
    assert_ok(verify(host, nsid, nsze - 8, 8))
    # zeroes: right whether a null namespace reads as zero or compares nothing
    assert_ok(compare(host, nsid, 0, bytes(4 * lba)))
    assert_ok(copy(host, nsid, 100, [(0, 4), (50, 2)]))
    assert_status(write_zeroes(host, nsid, nsze, 1), GENERIC, LBA_OUT_OF_RANGE)
    assert_status(verify(host, nsid, nsze - 1, 2), GENERIC, LBA_OUT_OF_RANGE)
    assert_status(copy(host, nsid, nsze - 1, [(0, 2)]), GENERIC, LBA_OUT_OF_RANGE)


def test_commands_interleaved_on_one_queue(host: Host) -> None:
    # Many commands of every kind in flight at once: each completes with its
    # own status and the namespace ends up as if they ran in submission order
    # per LBA range (the ranges do not overlap).
    lba = 512
    base = fill(host, 1, 0, 256)
    buf = host.alloc(16 * lba)
    host.write_mem(buf, base[: 16 * lba])
    prp2 = buf + 4096  # 8 KiB from a page boundary: PRP1 and PRP2
    dsm = host.alloc(4096)
    host.write_mem(dsm, dsm_range(64, 16))
    cpy = host.alloc(4096)
    host.write_mem(cpy, copy_range(128, 8) + copy_range(0, 8))
    sqes = [
        (build_sqe(op.IO_COMPARE, nsid=1, prp1=buf, prp2=prp2, **lba_fields(0, 16)), (GENERIC, 0)),
        (write_zeroes_sqe(1, 32, 16), (GENERIC, 0)),
        (build_sqe(op.IO_DATASET_MANAGEMENT, nsid=1, prp1=dsm, **dsm_cdws(1, DSM_AD)), (GENERIC, 0)),
        (verify_sqe(1, 0, 256), (GENERIC, 0)),
        (build_sqe(op.IO_COPY, nsid=1, prp1=cpy, **copy_cdws(200, 2)), (GENERIC, 0)),
        (build_sqe(op.IO_COMPARE, nsid=1, prp1=buf, **lba_fields(1, 1)), (MEDIA, COMPARE_FAILURE)),
        (verify_sqe(1, NSZE[1], 1), (GENERIC, LBA_OUT_OF_RANGE)),
        (build_sqe(op.IO_COPY, nsid=1, prp1=cpy, **copy_cdws(200, 2, desfmt=2)),
         (GENERIC, INVALID_FIELD)),  # format 2h: not supported (format 1h is, for the 64-bit guard)
    ]
    cids = [(host.submit(sqe, 1), want) for sqe, want in sqes * 4]
    for cid, want in cids:
        completion = host.wait(1, cid)
        assert (completion.sct, completion.sc) == want, str(completion)
    expected = bytearray(base)
    expected[32 * lba : 48 * lba] = bytes(16 * lba)
    expected[64 * lba : 80 * lba] = bytes(16 * lba)
    expected[200 * lba : 216 * lba] = base[128 * lba : 136 * lba] + base[: 8 * lba]
    assert read(host, 1, 0, 256) == bytes(expected)
