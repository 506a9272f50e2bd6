"""What fault injection and the command trace cost while they do nothing:
the same points with no rule, with a rule table that never fires (armed:
the workers read it for every command) and with the trace started and
stopped. On the null backend, where the per-command overhead is all there
is; compare the rows of one run (the floors are in ``extra_info``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from nvmefast.bench import BenchConfig, BenchSession, Floors, point_from

SECONDS = 2.0
NEVER_FIRES = "nsid=99 -> cfs"


@pytest.fixture(scope="module")
def null_session() -> Iterator[BenchSession]:
    with BenchSession(BenchConfig(backend="null")) as s:
        yield s


@pytest.mark.parametrize("hooks", ["none", "inactive-rule", "trace-stopped"])
@pytest.mark.parametrize("qd", [1, 64])
def test_inactive_hooks(
    benchmark: BenchmarkFixture, null_session: BenchSession, floors: Floors, hooks: str, qd: int
) -> None:
    ctrl = null_session.controller
    fault = ctrl.faults.add(NEVER_FIRES) if hooks == "inactive-rule" else None
    if hooks == "trace-stopped":
        ctrl.trace.start(1024)
        ctrl.trace.stop()
    try:
        result = benchmark.pedantic(null_session.drive, args=("poll", qd, SECONDS), rounds=1, iterations=1)
    finally:
        if fault is not None:
            fault.remove()
    p = point_from("poll", qd, result, floors, "null")
    benchmark.extra_info.update(
        hooks=hooks,
        kiops=p.kiops,
        mean_us=p.mean_us,
        floor_shm_rtt_us=floors.shm_rtt_ns / 1000,
        floor_memcpy_4k_per_s=floors.memcpy_4k_per_s,
        correct=p.errors == 0 and (fault is None or fault.hits == 0),
    )
    print(f"\nnull poll QD{qd} hooks={hooks}: {p.kiops:.1f} KIOPS, mean {p.mean_us:.2f} us")
    assert p.errors == 0
    assert fault is None or (fault.matched, fault.hits) == (0, 0)
