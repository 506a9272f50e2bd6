"""The QD sweep as pytest-benchmark entries: one round of a fixed-length
point each (the Rust host loop times itself per command; pytest-benchmark
records the wall time and the figures go to extra_info)."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from nvmefast.bench import BenchSession, Floors, point_from

SECONDS = 2.0


@pytest.mark.parametrize("mode", ["irq", "poll"])
@pytest.mark.parametrize("qd", [1, 4, 16, 64])
def test_randread(benchmark: BenchmarkFixture, session: BenchSession, floors: Floors, mode: str, qd: int) -> None:
    result = benchmark.pedantic(session.drive, args=(mode, qd, SECONDS), rounds=1, iterations=1)
    p = point_from(mode, qd, result, floors, session.cfg.backend)
    benchmark.extra_info.update(
        backend=session.cfg.backend,
        kiops=p.kiops,
        mean_us=p.mean_us,
        p99_us=p.p99_us,
        interrupts_per_io=p.interrupts_per_io,
        floor_eventfd_rtt_us=floors.eventfd_rtt_ns / 1000,
        floor_shm_rtt_us=floors.shm_rtt_ns / 1000,
        floor_memcpy_4k_per_s=floors.memcpy_4k_per_s,
        ratios=p.ratios,
        correct=p.errors == 0,
    )
    print(f"\n{session.cfg.backend} {mode} QD{qd}: {p.kiops:.1f} KIOPS, mean {p.mean_us:.2f} us; ratios {p.ratios}")
    assert p.errors == 0
