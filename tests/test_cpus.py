"""ControllerConfig.cpus / `nvmefast serve --cpus`: I/O workers pinned round robin."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import pytest

from nvmefast import ConfigError, Controller, ControllerConfig, NvmeFastError
from nvmefast.cli import _cpu_list
from nvmefast.config import CpuListError, parse_cpu_list


def _io_worker_affinity() -> dict[int, tuple[str, set[int]]]:
    """Name and affinity of this process's nvmefast-io* threads, by thread ID.

    By ID, not name: another test's controller that the garbage collector
    has not closed yet has threads of the same names.
    """
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            if name.startswith("nvmefast-io"):
                out[int(tid)] = (name, os.sched_getaffinity(int(tid)))
        except OSError:  # the thread ended meanwhile
            continue
    return out


def _new_workers(
    before: dict[int, tuple[str, set[int]]], settled: Callable[[dict[str, set[int]]], bool]
) -> dict[str, set[int]]:
    """The I/O workers started since ``before``, by name, once ``settled``
    says so (or after 30 s): a worker names and then pins itself as it
    starts, after the controller's constructor has returned."""
    deadline = time.monotonic() + 30
    while True:
        got = {name: cpus for tid, (name, cpus) in _io_worker_affinity().items() if tid not in before}
        if settled(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("1") == (1,)
    assert parse_cpu_list("0-1") == (0, 1)
    assert parse_cpu_list("0,2-3,2") == (0, 2, 3)
    for bad in ("", "a", "1-", "3-1", "-1", "1,,2"):
        with pytest.raises(CpuListError):
            parse_cpu_list(bad)
    assert issubclass(CpuListError, ConfigError) and issubclass(CpuListError, NvmeFastError)
    with pytest.raises(argparse.ArgumentTypeError):
        _cpu_list("x")


def test_cpus_outside_the_affinity_mask_are_refused() -> None:
    outside = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(CpuListError, match="affinity mask"):
        ControllerConfig(cpus=(outside,))
    for bad in ((), "0", (True,), ("0",)):
        with pytest.raises(CpuListError):
            ControllerConfig(cpus=bad)  # type: ignore[arg-type]


def test_io_workers_are_pinned_round_robin() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    cpus = tuple(allowed[:2])
    before = _io_worker_affinity()
    want = {f"nvmefast-io{i}": {cpus[i % len(cpus)]} for i in range(3)}
    with Controller(ControllerConfig(iothreads=3, cpus=cpus)):
        got = _new_workers(before, lambda got: got == want)
        assert got == want


def test_no_pinning_by_default() -> None:
    mask = os.sched_getaffinity(0)
    before = _io_worker_affinity()
    with Controller(ControllerConfig(iothreads=2)):
        got = _new_workers(before, lambda got: len(got) == 2)
        assert got and all(v == mask for v in got.values())
