"""Compare, Verify, Write Zeroes, Dataset Management, Copy and the metadata
pointer, on namespaces with metadata and protection information (NVM
Command Set 1.0 3.2 and 5.2; expected tuples from tests/pimodel.py).

- Compare: PRACT must be 0; the stored PI is checked per PRCHK; data and the
  metadata outside the PI are compared (Compare Failure), the PI is not.
- Verify: PRACT must be 0 (Invalid Field, Figure 55); stored PI checked.
- Write Zeroes: PRCHK must be 000b (Invalid Protection Information); with
  PRACT the controller generates PI for the zeroes, without it the PI is
  zero; DEAC deallocates.
- Dataset Management deallocate: the blocks read as deallocated, PI too.
- Copy: Descriptor Format 0h on the 16-bit guard, 1h on the 64-bit guard
  (else Invalid Namespace or Format); PRINFOR checks each source range
  against its entry's tags, PRINFOW writes (PRACT: generates) the
  destination's PI; PRACT must agree between the two.
- The metadata pointer: dword aligned with PRPs, byte aligned with SGLs, a
  qword-aligned SGL descriptor with PSDT 10b; outside guest memory a Data
  Transfer Error; an SGL too short Metadata SGL Length Invalid.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmefast import Controller, ControllerConfig
from nvmefast.testing import Host
from nvmefast.testing import pi as hpi
from nvmefast.testing.nvm import CDW12_DEAC, dataset_management
from pimodel import (
    APP_CHECK, GUARD_CHECK, INVALID_FIELD, INVALID_NS_OR_FORMAT, INVALID_PI, METADATA_SGL_LENGTH_INVALID,
    PRACT, PRCHK_APP, PRCHK_GUARD, PRCHK_REF, REF_CHECK, Fmt, status,
)
from piref import Tuple, guard

COMPARE_FAILURE = 0x285
DATA_TRANSFER_ERROR = 0x004

# One namespace per format these tests need, by name.
FORMATS = {
    "t1": Fmt(512, 8, 1),
    "t1-16-last": Fmt(512, 16, 1),
    "t2-64-first-crc64": Fmt(4096, 64, 2, True, "crc64"),
    "t3-16-last-ext": Fmt(4096, 16, 3, extended=True),
    "t1-crc64": Fmt(4096, 16, 1, guard="crc64"),
    "t2-16-first": Fmt(4096, 16, 2, True),
    "none-8": Fmt(512, 8),
}
NAMES = list(FORMATS)
PI_NAMES = [n for n in NAMES if FORMATS[n].pi]
NS_BYTES = 512 << 10


@pytest.fixture(scope="module")
def pihost() -> Iterator[Host]:
    namespaces = [f.namespace(NS_BYTES) for f in FORMATS.values()]
    with Controller(ControllerConfig(namespaces=namespaces)) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        yield host


def nsid(name: str) -> int:
    return NAMES.index(name) + 1




def ilbrt_for(f: Fmt, slba: int) -> int:
    return slba if f.pi == 1 else 0x3C00 + slba


def put(host: Host, name: str, slba: int, nlb: int, *, lbat: int = 0x1234, seed: int = 1) -> tuple[bytes, bytes]:
    """Blocks with correct PI (pattern metadata around it); returns (data, metadata)."""
    f = FORMATS[name]
    data = f.data(nlb, seed)
    md = f.good(data, nlb, lbat, ilbrt_for(f, slba)) if f.pi else f.metadata(nlb, seed)
    assert hpi.write(host, nsid(name), slba, data, md, fmt=f.host_format()).ok
    return data, md


def stored(host: Host, name: str, slba: int, nlb: int) -> hpi.PiResult:
    r = hpi.read(host, nsid(name), slba, nlb, fmt=FORMATS[name].host_format())
    assert r.ok, r.completion
    return r


def bad_guard(f: Fmt, md: bytes, i: int) -> bytes:
    m = f.block(md, i, f.ms)
    t = f.tuple_in(m)
    return md[: i * f.ms] + f.with_tuple(m, Tuple(t.guard ^ 1, t.app, t.ref)) + md[(i + 1) * f.ms :]


# -- Compare -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PI_NAMES)
def test_compare_checks_pi_and_compares_the_rest(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    slba, nlb = 8, 2
    data, md = put(pihost, name, slba, nlb)
    prinfo = PRCHK_GUARD | PRCHK_APP | (0 if f.pi == 3 else PRCHK_REF)
    assert hpi.compare(pihost, nsid(name), slba, data, md, prinfo=prinfo, ilbrt=ilbrt_for(f, slba), lbat=0x1234,
                       lbatm=0xFFFF, fmt=f.host_format()).ok  # fmt: skip
    # The PI is not part of the comparison: other tags in the buffer compare equal.
    other_pi = b"".join(f.with_tuple(f.block(md, i, f.ms), Tuple(1, 2, 3)) for i in range(nlb))
    assert hpi.compare(pihost, nsid(name), slba, data, other_pi, fmt=f.host_format()).ok
    flipped = bytes([data[0] ^ 1]) + data[1:]
    assert status(hpi.compare(pihost, nsid(name), slba, flipped, md, fmt=f.host_format())) == COMPARE_FAILURE
    if f.ms > f.psize:  # metadata outside the PI is compared
        other = bytearray(md)
        other[(f.off + f.psize) % f.ms + f.ms] ^= 0x80
        assert status(hpi.compare(pihost, nsid(name), slba, data, bytes(other), fmt=f.host_format())) == COMPARE_FAILURE
    assert status(hpi.compare(pihost, nsid(name), slba, data, md, prinfo=PRACT, fmt=f.host_format())) == INVALID_FIELD
    # A stored bad guard fails the check before anything is compared.
    assert hpi.write(pihost, nsid(name), slba, data, bad_guard(f, md, 1), fmt=f.host_format()).ok
    r = hpi.compare(pihost, nsid(name), slba, data, md, prinfo=PRCHK_GUARD, fmt=f.host_format())
    assert status(r) == GUARD_CHECK


def test_compare_metadata_without_pi(pihost: Host) -> None:
    f = FORMATS["none-8"]
    data, md = put(pihost, "none-8", 4, 2)
    assert hpi.compare(pihost, nsid("none-8"), 4, data, md, fmt=f.host_format()).ok
    other = md[:-1] + bytes([md[-1] ^ 1])
    assert status(hpi.compare(pihost, nsid("none-8"), 4, data, other, fmt=f.host_format())) == COMPARE_FAILURE


# -- Verify ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PI_NAMES)
def test_verify_checks_the_stored_pi(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    slba, nlb = 16, 3
    data, md = put(pihost, name, slba, nlb)
    ilbrt = ilbrt_for(f, slba)
    ref = 0 if f.pi == 3 else PRCHK_REF
    ok = hpi.verify(pihost, nsid(name), slba, nlb, prinfo=PRCHK_GUARD | PRCHK_APP | ref, ilbrt=ilbrt, lbat=0x1234,
                    lbatm=0xFFFF, fmt=f.host_format())  # fmt: skip
    assert ok.ok, ok.completion
    r = hpi.verify(pihost, nsid(name), slba, nlb, prinfo=PRCHK_APP, lbat=0x1235, lbatm=0xFFFF, fmt=f.host_format())
    assert status(r) == APP_CHECK
    if f.pi != 3:
        r = hpi.verify(pihost, nsid(name), slba, nlb, prinfo=PRCHK_REF, ilbrt=ilbrt + 1, fmt=f.host_format())
        assert status(r) == (INVALID_PI if f.pi == 1 else REF_CHECK)
    # Figure 55: PRACT shall be 0 (Invalid Field).
    assert status(hpi.verify(pihost, nsid(name), slba, nlb, prinfo=PRACT, fmt=f.host_format())) == INVALID_FIELD
    assert hpi.write(pihost, nsid(name), slba, data, bad_guard(f, md, 2), fmt=f.host_format()).ok
    assert status(hpi.verify(pihost, nsid(name), slba, nlb, prinfo=PRCHK_GUARD, fmt=f.host_format())) == GUARD_CHECK
    assert hpi.verify(pihost, nsid(name), slba, nlb, fmt=f.host_format()).ok  # no checks asked


# -- Write Zeroes, Dataset Management ----------------------------------------------------------


@pytest.mark.parametrize("name", PI_NAMES)
def test_write_zeroes_with_pract_generates_pi(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    slba, nlb = 24, 3
    put(pihost, name, slba, nlb)
    ilbrt = ilbrt_for(f, slba)
    r = hpi.write_zeroes(pihost, nsid(name), slba, nlb, prinfo=PRACT, ilbrt=ilbrt, lbat=0x7777, fmt=f.host_format())
    assert r.ok, r.completion
    back = stored(pihost, name, slba, nlb)
    assert back.data == bytes(nlb * f.lba)
    # Non-PI metadata zeroed, PI generated over the zeroes (and the zeroes before a last PI).
    assert back.metadata == f.inserted(bytes(nlb * f.lba), bytes(nlb * f.ms), nlb, 0x7777, ilbrt)
    assert hpi.read(pihost, nsid(name), slba, nlb, prinfo=PRCHK_GUARD | PRCHK_APP | (0 if f.pi == 3 else PRCHK_REF),
                    ilbrt=ilbrt, lbat=0x7777, lbatm=0xFFFF, fmt=f.host_format()).ok  # fmt: skip


@pytest.mark.parametrize("name", PI_NAMES)
def test_write_zeroes_without_pract_zeroes_the_pi(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    slba, nlb = 32, 2
    put(pihost, name, slba, nlb)
    assert hpi.write_zeroes(pihost, nsid(name), slba, nlb, fmt=f.host_format()).ok
    back = stored(pihost, name, slba, nlb)
    assert back.data == bytes(nlb * f.lba) and back.metadata == bytes(nlb * f.ms)
    # Zero PI: the 16-bit guard of zeroes is 0, so it passes; the 64-bit one's is not.
    r = hpi.read(pihost, nsid(name), slba, nlb, prinfo=PRCHK_GUARD, fmt=f.host_format())
    assert status(r) == (0 if guard(f.guard, bytes(f.lba + f.ms)) == 0 else GUARD_CHECK)


@pytest.mark.parametrize("name", PI_NAMES)
@pytest.mark.parametrize("prchk", [PRCHK_GUARD, PRCHK_APP, PRCHK_REF])
def test_write_zeroes_refuses_prchk(pihost: Host, name: str, prchk: int) -> None:
    f = FORMATS[name]
    r = hpi.write_zeroes(pihost, nsid(name), 40, 1, prinfo=PRACT | prchk, ilbrt=ilbrt_for(f, 40), fmt=f.host_format())
    assert status(r) == INVALID_PI and r.completion.dnr


def _deallocated(f: Fmt, nlb: int) -> bytes:
    md = bytes(f.ms)
    if f.pi:
        md = f.with_tuple(md, Tuple(0xFFFF if f.guard == "crc16" else 2**64 - 1, 0xFFFF, f.all_ones_ref))
    return md * nlb


@pytest.mark.parametrize("name", NAMES)
def test_deallocation_deallocates_the_metadata(pihost: Host, name: str) -> None:
    """Write Zeroes with DEAC and Dataset Management deallocate: data 00h, metadata 00h but
    for the PI, all FFh: the escape, so checks pass."""
    f = FORMATS[name]
    for slba, how in ((48, "wz"), (56, "dsm")):
        put(pihost, name, slba, 2)
        if how == "wz":
            assert hpi.write_zeroes(pihost, nsid(name), slba, 2, cdw12_flags=CDW12_DEAC, fmt=f.host_format()).ok
        else:
            assert dataset_management(pihost, nsid(name), [(slba, 2)]).ok
        back = stored(pihost, name, slba, 2)
        assert back.data == bytes(2 * f.lba), how
        assert back.metadata == _deallocated(f, 2), how
        if f.pi:
            r = hpi.read(pihost, nsid(name), slba, 2, prinfo=PRCHK_GUARD | PRCHK_APP, lbatm=0xFFFF, fmt=f.host_format())
            assert r.ok, how


# -- Copy --------------------------------------------------------------------------------------


def _range(f: Fmt, slba: int, nlb: int, eilbrt: int = 0, elbat: int = 0, elbatm: int = 0) -> bytes:
    entry = hpi.copy_range_f1 if f.guard == "crc64" else hpi.copy_range_f0
    return entry(slba, nlb, eilbrt, elbat, elbatm)


@pytest.mark.parametrize("name", PI_NAMES)
def test_copy_with_pract_generates_the_destination_pi(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    desfmt = 1 if f.guard == "crc64" else 0
    srcs = [(64, 2), (72, 1)]
    blocks = []
    for slba, nlb in srcs:
        blocks.append(put(pihost, name, slba, nlb, lbat=0x4321, seed=slba))
    ranges = [_range(f, slba, nlb, ilbrt_for(f, slba), 0x4321, 0xFFFF) for slba, nlb in srcs]
    prinfor = PRCHK_GUARD | PRCHK_APP | (0 if f.pi == 3 else PRCHK_REF)
    dest = 80
    ilbrt = ilbrt_for(f, dest)
    r = hpi.copy(pihost, nsid(name), dest, ranges, desfmt=desfmt, prinfor=PRACT | prinfor, prinfow=PRACT,
                 ilbrt=ilbrt, lbat=0x9999, fmt=f.host_format())  # fmt: skip
    assert r.ok, r.completion
    data = b"".join(d for d, _ in blocks)
    src_md = b"".join(m for _, m in blocks)
    back = stored(pihost, name, dest, 3)
    assert back.data == data
    # PRACT: PI generated for the destination; the metadata around it copied.
    assert back.metadata == f.inserted(data, src_md, 3, 0x9999, ilbrt)


@pytest.mark.parametrize("name", PI_NAMES)
def test_copy_checks_each_source_range(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    desfmt = 1 if f.guard == "crc64" else 0
    data, md = put(pihost, name, 96, 2, lbat=0x4321)
    assert hpi.write(pihost, nsid(name), 96, data, bad_guard(f, md, 1), fmt=f.host_format()).ok
    guard_range = [_range(f, 96, 2, ilbrt_for(f, 96), 0x4321, 0xFFFF)]
    r = hpi.copy(pihost, nsid(name), 104, guard_range, desfmt=desfmt, prinfor=PRACT | PRCHK_GUARD, prinfow=PRACT,
                 ilbrt=ilbrt_for(f, 104), fmt=f.host_format())  # fmt: skip
    assert status(r) == GUARD_CHECK
    app_range = [_range(f, 96, 1, ilbrt_for(f, 96), 0x4322, 0xFFFF)]
    r = hpi.copy(pihost, nsid(name), 104, app_range, desfmt=desfmt, prinfor=PRACT | PRCHK_APP, prinfow=PRACT,
                 ilbrt=ilbrt_for(f, 104), fmt=f.host_format())  # fmt: skip
    assert status(r) == APP_CHECK
    if f.pi == 2:
        ref_range = [_range(f, 96, 1, ilbrt_for(f, 96) + 5)]
        r = hpi.copy(pihost, nsid(name), 104, ref_range, desfmt=desfmt, prinfor=PRACT | PRCHK_REF, prinfow=PRACT,
                     fmt=f.host_format())  # fmt: skip
        assert status(r) == REF_CHECK


@pytest.mark.parametrize("name", [n for n in PI_NAMES if FORMATS[n].pi != 1])
def test_copy_without_pract_moves_the_source_pi(pihost: Host, name: str) -> None:
    """PRACT 0 on both sides: the source PI is written as it was (checked per PRCHKW)."""
    f = FORMATS[name]
    desfmt = 1 if f.guard == "crc64" else 0
    data, md = put(pihost, name, 112, 2, lbat=0x0A0A)
    r = hpi.copy(pihost, nsid(name), 120, [_range(f, 112, 2)], desfmt=desfmt, prinfow=PRCHK_GUARD | PRCHK_APP,
                 lbat=0x0A0A, lbatm=0xFFFF, fmt=f.host_format())  # fmt: skip
    assert r.ok, r.completion
    back = stored(pihost, name, 120, 2)
    assert (back.data, back.metadata) == (data, md)
    r = hpi.copy(pihost, nsid(name), 120, [_range(f, 112, 2)], desfmt=desfmt, prinfow=PRCHK_APP, lbat=0x0A0B,
                 lbatm=0xFFFF, fmt=f.host_format())  # fmt: skip
    assert status(r) == APP_CHECK


@pytest.mark.parametrize("name", PI_NAMES)
def test_copy_pract_must_agree_and_the_format_must_fit_the_guard(pihost: Host, name: str) -> None:
    f = FORMATS[name]
    desfmt = 1 if f.guard == "crc64" else 0
    rng = [_range(f, 0, 1)]
    r = hpi.copy(pihost, nsid(name), 124, rng, desfmt=desfmt, prinfor=PRACT, prinfow=0, fmt=f.host_format())
    assert status(r) == INVALID_FIELD
    wrong = [(hpi.copy_range_f0 if desfmt else hpi.copy_range_f1)(0, 1)]
    r = hpi.copy(pihost, nsid(name), 124, wrong, desfmt=1 - desfmt, fmt=f.host_format())
    assert status(r) == INVALID_NS_OR_FORMAT


# -- the metadata pointer ----------------------------------------------------------------------


def test_metadata_through_every_pointer_kind(pihost: Host) -> None:
    """PSDT 00b (PRPs, MPTR a buffer), 01b (SGL data, MPTR a buffer), 10b (MPTR an SGL
    descriptor): the same blocks and metadata either way."""
    f = FORMATS["t1-16-last"]
    data, md = put(pihost, "t1-16-last", 136, 4)
    for sgl, mptr_sgl in ((False, False), (True, False), (True, True)):
        r = hpi.read(pihost, nsid("t1-16-last"), 136, 4, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=136, sgl=sgl,
                     mptr_sgl=mptr_sgl, fmt=f.host_format())  # fmt: skip
        assert r.ok and (r.data, r.metadata) == (data, md), (sgl, mptr_sgl)
        w = hpi.write(pihost, nsid("t1-16-last"), 144, data, md, prinfo=PRCHK_GUARD, sgl=sgl, mptr_sgl=mptr_sgl,
                      fmt=f.host_format())  # fmt: skip
        assert w.ok, (sgl, mptr_sgl)


def test_bad_metadata_pointers(pihost: Host) -> None:
    f = FORMATS["t1"]
    n = nsid("t1")
    put(pihost, "t1", 152, 1)
    # PRPs: MPTR dword aligned (NVMe Base 2.0 4.1.2), else Invalid Field.
    r = hpi.read(pihost, n, 152, 1, mptr=pihost.alloc(64) + 2, fmt=f.host_format())
    assert status(r) == INVALID_FIELD and r.completion.dnr
    # SGL data: a byte-aligned metadata buffer is fine (SGLS bit 17).
    buf = pihost.alloc(64)
    assert hpi.read(pihost, n, 152, 1, sgl=True, mptr=buf + 3, fmt=f.host_format()).ok
    # Outside guest memory: Data Transfer Error, for writes and reads.
    r = hpi.read(pihost, n, 152, 1, mptr=1 << 52, fmt=f.host_format())
    assert status(r) == DATA_TRANSFER_ERROR, r.completion
    r = hpi.write(pihost, n, 152, f.data(1), mptr=1 << 52, fmt=f.host_format())
    assert status(r) == DATA_TRANSFER_ERROR, r.completion


def test_bad_metadata_sgls(pihost: Host) -> None:
    f = FORMATS["t1"]
    n = nsid("t1")
    put(pihost, "t1", 160, 2)
    desc = pihost.alloc(64)
    # PSDT 10b: the descriptor qword aligned.
    r = hpi.read(pihost, n, 160, 2, mptr_sgl=True, mptr=desc + 4, fmt=f.host_format())
    assert status(r) == INVALID_FIELD
    # A Data Block shorter than the metadata: Metadata SGL Length Invalid.
    from nvmefast.testing.sgl import data_block

    pihost.write_mem(desc, data_block(pihost.alloc(64), 8).encode())
    r = hpi.read(pihost, n, 160, 2, mptr_sgl=True, mptr=desc, fmt=f.host_format())
    assert status(r) == METADATA_SGL_LENGTH_INVALID and r.completion.dnr
    # A descriptor pointing outside guest memory.
    pihost.write_mem(desc, data_block(1 << 52, 16).encode())
    r = hpi.read(pihost, n, 160, 2, mptr_sgl=True, mptr=desc, fmt=f.host_format())
    assert status(r) == DATA_TRANSFER_ERROR


def test_a_zero_block_0_with_a_wrong_guard_is_an_error(pihost: Host) -> None:
    """QEMU forgives a guard error on an all-zero LBA 0 (raw images report it allocated);
    the spec has no such exception."""
    f = FORMATS["t1"]
    md = f.with_tuple(bytes(f.ms), Tuple(0x1234, 0, 0))
    assert hpi.write(pihost, nsid("t1"), 0, bytes(f.lba), md, fmt=f.host_format()).ok
    r = hpi.read(pihost, nsid("t1"), 0, 1, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=0, fmt=f.host_format())
    assert status(r) == GUARD_CHECK
