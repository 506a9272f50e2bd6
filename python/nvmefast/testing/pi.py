"""Metadata and end-to-end protection for the test host: I/O with PRINFO,
reference and application tags, a separate metadata buffer or extended LBAs.

Written from NVM Command Set 1.0 (Figure 9 PRINFO; Figures 21-25 and their
like for Read, Write, Verify, Write Zeroes: EILBRT/ILBRT in CDW14 with bits
47:32 in CDW3 for the 64-bit guard, ELBAT/ELBATM in CDW15; 5.2.1 PI formats;
Figures 34/35 Copy source ranges), not from the device's code.

A namespace's format comes from Identify (CNS 00h and CNS 05h CSI 00h):
:func:`namespace_format`. :func:`io` runs one command and lays out the
buffers as the spec says: data and metadata interleaved in the data buffer
for an extended LBA, else the data at DPTR and the metadata in one
contiguous buffer at MPTR (or behind an SGL descriptor with
``mptr_sgl=True``); with PRACT and metadata no larger than the PI, no
metadata moves at all. Results come back split into data and metadata
either way. Like :mod:`nvmefast.testing.nvm`, the drivers return the
completion rather than raise, since most callers check a status::

    fmt = pi.namespace_format(host, 1)
    r = pi.write(host, 1, 0, data, prinfo=pi.PRACT | pi.PRCHK_GUARD | pi.PRCHK_REF, ilbrt=0)
    r = pi.read(host, 1, 0, 1, prinfo=0)   # r.metadata: the tuple the controller generated
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict, Unpack

from nvmefast.testing import sqe as op
from nvmefast.testing.identify import IdentifyNamespaceNvm
from nvmefast.testing.nvm import data_buffer, lba_fields
from nvmefast.testing.sgl import data_block
from nvmefast.testing.sqe import Completion, build_sqe

if TYPE_CHECKING:
    from nvmefast.testing.host import Host

__all__ = [
    "PRACT",
    "PRCHK_ALL",
    "PRCHK_APP",
    "PRCHK_GUARD",
    "PRCHK_REF",
    "PiFormat",
    "PiOptions",
    "PiResult",
    "compare",
    "copy",
    "copy_range_f0",
    "copy_range_f1",
    "enable_lbafee",
    "format_nvm",
    "io",
    "namespace_format",
    "pi_cdws",
    "read",
    "verify",
    "write",
    "write_zeroes",
]

# PRINFO (Figure 9) as a 4-bit value: CDW12 bits 29:26 (Copy PRINFOR: bits 15:12).
PRACT = 0b1000
"""Protection Information Action: insert PI on writes, check and strip it on reads."""
PRCHK_GUARD = 0b0100
"""Check the guard."""
PRCHK_APP = 0b0010
"""Check the application tag (the bits ELBATM sets)."""
PRCHK_REF = 0b0001
"""Check the reference tag."""
PRCHK_ALL = PRCHK_GUARD | PRCHK_APP | PRCHK_REF
"""Check all three."""

_PRINFO_SHIFT = 26
_PRINFOR_SHIFT = 12
_CNS_CSI_NAMESPACE = 0x05
_ADMIN_FORMAT_NVM = 0x80
_FEATURE_HOST_BEHAVIOR = 0x16
_HOST_BEHAVIOR_SIZE = 512


def enable_lbafee(host: Host, lbafee: bool = True) -> Completion:
    """Set Features Host Behavior Support (16h) with LBA Format Extension Enable, as Linux does
    at bring-up when CTRATT.ELBAS is set (ACRE and ETDAS 0)."""
    buf = bytearray(_HOST_BEHAVIOR_SIZE)
    buf[2] = int(lbafee)
    with data_buffer(host, bytes(buf)) as (_, dptr):
        return host.admin(build_sqe(op.ADMIN_SET_FEATURES, cdw10=_FEATURE_HOST_BEHAVIOR, **dptr))


def format_nvm(host: Host, nsid: int, lbaf: int, *, mset: bool = False, pi: int = 0, pil: bool = False,
               ses: int = 0, timeout: float = 30) -> Completion:
    """Format NVM (80h): LBA format ``lbaf`` (bits 5:4 go to LBAFU), MSET, PI, PIL, SES."""
    cdw10 = (lbaf & 0xF) | int(mset) << 4 | (pi & 0x7) << 5 | int(pil) << 8 | (ses & 0x7) << 9
    cdw10 |= ((lbaf >> 4) & 0x3) << 12
    return host.admin(build_sqe(_ADMIN_FORMAT_NVM, nsid=nsid, cdw10=cdw10), timeout)


@dataclasses.dataclass(frozen=True)
class PiFormat:
    """A namespace's format as the host learns it from Identify."""

    lba_size: int
    metadata_size: int
    extended_lba: bool
    pi_type: int
    pi_first: bool
    guard: str
    """``crc16`` or ``crc64`` (ELBAF PIF of the format in use)."""

    @property
    def pi_size(self) -> int:
        """Bytes of one PI tuple (8 or 16), 0 without PI."""
        if not self.pi_type:
            return 0
        return 8 if self.guard == "crc16" else 16

    @property
    def pi_offset(self) -> int:
        """Where the PI starts in each block's metadata."""
        return 0 if self.pi_first else self.metadata_size - self.pi_size

    def stripped(self, prinfo: int) -> bool:
        """Whether no metadata moves: PRACT on a PI namespace whose metadata is the PI alone."""
        return bool(prinfo & PRACT) and self.pi_type != 0 and self.metadata_size == self.pi_size

    def metadata_moved(self, prinfo: int) -> int:
        """Metadata bytes per block the command transfers."""
        return 0 if self.stripped(prinfo) else self.metadata_size


