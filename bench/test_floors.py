"""The floors themselves, as pytest-benchmark entries."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from nvmefast import _core


def test_eventfd_pingpong(benchmark: BenchmarkFixture) -> None:
    rtt = benchmark(_core.floor_eventfd_pingpong, 2000, 1.0)
    benchmark.extra_info.update(rtt_ns=rtt, correct=rtt > 0)


def test_shm_pingpong(benchmark: BenchmarkFixture) -> None:
    rtt = benchmark(_core.floor_shm_pingpong, 100_000, 1.0)
    benchmark.extra_info.update(rtt_ns=rtt, correct=rtt > 0)


def test_memcpy_4k(benchmark: BenchmarkFixture) -> None:
    rate = benchmark.pedantic(_core.floor_memcpy_4k, args=(1 << 30, 1.0), rounds=3, iterations=1)
    benchmark.extra_info.update(per_second=rate, correct=rate > 0)
