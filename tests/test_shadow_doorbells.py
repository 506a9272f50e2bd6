"""Shadow doorbells (Doorbell Buffer Config, 7Ch) driven the way Linux drives them.

After 7Ch the host writes doorbell values into the shadow buffer and rings
MMIO only when ``nvme_dbbuf_need_event(event_idx, new, old)`` says the
device asked for it; the device publishes EventIdx before a worker sleeps
and leaves it alone while it polls. A lost ring shows up here as a timeout,
a misread value as wrong data or a stray completion.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from dbutil import FLUSH, bring_up, eventually, verified_io
from nvmefast import Controller, ControllerConfig
from nvmefast.testing import Host, build_sqe, need_event
from nvmefast.testing.doorbells import ADMIN_DOORBELL_BUFFER_CONFIG, OACS_DBBUF

GENERIC, INVALID_FIELD, DATA_TRANSFER_ERROR = 0x0, 0x02, 0x04


def sq(qid: int) -> int:
    return 2 * qid


def cq(qid: int) -> int:
    return 2 * qid + 1


def test_need_event_is_linux_u16_arithmetic() -> None:
    # The device waits at EventIdx e: a move old -> new rings iff it passes e.
    assert need_event(5, 6, 5)  # the next value after the one the device saw
    assert not need_event(4, 6, 5)  # the device has not caught up: it will see 6 itself
    assert need_event(4, 6, 3)  # a batch passing e
    assert not need_event(7, 6, 5)  # stale EventIdx ahead of both
    # Queue wrap: values stay below the queue size, the arithmetic is u16.
    assert need_event(4, 0, 4)  # 5-entry queue: 4 -> 0 after the device saw 4
    assert need_event(4, 1, 3)  # 3 -> 1 passes 4 on the way round
    assert not need_event(1, 3, 2)
    assert need_event(65535, 0, 65535)


@pytest.mark.parametrize("dstrd", [pytest.param(d, marks=pytest.mark.nvme_config(doorbell_stride=d)) for d in (0, 3)])
def test_bringup_like_linux(bare_host: Host, controller: Controller, dstrd: int) -> None:
    host = bare_host
    assert host.doorbells.stride == 4 << dstrd
    host.enable()
    assert host.identify_controller().oacs & OACS_DBBUF, "OACS bit 8 (Doorbell Buffer Config) clear"
    host.set_num_queues(2, 2)
    pages = host.enable_shadow_doorbells()
    assert controller.engine.shadow_doorbells == (pages.db, pages.ei)
    assert (host.doorbells.mode, host.doorbells.admin_mode) == ("shadow", "mmio")
    host.create_io_queue_pair(1, 32)
    host.create_io_queue_pair(2, 32)
    verified_io(host, 1, range(0, 40))
    verified_io(host, 2, range(100, 140))
    # The shadow buffer holds what the host last wrote, for every queue.
    for qid in (1, 2):
        assert host.doorbells.shadow_value(sq(qid)) == host.sq(qid).tail
        assert host.doorbells.shadow_value(cq(qid)) == host.cq(qid).head
    # Admin doorbells go by MMIO (as Linux) and the device mirrors them into
    # the shadow buffer, its one source of truth now.
    host.identify_controller()
    assert host.doorbells.shadow_value(sq(0)) == host.sq(0).tail
    assert host.doorbells.shadow_value(cq(0)) == host.cq(0).head
    # The admin worker never polls: it publishes EventIdx = what it saw before sleeping.
    eventually(lambda: host.doorbells.event_idx(sq(0)) == host.sq(0).tail, "admin SQ EventIdx caught up")
    assert host.csts() & 0b10 == 0


@pytest.mark.nvme_config(polling="interrupt")
def test_shadow_admin_queue(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1,), shadow=True, shadow_admin=True)
    assert host.doorbells.admin_mode == "shadow"
    before = host.mmio_doorbells
    for _ in range(50):
        host.get_features(0x07)
    # The admin worker sleeps after every command and publishes EventIdx =
    # the tail it saw, so each new tail passes it: every admin SQ write rings.
    assert host.mmio_doorbells - before >= 50
    verified_io(host, 1, range(16))
    assert host.doorbells.shadow_value(sq(0)) == host.sq(0).tail


def _dbbuf(host: Host, prp1: int, prp2: int) -> tuple[int, int, bool]:
    c = host.admin(build_sqe(ADMIN_DOORBELL_BUFFER_CONFIG, prp1=prp1, prp2=prp2))
    return c.sct, c.sc, c.dnr


@pytest.mark.parametrize(
    "which",
    ["prp1_misaligned", "prp2_misaligned", "prp1_zero", "prp2_zero", "both_zero", "prp1_offset_8"],
)
def test_dbbuf_invalid_field(host: Host, controller: Controller, which: str) -> None:
    db, ei = host.alloc(4096), host.alloc(4096)
    prp1, prp2 = {
        "prp1_misaligned": (db + 0x200, ei),
        "prp2_misaligned": (db, ei + 0x800),
        "prp1_zero": (0, ei),
        "prp2_zero": (db, 0),
        "both_zero": (0, 0),
        "prp1_offset_8": (db + 8, ei),
    }[which]
    assert _dbbuf(host, prp1, prp2) == (GENERIC, INVALID_FIELD, True)
    assert controller.engine.shadow_doorbells is None
    # Nothing changed: doorbells still go by MMIO, I/O works.
    verified_io(host, 1, range(8))


UNMAPPED = 0x7_0000_0000


@pytest.mark.parametrize("which", ["prp1", "prp2", "prp1_read_only", "prp2_read_only"])
def test_dbbuf_unusable_memory(host: Host, controller: Controller, which: str) -> None:
    db, ei = host.alloc(4096), host.alloc(4096)
    ro_fd = os.memfd_create("ro-guest", os.MFD_CLOEXEC)
    os.ftruncate(ro_fd, 4096)
    controller.map_dma(UNMAPPED + 0x10_0000, 4096, ro_fd, 0, writable=False)
    try:
        bad = UNMAPPED if not which.endswith("read_only") else UNMAPPED + 0x10_0000
        prp1, prp2 = (bad, ei) if which.startswith("prp1") else (db, bad)
        sct, sc, _ = _dbbuf(host, prp1, prp2)
        assert (sct, sc) == (GENERIC, DATA_TRANSFER_ERROR)
        assert controller.engine.shadow_doorbells is None
        verified_io(host, 1, range(8))
    finally:
        controller.unmap_dma(UNMAPPED + 0x10_0000, 4096)
        os.close(ro_fd)


@pytest.mark.nvme_config(polling="interrupt", max_queue_entries=4096)
@pytest.mark.parametrize("entries", [2, 3, 5, 16])
def test_event_idx_across_queue_wrap(bare_host: Host, controller: Controller, entries: int) -> None:
    """Thousands of commands through a tiny queue: doorbell values wrap every
    few commands while need_event works modulo 2**16. Batches of every depth
    up to a full queue race the worker going to sleep; every command must
    complete."""
    host = bare_host
    bring_up(host, (1,), entries, shadow=True)
    rng = random.Random(entries)
    done = 0
    while done < 3000:
        # Up to a full SQ at once (a deeper batch would reuse CIDs not yet waited for).
        depth = rng.randint(1, entries - 1)
        cids = [host.submit(build_sqe(FLUSH, nsid=1), 1) for _ in range(depth)]
        for cid in cids:
            assert host.wait(1, cid).ok
        done += depth
    verified_io(host, 1, range(entries * 3))
    assert host.sq(1).outstanding == set() and not host.cq(1).stray
    d = host.doorbells
    assert d.shadow_value(sq(1)) == host.sq(1).tail
    assert d.shadow_value(cq(1)) == host.cq(1).head
    # Once the worker sleeps it publishes the tail and head it saw: the ones written last.
    eventually(lambda: (d.event_idx(sq(1)), d.event_idx(cq(1))) == (host.sq(1).tail, host.cq(1).head),
               "EventIdx = last values once the worker sleeps")


@pytest.mark.parametrize("polling", [
    pytest.param(p, marks=pytest.mark.nvme_config(polling=p)) for p in ("interrupt", "adaptive", "poll")
])
def test_full_cq_waits_for_a_shadow_head_update(bare_host: Host, controller: Controller, polling: str) -> None:
    """A 2-entry CQ behind a 16-entry SQ: the device stops fetching while the
    CQ is full and must publish the CQ head EventIdx, or the host's head
    update (written to the shadow buffer only) never wakes it."""
    host = bare_host
    host.enable()
    host.set_num_queues(1, 1)
    host.enable_shadow_doorbells()
    host.create_io_cq(1, 2, vector=1)
    host.create_io_sq(1, 16, cqid=1)
    for i in range(20):
        verified_io(host, 1, range(i * 30, i * 30 + 30))
    assert controller.counters()["cq_full_stalls"] > 0
    assert not host.cq(1).stray


@pytest.mark.nvme_config(polling="poll")
def test_polling_worker_gets_almost_no_rings(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    entries = 256
    bring_up(host, (1,), entries, shadow=True)
    mmio0, device0 = host.mmio_doorbells, controller.counters()["doorbell_writes"]
    ios = 0
    for base in range(0, 4000, 100):
        verified_io(host, 1, range(base, base + 100))
        ios += 200
    mmio = host.mmio_doorbells - mmio0
    # A polling worker keeps EventIdx half a ring ahead of the values it
    # has seen, where the host's check does not fire while fewer than half
    # the entries are in flight (100 of 256): not once per trip round the
    # queue (as a stale EventIdx would have it, 2 * 32 here), nor once per
    # command (as one just behind the value seen would). Only doorbells
    # before the worker's first pass may ring.
    assert mmio <= 4, f"{mmio} MMIO doorbells for {ios} commands"
    # Every SQ tail write (one per command) either rang or was skipped.
    assert host.doorbells.skipped + mmio >= ios
    assert controller.counters()["doorbell_writes"] - device0 == mmio, "the device saw other MMIO writes"


@pytest.mark.nvme_config(polling="interrupt", iothreads=2)
def test_interrupt_mode_every_needed_ring_happens(bare_host: Host, controller: Controller) -> None:
    """The worker sleeps as soon as it is idle, so the host must ring at the
    right moments; several threads on several queues race its sleeps."""
    host = bare_host
    pairs = (1, 2, 3, 4)
    bring_up(host, pairs, 16, shadow=True)
    errors: list[BaseException] = []

    def run(qid: int) -> None:
        try:
            rng = random.Random(qid)
            for i in range(15):
                verified_io(host, qid, range(qid * 1000 + i * 40, qid * 1000 + i * 40 + rng.randint(1, 40)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(qid,)) for qid in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "I/O hung"
    assert not errors, errors
    assert host.doorbells.mmio_writes > 0 and host.csts() & 0b10 == 0


@pytest.mark.nvme_config(polling="adaptive", poll_us=20)
def test_late_register_writes_never_rewind_an_io_queue(bare_host: Host, controller: Controller) -> None:
    """With shadow buffers in force an I/O queue's register write is only a
    wake-up (as in QEMU): its value may arrive after the host moved the
    shadow on (a posted vfio-user write does), so it must never replace the
    shadow's. The admin queue, which Linux rings by MMIO only, keeps working
    through the register."""
    host = bare_host
    bring_up(host, (1, 2), 8, shadow=True)
    d = host.doorbells
    assert d.admin_mode == "mmio"
    rng = random.Random(7)
    for i in range(200):
        qid = 1 + i % 2
        stale_sq, stale_cq = host.sq(qid).tail, host.cq(qid).head
        verified_io(host, qid, range(i % 50 * 10, i % 50 * 10 + rng.randint(1, 12)))
        # The ring for an earlier value lands now, after the host moved on.
        d.mmio(sq(qid), stale_sq)
        d.mmio(cq(qid), stale_cq)
        assert d.shadow_value(sq(qid)) == host.sq(qid).tail, "a late register value replaced the shadow's"
        assert d.shadow_value(cq(qid)) == host.cq(qid).head
        if i % 20 == 0:
            host.identify_controller()  # the admin queue, by MMIO only
    verified_io(host, 1, range(8))
    assert host.csts() & 0b10 == 0 and not host.cq(1).stray and not host.cq(2).stray


@pytest.mark.nvme_config(polling="interrupt")
def test_reset_drops_shadow(bare_host: Host, controller: Controller) -> None:
    host = bare_host
    bring_up(host, (1,), 16, shadow=True)
    verified_io(host, 1, range(64))
    pages = host.doorbells.shadow
    assert pages is not None
    eventually(lambda: host.doorbells.event_idx(sq(1)) == host.sq(1).tail, "EventIdx published")
    host.disable()
    assert controller.engine.shadow_doorbells is None
    assert host.doorbells.shadow is None and host.doorbells.mode == "mmio"
    skipped = host.doorbells.skipped
    db_before = host.read_mem(pages.db, pages.size)
    ei_before = host.read_mem(pages.ei, pages.size)
    # Up again without Doorbell Buffer Config: plain MMIO, the old pages untouched.
    bring_up(host, (1, 2), 16)
    verified_io(host, 1, range(200, 264))
    verified_io(host, 2, range(300, 364))
    host.identify_controller()
    assert host.read_mem(pages.ei, pages.size) == ei_before, "the device wrote EventIdx into a dropped buffer"
    assert host.read_mem(pages.db, pages.size) == db_before, "the device wrote into a dropped shadow buffer"
    assert host.doorbells.skipped == skipped, "the host used the dropped shadow buffer"
    # And 7Ch again after the reset (Linux reuses its pages, zeroed).
    again = host.enable_shadow_doorbells()
    assert again == pages
    verified_io(host, 1, range(400, 464))
    verified_io(host, 2, range(500, 564))


@pytest.mark.parametrize("polling", [
    pytest.param(p, marks=pytest.mark.nvme_config(polling=p, max_io_queue_pairs=500)) for p in ("poll", "interrupt")
])
def test_dbbuf_while_mmio_io_runs(bare_host: Host, controller: Controller, polling: str) -> None:
    """Doorbell Buffer Config while another thread rings the admin queue's
    MMIO doorbells (Linux's way: never through the shadow buffer): the device
    copies the values into the new buffer and must not lose a write that
    lands meanwhile (a lost SQ tail hangs its command). (An I/O queue's MMIO
    write after the switch is a wake-up only: see
    test_late_register_writes_never_rewind_an_io_queue.)"""
    host = bare_host
    bring_up(host, (1,), 32)
    stop = threading.Event()
    errors: list[BaseException] = []
    count = [0]

    def io() -> None:
        try:
            while not stop.is_set():
                host.identify_controller()
                count[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=io)
    thread.start()
    try:
        pages = [(host.alloc(4096), host.alloc(4096)) for _ in range(2)]
        for i in range(300):
            if errors:
                break
            db, ei = pages[i % 2]
            assert _dbbuf(host, db, ei)[:2] == (GENERIC, 0)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "I/O thread hung"
    assert not errors, f"after {count[0]} commands: {errors[0]!r}"
    assert count[0] > 0
    assert not host.cq(0).stray, f"completions of commands never submitted: {host.cq(0).stray[:3]}"
    assert host.csts() & 0b10 == 0


def test_closing_controller_with_shadow_host(config: ControllerConfig) -> None:
    # Teardown in either order with shadow buffers, the page and ioeventfds in use.
    ctrl = Controller(config)
    host = Host(ctrl)
    bring_up(host, (1,), shadow=True)
    host.doorbells.set_mode("ioeventfd")
    verified_io(host, 1, range(8))
    ctrl.close()
    host.close()
