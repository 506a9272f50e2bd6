"""pytest fixtures for testing a driver against nvmefast.

Installed with nvmefast and loaded by pytest through its ``pytest11`` entry
point, so a test of your own driver needs no conftest::

    def test_roundtrip(nvme_host):
        nvme_host.write(1, 0, b"x" * 512)
        assert nvme_host.read(1, 0, 1) == b"x" * 512

Fixtures (each per test):

- ``nvme_config``: the :class:`~nvmefast.ControllerConfig` the others use;
  one 16 MiB RAM namespace of 512-byte LBAs unless the test's
  ``nvme_config`` marker says otherwise. Override the fixture in a conftest
  for a project-wide default.
- ``nvme_controller``: a :class:`~nvmefast.Controller` on that config,
  closed after the test.
- ``nvme_host``: a :class:`~nvmefast.testing.Host` on ``nvme_controller``,
  enabled (admin queue up, MSI-X eventfds) with I/O queue pair 1 created,
  so ``read``/``write``/``io`` on queue 1 work at once.
- ``nvme_server``: a started :class:`~nvmefast.vfio_user.VfioUserServer`
  on a fresh socket (``nvme_server.path``) serving ``nvme_config``, stopped
  after the test: point QEMU's ``vfio-user-pci`` or your own client at it.

Markers:

- ``@pytest.mark.nvme_config(config=None, **fields)``: a whole
  ``ControllerConfig``, or its fields (``namespaces=[...]``, ``serial=...``).
  ``namespaces`` may also be ``NamespaceConfig`` keyword dicts, e.g.
  ``dict(lba_size=4096, metadata_size=16, pi_type=1, guard="crc64")``, whose
  ``zones`` may in turn be a ``ZoneConfig`` keyword dict: a zoned namespace
  is ``{"size_bytes": 64 << 20, "lba_size": 4096, "zones": {"size_bytes": 4 << 20}}``.
- ``@pytest.mark.nvme_host(irq=True, memory_bytes=64 << 20, queues=1,
  entries=None, lbafee=False)``: how ``nvme_host`` is built; ``queues=0``
  leaves I/O queue creation to the test; ``lbafee=True`` enables the
  extended LBA formats (Host Behavior Support, as Linux does) so Format NVM
  may select the 64-bit guard. For I/O with metadata and PI, see
  :mod:`nvmefast.testing.pi`.
- ``@pytest.mark.nvme_server(doorbells="trap", doorbell_scan_us=100)``: the
  server's options.
- ``@pytest.mark.nvme_faults(*rules)``: fault rules (text form or
  :class:`~nvmefast.faults.FaultRule`) installed on the controller of
  ``nvme_controller`` / ``nvme_host`` and of ``nvme_server`` before the test
  runs (``docs/faults.md``).

A marker with an unknown option fails the test's setup with a
:class:`~nvmefast.ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from nvmefast.config import ControllerConfig, NamespaceConfig, ZoneConfig
from nvmefast.controller import Controller
from nvmefast.errors import ConfigError

if TYPE_CHECKING:
    from nvmefast.testing import Host
    from nvmefast.vfio_user import VfioUserServer

__all__ = [
    "DEFAULT_NAMESPACE_BYTES",
    "nvme_config",
    "nvme_controller",
    "nvme_host",
    "nvme_server",
]

DEFAULT_NAMESPACE_BYTES = 16 << 20
"""Size of the default configuration's one RAM namespace."""

_HOST_OPTIONS = {"irq": True, "memory_bytes": 64 << 20, "queues": 1, "entries": None, "lbafee": False}
_SERVER_OPTIONS = {"doorbells": "trap", "doorbell_scan_us": 100}


def pytest_configure(config: pytest.Config) -> None:
    """Registers the plugin's markers (so ``--strict-markers`` accepts them)."""
    config.addinivalue_line(
        "markers", "nvme_config(config=None, **fields): the ControllerConfig of the nvmefast fixtures"
    )
    config.addinivalue_line(
        "markers",
        "nvme_host(irq=True, memory_bytes=67108864, queues=1, entries=None, lbafee=False): how nvme_host is built",
    )
    config.addinivalue_line(
        "markers", "nvme_faults(*rules): fault rules installed on the fixtures' controllers"
    )
    config.addinivalue_line(
        "markers", "nvme_server(doorbells='trap', doorbell_scan_us=100): the options of nvme_server"
    )


