"""INTx and MSI over vfio-user, the way QEMU's vfio-user-pci drives them.

INTx is level triggered: the trigger eventfd fires when the line rises (a
CQ with interrupts enabled holds entries the host has not consumed), and
SET_IRQS INTx ACTION_UNMASK (QEMU's EOI, sent on the next BAR access) fires
it again while the line is still high. ACTION_MASK holds it back. MSI is
one vector, reached by SET_IRQS MSI with a trigger eventfd.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from nvmefast.testing.sqe import IO_WRITE, build_sqe
from vfio_user_client import (
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    connect,
)
from vfio_user_host import PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_STATUS, NvmeHost, running_server

pytestmark = pytest.mark.timeout(20)

QUIET = 0.2
STATUS_INTERRUPT = 1 << 3


def fired(fd: int, timeout: float = 2.0) -> bool:
    """True if eventfd ``fd`` fires within ``timeout`` (consumed)."""
    if not select.select([fd], [], [], timeout)[0]:
        return False
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        return False
    return True


def submit_write(host: NvmeHost, slba: int) -> int:
    buf = host.alloc(512)
    host.client.memory.write(buf, bytes([slba & 0xFF]) * 512)
    return host.submit(1, build_sqe(IO_WRITE, nsid=1, prp1=buf, cdw10=slba, cdw12=0))


@pytest.fixture
def intx() -> Iterator[tuple[NvmeHost, int]]:
    """A host brought up with MSI-X, then switched to INTx as QEMU does when
    the guest disables MSI-X: MSI-X off (SET_IRQS count 0), INTx Disable
    clear, an INTx trigger eventfd."""
    with running_server() as (_server, path), connect(path) as client, NvmeHost(client) as h:
        h.enable()
        h.create_io_queue_pair(1, 64, vector=0)
        client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, VFIO_IRQ_SET_ACTION_TRIGGER)
        h.set_msix_control(enable=False, function_mask=False)
        command = h.config_read(PCI_COMMAND, 2)
        h.config_write(PCI_COMMAND, command & ~PCI_COMMAND_INTX_DISABLE, 2)
        trigger = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[trigger])
            yield h, trigger
        finally:
            os.close(trigger)


def test_intx_fires_and_refires_on_unmask_while_the_line_is_high(intx: tuple[NvmeHost, int]) -> None:
    host, trigger = intx
    cid = submit_write(host, 1)
    assert fired(trigger), "no INTx on a completion"
    assert host.config_read(PCI_STATUS, 2) & STATUS_INTERRUPT, "Status.Interrupt clear while asserted"
    # QEMU's EOI with the CQ entry still unconsumed: the line is still high.
    host.client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK)
    assert fired(trigger), "unmask with the line high did not re-fire INTx"
    # Consume the entry (CQ head doorbell): the line falls, EOI fires nothing.
    assert host.wait(1, cid, irq=False).ok
    host.client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK)
    assert not fired(trigger, QUIET), "INTx fired with nothing to consume"
    assert not host.config_read(PCI_STATUS, 2) & STATUS_INTERRUPT


def test_intx_mask_holds_the_interrupt_until_unmask(intx: tuple[NvmeHost, int]) -> None:
    host, trigger = intx
    host.client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_MASK)
    cid = submit_write(host, 2)
    assert not fired(trigger, QUIET), "a masked INTx fired"
    host.client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK)
    assert fired(trigger), "unmask did not deliver the held INTx"
    assert host.wait(1, cid, irq=False).ok


def test_intx_disable_detaches_the_trigger(intx: tuple[NvmeHost, int]) -> None:
    host, trigger = intx
    host.client.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, 0, 0, VFIO_IRQ_SET_ACTION_TRIGGER)
    cid = submit_write(host, 3)
    assert host.wait(1, cid, irq=False).ok
    assert not fired(trigger, QUIET), "INTx fired after SET_IRQS disabled it"


def test_msi_vector_fires_through_its_eventfd() -> None:
    with running_server() as (_server, path), connect(path) as client, NvmeHost(client) as host:
        host.enable()
        host.create_io_queue_pair(1, 64, vector=0)
        client.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, VFIO_IRQ_SET_ACTION_TRIGGER)
        host.set_msix_control(enable=False, function_mask=False)
        msi = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            client.set_irqs(VFIO_PCI_MSI_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[msi])
            cid = submit_write(host, 4)
            assert fired(msi), "no MSI on a completion"
            assert host.wait(1, cid, irq=False).ok
            # MSI has one vector: asking for a second is refused.
            reply = client.set_irqs(VFIO_PCI_MSI_IRQ_INDEX, 1, 1, VFIO_IRQ_SET_ACTION_TRIGGER, check=False)
            assert reply.error != 0
        finally:
            os.close(msi)
