"""Read and Write with metadata and end-to-end protection, on every format.

One controller serves every combination (tests/pimodel.py ``all_formats``):
512+8, 512+16, 4096+8, 4096+16 and 4096+64 bytes; no PI and PI Types 1, 2
and 3; the 16-bit guard and, where the format allows it, the 64-bit guard;
PI first and last where the metadata is larger than the PI; metadata in a
separate buffer and in extended LBAs. On each the host (nvmefast.testing.pi)
writes and reads with PRACT and every PRCHK combination, and the tuples and
statuses are compared with tests/pimodel.py, which is NVM Command Set 1.0
section 5.2 over the tests' bit-by-bit CRCs (tests/piref.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmefast import Controller, ControllerConfig
from nvmefast.testing import Host
from nvmefast.testing import pi as hpi
from pimodel import (
    APP_CHECK, GUARD_CHECK, INVALID_PI, PRACT, PRCHK_APP, PRCHK_GUARD, PRCHK_REF, REF_CHECK, Fmt, all_formats, status,
)
from piref import Tuple

FORMATS = tuple(all_formats())
PI_FORMATS = tuple(f for f in FORMATS if f.pi)
NS_BYTES = 512 << 10
LBAT = 0xBEEF


def _nsid(fmt: Fmt) -> int:
    return FORMATS.index(fmt) + 1


@pytest.fixture(scope="module")
def pihost() -> Iterator[Host]:
    """One controller, one namespace per format, a host with an I/O queue."""
    namespaces = [f.namespace(NS_BYTES) for f in FORMATS]
    with Controller(ControllerConfig(namespaces=namespaces)) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        yield host




def ilbrt_for(f: Fmt, slba: int) -> int:
    """Type 1's initial reference tag must be the SLBA; any will do for 2 and 3."""
    return slba if f.pi == 1 else 0x5A5A0000 + slba


def prchk_all(f: Fmt) -> int:
    """Every check the format allows (Type 3 has no reference tag to check)."""
    return PRCHK_GUARD | PRCHK_APP | (0 if f.pi == 3 else PRCHK_REF)


def raw(host: Host, f: Fmt, slba: int, nlb: int) -> hpi.PiResult:
    r = hpi.read(host, _nsid(f), slba, nlb, fmt=f.host_format())
    assert r.ok, r.completion
    return r


def store(host: Host, f: Fmt, slba: int, data: bytes, md: bytes) -> None:
    """Write ``data`` and ``md`` as they are (PRACT 0, no checks)."""
    r = hpi.write(host, _nsid(f), slba, data, md, fmt=f.host_format())
    assert r.ok, r.completion


@pytest.mark.parametrize("f", [f for f in FORMATS if not f.pi], ids=Fmt.id)
def test_metadata_without_pi_round_trips(pihost: Host, f: Fmt) -> None:
    """No PI: metadata is stored as sent, and PRINFO is ignored (NVMCS Figure 9)."""
    data, md = f.data(4), f.metadata(4)
    r = hpi.write(pihost, _nsid(f), 8, data, md, prinfo=PRACT | PRCHK_GUARD | PRCHK_REF, ilbrt=99, fmt=f.host_format())
    assert r.ok, r.completion
    back = hpi.read(pihost, _nsid(f), 8, 4, prinfo=PRACT | PRCHK_GUARD | PRCHK_APP, lbatm=0xFFFF, fmt=f.host_format())
    assert back.ok and back.data == data and back.metadata == md


@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_pract_write_inserts_the_tuples(pihost: Host, f: Fmt) -> None:
    """PRACT write: guard = CRC of the data (and of the metadata before a last PI), application
    tag = LBAT, reference tag = ILBRT (+ i for Types 1 and 2); other metadata kept."""
    slba, nlb = 16, 3
    ilbrt = ilbrt_for(f, slba)
    data = f.data(nlb, seed=slba)
    sent = b"" if f.stripped(PRACT) else f.metadata(nlb)
    r = hpi.write(pihost, _nsid(f), slba, data, sent, prinfo=PRACT | prchk_all(f), ilbrt=ilbrt, lbat=LBAT,
                  fmt=f.host_format())  # fmt: skip
    assert r.ok, r.completion
    back = raw(pihost, f, slba, nlb)
    assert back.data == data
    assert back.metadata == f.inserted(data, sent, nlb, LBAT, ilbrt)


@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_pract_read_checks_then_strips_or_passes(pihost: Host, f: Fmt) -> None:
    """PRACT read: PI checked per PRCHK; stripped when the metadata is only the PI, else
    passed through with the rest of the metadata."""
    slba, nlb = 24, 2
    ilbrt = ilbrt_for(f, slba)
    data = f.data(nlb, seed=3)
    md = f.good(data, nlb, LBAT, ilbrt)
    store(pihost, f, slba, data, md)
    r = hpi.read(pihost, _nsid(f), slba, nlb, prinfo=PRACT | prchk_all(f), ilbrt=ilbrt, lbat=LBAT,
                 lbatm=0xFFFF, fmt=f.host_format())  # fmt: skip
    assert r.ok, r.completion
    assert r.data == data
    assert r.metadata == (b"" if f.stripped(PRACT) else md)


