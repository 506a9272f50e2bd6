"""Writes the seed corpora of both fuzz targets: ``fuzz/corpus/sqe/`` and
``tests/fuzz/corpus/vfio_user/``. Run: ``python3 tests/fuzz/make_seeds.py``.

An ``sqe`` seed is a 64-byte SQE followed by guest memory bytes, which the
harness lays out from IOVA 0 of region A (and the first 8 KiB again in
read-only region B at 0x20000 and remote region C at 0x30000): see
``fuzz/src/model.rs``. A loss seed (``LOSS`` first, see ``fuzz/src/loss.rs``)
carries a few SQEs and a plan that truncates region E (an unsealed memfd at
0x40000, 16 KiB, holding the first 16 KiB of guest bytes) under the device.
A ``vfio_user`` seed is byte 0 (which messages carry
fds, see ``fuzz_vfio_user.py``) followed by a client's message stream.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from nvmefast.vfio_user import protocol as p  # noqa: E402

# -- sqe ---------------------------------------------------------------------------

PAGE = 4096
B, C, E = 0x2_0000, 0x3_0000, 0x4_0000
E_LEN = 0x4000

READ, WRITE, FLUSH, COMPARE, WRITE_ZEROES, DSM, VERIFY, COPY = 0x02, 0x01, 0x00, 0x05, 0x08, 0x09, 0x0C, 0x19
WRITE_UNCOR = 0x04


def make_sqe(opcode: int, cid: int, nsid: int, *, prp1: int = 0, prp2: int = 0, cdw10: int = 0,
        cdw11: int = 0, cdw12: int = 0, cdw13: int = 0, psdt: int = 0, fuse: int = 0, mptr: int = 0,
        cdw14: int = 0, cdw15: int = 0) -> bytes:
    """A 64-byte SQE with the given fields (PRP1/PRP2 double as SGL1)."""
    dw0 = opcode | (fuse << 8) | (psdt << 14) | (cid << 16)
    return struct.pack("<IIQQQQIIIIII", dw0, nsid, 0, mptr, prp1, prp2, cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)


def lba(opcode: int, nsid: int, slba: int, nlb: int, **kw: int) -> bytes:
    """An LBA command: SLBA in CDW10-11, 0's based NLB in CDW12."""
    return make_sqe(opcode, 1, nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=(nlb - 1) | kw.pop("cdw12", 0), **kw)


def sgl_desc(addr: int, length: int, kind: int) -> bytes:
    """One 16-byte SGL descriptor (type in identifier bits 7:4, subtype 0)."""
    return struct.pack("<QI3xB", addr, length, kind << 4)


def sgl1(addr: int, length: int, kind: int) -> dict[str, int]:
    """SGL1 as the prp1/prp2 keyword arguments of :func:`sqe`."""
    lo, hi = struct.unpack("<QQ", sgl_desc(addr, length, kind))
    return {"prp1": lo, "prp2": hi, "psdt": 1}


def guest(*parts: tuple[int, bytes]) -> bytes:
    """Guest bytes from IOVA 0 with each (offset, bytes) placed."""
    end = max((o + len(b) for o, b in parts), default=0)
    mem = bytearray(end)
    for o, b in parts:
        mem[o : o + len(b)] = b
    return bytes(mem)


def qwords(*vals: int) -> bytes:
    """Little-endian u64s (PRP list entries)."""
    return struct.pack(f"<{len(vals)}Q", *vals)


def pattern(n: int) -> bytes:
    """Recognisable non-zero data."""
    return bytes((i * 7 + 3) % 255 + 1 for i in range(n))


