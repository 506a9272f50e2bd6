"""The core's side of metadata and end-to-end protection (issue 24): the
configuration and its errors, metadata through a storage object, the
companion file of a file namespace surviving SIGKILL after Flush, and the
corrupt-pi and end-to-end status fault rules.

Expected tuples come from a bit-by-bit CRC-16 T10-DIF written here from the
polynomial (checked against the catalogue's check value), laid out as NVM
Command Set 1.0 Figure 114 says; never from the device.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nvmefast import ConfigError, Controller, ControllerConfig, NamespaceConfig
from nvmefast.status import DNR, Status
from nvmefast.testing import Host, build_sqe, data_pointers

PRACT, PRCHK_GUARD, PRCHK_REF = 8, 4, 1
READ, WRITE, FLUSH = 0x02, 0x01, 0x00


def crc16_t10dif(data: bytes) -> int:
    """CRC-16 T10-DIF bit by bit: poly 0x8BB7, MSB first, init 0, no xorout."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8BB7) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def test_reference_crc_matches_the_published_check_value() -> None:
    assert crc16_t10dif(b"123456789") == 0xD0DB
    assert crc16_t10dif(b"abc") == 0x443B


def tuple16(block: bytes, app: int, ref: int) -> bytes:
    """An 8-byte 16b-guard PI tuple (Figure 114): guard, app tag, ref tag, big-endian."""
    return crc16_t10dif(block).to_bytes(2, "big") + app.to_bytes(2, "big") + (ref & 0xFFFFFFFF).to_bytes(4, "big")


def rw(host: Host, opcode: int, slba: int, nlb: int, *, data: bytes | None = None, md_len: int = 0,
       prinfo: int = 0, ilbrt: int = 0, md: bytes | None = None) -> tuple[int, bytes, bytes]:
    """One Read or Write with a separate metadata buffer; (status, data, metadata)."""
    lbs = host.lba_size(1)
    buf = host.alloc(nlb * lbs)
    if data is not None:
        host.write_mem(buf, data)
    mbuf = host.alloc(4096)
    if md is not None:
        host.write_mem(mbuf, md)
    prps = host.build_prps(data_pointers(buf, nlb * lbs))
    sqe = build_sqe(opcode, nsid=1, prp1=prps.prp1, prp2=prps.prp2, mptr=mbuf, cdw10=slba,
                    cdw12=(nlb - 1) | prinfo << 26, cdw14=ilbrt)
    c = host.io(sqe)
    return c.status, host.read_mem(buf, nlb * lbs), host.read_mem(mbuf, md_len)


