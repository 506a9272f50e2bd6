"""The MSI-X table and PBA as device registers (PCI Local Bus 6.8.2) and the
hw/pci/msix.c contract through them.

With ``msix_bar=0`` the table and PBA sit in BAR0 above the doorbells; with
``msix_bar=1..5`` in a BAR of their own. Either way the device starts in the
PCI reset state (MSI-X disabled, every entry masked), a notification on a
masked vector (its mask bit, the function mask, or MSI-X disabled) sets its
PBA bit and signals nothing, and the change that unmasks it clears the bit
and signals exactly once. Completions are reaped by phase tag, so the test
is the only reader of each vector's eventfd.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from conftest import DEFAULT_CONFIG
from irqutil import admin_barrier, complete_batch, read_counter, readable, wait_until

from nvmefast import Controller, ControllerConfig, RegisterAccessError, StateError
from nvmefast.testing import Host, MsixTable
from nvmefast.testing.bar0 import DOORBELL_BASE

ENTRY = 16
ADDR_LO, ADDR_HI, DATA, CTRL = 0, 4, 8, 12
MASK_BIT = 1


def config_with(**kwargs: object) -> ControllerConfig:
    return ControllerConfig(**{**DEFAULT_CONFIG, **kwargs})


@pytest.fixture(params=[0, 3], ids=["bar0", "bar3"])
def config(request: pytest.FixtureRequest) -> ControllerConfig:
    """Overrides conftest's: every test here runs with the table in BAR0 and in BAR3."""
    return config_with(msix_bar=request.param)


@pytest.fixture
def table(controller: Controller) -> MsixTable:
    return MsixTable(controller)


@pytest.fixture
def io_host(host: Host) -> Iterator[Host]:
    """The enabled host with queue pairs 1 and 2 on vectors 1 and 2."""
    host.create_io_queue_pair(2, entries=16, vector=2)
    for vector in (0, 1, 2):
        read_counter(host.vector_fd(vector))
    yield host


# -- layout ----------------------------------------------------------------------