def _corrupted(f: Fmt, data: bytes, md: bytes, i: int, what: str) -> bytes:
    """``md`` with block ``i``'s guard, application tag or reference tag wrong."""
    m = f.block(md, i, f.ms)
    t = f.tuple_in(m)
    t = {"guard": Tuple(t.guard ^ 0x0101, t.app, t.ref), "app": Tuple(t.guard, t.app ^ 0x0010, t.ref),
         "ref": Tuple(t.guard, t.app, (t.ref + 7) & f.all_ones_ref)}[what]  # fmt: skip
    return md[: i * f.ms] + f.with_tuple(m, t) + md[(i + 1) * f.ms :]


@pytest.mark.parametrize("what", ["good", "guard", "app", "ref"])
@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_write_checks_incoming_pi(pihost: Host, f: Fmt, what: str) -> None:
    """PRACT 0: the controller checks the PI the host sends before storing anything."""
    slba, nlb = 32, 2
    ilbrt = ilbrt_for(f, slba)
    before = f.data(nlb, seed=5)
    before_md = f.good(before, nlb, LBAT, ilbrt)
    store(pihost, f, slba, before, before_md)
    data = f.data(nlb, seed=6)
    md = f.good(data, nlb, LBAT, ilbrt)
    if what != "good":
        md = _corrupted(f, data, md, 1, what)
    prchk = prchk_all(f)
    want = f.check(data, md, nlb, prchk, ilbrt, LBAT, 0xFFFF)
    r = hpi.write(pihost, _nsid(f), slba, data, md, prinfo=prchk, ilbrt=ilbrt, lbat=LBAT, lbatm=0xFFFF,
                  fmt=f.host_format())  # fmt: skip
    assert status(r) == want, r.completion
    back = raw(pihost, f, slba, nlb)
    assert (back.data, back.metadata) == ((data, md) if want == 0 else (before, before_md))


# Three blocks, each with one tag wrong, and every PRINFO value: the first failing check decides.
@pytest.mark.parametrize("prinfo", range(16), ids=lambda p: f"prinfo{p:x}")
@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_read_every_prinfo(pihost: Host, f: Fmt, prinfo: int) -> None:
    slba, nlb = 40, 4
    ilbrt = ilbrt_for(f, slba)
    data = f.data(nlb, seed=9)
    md = f.good(data, nlb, LBAT, ilbrt)
    for i, what in ((1, "guard"), (2, "app"), (3, "ref")):
        md = _corrupted(f, data, md, i, what)
    store(pihost, f, slba, data, md)
    want = f.prinfo_status(slba, prinfo, ilbrt) or f.check(data, md, nlb, prinfo & 0b111, ilbrt, LBAT, 0xFFFF)
    r = hpi.read(pihost, _nsid(f), slba, nlb, prinfo=prinfo, ilbrt=ilbrt, lbat=LBAT, lbatm=0xFFFF, fmt=f.host_format())
    assert status(r) == want, r.completion
    if want == 0:
        assert r.data == data
        assert r.metadata == (b"" if f.stripped(prinfo) else md)


@pytest.mark.parametrize("f", [f for f in PI_FORMATS if f.pi == 1], ids=Fmt.id)
def test_type1_ilbrt_must_be_the_slba(pihost: Host, f: Fmt) -> None:
    slba = 48
    store(pihost, f, slba, f.data(1), f.good(f.data(1), 1, 0, slba))
    r = hpi.read(pihost, _nsid(f), slba, 1, prinfo=PRCHK_REF, ilbrt=slba + 1, fmt=f.host_format())
    assert status(r) == INVALID_PI and r.completion.dnr, r.completion
    # Without the reference check ILBRT is not looked at.
    assert hpi.read(pihost, _nsid(f), slba, 1, prinfo=PRCHK_GUARD, ilbrt=slba + 1, fmt=f.host_format()).ok


@pytest.mark.parametrize("f", [f for f in PI_FORMATS if f.pi == 2], ids=Fmt.id)
def test_type2_reference_tags_start_anywhere_and_wrap(pihost: Host, f: Fmt) -> None:
    """Type 2: any ILBRT; it increments per block and wraps at 2^32 (16-bit guard) or 2^48;
    with the 64-bit guard its bits 47:32 travel in CDW3."""
    slba, nlb = 56, 3
    for ilbrt in (f.all_ones_ref - 1, 0x1234_89AB_CDEF & f.all_ones_ref):
        data = f.data(nlb, seed=ilbrt & 0xFF)
        r = hpi.write(pihost, _nsid(f), slba, data, None if f.stripped(PRACT) else f.metadata(nlb),
                      prinfo=PRACT, ilbrt=ilbrt, fmt=f.host_format())  # fmt: skip
        assert r.ok, r.completion
        refs = [f.tuple_in(f.block(raw(pihost, f, slba, nlb).metadata, i, f.ms)).ref for i in range(nlb)]
        assert refs == [(ilbrt + i) & f.all_ones_ref for i in range(nlb)]
        assert hpi.read(pihost, _nsid(f), slba, nlb, prinfo=PRCHK_REF, ilbrt=ilbrt, fmt=f.host_format()).ok
        assert status(hpi.read(pihost, _nsid(f), slba, nlb, prinfo=PRCHK_REF, ilbrt=ilbrt + 1,
                               fmt=f.host_format())) == REF_CHECK  # fmt: skip


