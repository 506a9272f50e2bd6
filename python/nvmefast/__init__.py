"""nvmefast: an emulated NVMe controller with a Rust hot path.

Embed a :class:`Controller` (configured by :class:`ControllerConfig` and
:class:`NamespaceConfig`) and drive it through BAR0 accesses, DMA mappings
and interrupt eventfds; ``nvmefast.testing`` drives it like a host driver.
"""

from __future__ import annotations

from nvmefast._core import __version__
from nvmefast.config import ControllerConfig, NamespaceConfig, ZoneConfig
from nvmefast.controller import Controller, DmaRegion
from nvmefast.errors import (
    CapacityError,
    CommandError,
    ConfigError,
    DmaMapError,
    HostTimeoutError,
    NamespaceError,
    NvmeFastError,
    QueueError,
    RegisterAccessError,
    StateError,
    VectorError,
)
from nvmefast.faults import FaultRule, FaultRuleError
from nvmefast.status import Status
from nvmefast.storage import Storage

__all__ = [
    "CapacityError",
    "CommandError",
    "ConfigError",
    "Controller",
    "ControllerConfig",
    "DmaMapError",
    "DmaRegion",
    "FaultRule",
    "FaultRuleError",
    "HostTimeoutError",
    "NamespaceConfig",
    "NamespaceError",
    "NvmeFastError",
    "QueueError",
    "RegisterAccessError",
    "StateError",
    "Status",
    "Storage",
    "VectorError",
    "ZoneConfig",
    "__version__",
]
