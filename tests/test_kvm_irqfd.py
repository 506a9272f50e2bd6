"""irqfd delivery on real KVM: the controller's vector eventfd injects an MSI into a LAPIC.

DESIGN.md promises that a vector's notifier may be an irqfd a VMM attached to
KVM, and that mask/pending state lives in the core because that path
bypasses any emulator-side MSI-X logic. These tests hand the controller real
irqfds of a :class:`KvmVm` and check the result where a guest would see it:
the IRR of the vCPU's in-kernel LAPIC. Completions are reaped by phase tag
(``Host(irq=False)``) because KVM, not the test, consumes each eventfd.

Skipped, with the exact reason, where KVM is unusable (no /dev/kvm, no
permission, a failing ioctl).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig, StateError
from nvmefast.testing import Host
from nvmefast.testing import kvm
from nvmefast.testing.kvm import KvmError, KvmVm, kvm_unavailable_reason, msi_address

MiB = 1 << 20
# Settle time before asserting that nothing arrived: long against a
# microsecond-scale injection, so a stray delivery would show up.
QUIET = 0.1


@pytest.fixture(scope="module")
def kvm_reason() -> str | None:
    return kvm_unavailable_reason()


@pytest.fixture
def vm(kvm_reason: str | None) -> Iterator[KvmVm]:
    if kvm_reason is not None:
        pytest.skip(kvm_reason)
    with KvmVm() as machine:
        yield machine


@pytest.fixture
def eventfds() -> Iterator[list[int]]:
    """Eventfds for irqfds, closed after the test (a list the test appends to)."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def new_eventfd(fds: list[int]) -> int:
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    fds.append(fd)
    return fd


def bring_up(ctrl: Controller, host: Host, vectors: dict[int, int]) -> None:
    """Enable, then create I/O queue pair ``qid`` on MSI-X vector ``vectors[qid]`` with IEN=1.

    ``Host(irq=False)`` polls every CQ by phase tag, while ``create_io_cq``'s
    ``irq=True`` still sets IEN, so the controller signals the vector and the
    host never takes the vector's eventfd for itself.
    """
    host.enable()
    host.set_num_queues(len(vectors), len(vectors))
    for qid, vector in vectors.items():
        host.create_io_cq(qid, 16, vector, irq=True)
        host.create_io_sq(qid, 16, qid)
        assert not host.cq(qid).irq  # the host polls; nobody reads the eventfd but KVM


def host_config(pairs: int) -> ControllerConfig:
    return ControllerConfig(namespaces=[NamespaceConfig(size_bytes=4 * MiB, lba_size=512)],
                            max_io_queue_pairs=pairs, poll_us=50)


# -- without KVM: the ioctl encoding ---------------------------------------------


def test_ioctl_numbers_match_linux_headers() -> None:
    # The values <linux/kvm.h> expands to on x86-64 (printed by a C program
    # against the uapi headers): a wrong direction, size or layout shows here.
    assert {
        "KVM_GET_API_VERSION": kvm.KVM_GET_API_VERSION,
        "KVM_CREATE_VM": kvm.KVM_CREATE_VM,
        "KVM_CHECK_EXTENSION": kvm.KVM_CHECK_EXTENSION,
        "KVM_CREATE_VCPU": kvm.KVM_CREATE_VCPU,
        "KVM_CREATE_IRQCHIP": kvm.KVM_CREATE_IRQCHIP,
        "KVM_SET_GSI_ROUTING": kvm.KVM_SET_GSI_ROUTING,
        "KVM_IRQFD": kvm.KVM_IRQFD,
        "KVM_GET_MSRS": kvm.KVM_GET_MSRS,
        "KVM_SET_MSRS": kvm.KVM_SET_MSRS,
        "KVM_GET_LAPIC": kvm.KVM_GET_LAPIC,
        "KVM_SET_LAPIC": kvm.KVM_SET_LAPIC,
        "KVM_SIGNAL_MSI": kvm.KVM_SIGNAL_MSI,
    } == {
        "KVM_GET_API_VERSION": 0xAE00,
        "KVM_CREATE_VM": 0xAE01,
        "KVM_CHECK_EXTENSION": 0xAE03,
        "KVM_CREATE_VCPU": 0xAE41,
        "KVM_CREATE_IRQCHIP": 0xAE60,
        "KVM_SET_GSI_ROUTING": 0x4008AE6A,
        "KVM_IRQFD": 0x4020AE76,
        "KVM_GET_MSRS": 0xC008AE88,
        "KVM_SET_MSRS": 0x4008AE89,
        "KVM_GET_LAPIC": 0x8400AE8E,
        "KVM_SET_LAPIC": 0x4400AE8F,
        "KVM_SIGNAL_MSI": 0x4020AEA5,
    }


def test_msi_message_format() -> None:
    assert msi_address(0) == 0xFEE0_0000
    assert msi_address(3) == 0xFEE0_3000
    assert kvm.msi_data(0x41) == 0x41
    with pytest.raises(ValueError, match="16..255"):
        kvm.msi_data(15)
    with pytest.raises(ValueError, match="0..255"):
        msi_address(256)


def test_missing_device_reason_names_the_device() -> None:
    reason = kvm_unavailable_reason("/dev/nonexistent-kvm")
    assert reason is not None and "/dev/nonexistent-kvm" in reason and "ENOENT" in reason


# -- pure KVM ----------------------------------------------------------------------