def _marker_options(request: pytest.FixtureRequest, name: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults in ``allowed`` updated by the nearest ``name`` marker's keywords."""
    out = dict(allowed)
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return out
    if marker.args:
        raise ConfigError(f"@pytest.mark.{name} takes keywords only ({', '.join(allowed)}), got {marker.args!r}")
    unknown = sorted(set(marker.kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"@pytest.mark.{name}: unknown option(s) {unknown}; it takes {', '.join(allowed)}")
    out.update(marker.kwargs)
    return out


def _namespace(ns: NamespaceConfig | Mapping[str, Any]) -> NamespaceConfig:
    if isinstance(ns, NamespaceConfig):
        return ns
    if isinstance(ns, Mapping):
        fields = dict(ns)
        zones = fields.get("zones")
        if isinstance(zones, Mapping):
            fields["zones"] = ZoneConfig(**zones)
        return NamespaceConfig(**fields)
    raise ConfigError(f"a namespace must be a NamespaceConfig or a dict of its fields, got {ns!r}")


@pytest.fixture
def nvme_config(request: pytest.FixtureRequest) -> ControllerConfig:
    """The controller configuration of ``nvme_controller`` and ``nvme_server``."""
    marker = request.node.get_closest_marker("nvme_config")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        raise ConfigError(f"@pytest.mark.nvme_config takes keywords (config=... or fields), got {marker.args!r}")
    whole = kwargs.pop("config", None)
    if whole is not None:
        if not isinstance(whole, ControllerConfig):
            raise ConfigError(f"@pytest.mark.nvme_config(config=...) must be a ControllerConfig, got {whole!r}")
        if kwargs:
            return dataclasses.replace(whole, **kwargs)
        return whole
    fields = {f.name for f in dataclasses.fields(ControllerConfig)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"@pytest.mark.nvme_config: {unknown} are not ControllerConfig fields")
    namespaces = kwargs.pop("namespaces", None)
    if namespaces is None:
        ns: list[NamespaceConfig] = [NamespaceConfig(size_bytes=DEFAULT_NAMESPACE_BYTES, lba_size=512, backend="ram")]
    else:
        ns = [_namespace(n) for n in namespaces]
    return ControllerConfig(namespaces=ns, **kwargs)


def _install_faults(request: pytest.FixtureRequest, ctrl: Controller) -> None:
    """Adds the rules of the nearest ``nvme_faults`` marker to ``ctrl``."""
    marker = request.node.get_closest_marker("nvme_faults")
    if marker is None:
        return
    if marker.kwargs:
        raise ConfigError(f"@pytest.mark.nvme_faults takes rules only (text or FaultRule), got {marker.kwargs!r}")
    for rule in marker.args:
        ctrl.faults.add(rule)


@pytest.fixture
def nvme_controller(request: pytest.FixtureRequest, nvme_config: ControllerConfig) -> Iterator[Controller]:
    """An in-process controller on ``nvme_config``, closed after the test."""
    with Controller(nvme_config) as ctrl:
        _install_faults(request, ctrl)
        yield ctrl


@pytest.fixture
def nvme_host(request: pytest.FixtureRequest, nvme_controller: Controller) -> Iterator[Host]:
    """A ``testing.Host`` on ``nvme_controller``: enabled, I/O queue pairs 1..``queues`` created."""
    from nvmefast.testing import Host  # noqa: F811  (the runtime import; TYPE_CHECKING names it too)

    opts = _marker_options(request, "nvme_host", _HOST_OPTIONS)
    queues = int(opts["queues"])
    if queues < 0:
        raise ConfigError(f"@pytest.mark.nvme_host(queues={queues}) must be 0 or more")
    with Host(nvme_controller, memory_bytes=int(opts["memory_bytes"]), irq=bool(opts["irq"])) as host:
        host.enable()
        if opts["lbafee"]:
            from nvmefast.testing.pi import enable_lbafee

            completion = enable_lbafee(host)
            if not completion.ok:
                raise ConfigError(f"@pytest.mark.nvme_host(lbafee=True): Set Features 16h failed: {completion}")
        if queues:
            host.set_num_queues(queues, queues)
            for qid in range(1, queues + 1):
                host.create_io_queue_pair(qid, entries=opts["entries"])
        yield host


@pytest.fixture
def nvme_server(request: pytest.FixtureRequest, nvme_config: ControllerConfig) -> Iterator[VfioUserServer]:
    """A started vfio-user server on a fresh socket (``.path``), serving ``nvme_config``."""
    from nvmefast.vfio_user import VfioUserServer  # noqa: F811

    opts = _marker_options(request, "nvme_server", _SERVER_OPTIONS)
    # sun_path holds 108 bytes: pytest's tmp_path is often longer.
    directory = tempfile.mkdtemp(prefix="nvmefast-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        server = VfioUserServer(
            os.path.join(directory, "nvme.sock"),
            nvme_config,
            doorbells=opts["doorbells"],
            doorbell_scan_us=int(opts["doorbell_scan_us"]),
        )
        server.start()
        try:
            _install_faults(request, server.controller)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
