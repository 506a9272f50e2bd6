"""MSI-X over vfio-user: eventfds given with SET_IRQS fire on completions;
per-vector masks (SET_IRQS MASK/UNMASK, advertised by VFIO_IRQ_INFO_MASKABLE)
and the function mask (config space Message Control) hold interrupts back
as PBA bits, read through the BAR the MSI-X capability names; unmasking
delivers each held interrupt once and clears its bit.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from vfio_user_client import (
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_PCI_MSIX_IRQ_INDEX,
    connect,
)
from vfio_user_host import (
    NvmeHost,
    running_server,
)

pytestmark = pytest.mark.timeout(15)

LBA = 512
QUIET = 0.2
"""How long "no interrupt" is watched for: far beyond a completion's latency."""


def fired(fd: int, timeout: float) -> int:
    """The eventfd's counter if it fires within ``timeout`` (consumed), else 0."""
    if not select.select([fd], [], [], timeout)[0]:
        return 0
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


@pytest.fixture
def host() -> Iterator[NvmeHost]:
    with running_server() as (_server, path), connect(path) as client, NvmeHost(client) as h:
        h.enable()
        h.create_io_queue_pair(1, 64, vector=1)
        h.create_io_queue_pair(2, 64, vector=2)
        yield h


def test_eventfd_fires_on_completion(host: NvmeHost) -> None:
    # wait(irq=True) looks at the CQ only after the vector's eventfd fired.
    assert host.write(1, 0, b"\xA5" * LBA, irq=True).ok
    assert host.read(1, 0, 1, irq=True) == b"\xA5" * LBA
    # The other queue's vector stayed quiet.
    assert fired(host.eventfds[2], 0.05) == 0
    assert host.write(2, 8, b"\x5A" * LBA, irq=True).ok


def test_masked_vector_sets_pba_and_unmask_delivers(host: NvmeHost) -> None:
    efd = host.eventfds[1]
    host.mask_vector(1, True)
    assert host.write(1, 0, b"\x01" * LBA, irq=False).ok  # completion found by polling
    assert fired(efd, QUIET) == 0, "a masked vector must not signal its eventfd"
    assert host.pba_bits() & (1 << 1), "the held interrupt must show as PBA bit 1"
    assert not host.pba_bits() & (1 << 2)
    host.mask_vector(1, False)
    assert fired(efd, 1.0) >= 1, "unmasking a vector with its pending bit set must fire it"
    assert not host.pba_bits() & (1 << 1), "delivery clears the pending bit"
    assert fired(efd, QUIET) == 0, "the pending interrupt is delivered once"
    # And the vector works normally afterwards.
    assert host.write(1, 1, b"\x02" * LBA, irq=True).ok


def test_mask_with_data_bool_selects_vectors(host: NvmeHost) -> None:
    # start 1, count 2: mask vector 1 only (bool False for vector 2).
    host.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1, 2, VFIO_IRQ_SET_ACTION_MASK, bools=[True, False])
    assert host.write(1, 0, b"\x03" * LBA, irq=False).ok
    assert host.write(2, 0, b"\x04" * LBA, irq=True).ok  # vector 2 still delivers
    assert fired(host.eventfds[1], QUIET) == 0
    assert host.pba_bits() & (1 << 1)
    host.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, VFIO_IRQ_SET_ACTION_UNMASK, bools=[True])
    assert fired(host.eventfds[1], 1.0) >= 1
    assert not host.pba_bits() & (1 << 1)


def test_function_mask_holds_every_vector(host: NvmeHost) -> None:
    host.set_msix_control(enable=True, function_mask=True)
    assert host.write(1, 0, b"\x05" * LBA, irq=False).ok
    assert host.write(2, 0, b"\x06" * LBA, irq=False).ok
    assert fired(host.eventfds[1], QUIET) == 0 and fired(host.eventfds[2], 0) == 0
    assert host.pba_bits() & 0b110 == 0b110
    host.set_msix_control(enable=True, function_mask=False)
    assert fired(host.eventfds[1], 1.0) >= 1
    assert fired(host.eventfds[2], 1.0) >= 1
    assert host.pba_bits() & 0b110 == 0


def test_deassigned_eventfd_is_not_signalled(host: NvmeHost) -> None:
    efd = host.eventfds[1]
    host.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[None])
    assert host.write(1, 0, b"\x07" * LBA, irq=False).ok
    assert fired(efd, QUIET) == 0, "the server still signals an eventfd it was told to drop"
    # A new eventfd takes over.
    new = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    host.eventfds[1] = new
    os.close(efd)
    host.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[new])
    assert host.write(1, 1, b"\x08" * LBA, irq=True).ok


def test_qemu_style_msix_enable_without_fd() -> None:
    # QEMU enables MSI-X with SET_IRQS(MSIX, TRIGGER|DATA_EVENTFD, start 0, count 1)
    # and fd -1, i.e. no fd at all, then assigns the real eventfds per vector.
    with running_server() as (_server, path), connect(path) as client, NvmeHost(client) as h:
        client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[None])
        h.enable()
        h.create_io_queue_pair(1, 16, vector=1)
        assert h.write(1, 0, b"\x09" * LBA, irq=True).ok


def test_disable_all_msix_with_count_zero(host: NvmeHost) -> None:
    # start 0, count 0, DATA_NONE: disable every interrupt of the index.
    host.client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, VFIO_IRQ_SET_ACTION_TRIGGER)
    assert host.write(1, 0, b"\x0A" * LBA, irq=False).ok
    assert fired(host.eventfds[1], QUIET) == 0