PRACT, PR_G, PR_A, PR_R = 8, 4, 2, 1
PI_DATA = guest((0x1000, pattern(0x1000)), (0x3000, sgl_desc(0x2000, 8, 0)), (0x3FFF, b"\0"))
PI_SEEDS: dict[str, bytes] = {
    "pi-write-pract": make_sqe(WRITE, 0x20, 6, prp1=0x1000, mptr=0x2000, cdw12=(PRACT | PR_G | PR_R) << 26) + PI_DATA,
    "pi-read-prchk": make_sqe(READ, 0x20, 6, prp1=0x1000, mptr=0x2000, cdw12=(PR_G | PR_A | PR_R) << 26,
                              cdw15=0xFFFF0000) + PI_DATA,
    "pi-write-bad-guard": make_sqe(WRITE, 0x20, 6, prp1=0x1000, mptr=0x2000, cdw12=PR_G << 26) + PI_DATA,
    "pi-read-metadata-sgl": make_sqe(READ, 0x20, 6, mptr=0x3000, cdw12=PR_G << 26,
                                     **{**sgl1(0x1000, 512, 0), "psdt": 2}) + PI_DATA,
    "pi-read-bad-ilbrt": make_sqe(READ, 0x20, 6, prp1=0x1000, mptr=0x2000, cdw12=PR_R << 26, cdw14=5) + PI_DATA,
    "pi-write-zeroes-prchk": make_sqe(WRITE_ZEROES, 0x20, 6, cdw12=(PRACT | PR_G) << 26) + PI_DATA,
    "pi-verify-pract": make_sqe(VERIFY, 0x20, 6, cdw12=(PRACT | PR_G) << 26) + PI_DATA,
    "pi-compare": make_sqe(COMPARE, 0x20, 6, prp1=0x1000, mptr=0x2000, cdw12=(PR_G | PR_R) << 26) + PI_DATA,
    "pi-mptr-unmapped": make_sqe(READ, 0x20, 6, prp1=0x1000, mptr=0x1_0000) + PI_DATA,
}
NEVER = 0xFF
"""A ``cut`` past every command (taken modulo commands + 2, 0xFF never lands on 'after the last')."""


def loss(*sqes: bytes, cut: int, size: int, guest_bytes: bytes = b"", reinstall: bool = False,
         decoy: bool = False, readonly: bool = False) -> bytes:
    """A loss input: up to 4 SQEs; region E truncated to ``size`` bytes before
    command ``cut`` (``len(sqes)``: after the last; :data:`NEVER`: never)."""
    assert 1 <= len(sqes) <= 4 and 0 <= size <= E_LEN
    if cut == NEVER:
        cut = len(sqes) + 1
    flags = (len(sqes) - 1) | reinstall << 2 | decoy << 3 | readonly << 4
    return b"LOSS" + bytes([flags, cut]) + struct.pack("<H", size) + b"".join(sqes) + guest_bytes


def sanitize(sqe: bytes, *, overwrite: bool = False, passes: int = 1, invert: bool = False,
             deallocate: bool = True, pattern: int = 0, guest_bytes: bytes = b"") -> bytes:
    """A sanitize input (fuzz/src/sanitize.rs): ``sqe`` submitted while a sanitize runs."""
    flags = overwrite | invert << 1 | (not deallocate) << 2
    return b"SANI" + bytes([flags, passes - 1]) + struct.pack("<I", pattern) + sqe + guest_bytes


