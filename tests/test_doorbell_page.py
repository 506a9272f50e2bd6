"""The doorbell page (``doorbell_page_fd``) and ioeventfds (``set_doorbell_eventfd``).

A vfio-user client writes doorbells into an mmap of the page with no message
to the server; KVM signals an ioeventfd for a guest MMIO write it caught,
with no value. Either way the worker finds the value in memory, so it is
validated there: an invalid one raises an Error event (Invalid Doorbell
Write Value) once, and the controller keeps working.
"""

from __future__ import annotations

import time

import pytest

from dbutil import FLUSH, bring_up, verified_io
from nvmefast import Controller
from nvmefast.testing import Host, build_sqe

INVALID_DOORBELL_VALUE = 0x01


def sq(qid: int) -> int:
    return 2 * qid


def cq(qid: int) -> int:
    return 2 * qid + 1


def expect_error_event(host: Host, aer_cid: int, info: int) -> None:
    c = host.wait(0, aer_cid, timeout=2)
    assert c.ok, str(c)
    # DW0: type 2:0 (0 = Error status), information 15:8, log page 23:16
    assert (c.dw0 & 0x7, (c.dw0 >> 8) & 0xFF, (c.dw0 >> 16) & 0xFF) == (0, info, 0x01), f"dw0={c.dw0:#x}"
    host.get_log_page(0x01, 64)  # RAE=0: unmasks Error events


@pytest.mark.parametrize("dstrd", [pytest.param(d, marks=pytest.mark.nvme_config(polling="poll", doorbell_stride=d))
                                   for d in (0, 2)])
def test_page_writes_need_no_mmio(bare_host: Host, controller: Controller, dstrd: int) -> None:
    host = bare_host
    bring_up(host, (1, 2), 32)
    host.doorbells.set_mode("page")
    assert host.doorbells.stride == 4 << dstrd
    device0, mmio0 = controller.counters()["doorbell_writes"], host.mmio_doorbells
    for i in range(10):
        verified_io(host, 1 + i % 2, range(i * 50, i * 50 + 50))
    assert controller.counters()["doorbell_writes"] == device0, "the device counted MMIO doorbell writes"
    assert host.mmio_doorbells == mmio0
    for qid in (1, 2):
        assert host.doorbells.page_value(sq(qid)) == host.sq(qid).tail
        assert host.doorbells.page_value(cq(qid)) == host.cq(qid).head
    # MMIO writes land in the same page: one source of truth.
    host.doorbells.set_mode("mmio")
    verified_io(host, 1, range(3))
    assert host.doorbells.page_value(sq(1)) == host.sq(1).tail


@pytest.mark.nvme_config(polling="poll")
@pytest.mark.parametrize("which", ["sq_tail", "cq_head"])
def test_invalid_page_value_raises_error_event_once(bare_host: Host, controller: Controller, which: str) -> None:
    host = bare_host
    entries = 16
    bring_up(host, (1,), entries)
    host.doorbells.set_mode("page")
    verified_io(host, 1, range(20))
    index = sq(1) if which == "sq_tail" else cq(1)
    good = host.doorbells.page_value(index)
    invalid0 = controller.counters()["invalid_doorbell_writes"]
    aer = host.submit_aer()
    host.doorbells.write_page(index, entries + 5)
    expect_error_event(host, aer, INVALID_DOORBELL_VALUE)
    # The bad value stays in the page and the worker passes over it thousands
    # of times: it is one bad write, reported once.
    second = host.submit_aer()
    time.sleep(0.1)
    host.reap(0)
    assert (0, second) not in host.cq(0).done, "the same invalid value was reported again"
    assert controller.counters()["invalid_doorbell_writes"] == invalid0 + 1
    # The host repairs the doorbell; the queue works as before.
    host.doorbells.write_page(index, good)
    verified_io(host, 1, range(100, 140))
    # A different bad value is a new invalid write.
    host.doorbells.write_page(index, 0xFFFF)
    expect_error_event(host, second, INVALID_DOORBELL_VALUE)
    host.doorbells.write_page(index, host.sq(1).tail if index == sq(1) else host.cq(1).head)
    verified_io(host, 1, range(200, 240))
    assert host.csts() & 0b10 == 0 and not host.cq(1).stray


@pytest.mark.nvme_config(polling="poll")
def test_same_invalid_value_written_again_is_reported_again(bare_host: Host, controller: Controller) -> None:
    """Bad value, repaired, then the same bad value again: two invalid writes
    (an MMIO write of it would be refused and reported both times)."""
    host = bare_host
    bring_up(host, (1,), 16)
    host.doorbells.set_mode("page")
    for _ in range(2):
        aer = host.submit_aer()
        host.doorbells.write_page(sq(1), 16)
        expect_error_event(host, aer, INVALID_DOORBELL_VALUE)
        host.doorbells.write_page(sq(1), host.sq(1).tail)
        verified_io(host, 1, range(8))