def test_layout_and_bar_sizes(controller: Controller, config: ControllerConfig) -> None:
    layout = controller.msix_layout
    assert layout is not None
    assert layout.bar == config.msix_bar
    assert layout.vectors == config.vectors
    assert layout.table_size == config.vectors * ENTRY
    assert layout.pba_size >= -(-config.vectors // 64) * 8
    assert layout.table_offset % 8 == 0 and layout.pba_offset % 8 == 0
    # Table and PBA do not overlap.
    assert layout.table_offset + layout.table_size <= layout.pba_offset or \
        layout.pba_offset + layout.pba_size <= layout.table_offset
    with Controller(config_with(msix_bar=None)) as without:
        base = without.bar0_size
    doorbells_end = DOORBELL_BASE + (config.max_io_queue_pairs + 1) * 2 * 4
    if layout.bar == 0:
        assert layout.table_offset >= doorbells_end, "the table overlaps the doorbells"
        assert layout.pba_offset >= doorbells_end
        assert controller.bar0_size > base, "BAR0 did not grow to hold the table and PBA"
        assert max(layout.table_offset + layout.table_size, layout.pba_offset + layout.pba_size) \
            <= controller.bar0_size
        assert controller.msix_bar_size == 0
    else:
        assert controller.bar0_size == base, "a separate MSI-X BAR must not change BAR0"
        size = controller.msix_bar_size
        assert size and size & (size - 1) == 0, f"BAR size {size:#x} is not a power of two"
        assert max(layout.table_offset + layout.table_size, layout.pba_offset + layout.pba_size) <= size
    assert controller.bar0_size & (controller.bar0_size - 1) == 0


# -- register semantics -------------------------------------------------------------


def test_pci_reset_state(controller: Controller, table: MsixTable) -> None:
    assert controller.msix_control() == (False, False)
    for vector in range(table.vectors):
        assert table.entry(vector) == (0, 0, MASK_BIT), f"entry {vector} is not in its reset state"
        assert controller.msix_table_read(vector * ENTRY + CTRL, 4) == MASK_BIT
    assert table.pending() == set()
    assert controller.msix_pba_read(0, 8) == 0
    assert controller.pending_vectors() == set()


def test_entry_dword_access(controller: Controller, table: MsixTable) -> None:
    base = 3 * ENTRY
    controller.msix_table_write(base + ADDR_LO, 0xFEE0_1000, 4)
    controller.msix_table_write(base + ADDR_HI, 0x1234_5678, 4)
    controller.msix_table_write(base + DATA, 0xDEAD_BEEF, 4)
    controller.msix_table_write(base + CTRL, 0, 4)
    assert controller.msix_table_read(base + ADDR_LO, 4) == 0xFEE0_1000
    assert controller.msix_table_read(base + ADDR_HI, 4) == 0x1234_5678
    assert controller.msix_table_read(base + DATA, 4) == 0xDEAD_BEEF
    assert controller.msix_table_read(base + CTRL, 4) == 0
    # The same entry through the BAR the table lives in.
    assert table.entry(3) == (0x1234_5678_FEE0_1000, 0xDEAD_BEEF, 0)
    # Neighbours untouched.
    assert table.entry(2) == (0, 0, MASK_BIT)
    assert table.entry(4) == (0, 0, MASK_BIT)


def test_entry_qword_access(controller: Controller, table: MsixTable) -> None:
    base = 5 * ENTRY
    controller.msix_table_write(base + ADDR_LO, 0x0000_0001_FEE0_2000, 8)
    # Upper qword: Message Data (low dword), Vector Control (high dword).
    controller.msix_table_write(base + DATA, MASK_BIT << 32 | 0x4242, 8)
    assert controller.msix_table_read(base + ADDR_LO, 8) == 0x0000_0001_FEE0_2000
    assert controller.msix_table_read(base + DATA, 8) == MASK_BIT << 32 | 0x4242
    assert controller.msix_table_read(base + ADDR_LO, 4) == 0xFEE0_2000
    assert controller.msix_table_read(base + ADDR_HI, 4) == 1
    assert controller.msix_table_read(base + CTRL, 4) == MASK_BIT
    # Through the BAR, as qwords too.
    assert table.bar_read(table.entry_offset(5), 8) == 0x0000_0001_FEE0_2000
    table.bar_write(table.entry_offset(5) + DATA, 0x77, 8)  # data 0x77, unmasked
    assert table.entry(5) == (0x0000_0001_FEE0_2000, 0x77, 0)


def test_vector_control_reserved_bits_read_zero(controller: Controller) -> None:
    ctrl = 1 * ENTRY + CTRL
    controller.msix_table_write(ctrl, 0xFFFF_FFFF, 4)
    assert controller.msix_table_read(ctrl, 4) == MASK_BIT
    controller.msix_table_write(ctrl, 0xFFFF_FFFE, 4)
    assert controller.msix_table_read(ctrl, 4) == 0
    controller.msix_table_write(1 * ENTRY + DATA, 0xFFFF_FFFF << 32 | 0x1234, 8)
    assert controller.msix_table_read(1 * ENTRY + DATA, 8) == MASK_BIT << 32 | 0x1234


def test_pba_is_read_only(controller: Controller, table: MsixTable) -> None:
    lay = controller.msix_layout
    assert lay is not None
    table.bar_write(lay.pba_offset, 0xFFFF_FFFF_FFFF_FFFF, 8)
    table.bar_write(lay.pba_offset, 0xFFFF_FFFF, 4)
    assert controller.msix_pba_read(0, 8) == 0
    assert controller.pending_vectors() == set()


def test_accesses_out_of_range_raise(controller: Controller, config: ControllerConfig) -> None:
    lay = controller.msix_layout
    assert lay is not None
    for bad in (lay.table_size, lay.table_size - 2, -4):
        with pytest.raises(RegisterAccessError):
            controller.msix_table_read(bad, 4)
        with pytest.raises(RegisterAccessError):
            controller.msix_table_write(bad, 0, 4)
    with pytest.raises(RegisterAccessError):
        controller.msix_table_read(lay.table_size - 4, 8)
    with pytest.raises(RegisterAccessError):
        controller.msix_table_read(0, 3)
    with pytest.raises(RegisterAccessError):
        controller.msix_pba_read(lay.pba_size, 8)
    with pytest.raises(RegisterAccessError):
        controller.msix_pba_read(-8, 8)
    with pytest.raises(RegisterAccessError):
        controller.bar0_read(controller.bar0_size, 4)
    with pytest.raises(RegisterAccessError):
        controller.bar0_write(controller.bar0_size - 2, 0, 4)
    if config.msix_bar:
        size = controller.msix_bar_size
        with pytest.raises(RegisterAccessError):
            controller.msix_bar_read(size, 4)
        with pytest.raises(RegisterAccessError):
            controller.msix_bar_write(size - 4, 0, 8)
        with pytest.raises(RegisterAccessError):
            controller.msix_bar_read(-4, 4)
    else:
        # The table lives in BAR0: there is no separate MSI-X BAR to access.
        with pytest.raises(StateError, match="BAR0"):
            controller.msix_bar_read(0, 4)


def test_table_api_without_a_device_table_raises_state_error() -> None:
    with Controller(config_with(msix_bar=None)) as ctrl:
        assert ctrl.msix_layout is None
        assert ctrl.msix_bar_size == 0
        calls = [
            lambda: ctrl.msix_table_read(0, 4),
            lambda: ctrl.msix_table_write(0, 0, 4),
            lambda: ctrl.msix_pba_read(0, 8),
            lambda: ctrl.msix_bar_read(0, 4),
            lambda: ctrl.msix_bar_write(0, 0, 4),
        ]
        for call in calls:
            with pytest.raises(StateError):
                call()
        with pytest.raises(StateError):
            MsixTable(ctrl)
        # Embedder-managed: MSI-X starts enabled and unmasked.
        assert ctrl.msix_control() == (True, False)


def test_table_api_after_close_raises_state_error(controller: Controller) -> None:
    controller.close()
    with pytest.raises(StateError):
        controller.msix_table_read(0, 4)


def test_host_enable_programs_the_table(host: Host, controller: Controller, table: MsixTable) -> None:
    # What pci_enable_msix leaves behind: enabled, function unmasked, every
    # entry with the x86 MSI address, data = vector, unmasked.
    assert controller.msix_control() == (True, False)
    for vector in range(table.vectors):
        assert table.entry(vector) == (0xFEE0_0000, vector, 0)


def test_controller_reset_keeps_msix_state(host: Host, controller: Controller, table: MsixTable) -> None:
    # The table belongs to the PCI function, not the NVMe controller: CC.EN = 0 keeps it.
    table.set_masked(2, True)
    host.disable()
    assert controller.msix_control() == (True, False)
    assert table.entry(2) == (0xFEE0_0000, 2, MASK_BIT)
    assert table.entry(1) == (0xFEE0_0000, 1, 0)


# -- the contract through real I/O -------------------------------------------------------


def test_vector_mask_bit_holds_and_unmask_releases_once(io_host: Host, controller: Controller,
                                                         table: MsixTable) -> None:
    fd1, fd2 = io_host.vector_fd(1), io_host.vector_fd(2)
    table.set_masked(1, True)
    complete_batch(io_host, 1, 3)
    complete_batch(io_host, 1, 2)
    wait_until(lambda: table.pending() == {1}, "PBA bit 1 after completions on masked vector 1")
    assert controller.msix_pba_read(0, 8) == 1 << 1
    assert controller.pending_vectors() == {1}
    assert not readable(fd1), "a vector masked in its table entry wrote its eventfd"
    # The PBA is read-only: writing zeros does not clear the pending bit.
    table.bar_write(table.pba_offset, 0, 8)
    assert table.pending() == {1}
    # Other vectors deliver normally meanwhile.
    complete_batch(io_host, 2, 1)
    assert readable(fd2, 2.0) and read_counter(fd2) == 1
    table.set_masked(1, False)
    assert read_counter(fd1) == 1, "unmask with the pending bit set must signal exactly once"
    assert table.pending() == set() and controller.msix_pba_read(0, 8) == 0
    admin_barrier(io_host)
    assert not readable(fd1)
    # Masking and unmasking again with nothing pending signals nothing.
    table.set_masked(1, True)
    table.set_masked(1, False)
    assert not readable(fd1)
    complete_batch(io_host, 1, 1)
    assert readable(fd1, 2.0) and read_counter(fd1) == 1


def test_qword_write_of_vector_control_unmasks(io_host: Host, controller: Controller,
                                               table: MsixTable) -> None:
    fd = io_host.vector_fd(1)
    table.set_masked(1, True)
    complete_batch(io_host, 1, 1)
    wait_until(lambda: controller.pending_vectors() == {1}, "pending bit 1")
    assert not readable(fd)
    # Rewriting data and control as one qword: mask cleared, pending delivered once.
    controller.msix_table_write(1 * ENTRY + DATA, 0 << 32 | 1, 8)
    assert read_counter(fd) == 1
    assert controller.pending_vectors() == set()


def test_function_mask_holds_every_vector(io_host: Host, controller: Controller, table: MsixTable) -> None:
    fd1, fd2 = io_host.vector_fd(1), io_host.vector_fd(2)
    controller.set_msix_control(True, True)
    assert controller.msix_control() == (True, True)
    complete_batch(io_host, 1, 2)
    complete_batch(io_host, 2, 2)
    wait_until(lambda: table.pending() == {1, 2}, "PBA bits 1 and 2 under the function mask")
    assert not readable(fd1) and not readable(fd2), "a function-masked vector wrote its eventfd"
    # Unmasking an entry while the function is masked delivers nothing.
    table.set_masked(1, True)
    table.set_masked(1, False)
    assert not readable(fd1)
    assert table.pending() == {1, 2}
    # Masking entry 2 itself, then clearing the function mask: only 1 is released.
    table.set_masked(2, True)
    controller.set_msix_control(True, False)
    assert read_counter(fd1) == 1
    assert not readable(fd2)
    assert table.pending() == {2}
    table.set_masked(2, False)
    assert read_counter(fd2) == 1
    assert table.pending() == set()
    admin_barrier(io_host)
    assert not readable(fd1) and not readable(fd2)


def test_msix_disabled_holds_and_enable_releases_once(io_host: Host, controller: Controller,
                                                      table: MsixTable) -> None:
    fd1, fd2 = io_host.vector_fd(1), io_host.vector_fd(2)
    controller.set_msix_control(False, False)
    assert controller.msix_control() == (False, False)
    complete_batch(io_host, 1, 1)
    complete_batch(io_host, 2, 4)
    wait_until(lambda: table.pending() == {1, 2}, "PBA bits 1 and 2 with MSI-X disabled")
    assert not readable(fd1) and not readable(fd2), "a vector signalled with MSI-X disabled"
    controller.set_msix_control(True, False)
    assert (read_counter(fd1), read_counter(fd2)) == (1, 1)
    assert table.pending() == set()
    admin_barrier(io_host)
    assert not readable(fd1) and not readable(fd2)


def test_mask_vector_drives_the_table_mask_bit(io_host: Host, controller: Controller,
                                               table: MsixTable) -> None:
    fd = io_host.vector_fd(1)
    controller.mask_vector(1, True)
    assert table.entry(1)[2] == MASK_BIT
    complete_batch(io_host, 1, 1)
    wait_until(lambda: table.pending() == {1}, "PBA bit 1 after mask_vector")
    assert not readable(fd)
    controller.mask_vector(1, False)
    assert table.entry(1)[2] == 0
    assert read_counter(fd) == 1
    assert table.pending() == set()


def test_admin_vector_masked_in_the_table(io_host: Host, controller: Controller, table: MsixTable) -> None:
    fd0 = io_host.vector_fd(0)
    table.set_masked(0, True)
    admin_barrier(io_host)
    wait_until(lambda: table.pending() == {0}, "PBA bit 0 after an admin command")
    assert not readable(fd0)
    table.set_masked(0, False)
    assert read_counter(fd0) == 1


def test_unprogrammed_reset_state_holds_completions(bare_host: Host, controller: Controller,
                                                    table: MsixTable) -> None:
    # Before the host enables MSI-X nothing may be delivered: bring the
    # controller up by hand (polled), without enable_msix.
    bare_host.enable_msix = lambda: False  # type: ignore[method-assign]
    bare_host.enable()
    fd0 = bare_host.vector_fd(0)
    admin_barrier(bare_host)
    wait_until(lambda: table.pending() == {0}, "PBA bit 0 in the PCI reset state")
    assert not readable(fd0)
    # Enabling MSI-X alone releases nothing: the entry is still masked.
    controller.set_msix_control(True, False)
    assert not readable(fd0)
    table.program(0, 0xFEE0_0000, 0x30, masked=False)
    assert read_counter(fd0) == 1
    assert table.pending() == set()


# -- callback notifiers follow the same contract ---------------------------------------------


def test_vector_callback_runs_unlocked_and_honours_the_mask(io_host: Host, controller: Controller,
                                                            table: MsixTable) -> None:
    calls: list[tuple[int, str]] = []
    cond = threading.Condition()

    def deliver(vector: int) -> None:
        # No internal lock may be held here: calling back into the controller must not deadlock.
        controller.pending_vectors()
        controller.mask_vector(vector, False)  # already unmasked: nothing pending, nothing sent
        with cond:
            calls.append((vector, threading.current_thread().name))
            cond.notify_all()

    def wait_calls(n: int) -> None:
        with cond:
            assert cond.wait_for(lambda: len(calls) >= n, 5.0), f"callback calls {calls}"

    controller.set_vector_callback(1, deliver)
    complete_batch(io_host, 1, 1)
    wait_calls(1)
    assert calls[0][0] == 1
    assert calls[0][1] != threading.current_thread().name, "a completion was delivered on the host's thread"
    table.set_masked(1, True)
    complete_batch(io_host, 1, 2)
    wait_until(lambda: table.pending() == {1}, "PBA bit 1 with a callback notifier")
    admin_barrier(io_host)
    assert len(calls) == 1, "a masked vector called its callback"
    table.set_masked(1, False)
    wait_calls(2)
    admin_barrier(io_host)
    assert [v for v, _ in calls] == [1, 1], "unmask with pending must call back exactly once"
    assert table.pending() == set()
    controller.set_vector_callback(1, None)