def namespace_format(host: Host, nsid: int) -> PiFormat:
    """The format of ``nsid`` from Identify Namespace and the NVM Command Set Identify Namespace."""
    ns = host.identify_namespace(nsid)
    guard = "crc16"
    if ns.metadata_size:
        nvm = IdentifyNamespaceNvm.parse(host.identify(_CNS_CSI_NAMESPACE, nsid))
        guard = nvm.elbaf[ns.format_index].guard
    return PiFormat(ns.lba_size, ns.metadata_size, ns.extended_lba, ns.pi_type, ns.pi_first, guard)


def pi_cdws(fmt: PiFormat, prinfo: int = 0, ilbrt: int = 0, lbat: int = 0, lbatm: int = 0,
            *, prinfo_shift: int = _PRINFO_SHIFT) -> dict[str, int]:
    """CDW3/CDW12 (PRINFO only)/CDW14/CDW15: the (expected) initial reference tag, the
    (expected) application tag and mask. With the 64-bit guard the reference tag has 48 bits,
    bits 47:32 in CDW3 15:0 (no storage tag: STS 0)."""
    cdw3 = (ilbrt >> 32) & 0xFFFF if fmt.guard == "crc64" else 0
    return {
        "cdw3": cdw3,
        "cdw12": (prinfo & 0xF) << prinfo_shift,
        "cdw14": ilbrt & 0xFFFF_FFFF,
        "cdw15": (lbatm & 0xFFFF) << 16 | (lbat & 0xFFFF),
    }


@dataclasses.dataclass(frozen=True)
class PiResult:
    """One command's completion and, for reads, what came back, split per block."""

    completion: Completion
    data: bytes = b""
    metadata: bytes = b""
    """Every block's transferred metadata, in block order."""

    @property
    def ok(self) -> bool:
        """Whether the command succeeded."""
        return self.completion.ok