@pytest.mark.nvme_config(polling="interrupt")
def test_ioeventfd_wakes_a_sleeping_worker(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1,), 32)
    host.doorbells.set_mode("ioeventfd")
    counters0 = controller.counters()
    mmio0 = host.mmio_doorbells
    start = time.monotonic()
    for i in range(40):
        verified_io(host, 1, range(i * 8, i * 8 + 8))
    elapsed = time.monotonic() - start
    c = controller.counters()
    assert c["doorbell_writes"] == counters0["doorbell_writes"] and host.mmio_doorbells == mmio0
    # No internal wake-up either (MMIO or API): only the ioeventfds woke the worker ...
    assert c["worker_wakeups"] == counters0["worker_wakeups"]
    assert c["worker_sleeps"] > counters0["worker_sleeps"] + 40
    # ... and each did, promptly: a worker left to its 500 ms sleep timeout
    # would need ~40 s for these 640 commands in 80 dependent batches.
    assert elapsed < 10, f"{elapsed:.1f}s: ioeventfd writes did not wake the worker"
    assert host.doorbells.eventfd_writes > 0

    # The value comes from the page, not from the eventfd (which carries
    # none): a page write then a bare ioeventfd write submits a command.
    # (Whether a page write alone goes unseen depends on when the worker
    # falls asleep, which a test cannot observe without timing; the counters
    # above already show nothing but the ioeventfds woke it.)
    host.doorbells.set_mode("page")
    host.write_mem(host.sq(1).slot_iova(), build_sqe(FLUSH, nsid=1, cid=99))
    host.sq(1).outstanding.add(99)
    host.doorbells.write_page(sq(1), host.sq(1).advance_tail())
    host.doorbells.signal(sq(1))
    assert host.wait(1, 99).ok
    assert controller.counters()["doorbell_writes"] == counters0["doorbell_writes"]


@pytest.mark.nvme_config(polling="interrupt")
def test_admin_queue_by_ioeventfd(bare_host: Host, controller: Controller) -> None:
    # The admin worker never polls: the page alone would do nothing for it.
    host = bare_host
    host.enable()
    host.doorbells.set_mode("ioeventfd", admin=True)
    mmio0 = host.mmio_doorbells
    host.set_num_queues(2, 2)
    host.create_io_queue_pair(1, 16)
    verified_io(host, 1, range(32))
    for _ in range(20):
        host.identify_controller()
    assert host.mmio_doorbells == mmio0


@pytest.mark.nvme_config(polling="interrupt")
def test_ioeventfd_with_shadow_doorbells(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1, 2), 16, shadow=True)
    d = host.doorbells
    d.set_mode("ioeventfd")
    device0, mmio0 = controller.counters()["doorbell_writes"], host.mmio_doorbells
    for i in range(30):
        verified_io(host, 1 + i % 2, range(i * 10, i * 10 + 10))
    assert controller.counters()["doorbell_writes"] == device0 and host.mmio_doorbells == mmio0
    assert d.eventfd_writes > 0
    for qid in (1, 2):
        assert d.shadow_value(sq(qid)) == host.sq(qid).tail
    # An invalid value in the shadow buffer, announced by the ioeventfd.
    aer = host.submit_aer()
    d.write_shadow(sq(1), 16)
    d.signal(sq(1))
    expect_error_event(host, aer, INVALID_DOORBELL_VALUE)
    d.write_shadow(sq(1), host.sq(1).tail)
    d.signal(sq(1))
    verified_io(host, 1, range(500, 530))
    assert host.csts() & 0b10 == 0 and not host.cq(1).stray


@pytest.mark.nvme_config(polling="interrupt")
def test_doorbell_scan_finds_page_writes_of_a_linux_guest_with_shadow_doorbells(
    bare_host: Host, controller: Controller
) -> None:
    """What a Linux guest behind QEMU's vfio-user-pci does with the page
    mapped: the admin queue rung in the page only, I/O queues through
    shadow doorbells whose rings are page stores. Nothing wakes a sleeping
    worker; the doorbell scan must find them, in the page for the admin
    queue even though shadow buffers are in force."""
    host = bare_host
    controller.set_doorbell_scan(100)
    assert controller.doorbell_scan == 100
    host.doorbells.set_mode("page", admin=True)
    bring_up(host, (1,), 32, shadow=True)
    host.doorbells.set_mode("shadow-page")  # I/O queues; the admin queue stays "page"
    assert (host.doorbells.mode, host.doorbells.admin_mode) == ("shadow-page", "page")
    writes0 = controller.counters()["doorbell_writes"]
    mmio0 = host.mmio_doorbells
    start = time.monotonic()
    for i in range(20):
        verified_io(host, 1, range(i * 4, i * 4 + 4))
        host.identify_controller()  # an admin command rung in the page only
    elapsed = time.monotonic() - start
    assert host.mmio_doorbells == mmio0 and controller.counters()["doorbell_writes"] == writes0
    assert host.doorbells.shadow_value(2) == host.sq(1).tail
    # The admin SQ tail rung in the page was copied to its shadow slot.
    assert host.doorbells.shadow_value(0) == host.sq(0).tail
    # Without the scan every one of these 60 dependent rings waits for the
    # worker's 500 ms sleep to run out (~30 s); with it, a few ms each.
    assert elapsed < 10, f"{elapsed:.1f}s: the doorbell scan did not find the page writes"


def test_doorbell_scan_interval_is_checked(controller: Controller) -> None:
    from nvmefast.errors import ConfigError

    with pytest.raises(ConfigError, match="doorbell scan"):
        controller.set_doorbell_scan(-1)
    controller.set_doorbell_scan(0)
    assert controller.doorbell_scan == 0