SQE_SEEDS: dict[str, bytes] = {
    "write-prp1-offset": lba(WRITE, 1, 0, 1, prp1=0x200) + guest((0x200, pattern(512))),
    "read-one-page": lba(READ, 1, 8, 8, prp1=0x1000),
    "read-prp2-page": lba(READ, 1, 2, 9, prp1=0xE00, prp2=0x2000),
    "read-prp-list": lba(READ, 1, 0, 16, prp1=0x800, prp2=0x40) + guest((0x40, qwords(0x2000, 0x3000))),
    "write-chained-list": lba(WRITE, 3, 0, 16, prp1=0x4000, prp2=0xFF0)
    + guest((0xFF0, qwords(0x5000, 0x3000)), (0x3000, qwords(*range(0x6000, 0x6000 + 14 * PAGE, PAGE)))),
    "read-into-readonly": lba(READ, 1, 0, 1, prp1=B),
    "write-from-readonly": lba(WRITE, 1, 4, 2, prp1=B + 0x400) + guest((0x400, pattern(1024))),
    "read-remote": lba(READ, 3, 1, 1, prp1=C),
    "write-remote-list": lba(WRITE, 1, 0, 24, prp1=C + 0x800, prp2=C + 0x10)
    + guest((0x10, qwords(C + 0x1000, 0x1000, 0x2000))),
    "bad-prp1-offset": lba(READ, 1, 0, 1, prp1=0x202),
    "bad-prp2-offset": lba(READ, 1, 0, 9, prp1=0x0, prp2=0x1008),
    "bad-list-entry": lba(READ, 1, 0, 24, prp1=0x0, prp2=0x100) + guest((0x100, qwords(0x1000, 0x2010))),
    "unmapped-list": lba(WRITE, 1, 0, 24, prp1=0x0, prp2=0x9_0000),
    "self-list-null": lba(READ, 2, 0, 256, prp1=0x0, prp2=0x1000) + guest((0x1000, qwords(*([0x1000] * 512)))),
    "lba-out-of-range": lba(WRITE, 1, 127, 2, prp1=0x0),
    "mdts-exceeded": lba(READ, 2, 0, 512, prp1=0x0),
    "compare-equal": lba(COMPARE, 2, 0, 1, prp1=0x0),
    "compare-ram": lba(COMPARE, 1, 0, 1, prp1=0x0) + guest((0, pattern(512))),
    "write-zeroes": lba(WRITE_ZEROES, 1, 3, 5),
    "write-zeroes-4k": lba(WRITE_ZEROES, 3, 15, 1),
    "verify": lba(VERIFY, 1, 0, 128),
    "flush": make_sqe(FLUSH, 1, 1),
    "flush-broadcast": make_sqe(FLUSH, 1, 0xFFFFFFFF),
    "bad-nsid": lba(READ, 9, 0, 1, prp1=0x0),
    "fused": lba(WRITE, 1, 0, 1, prp1=0x0, fuse=1),
    "bad-opcode": make_sqe(0x7F, 1, 1),
    "psdt-reserved": lba(READ, 1, 0, 1, prp1=0x0, psdt=3),
    "dsm-deallocate": make_sqe(DSM, 1, 1, prp1=0x0, cdw10=1, cdw11=1 << 2)
    + guest((0, struct.pack("<IIQ", 0, 4, 10) + struct.pack("<IIQ", 0, 2, 100))),
    "dsm-out-of-range": make_sqe(DSM, 1, 3, prp1=0x0, cdw10=0, cdw11=1 << 2) + guest((0, struct.pack("<IIQ", 0, 4, 14))),
    "copy-two-ranges": make_sqe(COPY, 1, 1, prp1=0x0, cdw10=64, cdw12=1)
    + guest((0, struct.pack("<8xQH14x", 0, 7) + struct.pack("<8xQH14x", 120, 3))),
    "copy-overlap": make_sqe(COPY, 1, 3, prp1=0x0, cdw10=2, cdw12=0) + guest((0, struct.pack("<8xQH14x", 0, 3))),
    "copy-bad-format": make_sqe(COPY, 1, 1, prp1=0x0, cdw12=1 << 8),
    "sgl-data-block": lba(READ, 1, 0, 1, **sgl1(0x1000, 512, 0)),
    "sgl-remote-block": lba(WRITE, 1, 0, 1, **sgl1(C, 512, 0)),
    "sgl-segments": lba(READ, 1, 0, 4, **sgl1(0x100, 48, 2))
    + guest(
        (0x100, sgl_desc(0x2000, 512, 0) + sgl_desc(0, 512, 1) + sgl_desc(0x200, 32, 3)),
        (0x200, sgl_desc(C + 0x200, 512, 0) + sgl_desc(0x3000, 512, 0)),
    ),
    "sgl-write-readonly-list": lba(WRITE, 3, 0, 1, **sgl1(B + 0x100, 32, 3))
    + guest((0x100, sgl_desc(0x2000, 2048, 0) + sgl_desc(B, 2048, 0))),
    "sgl-self-segment": lba(READ, 1, 0, 1, **sgl1(0x100, 16, 2)) + guest((0x100, sgl_desc(0x100, 16, 2))),
    "sgl-bit-bucket-write": lba(WRITE, 1, 0, 1, **sgl1(0, 512, 1)),
    "sgl-short": lba(READ, 1, 0, 2, **sgl1(0x1000, 512, 0)),
    "sgl-keyed": lba(READ, 1, 0, 1, **sgl1(0x1000, 512, 4)),
    # Namespace 4 is a file (io_uring), 5 the embedder's storage (fuzz/src/storage.rs).
    "write-file": lba(WRITE, 4, 1, 2, prp1=0x0) + guest((0, pattern(1024))),
    "read-file-list": lba(READ, 4, 0, 16, prp1=0x800, prp2=0x40) + guest((0x40, qwords(0x2000, 0x3000))),
    "write-custom": lba(WRITE, 5, 2, 3, prp1=0x200) + guest((0x200, pattern(1536))),
    "read-custom-list": lba(READ, 5, 0, 16, prp1=0x800, prp2=0x40) + guest((0x40, qwords(0x2000, 0x3000))),
    "write-zeroes-custom": lba(WRITE_ZEROES, 5, 3, 5),
    "dsm-deallocate-custom": make_sqe(DSM, 1, 5, prp1=0x0, cdw10=0, cdw11=1 << 2) + guest((0, struct.pack("<IIQ", 0, 4, 10))),
    "copy-custom": make_sqe(COPY, 1, 5, prp1=0x0, cdw10=64, cdw12=0) + guest((0, struct.pack("<8xQH14x", 0, 7))),
    # Found by fuzzing (issue 22), written out: each adds edges the seeds above miss.
    "write-file-from-remote": lba(WRITE, 4, 0, 1, prp1=C),
    "compare-file": lba(COMPARE, 4, 0, 2, prp1=0x0),
    "write-zeroes-file": lba(WRITE_ZEROES, 4, 0, 1),
    "flush-file": make_sqe(FLUSH, 1, 4),
    "copy-file": make_sqe(COPY, 1, 4, prp1=0x0, cdw12=3),
    "dsm-file-remote-list": make_sqe(DSM, 1, 4, prp1=C + 0x700, cdw10=0x8D, cdw11=1 << 2),
    "copy-list-in-readonly": make_sqe(COPY, 1, 3, prp1=B, cdw10=0xFFFFFFFF, cdw11=0xFFFFFFFF),
    # The zoned namespace (NSID 7: zones of 16 LBAs, 12 writable, MOR 2, MAR 3).
    "zns-write-at-wp": lba(WRITE, 7, 0, 4, prp1=0x0) + pattern(2048),
    "zns-write-off-wp": lba(WRITE, 7, 3, 1, prp1=0x0),
    "zns-write-past-cap": lba(WRITE, 7, 16, 13, prp1=0x0, prp2=0x1000),
    "zns-read-across-zones": lba(READ, 7, 15, 2, prp1=0x0),
    "zns-append": lba(0x7D, 7, 32, 2, prp1=0x0) + pattern(1024),
    "zns-append-not-zone-start": lba(0x7D, 7, 33, 1, prp1=0x0),
    "zns-append-over-zasl": lba(0x7D, 7, 32, 17, prp1=0x0, prp2=0x1000),
    "zns-append-conventional": lba(0x7D, 1, 0, 1, prp1=0x0),
    "zns-open": make_sqe(0x79, 1, 7, cdw10=48, cdw13=0x03),
    "zns-open-all": make_sqe(0x79, 1, 7, cdw13=0x03 | 1 << 8),
    "zns-finish-all": make_sqe(0x79, 1, 7, cdw13=0x02 | 1 << 8),
    "zns-set-zde": make_sqe(0x79, 1, 7, prp1=0x0, cdw10=16, cdw13=0x10) + pattern(64),
    "zns-offline-empty": make_sqe(0x79, 1, 7, cdw10=0, cdw13=0x05),
    "zns-bad-action": make_sqe(0x79, 1, 7, cdw13=0x11),
    "zns-report": make_sqe(0x7A, 1, 7, prp1=0x0, cdw12=1023, cdw13=0),
    "zns-report-partial-small": make_sqe(0x7A, 1, 7, prp1=0x0, cdw12=24, cdw13=1 << 16 | 1 << 8),
    "zns-extended-report-remote": make_sqe(0x7A, 1, 7, prp1=C, cdw12=63, cdw13=1),
    "zns-report-readonly-region": make_sqe(0x7A, 1, 7, prp1=B, cdw12=31),
    "zns-write-zeroes": lba(WRITE_ZEROES, 7, 0, 12),
    "zns-copy": make_sqe(COPY, 1, 7, prp1=0x0, cdw10=16) + guest((0, struct.pack("<8xQH14x", 0, 3))),
    "sgl-write-last-segment-remote": lba(WRITE, 3, 0, 1, cdw12=1 << 30, **sgl1(C + 0x155, 0xD020, 3)),
    # Namespace 6: 8 bytes of separate metadata, type 1 PI (issue 24). PRINFO
    # is CDW12 29:26 (PRACT 8, guard 4, app 2, ref 1), MPTR the metadata.
    **PI_SEEDS,
    # Region E shrinks under the device (the SIGBUS guard): fully, to a page
    # boundary, or inside a page, before, between or after the commands.
    "loss-read-past-end": loss(lba(READ, 1, 0, 8, prp1=E + 0x3000), cut=0, size=0x2000),
    "loss-list-past-end": loss(
        lba(WRITE, 3, 0, 3, prp1=0x0, prp2=E + 0x3000), cut=0, size=0x1800,
        guest_bytes=guest((0x3000, qwords(0x1000, 0x2000))),
    ),
    "loss-between-commands": loss(
        lba(READ, 1, 0, 8, prp1=E + 0x2000), lba(WRITE, 1, 8, 8, prp1=E), lba(READ, 3, 0, 1, prp1=0x1000),
        cut=1, size=0,
    ),
    "loss-inside-a-page": loss(
        lba(READ, 1, 0, 1, prp1=E + 0x1200), lba(WRITE, 1, 2, 8, prp1=E + 0x1000), cut=0, size=0x1100,
        guest_bytes=pattern(0x2000),
    ),
    "loss-then-healthy-part": loss(
        lba(COMPARE, 1, 0, 8, prp1=E + 0x3000), lba(READ, 1, 0, 1, prp1=E), cut=0, size=0x3000,
    ),
    "loss-copy-range-list": loss(
        make_sqe(COPY, 1, 1, prp1=E + 0x2000, cdw10=64, cdw12=0), cut=0, size=0x1000,
        guest_bytes=guest((0x2000, struct.pack("<8xQH14x", 0, 7))),
    ),
    "loss-dsm-range-list": loss(
        make_sqe(DSM, 1, 1, prp1=E + 0x3F00, cdw10=0, cdw11=1 << 2), cut=0, size=0x3000,
        guest_bytes=guest((0x3F00, struct.pack("<IIQ", 0, 4, 10))),
    ),
    "loss-sgl-segment": loss(
        lba(READ, 1, 0, 2, **sgl1(E + 0x2000, 32, 3)), cut=0, size=0x2000,
        guest_bytes=guest((0x2000, sgl_desc(0x1000, 512, 0) + sgl_desc(E, 512, 0))),
    ),
    # Found by these seeds: the kernel moves a file namespace's data and hits
    # the lost page with EFAULT, not SIGBUS; the device must find the loss.
    "loss-file-read": loss(lba(READ, 4, 0, 16, prp1=E + 0x1000, prp2=E + 0x2000), cut=0, size=0x2000),
    "loss-file-write": loss(lba(WRITE, 4, 0, 16, prp1=E + 0x2000, prp2=E + 0x3000), cut=0, size=0x2800),
    "loss-custom-write": loss(lba(WRITE, 5, 0, 16, prp1=E + 0x2000, prp2=E + 0x3000), cut=0, size=0x3000),
    # Found after issue 25 (the model's gap, not the device's): a Write to the
    # zoned namespace from E's lost part loses E, as it must; the reference
    # walk did not follow the zoned and PI namespaces and called it untouched.
    "loss-zoned-write-into-lost": loss(
        lba(COMPARE, 1, 0, 1, prp1=E + 0x1000), lba(WRITE, 7, 0, 1, prp1=E + 0x2000), cut=1, size=0x1800,
        reinstall=True, decoy=True, readonly=True,
    ),
    "loss-null-read": loss(lba(READ, 2, 0, 8, prp1=E + 0x3000), cut=0, size=0),
    "loss-readonly-after": loss(
        lba(WRITE, 3, 1, 1, prp1=E + 0x1000), lba(READ, 1, 0, 1, prp1=E), cut=2, size=0x800,
        guest_bytes=pattern(0x2000), readonly=True,
    ),
    "loss-handlers": loss(
        lba(READ, 1, 0, 8, prp1=E + 0x3000), cut=NEVER, size=0, reinstall=True, decoy=True,
    ),
    "loss-handlers-fault": loss(
        lba(WRITE, 1, 0, 8, prp1=E), cut=0, size=0, reinstall=True, decoy=True,
    ),
    # Shapes the first fuzzing run of the loss inputs reached, written out.
    "loss-file-list-mixed": loss(
        lba(WRITE, 4, 0, 40, prp1=0x1000, prp2=0x3000), cut=0, size=0x2800,
        guest_bytes=guest((0x3000, qwords(0x2000, E + 0x1000, E + 0x3000, 0x4000, 0x5000))),
    ),
    "loss-copy-after-loss": loss(
        lba(READ, 3, 0, 1, prp1=E + 0x3000), make_sqe(COPY, 1, 3, prp1=E, cdw10=8, cdw12=0),
        cut=0, size=0x3000, guest_bytes=guest((0, struct.pack("<8xQH14x", 0, 1))),
    ),
    "loss-sgl-tail-of-page": loss(
        lba(READ, 1, 0, 2, **sgl1(E + 0x800, 32, 3)), cut=0, size=0x900,
        guest_bytes=guest((0x800, sgl_desc(E + 0xA00, 512, 0) + sgl_desc(0x1000, 512, 0))),
    ),
    "loss-readonly-handlers-after": loss(
        lba(COMPARE, 1, 0, 1, prp1=E + 0x1000), lba(WRITE, 3, 0, 1, prp1=E + 0x2000), cut=1, size=0x1800,
        readonly=True, reinstall=True, decoy=True,
    ),
    # Write Uncorrectable (04h, issue 25): the marks read back as 2/81h, then are written over.
    "uncor-ram": lba(WRITE_UNCOR, 1, 10, 3),
    "uncor-4k": lba(WRITE_UNCOR, 3, 15, 1),
    "uncor-file": lba(WRITE_UNCOR, 4, 0, 128),
    "uncor-custom": lba(WRITE_UNCOR, 5, 7, 2),
    "uncor-null": lba(WRITE_UNCOR, 2, 2047, 1),
    "uncor-pi": lba(WRITE_UNCOR, 6, 1, 4),
    "uncor-out-of-range": lba(WRITE_UNCOR, 1, 127, 2),
    "uncor-zns-at-wp": lba(WRITE_UNCOR, 7, 16, 4),
    "uncor-zns-off-wp": lba(WRITE_UNCOR, 7, 18, 1),
    "loss-uncor-then-read": loss(lba(WRITE_UNCOR, 1, 0, 2), lba(READ, 1, 0, 1, prp1=E), cut=NEVER, size=0),
    # One SQE while a sanitize runs (fuzz/src/sanitize.rs): Sanitize In Progress but for Flush.
    "sanitize-block-read": sanitize(lba(READ, 1, 0, 1, prp1=0x0)),
    "sanitize-overwrite-write": sanitize(lba(WRITE, 4, 0, 2, prp1=0x0), overwrite=True, passes=3, invert=True,
                                         deallocate=False, pattern=0xA5C3_0F01),
    "sanitize-overwrite-flush": sanitize(make_sqe(FLUSH, 1, 1), overwrite=True, passes=1, pattern=0x1234_5678),
    "sanitize-zone-append": sanitize(lba(0x7D, 7, 0, 1, prp1=0x0)),
    "sanitize-bad-nsid": sanitize(lba(READ, 9, 0, 1, prp1=0x0)),
    "sanitize-bad-opcode": sanitize(make_sqe(0x7F, 1, 1)),
}


