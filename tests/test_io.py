"""I/O data path: Read/Write/Flush with PRPs of every shape, queue wrap, concurrency.

Every read-back is compared byte for byte with random data the test wrote.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from nvmefast import NamespaceConfig
from nvmefast.testing import PAGE_SIZE, Host, build_sqe, data_pointers

MiB = 1 << 20
READ, WRITE, FLUSH = 0x02, 0x01, 0x00
NSZE_DEFAULT = 16 * MiB // 512  # the conftest namespace


def _ns(lba_size: int, size: int = 16 * MiB, backend: str = "ram") -> list[NamespaceConfig]:
    return [NamespaceConfig(size_bytes=size, lba_size=lba_size, backend=backend)]


BOTH_LBA_SIZES = [
    pytest.param(size, marks=pytest.mark.nvme_config(namespaces=_ns(size)), id=f"lba{size}")
    for size in (512, 4096)
]


@pytest.mark.parametrize("lba_size", BOTH_LBA_SIZES)
def test_write_read_roundtrip(host: Host, lba_size: int) -> None:
    assert host.identify_namespace(1).lba_size == lba_size
    nsze = 16 * MiB // lba_size
    rng = random.Random(lba_size)
    written: dict[int, bytes] = {}
    for slba, nlb in [(0, 1), (1, 7), (nsze - 1, 1), (nsze - 8, 8), (100, 16), (1000, 3)]:
        data = os.urandom(nlb * lba_size)
        host.write(1, slba, data)
        for i in range(nlb):
            written[slba + i] = data[i * lba_size : (i + 1) * lba_size]
    # overwrite one block inside an earlier range: neighbours must keep their data
    patch = bytes(rng.getrandbits(8) for _ in range(lba_size))
    host.write(1, 103, patch)
    written[103] = patch
    for slba, nlb in [(0, 8), (nsze - 8, 8), (100, 16), (1000, 3)]:
        got = host.read(1, slba, nlb)
        assert got == b"".join(written[slba + i] for i in range(nlb)), f"slba {slba} nlb {nlb}"


@pytest.mark.parametrize("lba_size", BOTH_LBA_SIZES)
def test_prp_list_across_pages(host: Host, lba_size: int) -> None:
    # 128 KiB = MDTS 5: PRP1 plus a PRP list of 31 entries.
    data = os.urandom(128 * 1024)
    host.write(1, 64, data)
    assert host.read(1, 64, len(data) // lba_size) == data
    # three pages: the smallest transfer that needs a PRP list
    data = os.urandom(3 * PAGE_SIZE)
    host.write(1, 512, data)
    assert host.read(1, 512, len(data) // lba_size) == data


@pytest.mark.nvme_config(mdts=0, namespaces=_ns(4096, size=8 * MiB))
@pytest.mark.parametrize("pages", [513, 514, 600, 1100])
def test_chained_prp_list(host: Host, pages: int) -> None:
    # 513 pages: PRP1 + exactly 512 list entries, one full list page, no chain.
    # 514+: 511 entries then a pointer to the next list page (1100 chains twice).
    expected_list_pages = -(-(pages - 2) // 511)  # ceil((list entries - 1) / 511)
    data = os.urandom(pages * PAGE_SIZE)
    buf = host.alloc(len(data))
    entries = data_pointers(buf, len(data))
    assert len(host.build_prps(entries).list_pages) == expected_list_pages
    host.write(1, 0, data, buf_iova=buf)
    host.write_mem(buf, bytes(len(data)))  # so the read must refill the buffer
    assert host.read(1, 0, pages, buf_iova=buf) == data
    host.free(buf)


@pytest.mark.parametrize("offset", [4, 0x200, 0xFFC])
@pytest.mark.parametrize("lba_size", BOTH_LBA_SIZES)
def test_prp1_offset(host: Host, lba_size: int, offset: int) -> None:
    # PRP1 may point anywhere dword aligned in its page; the rest are page aligned.
    for nbytes in (lba_size, 2 * PAGE_SIZE, 9 * PAGE_SIZE):
        buf = host.alloc(nbytes + 2 * PAGE_SIZE)
        data = os.urandom(nbytes)
        host.write(1, 40, data, buf_iova=buf + offset)
        other = host.alloc(nbytes + 2 * PAGE_SIZE)
        assert host.read(1, 40, nbytes // lba_size, buf_iova=other + offset) == data
        # nothing was written before the buffer or after its end
        assert host.read_mem(other, offset) == bytes(offset)
        tail = other + offset + nbytes
        assert host.read_mem(tail, 64) == bytes(64)
        host.free(buf)
        host.free(other)


def test_buffers_in_second_region(host: Host) -> None:
    second = host.add_region(0x7_0000_0000, 2 * MiB)
    first_pages = [host.alloc(PAGE_SIZE) for _ in range(4)]
    second_pages = [host.alloc(PAGE_SIZE, region=second) for _ in range(4)]
    # interleave the regions page by page, starting mid-page in the second one
    entries = [second_pages[0] + 0x100]
    for a, b in zip(first_pages, second_pages[1:] + [host.alloc(PAGE_SIZE, region=second)]):
        entries += [a, b]
    nbytes = (len(entries) - 1) * PAGE_SIZE  # the first entry covers 0xF00 bytes
    nbytes -= nbytes % 512
    data = os.urandom(nbytes)
    host.write(1, 200, data, entries=entries)
    assert host.read(1, 200, nbytes // 512) == data
    # and the read side scattering into the same pages
    for e in entries:
        host.write_mem(e, bytes(PAGE_SIZE - e % PAGE_SIZE))
    assert host.read(1, 200, nbytes // 512, entries=entries) == data
    # a whole transfer, PRP list pages included, in the second region
    buf = host.alloc(64 * 1024, region=second)
    data = os.urandom(64 * 1024)
    host.write(1, 300, data, buf_iova=buf)
    assert host.read(1, 300, 128) == data


@pytest.mark.parametrize("irq", [True, False], ids=["irq", "poll"])
def test_cq_phase_many_wraps(host: Host, irq: bool) -> None:
    entries = 4
    host.create_io_queue_pair(2, entries=entries, vector=2, irq=irq)
    blocks = 64
    expected = [os.urandom(512) for _ in range(blocks)]
    for slba, data in enumerate(expected):
        host.write(1, slba, data, qid=2)
    phases = set()
    commands = 3000
    buf = host.alloc(blocks * 512)
    outstanding: list[tuple[int, int]] = []
    for i in range(commands):
        slba = i % blocks
        sqe = build_sqe(READ, nsid=1, prp1=buf + slba * 512, cdw10=slba, cdw12=0)
        # keep the 4-entry SQ full (3 in flight): submit waits for a free slot
        outstanding.append((host.submit(sqe, 2), slba))
        if len(outstanding) == entries - 1:
            cid, s = outstanding.pop(0)
            completion = host.wait(2, cid)
            assert completion.ok, completion
            assert completion.sqid == 2
            phases.add(completion.phase)
            assert host.read_mem(buf + s * 512, 512) == expected[s]
    for cid, s in outstanding:
        assert host.wait(2, cid).ok
    assert phases == {0, 1}
    assert host.interrupts[2] > 0 if irq else host.interrupts[2] == 0


@pytest.mark.nvme_config(max_io_queue_pairs=4)
def test_concurrent_queue_pairs(host: Host) -> None:
    for qid in (2, 3, 4):
        host.create_io_queue_pair(qid, entries=32)
    errors: list[BaseException] = []

    def worker(qid: int) -> None:
        try:
            base = qid * 1000
            for i in range(150):
                data = os.urandom(512 * (1 + i % 8))
                host.write(1, base + i, data, qid=qid)
                assert host.read(1, base + i, len(data) // 512, qid=qid) == data, (qid, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(qid,)) for qid in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for qid in (1, 2, 3, 4):
        assert host.interrupts[qid] > 0


def test_concurrent_threads_share_a_vector(host: Host) -> None:
    # Two CQs on one vector, one thread per queue: each must see its own completions.
    host.create_io_queue_pair(2, entries=8, vector=1)
    errors: list[BaseException] = []

    def worker(qid: int) -> None:
        try:
            for i in range(100):
                data = os.urandom(512)
                host.write(1, qid * 500 + i, data, qid=qid)
                assert host.read(1, qid * 500 + i, 1, qid=qid) == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(qid,)) for qid in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_flush(host: Host) -> None:
    data = os.urandom(4096)
    host.write(1, 8, data)
    completion = host.io(build_sqe(FLUSH, nsid=1), 1)
    assert (completion.sct, completion.sc) == (0, 0)
    host.flush(1)
    assert host.read(1, 8, 8) == data


@pytest.mark.nvme_config(
    namespaces=[
        NamespaceConfig(size_bytes=4 * MiB, lba_size=512, backend="null"),
        NamespaceConfig(size_bytes=4 * MiB, lba_size=4096, backend="null"),
    ]
)
def test_null_backend_accepts_io(host: Host) -> None:
    for nsid, lba in ((1, 512), (2, 4096)):
        assert host.identify_namespace(nsid).nsze == 4 * MiB // lba
        host.write(nsid, 0, os.urandom(8 * lba))
        host.read(nsid, 0, 8)
        host.write(nsid, 4 * MiB // lba - 8, os.urandom(8 * lba))
        host.flush(nsid)
        # a null namespace still has a size: past it is LBA Out of Range (80h)
        buf = host.alloc(lba)
        sqe = build_sqe(READ, nsid=nsid, prp1=buf, cdw10=4 * MiB // lba, cdw12=0)
        completion = host.io(sqe, 1)
        assert (completion.sct, completion.sc) == (0, 0x80), str(completion)
        host.free(buf)


@pytest.mark.parametrize("seed", range(12))
def test_random_sizes_and_offsets(host: Host, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(4):
        nlb = rng.randint(1, 256)  # up to MDTS (128 KiB)
        slba = rng.randrange(0, NSZE_DEFAULT - nlb)
        offset = rng.randrange(0, PAGE_SIZE, 4)
        data = rng.randbytes(nlb * 512)
        wbuf = host.alloc(nlb * 512 + PAGE_SIZE)
        host.write(1, slba, data, buf_iova=wbuf + offset)
        rbuf = host.alloc(nlb * 512 + PAGE_SIZE)
        roffset = rng.randrange(0, PAGE_SIZE, 4)
        assert host.read(1, slba, nlb, buf_iova=rbuf + roffset) == data, (slba, nlb, offset, roffset)
        host.free(wbuf)
        host.free(rbuf)
