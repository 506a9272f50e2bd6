"""Benchmarks: run on purpose, never in the test suite.

    pytest bench/ --benchmark-enable --benchmark-json=bench.json

Each benchmark records its floor (measured in the same session) and a
correctness bit in ``extra_info`` beside its figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmefast.bench import BenchConfig, BenchSession, Floors, measure_floors


@pytest.fixture(scope="session")
def floors() -> Floors:
    """The raw primitives, measured once per benchmark session."""
    return measure_floors(1 << 30)


@pytest.fixture(scope="session", params=["ram", "null"])
def session(request: pytest.FixtureRequest) -> Iterator[BenchSession]:
    """A controller with a 1 GiB namespace of each backend, filled when RAM."""
    with BenchSession(BenchConfig(backend=request.param)) as s:
        if request.param == "ram":
            s.fill()
        yield s