def test_irqfd_write_sets_irr_and_signal_msi_delivers(vm: KvmVm, eventfds: list[int]) -> None:
    fd = new_eventfd(eventfds)
    vm.msi_route(30, 0x41)
    vm.msi_route(31, 0x42)  # replaces the table: GSI 30's route must survive
    vm.irqfd(fd, 30)
    assert vm.irr_vectors() == set()

    os.eventfd_write(fd, 1)
    assert vm.wait_irr(0x41), f"irqfd write did not reach the LAPIC: IRR {sorted(vm.irr_vectors())}"
    assert vm.irr_vectors() == {0x41}

    assert vm.signal_msi(msi_address(vm.apic_id), 0x60) > 0
    assert vm.irr_vectors() == {0x41, 0x60}

    vm.clear_irr()
    assert vm.irr_vectors() == set()
    # clear_irr kept the LAPIC enabled: the next delivery lands again
    os.eventfd_write(fd, 1)
    assert vm.wait_irr(0x41)

    vm.clear_irr()
    vm.irqfd_detach(fd, 30)
    os.eventfd_write(fd, 1)
    time.sleep(QUIET)
    assert vm.irr_vectors() == set()
    assert os.eventfd_read(fd) == 1  # nobody consumed it: KVM let go of the eventfd


def test_signal_msi_to_absent_apic_is_not_delivered(vm: KvmVm) -> None:
    assert vm.signal_msi(msi_address(vm.apic_id + 1), 0x61) == 0
    assert not vm.irr(0x61)


def test_rejected_route_keeps_the_table(vm: KvmVm, eventfds: list[int]) -> None:
    fd = new_eventfd(eventfds)
    vm.msi_route(30, 0x41)
    vm.irqfd(fd, 30)
    with pytest.raises(KvmError, match="KVM_SET_GSI_ROUTING failed: EINVAL"):
        vm.msi_route(1 << 20, 0x42)  # beyond KVM_MAX_IRQ_ROUTES
    vm.msi_route(31, 0x43)  # the rejected GSI is not resent with the next table
    os.eventfd_write(fd, 1)
    assert vm.wait_irr(0x41)


def test_closed_vm_raises_state_error(kvm_reason: str | None) -> None:
    if kvm_reason is not None:
        pytest.skip(kvm_reason)
    vm = KvmVm()
    vm.close()
    vm.close()
    for call in (lambda: vm.irr(0x41), lambda: vm.signal_msi(msi_address(0), 0x41),
                 lambda: vm.msi_route(30, 0x41), vm.clear_irr):
        with pytest.raises(StateError):
            call()


# -- the controller drives KVM directly ----------------------------------------------


def test_controller_vector_irqfd_mask_and_pending(vm: KvmVm, eventfds: list[int]) -> None:
    gsi, lapic_vector = 40, 0x51
    fd = new_eventfd(eventfds)
    vm.msi_route(gsi, lapic_vector)
    vm.irqfd(fd, gsi)
    with Controller(host_config(1)) as ctrl, Host(ctrl, irq=False) as host:
        bring_up(ctrl, host, {1: 1})
        ctrl.set_vector_eventfd(1, fd)
        vm.clear_irr()

        host.read(1, 0, 1)
        assert vm.wait_irr(lapic_vector), "a completion on vector 1 did not inject its MSI"
        assert vm.irr_vectors() == {lapic_vector}
        assert ctrl.pending_vectors() == set()

        vm.clear_irr()
        ctrl.mask_vector(1, True)
        host.read(1, 0, 1)
        time.sleep(QUIET)
        assert vm.irr_vectors() == set(), "a masked vector injected an MSI"
        assert ctrl.pending_vectors() == {1}

        ctrl.mask_vector(1, False)
        assert vm.wait_irr(lapic_vector), "unmask with the pending bit set did not inject"
        assert ctrl.pending_vectors() == set()
        assert vm.irr_vectors() == {lapic_vector}

        # Detaching the notifier stops injection.
        vm.clear_irr()
        ctrl.set_vector_eventfd(1, None)
        host.read(1, 0, 1)
        time.sleep(QUIET)
        assert vm.irr_vectors() == set()


def test_each_vector_lands_on_its_own_lapic_vector(vm: KvmVm, eventfds: list[int]) -> None:
    routes = {qid: (50 + qid, 0x60 + qid) for qid in (1, 2, 3)}  # qid = MSI-X vector -> (GSI, LAPIC vector)
    with Controller(host_config(3)) as ctrl, Host(ctrl, irq=False) as host:
        bring_up(ctrl, host, {qid: qid for qid in routes})
        for vector, (gsi, lapic_vector) in routes.items():
            fd = new_eventfd(eventfds)
            vm.msi_route(gsi, lapic_vector)
            vm.irqfd(fd, gsi)
            ctrl.set_vector_eventfd(vector, fd)
        # Every queue, in an order unlike the routing order, and twice over:
        # the second round proves the first round's deliveries cleared cleanly.
        for qid in (2, 3, 1, 3, 1, 2):
            vm.clear_irr()
            host.read(1, qid, 1, qid=qid)
            own = routes[qid][1]
            assert vm.wait_irr(own), f"queue {qid} completion did not reach LAPIC vector {own:#x}"
            time.sleep(QUIET)
            assert vm.irr_vectors() == {own}, f"queue {qid} completion reached other vectors"
        assert ctrl.pending_vectors() == set()