@pytest.mark.parametrize("f", [f for f in PI_FORMATS if f.pi == 3], ids=Fmt.id)
def test_type3_reference_tag_is_not_checked(pihost: Host, f: Fmt) -> None:
    """Type 3: PRACT inserts ILBRT unchanged in every block; a reference check is Invalid PI."""
    slba, nlb = 64, 2
    r = hpi.write(pihost, _nsid(f), slba, f.data(nlb), None if f.stripped(PRACT) else f.metadata(nlb),
                  prinfo=PRACT, ilbrt=0x0BAD_F00D, fmt=f.host_format())  # fmt: skip
    assert r.ok
    md = raw(pihost, f, slba, nlb).metadata
    assert [f.tuple_in(f.block(md, i, f.ms)).ref for i in range(nlb)] == [0x0BAD_F00D] * nlb
    assert status(hpi.read(pihost, _nsid(f), slba, nlb, prinfo=PRCHK_REF, fmt=f.host_format())) == INVALID_PI


@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_application_tag_mask(pihost: Host, f: Fmt) -> None:
    """Only the bits ELBATM sets are compared."""
    slba = 72
    data = f.data(1)
    store(pihost, f, slba, data, f.good(data, 1, 0x5678, ilbrt_for(f, slba)))
    for elbat, elbatm, ok in ((0x5678, 0xFFFF, True), (0x5679, 0xFFFF, False), (0x5679, 0xFFFE, True),
                              (0x0000, 0x0000, True), (0x1678, 0xF000, False)):  # fmt: skip
        r = hpi.read(pihost, _nsid(f), slba, 1, prinfo=PRCHK_APP, lbat=elbat, lbatm=elbatm, fmt=f.host_format())
        assert status(r) == (0 if ok else APP_CHECK), (hex(elbat), hex(elbatm), r.completion)


@pytest.mark.parametrize("f", PI_FORMATS, ids=Fmt.id)
def test_escape_values_disable_checking(pihost: Host, f: Fmt) -> None:
    """Application tag FFFFh (Types 1, 2), and the reference tag all ones too (Type 3), skip
    every check of the block, however wrong its guard."""
    slba = 80
    data = f.data(1)
    m = f.metadata(1)
    escaped = f.with_tuple(m, Tuple(0x1234 if f.guard == "crc16" else 0x1234_5678, 0xFFFF, f.all_ones_ref))
    store(pihost, f, slba, data, escaped)
    prinfo = prchk_all(f)
    assert hpi.read(pihost, _nsid(f), slba, 1, prinfo=prinfo, ilbrt=ilbrt_for(f, slba), lbatm=0xFFFF,
                    fmt=f.host_format()).ok  # fmt: skip
    # Type 3 with a reference tag that is not all ones: not an escape, the guard is checked.
    half = f.with_tuple(m, Tuple(0x1234, 0xFFFF, 5))
    store(pihost, f, slba, data, half)
    r = hpi.read(pihost, _nsid(f), slba, 1, prinfo=PRCHK_GUARD, ilbrt=ilbrt_for(f, slba), fmt=f.host_format())
    assert status(r) == (GUARD_CHECK if f.pi == 3 else 0), r.completion


@pytest.mark.parametrize("f", FORMATS, ids=Fmt.id)
def test_never_written_blocks_read_as_deallocated(pihost: Host, f: Fmt) -> None:
    """DLFEAT 001b: a deallocated block's data and metadata read 00h, but for its PI, which
    reads all FFh (bit 4 clear: guard FFFFh too), the escape, so every check passes."""
    slba, nlb = NS_BYTES // f.lba - 2, 2
    if f.pi:
        r = hpi.read(pihost, _nsid(f), slba, nlb, prinfo=prchk_all(f), ilbrt=ilbrt_for(f, slba), lbatm=0xFFFF,
                     fmt=f.host_format())  # fmt: skip
        assert r.ok, r.completion
    back = raw(pihost, f, slba, nlb)
    assert back.data == bytes(nlb * f.lba)
    want = bytes(f.ms)
    if f.pi:
        want = f.with_tuple(want, Tuple(0xFFFF if f.guard == "crc16" else 2**64 - 1, 0xFFFF, f.all_ones_ref))
    assert back.metadata == want * nlb
