"""Shared fixtures: a controller built from a per-test config and an enabled host.

A test picks its controller configuration with the ``nvme_config`` marker::

    @pytest.mark.nvme_config(mdts=0, namespaces=[NamespaceConfig(size_bytes=8 << 20, lba_size=4096)])
    def test_big(host): ...

The per-test timeout lives in pyproject.toml (``timeout`` for pytest-timeout),
so a hung completion fails one test instead of the whole run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host

MiB = 1 << 20

DEFAULT_CONFIG: dict[str, Any] = {
    "namespaces": [NamespaceConfig(size_bytes=16 * MiB, lba_size=512, backend="ram")],
    "serial": "NVMEFAST-TEST-0001",
    "model": "nvmefast test controller",
    "firmware": "T1.0",
    "max_io_queue_pairs": 8,
    "poll_us": 50,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "nvme_config(**kwargs): ControllerConfig overrides for the controller fixture"
    )


@pytest.fixture
def config(request: pytest.FixtureRequest) -> ControllerConfig:
    """The test's ControllerConfig: DEFAULT_CONFIG updated by its ``nvme_config`` marker."""
    kwargs = dict(DEFAULT_CONFIG)
    marker = request.node.get_closest_marker("nvme_config")
    if marker is not None:
        kwargs.update(marker.kwargs)
    return ControllerConfig(**kwargs)


@pytest.fixture
def controller(config: ControllerConfig) -> Iterator[Controller]:
    """A controller built from ``config``, closed after the test."""
    with Controller(config) as ctrl:
        yield ctrl


@pytest.fixture
def bare_host(controller: Controller) -> Iterator[Host]:
    """A host with guest memory mapped but the controller not yet enabled."""
    with Host(controller) as host:
        yield host


@pytest.fixture
def host(bare_host: Host, config: ControllerConfig) -> Host:
    """An enabled host with I/O queue pair 1 (vector 1, interrupts on)."""
    bare_host.enable()
    bare_host.set_num_queues(config.max_io_queue_pairs, config.max_io_queue_pairs)
    bare_host.create_io_queue_pair(1)
    return bare_host