def _interleave(fmt: PiFormat, data: bytes, metadata: bytes, ms: int) -> bytes:
    lba = fmt.lba_size
    return b"".join(data[i * lba : (i + 1) * lba] + metadata[i * ms : (i + 1) * ms] for i in range(len(data) // lba))


def _split(fmt: PiFormat, raw: bytes, ms: int) -> tuple[bytes, bytes]:
    step = fmt.lba_size + ms
    blocks = [raw[i : i + step] for i in range(0, len(raw), step)]
    return b"".join(b[: fmt.lba_size] for b in blocks), b"".join(b[fmt.lba_size :] for b in blocks)


class PiOptions(TypedDict, total=False):
    """The keywords of :func:`io`, :func:`read`, :func:`write` and :func:`compare`."""

    prinfo: int
    """PRINFO: :data:`PRACT` and the ``PRCHK_*`` bits."""
    ilbrt: int
    """(Expected) Initial Logical Block Reference Tag."""
    lbat: int
    """(Expected) Logical Block Application Tag."""
    lbatm: int
    """(Expected) Logical Block Application Tag Mask."""
    cdw12_flags: int
    """More CDW12 bits (FUA, LR, ...)."""
    sgl: bool
    """The data by SGL (one Data Block) instead of PRPs."""
    mptr_sgl: bool
    """PSDT 10b: MPTR points at one SGL Data Block descriptor of the metadata."""
    mptr: int
    """The metadata pointer to send instead of the buffer's (bad-pointer tests)."""
    fmt: PiFormat
    """The namespace's format, if known (else read from Identify)."""
    qid: int
    """The I/O queue (default 1)."""


def io(host: Host, opcode: int, nsid: int, slba: int, nlb: int, data: bytes | None = None,
       metadata: bytes | None = None, **kw: Unpack[PiOptions]) -> PiResult:
    """Run Read, Write or Compare (``data`` given: written or compared) with metadata and PI fields.

    ``metadata`` defaults to zeroes (``nlb`` times what moves per block).
    """
    fmt = kw.get("fmt") or namespace_format(host, nsid)
    prinfo = kw.get("prinfo", 0)
    ms = fmt.metadata_moved(prinfo)
    reads = data is None
    data = bytes(nlb * fmt.lba_size) if data is None else data
    metadata = bytes(nlb * ms) if metadata is None else metadata
    fields = lba_fields(slba, nlb, kw.get("cdw12_flags", 0))
    cdws = pi_cdws(fmt, prinfo, kw.get("ilbrt", 0), kw.get("lbat", 0), kw.get("lbatm", 0))
    fields["cdw12"] |= cdws.pop("cdw12")
    qid, sgl, mptr_sgl, mptr = kw.get("qid", 1), kw.get("sgl", False), kw.get("mptr_sgl", False), kw.get("mptr")
    if fmt.extended_lba:
        with data_buffer(host, _interleave(fmt, data, metadata, ms), sgl=sgl) as (iova, dptr):
            c = host.io(build_sqe(opcode, nsid=nsid, **fields, **cdws, **dptr), qid)
            raw = host.read_mem(iova, nlb * (fmt.lba_size + ms)) if reads else b""
        return PiResult(c, *_split(fmt, raw, ms)) if reads else PiResult(c)
    md_iova = host.alloc(max(len(metadata), 1))
    host.write_mem(md_iova, metadata)
    desc_iova = 0
    try:
        pointer = md_iova
        psdt_fields: dict[str, int] = {}
        if mptr_sgl:
            desc_iova = host.alloc(16, align=16)
            host.write_mem(desc_iova, data_block(md_iova, len(metadata)).encode())
            pointer, psdt_fields = desc_iova, {"psdt": 0b10}
        if mptr is not None:
            pointer = mptr
        with data_buffer(host, data, sgl=sgl or mptr_sgl) as (iova, dptr):
            dptr = {**dptr, **psdt_fields}
            c = host.io(build_sqe(opcode, nsid=nsid, mptr=pointer, **fields, **cdws, **dptr), qid)
            got = host.read_mem(iova, len(data)) if reads else b""
        return PiResult(c, got, host.read_mem(md_iova, len(metadata)) if reads else b"")
    finally:
        host.free(md_iova)
        if desc_iova:
            host.free(desc_iova)


def read(host: Host, nsid: int, slba: int, nlb: int, **kw: Unpack[PiOptions]) -> PiResult:
    """Read (02h) ``nlb`` blocks with their metadata (keywords: :class:`PiOptions`)."""
    return io(host, op.IO_READ, nsid, slba, nlb, **kw)


def write(host: Host, nsid: int, slba: int, data: bytes, metadata: bytes | None = None,
          **kw: Unpack[PiOptions]) -> PiResult:
    """Write (01h) ``data`` (whole blocks) and ``metadata`` (keywords: :class:`PiOptions`)."""
    kw["fmt"] = kw.get("fmt") or namespace_format(host, nsid)
    return io(host, op.IO_WRITE, nsid, slba, len(data) // kw["fmt"].lba_size, data, metadata, **kw)


def compare(host: Host, nsid: int, slba: int, data: bytes, metadata: bytes | None = None,
            **kw: Unpack[PiOptions]) -> PiResult:
    """Compare (05h) ``data`` and ``metadata`` with the namespace (keywords: :class:`PiOptions`)."""
    kw["fmt"] = kw.get("fmt") or namespace_format(host, nsid)
    return io(host, op.IO_COMPARE, nsid, slba, len(data) // kw["fmt"].lba_size, data, metadata, **kw)


def _no_data(host: Host, opcode: int, nsid: int, slba: int, nlb: int, prinfo: int, ilbrt: int, lbat: int,
             lbatm: int, cdw12_flags: int, fmt: PiFormat | None, qid: int) -> PiResult:
    fmt = fmt or namespace_format(host, nsid)
    fields = lba_fields(slba, nlb, cdw12_flags)
    cdws = pi_cdws(fmt, prinfo, ilbrt, lbat, lbatm)
    fields["cdw12"] |= cdws.pop("cdw12")
    return PiResult(host.io(build_sqe(opcode, nsid=nsid, **fields, **cdws), qid))


def verify(host: Host, nsid: int, slba: int, nlb: int, *, prinfo: int = 0, ilbrt: int = 0, lbat: int = 0,
           lbatm: int = 0, cdw12_flags: int = 0, fmt: PiFormat | None = None, qid: int = 1) -> PiResult:
    """Verify (0Ch): the stored blocks' PI checked per PRCHK, nothing transferred."""
    return _no_data(host, op.IO_VERIFY, nsid, slba, nlb, prinfo, ilbrt, lbat, lbatm, cdw12_flags, fmt, qid)


def write_zeroes(host: Host, nsid: int, slba: int, nlb: int, *, prinfo: int = 0, ilbrt: int = 0,
                 lbat: int = 0, lbatm: int = 0, cdw12_flags: int = 0, fmt: PiFormat | None = None,
                 qid: int = 1) -> PiResult:
    """Write Zeroes (08h); ``cdw12_flags`` may hold DEAC (``nvm.CDW12_DEAC``)."""
    return _no_data(host, op.IO_WRITE_ZEROES, nsid, slba, nlb, prinfo, ilbrt, lbat, lbatm, cdw12_flags,
                    fmt, qid)


def copy_range_f0(slba: int, nlb: int, eilbrt: int = 0, elbat: int = 0, elbatm: int = 0) -> bytes:
    """A 32-byte Copy Source Range entry, Descriptor Format 0h (Figure 34): the 32-bit EILBRT
    at bytes 27:24, ELBAT 29:28, ELBATM 31:30."""
    return struct.pack("<8xQH6xIHH", slba, (nlb - 1) & 0xFFFF, eilbrt & 0xFFFF_FFFF, elbat, elbatm)


def copy_range_f1(slba: int, nlb: int, eilbrt: int = 0, elbat: int = 0, elbatm: int = 0) -> bytes:
    """A 40-byte Copy Source Range entry, Descriptor Format 1h (Figure 35, 64-bit guard): the
    80-bit ELBST/EILBRT field at bytes 35:26 most significant byte first, as libnvme
    (``nvme_init_copy_range_f1``) writes it, the 48-bit EILBRT in its last six bytes."""
    tags = (eilbrt & 0xFFFF_FFFF_FFFF).to_bytes(10, "big")
    return struct.pack("<8xQH8x", slba, (nlb - 1) & 0xFFFF) + tags + struct.pack("<HH", elbat, elbatm)


def copy(host: Host, nsid: int, sdlba: int, ranges: Sequence[bytes], *, desfmt: int = 0, prinfor: int = 0,
         prinfow: int = 0, ilbrt: int = 0, lbat: int = 0, lbatm: int = 0, fmt: PiFormat | None = None,
         qid: int = 1) -> PiResult:
    """Copy (19h) the source ranges (entries from :func:`copy_range_f0` / :func:`copy_range_f1`) to
    ``sdlba``: PRINFOR (CDW12 15:12) for the reads, PRINFOW (CDW12 29:26), ILBRT, LBAT and LBATM
    for the write."""
    fmt = fmt or namespace_format(host, nsid)
    cdws = pi_cdws(fmt, prinfow, ilbrt, lbat, lbatm)
    cdw12 = cdws.pop("cdw12") | (prinfor & 0xF) << _PRINFOR_SHIFT | (desfmt & 0xF) << 8 | ((len(ranges) - 1) & 0xFF)
    with data_buffer(host, b"".join(ranges)) as (_, dptr):
        sqe = build_sqe(op.IO_COPY, nsid=nsid, cdw10=sdlba & 0xFFFF_FFFF, cdw11=sdlba >> 32, cdw12=cdw12,
                        **cdws, **dptr)
        return PiResult(host.io(sqe, qid))