@pytest.mark.parametrize("kwargs,words", [
    (dict(metadata_size=64), "use one of (0, 8, 16)"),
    (dict(lba_size=4096, metadata_size=12), "use one of (0, 8, 16, 64)"),
    (dict(pi_type=1), "set metadata_size=8"),
    (dict(metadata_size=8, pi_type=4), "must be 0 (none), 1, 2 or 3"),
    (dict(metadata_size=16, pi_type=1, guard="crc64"), "needs lba_size 4096"),
    (dict(lba_size=4096, metadata_size=8, pi_type=1, guard="crc64"), "metadata_size 16 or more"),
    (dict(metadata_size=8, pi_first=True), "pi_first needs protection information"),
    (dict(extended_lba=True), "extended_lba needs metadata"),
    (dict(metadata_size=8, pi_type=1, guard="crc32"), "guard must be one of"),
])
def test_bad_metadata_settings_say_what_to_change(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        NamespaceConfig(**kwargs)  # type: ignore[arg-type]


def test_engine_keys_are_checked_too() -> None:
    from nvmefast._core import Engine

    base = dict(msix_vectors=2, max_qid=1, max_queue_entries=64, mdts_bytes=0, poll_us=0)
    with pytest.raises(ConfigError, match="metadata_size 12 is not an LBA format"):
        Engine(namespaces=[dict(size_bytes=1 << 20, lba_size=512, backend="ram", metadata_size=12)], **base)
    with pytest.raises(ConfigError, match="wrong type"):
        Engine(namespaces=[dict(size_bytes=1 << 20, lba_size=512, backend="ram", pi_type="one")], **base)
    e = Engine(namespaces=[dict(size_bytes=1 << 20, lba_size=512, backend="ram")], **base)
    try:
        with pytest.raises(ConfigError, match="needs lba_size 4096"):
            e.format_namespace(1, 512, metadata_size=16, pi_type=1, guard="crc64")
        e.format_namespace(1, 4096, metadata_size=16, pi_type=3, pi_first=True, guard="crc64")
        assert e.namespace_format(1) == dict(lba_size=4096, metadata_size=16, extended_lba=False, pi_type=3,
                                             pi_first=True, guard="crc64")
        e.format_namespace(1, 512)
        assert e.namespace_format(1)["metadata_size"] == 0, "two arguments: no metadata"
    finally:
        e.close()


class Blocks:
    """A storage object keeping data and metadata in dicts."""

    def __init__(self, metadata: bool = True) -> None:
        self.data: dict[int, bytes] = {}
        self.md: dict[int, bytes] = {}
        if not metadata:
            self.read_metadata = None  # type: ignore[assignment]

    def read(self, lba: int, nlb: int) -> bytes:
        return b"".join(self.data.get(lba + i, bytes(512)) for i in range(nlb))

    def write(self, lba: int, data: bytes) -> None:
        for i in range(len(data) // 512):
            self.data[lba + i] = data[i * 512:(i + 1) * 512]

    def read_metadata(self, lba: int, nlb: int) -> bytes:
        return b"".join(self.md.get(lba + i, b"\xff" * 8) for i in range(nlb))

    def write_metadata(self, lba: int, data: bytes) -> None:
        for i in range(len(data) // 8):
            self.md[lba + i] = data[i * 8:(i + 1) * 8]


def test_storage_object_takes_and_returns_metadata() -> None:
    with pytest.raises(ConfigError, match="read_metadata"):
        NamespaceConfig(size_bytes=1 << 20, backend=Blocks(metadata=False), metadata_size=8, pi_type=1)
    store = Blocks()
    ns = NamespaceConfig(size_bytes=1 << 20, backend=store, metadata_size=8, pi_type=1, pi_first=True)
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        data = bytes(range(256)) * 4
        status, _, _ = rw(host, WRITE, 6, 2, data=data, prinfo=PRACT, ilbrt=6)
        assert status == 0
        assert store.md[6] == tuple16(data[:512], 0, 6) and store.md[7] == tuple16(data[512:], 0, 7)
        status, got, md = rw(host, READ, 6, 2, md_len=16, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=6)
        assert (status, got, md) == (0, data, store.md[6] + store.md[7])
        store.md[7] = store.md[7][:7] + bytes([store.md[7][7] ^ 1])
        status, _, _ = rw(host, READ, 6, 2, md_len=16, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=6)
        assert status == Status.END_TO_END_REF_TAG_CHECK_ERROR | DNR


CHILD = textwrap.dedent("""
    import sys
    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    from nvmefast.testing import Host, build_sqe, data_pointers
    path = sys.argv[1]
    ns = NamespaceConfig(backend="file", path=path, size_bytes=4 << 20, metadata_size=8, pi_type=1,
                         io=sys.argv[2], cache="buffered")
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        buf = host.alloc(8 * 512)
        for lba in range(0, 64, 8):
            host.write_mem(buf, bytes([lba]) * 4096)
            prps = host.build_prps(data_pointers(buf, 4096))
            # PRACT: the controller inserts PI with reference tag = ILBRT.
            assert host.io(build_sqe(0x01, nsid=1, prp1=prps.prp1, prp2=prps.prp2, cdw10=lba,
                                     cdw12=7 | 8 << 26, cdw14=lba)).ok
        assert host.io(build_sqe(0x00, nsid=1)).ok
        print("flushed", flush=True)
        n = 0
        while True:
            host.write_mem(buf, bytes([0xEE]) * 4096)
            prps = host.build_prps(data_pointers(buf, 4096))
            host.io(build_sqe(0x01, nsid=1, prp1=prps.prp1, prp2=prps.prp2, cdw10=512 + n % 64 * 8,
                              cdw12=7 | 8 << 26, cdw14=512 + n % 64 * 8))
            n += 1
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("io", ["threads", "io_uring"])
def test_metadata_survives_sigkill_after_flush(tmp_path: os.PathLike[str], io: str) -> None:
    path = os.path.join(tmp_path, "disk.img")
    child = subprocess.Popen([sys.executable, "-c", CHILD, path, io], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        if line != "flushed\n":
            pytest.fail(f"the child never flushed: {line!r} {child.communicate(timeout=30)[1][-2000:]}")
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert os.path.getsize(path + ".md") == (4 << 20) // 512 * 8, "a companion of LBAs x 8 bytes"
    assert os.path.getsize(path) == 4 << 20, "the image stays raw: data only"
    ns = NamespaceConfig(backend="file", path=path, metadata_size=8, pi_type=1, io=io)
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        for lba in range(0, 64, 8):
            status, data, md = rw(host, READ, lba, 8, md_len=64, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=lba)
            assert status == 0 and data == bytes([lba]) * 4096
            assert md == b"".join(tuple16(bytes([lba]) * 512, 0, lba + i) for i in range(8))
        status, _, md = rw(host, READ, 2000, 1, md_len=8)
        assert (status, md) == (0, b"\xff" * 8), "never written: deallocated"


def test_corrupt_pi_and_end_to_end_status_rules() -> None:
    ns = NamespaceConfig(size_bytes=1 << 20, metadata_size=8, pi_type=1)
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        data = os.urandom(512)
        assert rw(host, WRITE, 3, 1, data=data, prinfo=PRACT, ilbrt=3)[0] == 0
        want = tuple16(data, 0, 3)
        rule = ctrl.faults.add("read lba=3 count=1 -> corrupt-pi=guard")
        status, _, md = rw(host, READ, 3, 1, md_len=8, prinfo=PRCHK_GUARD | PRCHK_REF, ilbrt=3)
        assert status == 0 and rule.hits == 1
        assert md == want[:1] + bytes([want[1] ^ 0xFF]) + want[2:], "the guard's low byte, flipped"
        status, _, md = rw(host, READ, 3, 1, md_len=8)
        assert md == want, "the stored PI is intact"
        ctrl.faults.add("write count=1 -> status end-to-end-guard-check-error dnr")
        status, _, _ = rw(host, WRITE, 3, 1, data=data, prinfo=PRACT, ilbrt=3)
        assert status == Status.END_TO_END_GUARD_CHECK_ERROR | DNR