# -- vfio_user -----------------------------------------------------------------------

MEMFD_MSG1 = 1 << 1
EVENTFD_MSG1 = 1 << (4 + 1)


def msg(command: int, payload: bytes = b"", *, msg_id: int = 1, flags: int = p.TYPE_COMMAND) -> bytes:
    """One framed message."""
    return p.HEADER.pack(msg_id, command, p.HEADER.size + len(payload), flags, 0) + payload


VERSION = msg(p.VERSION, p.VERSION_HEAD.pack(0, 1) + b'{"capabilities":{"max_msg_fds":8}}\0', msg_id=0)


def after_version(*msgs: bytes, plan: int = 0) -> bytes:
    """A seed: the fd plan, VERSION, then ``msgs``."""
    return bytes([plan]) + VERSION + b"".join(msgs)


def region_read(region: int, offset: int, count: int) -> bytes:
    return msg(p.REGION_READ, p.REGION_ACCESS.pack(offset, region, count))


def region_write(region: int, offset: int, data: bytes, flags: int = p.TYPE_COMMAND) -> bytes:
    return msg(p.REGION_WRITE, p.REGION_ACCESS.pack(offset, region, len(data)) + data, flags=flags)


BAR0, CONFIG = p.PCI_BAR0_REGION_INDEX, p.PCI_CONFIG_REGION_INDEX

