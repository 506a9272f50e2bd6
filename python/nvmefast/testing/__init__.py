"""A host driver for nvmefast controllers, for our tests and for users' tests.

:class:`Host` does what the Linux nvme driver does (register bring-up, admin
and I/O queues in guest memory, PRPs, doorbells, phase tags, MSI-X eventfds)
through the same embedding contract a VMM uses::

    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    from nvmefast.testing import Host

    with Controller(ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20)])) as ctrl:
        with Host(ctrl) as host:
            host.enable()
            host.set_num_queues(1, 1)
            host.create_io_queue_pair(1)
            host.write(1, 0, b"x" * 512)
            assert host.read(1, 0, 1) == b"x" * 512

Zoned namespaces: ``host.zone_report``, ``host.zones``, ``host.zone_send``
(a :class:`ZoneSendAction`, optionally Select All) and ``host.zone_append``
(returns the assigned LBA); zones come back as :class:`ZoneDescriptor` with
a :class:`ZoneState`. :mod:`nvmefast.testing.zns` has the rest.
"""

from nvmefast.testing.doorbells import HostDoorbells, ShadowBuffers, need_event
from nvmefast.testing.host import Host, command_error
from nvmefast.testing.identify import IdentifyController, IdentifyNamespace, LbaFormat
from nvmefast.testing.memory import PAGE_SIZE, GuestMemory, GuestMemoryError
from nvmefast.testing.msix import MsixTable, enable_msix
from nvmefast.testing.prp import PrpSet, build_prps, data_pointers
from nvmefast.testing.queues import QueuePair
from nvmefast.testing.sgl import (
    PSDT_SGL, SglDescriptor, SglSet, bit_bucket, build_sgl, data_block, last_segment, segment,
)
from nvmefast.testing.sqe import Completion, build_sqe
from nvmefast.testing.zns import (
    ReportFilter, ZoneAttribute, ZoneDescriptor, ZoneReport, ZoneSendAction, ZoneState,
)

__all__ = [
    "PAGE_SIZE",
    "PSDT_SGL",
    "Completion",
    "GuestMemory",
    "GuestMemoryError",
    "Host",
    "HostDoorbells",
    "IdentifyController",
    "IdentifyNamespace",
    "LbaFormat",
    "MsixTable",
    "PrpSet",
    "QueuePair",
    "ReportFilter",
    "SglDescriptor",
    "SglSet",
    "ShadowBuffers",
    "ZoneAttribute",
    "ZoneDescriptor",
    "ZoneReport",
    "ZoneSendAction",
    "ZoneState",
    "bit_bucket",
    "build_prps",
    "build_sgl",
    "build_sqe",
    "command_error",
    "data_block",
    "data_pointers",
    "enable_msix",
    "last_segment",
    "need_event",
    "segment",
]
