"""The file backend as pytest-benchmark entries: 4 KiB random reads and
writes at QD 1 and 64 on a file in tmpfs (/dev/shm) and on the disk
(/var/tmp), each point followed by its floor on the same file (fio's
io_uring engine, or the raw io_uring loop without fio), both in extra_info
with the I/O path the core used and a correctness bit (no error status, and
the data read and written through the device matches the file)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from nvmefast.bench_file import FileBench, FileBenchConfig

SECONDS = 2.0
SIZE = 1 << 30

DIRS = {"tmpfs": "/dev/shm", "disk": "/var/tmp"}


@pytest.fixture(scope="module", params=sorted(DIRS))
def file_bench(request: pytest.FixtureRequest) -> Iterator[tuple[str, FileBench]]:
    """A controller on a fresh 1 GiB file of random data in each place, verified once."""
    where = DIRS[request.param]
    if not os.access(where, os.W_OK):
        pytest.skip(f"{where} is not writable")
    fd, path = tempfile.mkstemp(prefix="nvmefast-bench-", suffix=".img", dir=where)
    os.close(fd)
    try:
        with FileBench(FileBenchConfig(path=path, size_bytes=SIZE)) as fb:
            yield request.param, fb
    finally:
        os.unlink(path)


@pytest.mark.parametrize("qd", [1, 64])
@pytest.mark.parametrize("workload", ["randread", "randwrite"])
def test_file(benchmark: BenchmarkFixture, file_bench: tuple[str, FileBench], workload: str, qd: int) -> None:
    where, fb = file_bench
    # The timed round is the device's side alone; its floor runs right after.
    r, ops = benchmark.pedantic(fb.ours, args=(workload, "irq", qd, SECONDS), rounds=1, iterations=1)
    p = fb.with_floor(workload, "irq", qd, SECONDS, r, ops)
    verified, detail = fb.verify()
    ok = verified and p.ours.errors == 0 and (p.floor is None or p.floor.errors == 0)
    benchmark.extra_info.update(
        where=where,
        io=fb.info.get("io"),
        cache=fb.info.get("cache"),
        served_by=p.served_by,
        kiops=p.ours.kiops,
        mean_us=p.ours.mean_us,
        p50_us=p.ours.p50_us,
        p99_us=p.ours.p99_us,
        floor_kind=fb.floor.kind,
        floor=None if p.floor is None else asdict(p.floor),
        ratios=p.ratios,
        verify=detail,
        correct=ok,
    )
    print(f"\n{where} {fb.info} {workload} QD{qd}: {p.ours.kiops:.1f} KIOPS, mean {p.ours.mean_us:.2f} us; "
          f"floor {p.floor}; ratios {p.ratios}")
    assert ok, detail