VFIO_USER_SEEDS: dict[str, bytes] = {
    "version-only": bytes([0]) + VERSION,
    "version-no-caps": bytes([0]) + msg(p.VERSION, p.VERSION_HEAD.pack(0, 0)),
    "version-bad-json": bytes([0]) + msg(p.VERSION, p.VERSION_HEAD.pack(0, 1) + b"{nope\0"),
    "before-version": bytes([0]) + msg(p.DEVICE_GET_INFO, p.DEVICE_INFO.pack(16, 0, 0, 0)),
    "device-info": after_version(msg(p.DEVICE_GET_INFO, p.DEVICE_INFO.pack(16, 0, 0, 0))),
    "region-infos": after_version(
        *(msg(p.DEVICE_GET_REGION_INFO, p.REGION_INFO.pack(p.REGION_INFO.size, 0, i, 0, 0, 0)) for i in range(10))
    ),
    "region-info-caps": after_version(msg(p.DEVICE_GET_REGION_INFO, p.REGION_INFO.pack(256, 0, 0, 0, 0, 0))),
    "irq-infos": after_version(*(msg(p.DEVICE_GET_IRQ_INFO, p.IRQ_INFO.pack(16, 0, i, 0)) for i in range(6))),
    "io-fds": after_version(msg(p.DEVICE_GET_REGION_IO_FDS, p.REGION_IO_FDS.pack(16, 0, 0, 0))),
    "config-read": after_version(region_read(CONFIG, 0, 64), region_read(CONFIG, 0x40, 4)),
    "config-write-command": after_version(region_write(CONFIG, 4, struct.pack("<H", 0x6))),
    "bar0-regs": after_version(region_read(BAR0, 0, 8), region_read(BAR0, 0x14, 4), region_read(BAR0, 0x1C, 4)),
    "bar0-enable": after_version(
        region_write(BAR0, 0x24, struct.pack("<I", 0x000F000F)),
        region_write(BAR0, 0x28, struct.pack("<Q", 0x10000)),
        region_write(BAR0, 0x30, struct.pack("<Q", 0x11000)),
        region_write(BAR0, 0x14, struct.pack("<I", 0x00460001)),
        region_read(BAR0, 0x1C, 4),
        region_write(BAR0, 0x14, struct.pack("<I", 0)),
    ),
    "doorbell-posted": after_version(region_write(BAR0, 0x1000, struct.pack("<I", 1), flags=p.TYPE_COMMAND | p.FLAG_NO_REPLY)),
    "write-multi": after_version(
        msg(p.REGION_WRITE_MULTI, p.WRITE_MULTI_COUNT.pack(2) + p.WRITE_MULTI_ENTRY.pack(0x24, BAR0, 4, b"\x0f\0\x0f\0\0\0\0\0") + p.WRITE_MULTI_ENTRY.pack(4, CONFIG, 2, b"\x06\0" + bytes(6)))
    ),
    "dma-map-fd": after_version(
        msg(p.DMA_MAP, p.DMA_MAP_ARGS.pack(32, 3, 0, 0x10000, 0x10000)),
        msg(p.DMA_UNMAP, p.DMA_UNMAP_ARGS.pack(24, 0, 0x10000, 0x10000)),
        plan=MEMFD_MSG1,
    ),
    "dma-map-remote": after_version(
        msg(p.DMA_MAP, p.DMA_MAP_ARGS.pack(32, 3, 0, 0x40000, 0x2000)),
        msg(p.DMA_UNMAP, p.DMA_UNMAP_ARGS.pack(24, 2, 0, 0)),
    ),
    "dma-map-overlap": after_version(
        msg(p.DMA_MAP, p.DMA_MAP_ARGS.pack(32, 1, 0, 0x0, 0x4000)),
        msg(p.DMA_MAP, p.DMA_MAP_ARGS.pack(32, 1, 0, 0x2000, 0x4000)),
    ),
    "set-irqs-msix": after_version(
        msg(p.DEVICE_SET_IRQS, p.IRQ_SET.pack(24, p.IRQ_SET_DATA_EVENTFD | p.IRQ_SET_ACTION_TRIGGER, p.PCI_MSIX_IRQ_INDEX, 0, 1) + struct.pack("<i", 0)),
        msg(p.DEVICE_SET_IRQS, p.IRQ_SET.pack(20, p.IRQ_SET_DATA_NONE | p.IRQ_SET_ACTION_MASK, p.PCI_MSIX_IRQ_INDEX, 0, 1)),
        msg(p.DEVICE_SET_IRQS, p.IRQ_SET.pack(20, p.IRQ_SET_DATA_NONE | p.IRQ_SET_ACTION_UNMASK, p.PCI_MSIX_IRQ_INDEX, 0, 1)),
        plan=EVENTFD_MSG1,
    ),
    "set-irqs-intx-bool": after_version(
        msg(p.DEVICE_SET_IRQS, p.IRQ_SET.pack(21, p.IRQ_SET_DATA_BOOL | p.IRQ_SET_ACTION_TRIGGER, p.PCI_INTX_IRQ_INDEX, 0, 1) + b"\1")
    ),
    "reset": after_version(msg(p.DEVICE_RESET)),
    "unsupported": after_version(msg(p.DIRTY_PAGES, bytes(16)), msg(99)),
    "stray-reply": after_version(msg(p.DMA_READ, p.DMA_ACCESS.pack(0, 4) + bytes(4), flags=p.TYPE_REPLY)),
    "stray-type": after_version(msg(p.DEVICE_GET_INFO, bytes(16), flags=7)),
    "size-below-header": after_version(p.HEADER.pack(3, p.DEVICE_GET_INFO, 8, 0, 0)),
    "size-too-big": after_version(p.HEADER.pack(3, p.REGION_WRITE, p.MAX_MESSAGE_SIZE + 1, 0, 0)),
    "truncated": after_version(p.HEADER.pack(3, p.REGION_READ, 40, 0, 0) + bytes(5)),
    "short-header": bytes([0]) + VERSION[:9],
}


def write(out: Path, seeds: dict[str, bytes]) -> None:
    """Replace the contents of corpus directory ``out`` with ``seeds``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    print(f"{len(seeds)} seeds in {out}")


def main() -> None:
    """Write both corpora."""
    write(ROOT / "fuzz" / "corpus" / "sqe", SQE_SEEDS)
    write(ROOT / "tests" / "fuzz" / "corpus" / "vfio_user", VFIO_USER_SEEDS)


if __name__ == "__main__":
    main()
