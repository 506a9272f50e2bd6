"""The server path as pytest-benchmark entries: a spawned ``nvmefast serve``
driven by the Rust vfio-user client, one fixed-length point per entry, the
in-process poll figure and the floors of the same session in extra_info."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from nvmefast import _core
from nvmefast.bench import BenchConfig, BenchSession
from nvmefast.bench_vfio_user import (
    VfioFloors,
    pinned,
    vfio_point,
    default_placement,
    measure_vfio_floors,
    spawned_server,
)

SECONDS = 2.0
SIZE = 1 << 30


@pytest.fixture(scope="module")
def vfio_floors() -> VfioFloors:
    """Floors with the UNIX-socket round trip, measured once per module."""
    return measure_vfio_floors(SIZE)


@pytest.fixture(scope="module")
def placed() -> Iterator[tuple[_core.VfioUserBench, BenchSession]]:
    """The client (pinned like ``nvmefast bench --vfio-user`` pins it) on a
    spawned, filled server, and an in-process session placed the same way."""
    client_cpu, server_cpus = default_placement()
    with spawned_server(SIZE, server_cpus) as (path, _proc), pinned(None if client_cpu is None else (client_cpu,)):
        client = _core.VfioUserBench(path)
        with pinned(server_cpus):
            session = BenchSession(BenchConfig(size_bytes=SIZE))
        try:
            client.fill()
            session.fill()
            assert client.verify(64) == 0
            yield client, session
        finally:
            client.close()
            session.close()


@pytest.mark.parametrize("doorbell", ["page", "shadow", "trap"])
@pytest.mark.parametrize("mode", ["poll", "irq"])
@pytest.mark.parametrize("qd", [1, 4, 16, 64])
def test_vfio_user_randread(
    benchmark: BenchmarkFixture,
    placed: tuple[_core.VfioUserBench, BenchSession],
    vfio_floors: VfioFloors,
    qd: int,
    mode: str,
    doorbell: str,
) -> None:
    client, session = placed
    base = vfio_point("in-process", "poll", "mmio", qd, session.drive("poll", qd, SECONDS), vfio_floors)
    kw = dict(qd=qd, mode=mode, doorbell=doorbell, seconds=SECONDS)
    result = benchmark.pedantic(client.point, kwargs=kw, rounds=1, iterations=1)
    p = vfio_point("vfio-user", mode, doorbell, qd, result, vfio_floors)
    benchmark.extra_info.update(
        kiops=p.kiops,
        mean_us=p.mean_us,
        p50_us=p.p50_us,
        p99_us=p.p99_us,
        messages_per_io=p.messages_per_io,
        interrupts_per_io=p.interrupts_per_io,
        in_process_poll_kiops=base.kiops,
        vs_in_process=p.kiops / base.kiops if base.kiops else None,
        floor_eventfd_rtt_us=vfio_floors.eventfd_rtt_ns / 1000,
        floor_shm_rtt_us=vfio_floors.shm_rtt_ns / 1000,
        floor_unix_socket_rtt_us=vfio_floors.unix_socket_rtt_ns / 1000,
        floor_memcpy_4k_per_s=vfio_floors.memcpy_4k_per_s,
        ratios=p.ratios,
        correct=p.errors == 0 and base.errors == 0,
    )
    print(f"\nvfio-user {mode} {doorbell} QD{qd}: {p.kiops:.1f} KIOPS (in-process poll {base.kiops:.1f}), "
          f"mean {p.mean_us:.2f} us, {p.messages_per_io:.3f} msg/IO; ratios {p.ratios}")
    assert p.errors == 0
