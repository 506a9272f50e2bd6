"""NVM command set I/O commands beyond Read/Write/Flush, for the test host.

SQE and data-structure builders for Compare (05h), Write Zeroes (08h),
Dataset Management (09h), Verify (0Ch) and Copy (19h), written from NVM
Command Set 2.0 section 3 (not from the device's code), and small drivers
that run one command on a :class:`~nvmefast.testing.Host` with its data
pointer as PRPs or as an SGL. They return the :class:`Completion` rather
than raising, because most callers are checking a status.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nvmefast.testing import sqe as op
from nvmefast.testing.prp import data_pointers
from nvmefast.testing.sgl import (
    DESCRIPTORS_PER_PAGE, SglDescriptor, split_data_blocks,
)
from nvmefast.testing.sqe import Completion, build_sqe

if TYPE_CHECKING:
    from nvmefast.testing.host import Host

# Write Zeroes CDW12 (NVM Command Set 2.0, Figure 68) and Read/Write/Compare CDW12.
CDW12_DEAC = 1 << 25
"""Write Zeroes: Deallocate."""
CDW12_FUA = 1 << 30
"""Force Unit Access."""
CDW12_LR = 1 << 31
"""Limited Retry."""

# Dataset Management CDW11 (NVM Command Set 2.0, Figure 40).
DSM_IDR = 1 << 0
"""Integral Dataset for Read (a hint)."""
DSM_IDW = 1 << 1
"""Integral Dataset for Write (a hint)."""
DSM_AD = 1 << 2
"""Attribute - Deallocate."""

DSM_RANGE_SIZE = 16
"""Bytes per Dataset Management range (NVM Command Set 2.0, Figure 41)."""
COPY_RANGE_SIZE = 32
"""Bytes per Copy Source Range entry, Descriptor Format 0 (NVM Command Set 2.0, Figure 34)."""

_DSM_RANGE = struct.Struct("<IIQ")
assert _DSM_RANGE.size == DSM_RANGE_SIZE
_COPY_RANGE_0 = struct.Struct("<8xQH14x")
assert _COPY_RANGE_0.size == COPY_RANGE_SIZE


def lba_fields(slba: int, nlb: int, cdw12_flags: int = 0) -> dict[str, int]:
    """CDW10-11 SLBA and CDW12 NLB (``nlb`` is 1-based here, written 0's based) plus flags."""
    return {
        "cdw10": slba & 0xFFFF_FFFF,
        "cdw11": (slba >> 32) & 0xFFFF_FFFF,
        "cdw12": ((nlb - 1) & 0xFFFF) | cdw12_flags,
    }


def write_zeroes_sqe(nsid: int, slba: int, nlb: int, *, deac: bool = False, fua: bool = False,
                     lr: bool = False) -> bytes:
    """Write Zeroes (08h): no data pointer."""
    flags = (CDW12_DEAC if deac else 0) | (CDW12_FUA if fua else 0) | (CDW12_LR if lr else 0)
    return build_sqe(op.IO_WRITE_ZEROES, nsid=nsid, **lba_fields(slba, nlb, flags))


def verify_sqe(nsid: int, slba: int, nlb: int) -> bytes:
    """Verify (0Ch): no data pointer."""
    return build_sqe(op.IO_VERIFY, nsid=nsid, **lba_fields(slba, nlb))


def dsm_range(slba: int, nlb: int, attributes: int = 0) -> bytes:
    """One 16-byte Dataset Management range: context attributes, length in LBAs, SLBA."""
    return _DSM_RANGE.pack(attributes & 0xFFFF_FFFF, nlb & 0xFFFF_FFFF, slba & (2**64 - 1))


def copy_range(slba: int, nlb: int) -> bytes:
    """One 32-byte Copy Source Range entry, format 0 (``nlb`` 1-based, written 0's based)."""
    return _COPY_RANGE_0.pack(slba & (2**64 - 1), (nlb - 1) & 0xFFFF)


def dsm_cdws(ranges: int, attributes: int) -> dict[str, int]:
    """CDW10 NR (0's based) and CDW11 attributes of Dataset Management."""
    return {"cdw10": (ranges - 1) & 0xFF, "cdw11": attributes}


def copy_cdws(sdlba: int, ranges: int, desfmt: int = 0, cdw12_flags: int = 0) -> dict[str, int]:
    """CDW10-11 SDLBA and CDW12 NR (0's based) and Descriptor Format of Copy."""
    return {
        "cdw10": sdlba & 0xFFFF_FFFF,
        "cdw11": (sdlba >> 32) & 0xFFFF_FFFF,
        "cdw12": ((ranges - 1) & 0xFF) | (desfmt & 0xF) << 8 | cdw12_flags,
    }


@contextmanager
def data_buffer(host: Host, data: bytes | int, *, sgl: bool | int = False,
                per_segment: int = DESCRIPTORS_PER_PAGE) -> Iterator[tuple[int, dict[str, int]]]:
    """Guest memory holding ``data`` (or ``data`` zeroed bytes) and the DPTR fields to reach it.

    Yields ``(iova, dptr)``; ``dptr`` goes into :func:`build_sqe` (PRP1/PRP2,
    or SGL1 and PSDT with ``sgl``). ``sgl=True`` is one Data Block; an int
    ``n`` splits the buffer into ``n`` Data Blocks in segment lists of
    ``per_segment`` descriptors. Everything is freed on exit.
    """
    length = data if isinstance(data, int) else len(data)
    iova = host.alloc(max(length, 1))
    if not isinstance(data, int):
        host.write_mem(iova, data)
    sgl_pages: list[int] = []
    prp_pages: list[int] = []
    try:
        if sgl:
            count = 1 if sgl is True else int(sgl)
            sizes = [length // count] * count
            sizes[-1] += length - sum(sizes)
            sgls = host.build_sgl(split_data_blocks(iova, sizes), per_segment=per_segment)
            sgl_pages = sgls.segment_lists
            dptr = sgls.dptr()
        else:
            prps = host.build_prps(data_pointers(iova, length))
            prp_pages = prps.list_pages
            dptr = {"prp1": prps.prp1, "prp2": prps.prp2}
        yield iova, dptr
    finally:
        for page in sgl_pages + prp_pages:
            host.free(page)
        host.free(iova)


def compare(host: Host, nsid: int, slba: int, data: bytes, *, qid: int = 1,
            sgl: bool | int = False) -> Completion:
    """Compare (05h) ``data`` (whole blocks) with the namespace from ``slba``."""
    nlb = len(data) // host.lba_size(nsid)
    with data_buffer(host, data, sgl=sgl) as (_, dptr):
        return host.io(build_sqe(op.IO_COMPARE, nsid=nsid, **lba_fields(slba, nlb), **dptr), qid)


def write_zeroes(host: Host, nsid: int, slba: int, nlb: int, *, qid: int = 1, deac: bool = False,
                 fua: bool = False, lr: bool = False) -> Completion:
    """Write Zeroes (08h) ``nlb`` blocks from ``slba``."""
    return host.io(write_zeroes_sqe(nsid, slba, nlb, deac=deac, fua=fua, lr=lr), qid)


def verify(host: Host, nsid: int, slba: int, nlb: int, *, qid: int = 1) -> Completion:
    """Verify (0Ch) ``nlb`` blocks from ``slba``."""
    return host.io(verify_sqe(nsid, slba, nlb), qid)


def dataset_management(host: Host, nsid: int, ranges: Sequence[tuple[int, int]], *,
                       attributes: int = DSM_AD, qid: int = 1,
                       sgl: bool | int = False) -> Completion:
    """Dataset Management (09h) over ``(slba, nlb)`` ranges with CDW11 ``attributes``."""
    payload = b"".join(dsm_range(slba, nlb) for slba, nlb in ranges)
    with data_buffer(host, payload, sgl=sgl) as (_, dptr):
        sqe = build_sqe(op.IO_DATASET_MANAGEMENT, nsid=nsid, **dsm_cdws(len(ranges), attributes),
                        **dptr)
        return host.io(sqe, qid)


def copy(host: Host, nsid: int, sdlba: int, ranges: Sequence[tuple[int, int]], *,
         desfmt: int = 0, qid: int = 1, sgl: bool | int = False) -> Completion:
    """Copy (19h) the ``(slba, nlb)`` source ranges (format 0 entries) to ``sdlba`` onwards."""
    payload = b"".join(copy_range(slba, nlb) for slba, nlb in ranges)
    with data_buffer(host, payload, sgl=sgl) as (_, dptr):
        sqe = build_sqe(op.IO_COPY, nsid=nsid, **copy_cdws(sdlba, len(ranges), desfmt), **dptr)
        return host.io(sqe, qid)


def sgl_io(host: Host, opcode: int, nsid: int, slba: int, nlb: int,
           descriptors: Sequence[SglDescriptor], *, qid: int = 1,
           per_segment: int = DESCRIPTORS_PER_PAGE) -> Completion:
    """Read, Write or Compare with the data described by ``descriptors`` (Data Block /
    Bit Bucket), chained into segment lists of ``per_segment`` descriptors."""
    sgls = host.build_sgl(descriptors, per_segment=per_segment)
    try:
        return host.io(build_sqe(opcode, nsid=nsid, **lba_fields(slba, nlb), **sgls.dptr()), qid)
    finally:
        host.free_sgl(sgls)


__all__ = [
    "CDW12_DEAC",
    "CDW12_FUA",
    "CDW12_LR",
    "COPY_RANGE_SIZE",
    "DSM_AD",
    "DSM_IDR",
    "DSM_IDW",
    "DSM_RANGE_SIZE",
    "compare",
    "copy",
    "copy_cdws",
    "copy_range",
    "data_buffer",
    "dataset_management",
    "dsm_cdws",
    "dsm_range",
    "lba_fields",
    "sgl_io",
    "verify",
    "verify_sqe",
    "write_zeroes",
    "write_zeroes_sqe",
]
