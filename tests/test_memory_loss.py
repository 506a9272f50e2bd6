"""Guest memory that shrinks under the device (docs/trust.md).

Whoever shares guest memory can truncate its file while the controller has
it mapped; touching a page past the new end raises SIGBUS. The controller
turns that into an error of the access: Data Transfer Error (SCT 0h, SC
04h) for a command, CSTS.CFS for queue memory (an SQ or CQ ring, the shadow
doorbell or EventIdx buffer), a region marked lost, logged and counted once;
the process and everything else it serves carry on. A memfd sealed against
shrinking (as QEMU seals guest RAM) is trusted: the seal is real, and its
mappings are not guarded. Statuses are the spec's literals (nvmutil).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbutil import eventually
from fileutil import MODES, FileMode, environment, file_namespace, scratch_dir
from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Completion, Host, build_sqe
from nvmefast.testing import sqe as op
from nvmefast.testing.doorbells import ADMIN_DOORBELL_BUFFER_CONFIG
from nvmefast.testing.nvm import copy_cdws, copy_range, lba_fields
from nvmutil import DATA_TRANSFER_ERROR, GENERIC, assert_ok, assert_status, assert_still_works

MiB = 1 << 20
LOST = 0x2_0000_0000
"""Where the region the tests truncate is mapped (the host's RAM is at 4 GiB)."""
SIZE = 1 * MiB
HALF = SIZE // 2
CSTS_CFS = 1 << 1
LOG = "nvmefast.controller"

pytestmark = pytest.mark.timeout(30)


def add_region(host: Host, iova: int = LOST, size: int = SIZE, *, sealed: bool = False) -> int:
    """Map a fresh memfd of ``size`` bytes at ``iova``; returns its fd (the host owns it)."""
    host.add_region(iova, size, sealed=sealed)
    return next(r.fd for r in host.mem.regions if r.iova == iova)


def kind(ctrl: Controller, iova: int) -> str:
    return next(r.kind for r in ctrl.dma_regions() if r.iova == iova)


def losses(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and "shrank under the device" in r.getMessage()]


def rw_sqe(opcode: int, slba: int, nlb: int, prp1: int, prp2: int = 0, nsid: int = 1) -> bytes:
    return build_sqe(opcode, nsid=nsid, prp1=prp1, prp2=prp2, **lba_fields(slba, nlb))


@pytest.fixture
def loss_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger=LOG)
    return caplog


@pytest.mark.parametrize("opcode", [op.IO_READ, op.IO_WRITE, op.IO_COMPARE], ids=["read", "write", "compare"])
def test_a_command_into_truncated_memory_fails_with_data_transfer_error(
    host: Host, controller: Controller, loss_log: pytest.LogCaptureFixture, opcode: int
) -> None:
    kept = os.urandom(8 * 512)
    host.write(1, 0, kept)
    fd = add_region(host)
    assert kind(controller, LOST) == "guarded", "an unsealed memfd can shrink: guarded"
    buf = LOST + SIZE - 2 * 4096  # two pages past the new end
    host.write_mem(buf, kept)  # what Write and Compare send, before the file shrinks
    os.ftruncate(fd, HALF)
    c = host.io(rw_sqe(opcode, 0 if opcode != op.IO_WRITE else 64, 8, buf, buf + 4096))
    assert_status(c, GENERIC, DATA_TRANSFER_ERROR)
    assert kind(controller, LOST) == "lost"
    assert controller.counters()["dma_regions_lost"] == 1
    # The region is lost as a whole: its first half, still in the file,
    # fails as well (without faulting: nothing is counted again).
    c = host.io(rw_sqe(op.IO_READ, 0, 1, LOST))
    assert_status(c, GENERIC, DATA_TRANSFER_ERROR)
    eventually(lambda: len(losses(loss_log)) == 1, "the loss is logged")
    assert f"{LOST:#x}+{SIZE:#x}" in losses(loss_log)[0]
    # Nothing else is touched: the namespace, the host's RAM, the queues.
    assert host.read(1, 0, 8) == kept
    assert_still_works(host)
    assert controller.counters()["dma_regions_lost"] == 1
    assert len(losses(loss_log)) == 1, "logged once per region"


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=4 * MiB, lba_size=512)])
def test_a_copy_whose_range_list_shrank_away_copies_nothing(host: Host, controller: Controller) -> None:
    source, dest = os.urandom(4 * 512), os.urandom(4 * 512)
    host.write(1, 100, source)
    host.write(1, 200, dest)
    fd = add_region(host)
    ranges = LOST + SIZE - 4096
    host.write_mem(ranges, copy_range(100, 4))
    os.ftruncate(fd, HALF)
    c = host.io(build_sqe(op.IO_COPY, nsid=1, prp1=ranges, **copy_cdws(200, 1, 0)))
    assert_status(c, GENERIC, DATA_TRANSFER_ERROR)
    # The range list read as zero pages (LBA 0, one block) is not acted on.
    assert host.read(1, 200, 4) == dest
    assert host.read(1, 100, 4) == source


def test_other_regions_keep_working_and_a_remap_brings_the_range_back(
    host: Host, controller: Controller
) -> None:
    fd = add_region(host)
    other = add_region(host, LOST + 2 * SIZE)
    os.ftruncate(fd, 0)
    assert_status(host.io(rw_sqe(op.IO_READ, 0, 1, LOST + 4096)), GENERIC, DATA_TRANSFER_ERROR)
    data = os.urandom(4096)
    host.write(1, 8, data, buf_iova=LOST + 2 * SIZE)
    assert host.read(1, 8, 8, buf_iova=LOST + 2 * SIZE + 4096) == data
    assert (kind(controller, LOST), kind(controller, LOST + 2 * SIZE)) == ("lost", "guarded")
    assert other >= 0
    # The client unmaps the lost range and maps memory there again.
    host.remove_region(LOST)
    add_region(host)
    assert kind(controller, LOST) == "guarded"
    assert host.read(1, 8, 8, buf_iova=LOST) == data
    assert controller.counters()["dma_regions_lost"] == 1


def test_each_lost_region_is_counted_and_logged_once(
    host: Host, controller: Controller, loss_log: pytest.LogCaptureFixture
) -> None:
    regions = [LOST, LOST + 4 * SIZE]
    fds = [add_region(host, iova) for iova in regions]
    for fd in fds:
        os.ftruncate(fd, 0)
    for _ in range(3):
        for iova in regions:
            assert_status(host.io(rw_sqe(op.IO_READ, 0, 1, iova + HALF)), GENERIC, DATA_TRANSFER_ERROR)
    assert controller.counters()["dma_regions_lost"] == 2
    eventually(lambda: len(losses(loss_log)) == 2, "both losses logged")
    assert [f"{iova:#x}+" in m for iova, m in zip(regions, sorted(losses(loss_log)))] == [True, True]
    assert_still_works(host)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opcode", [op.IO_READ, op.IO_WRITE], ids=["read", "write"])
def test_a_file_namespace_finds_the_loss_the_kernel_ran_into(
    mode: FileMode, opcode: int, loss_log: pytest.LogCaptureFixture
) -> None:
    # A file namespace's data is moved by the kernel (io_uring, preadv2 and
    # pwritev2, O_DIRECT or the page cache): a page past the memfd's end
    # fails the system call with EFAULT, and no SIGBUS is raised. The loss
    # must be found all the same: the region lost, counted and logged.
    # (Found by the sqe fuzz rig's loss inputs.)
    with scratch_dir(mode.directory) as d, environment(mode.env):
        config = ControllerConfig(namespaces=[file_namespace(mode, os.path.join(d, "ns1.img"), 4 * MiB)])
        with Controller(config) as ctrl, Host(ctrl) as host:
            host.enable()
            host.create_io_queue_pair(1)
            kept = os.urandom(8 * 512)
            host.write(1, 0, kept)
            fd = add_region(host)
            os.ftruncate(fd, HALF)
            c = host.io(rw_sqe(opcode, 64, 16, LOST + SIZE - 2 * 4096, LOST + SIZE - 4096))
            assert_status(c, GENERIC, DATA_TRANSFER_ERROR)
            assert kind(ctrl, LOST) == "lost"
            assert ctrl.counters()["dma_regions_lost"] == 1
            eventually(lambda: len(losses(loss_log)) == 1, "the loss is logged")
            # Lost as a whole: the half still in the file fails too.
            assert_status(host.io(rw_sqe(op.IO_READ, 0, 1, LOST)), GENERIC, DATA_TRANSFER_ERROR)
            assert host.read(1, 0, 8) == kept
            assert_still_works(host)
            assert ctrl.counters()["dma_regions_lost"] == 1


# -- queue memory: fatal -------------------------------------------------------------------------


def cfs(host: Host) -> bool:
    return bool(host.csts() & CSTS_CFS)


def recovers(host: Host) -> None:
    """A controller reset clears CSTS.CFS; queues in the host's own RAM work again."""
    host.disable()
    host.enable()
    host.create_io_queue_pair(1)
    assert not cfs(host)
    assert_still_works(host)


def test_an_sq_in_truncated_memory_makes_the_controller_fatal(host: Host, controller: Controller) -> None:
    fd = add_region(host)
    host.create_io_cq(2, 16, 2, irq=False)
    host.create_io_sq(2, 16, 2, region=LOST)
    assert host.sq(2).iova >= LOST
    os.ftruncate(fd, 0)
    # The tail moves past an entry the device can no longer read.
    controller.bar0_write(host.sq_doorbell(2), 1, 4)
    eventually(lambda: cfs(host), "CSTS.CFS")
    assert kind(controller, LOST) == "lost"
    recovers(host)


def test_a_cq_in_truncated_memory_makes_the_controller_fatal(host: Host, controller: Controller) -> None:
    fd = add_region(host)
    host.create_io_cq(2, 16, 2, irq=False, region=LOST)
    host.create_io_sq(2, 16, 2)
    os.ftruncate(fd, 0)
    # Fetched from the host's RAM, completed into memory that is gone.
    host.submit(rw_sqe(op.IO_READ, 0, 1, host.alloc(512)), qid=2)
    eventually(lambda: cfs(host), "CSTS.CFS")
    recovers(host)


def test_shadow_doorbells_in_truncated_memory_make_the_controller_fatal(
    host: Host, controller: Controller
) -> None:
    fd = add_region(host)
    db, ei = LOST + HALF, LOST + HALF + 4096
    c = host.admin(build_sqe(ADMIN_DOORBELL_BUFFER_CONFIG, prp1=db, prp2=ei))
    assert_ok(c)
    os.ftruncate(fd, 0)
    # With shadow doorbells an I/O queue's MMIO write is only a wake-up:
    # the worker reads the tail from the shadow buffer, which is gone.
    controller.bar0_write(host.sq_doorbell(1), 1, 4)
    eventually(lambda: cfs(host), "CSTS.CFS")
    recovers(host)


# -- what is guarded --------------------------------------------------------------------------------


def test_a_sealed_memfd_cannot_shrink_and_is_trusted(host: Host, controller: Controller) -> None:
    fd = add_region(host, sealed=True)
    assert kind(controller, LOST) == "sealed"
    with pytest.raises(PermissionError) as e:
        os.ftruncate(fd, HALF)
    assert e.value.errno == errno.EPERM, "F_SEAL_SHRINK is in force"
    data = os.urandom(4096)
    host.write(1, 0, data, buf_iova=LOST + SIZE - 4096)
    assert host.read(1, 0, 8, buf_iova=LOST) == data
    assert controller.counters()["dma_regions_lost"] == 0


def test_a_host_with_sealed_ram_takes_the_unguarded_path(controller: Controller) -> None:
    with Host(controller, sealed_memory=True) as host:
        host.enable()
        host.create_io_queue_pair(1)
        assert [r.kind for r in controller.dma_regions()] == ["sealed"]
        assert_still_works(host)


def test_a_plain_file_truncated_under_the_device(host: Host, controller: Controller, tmp_path: Path) -> None:
    path = tmp_path / "guest-ram"
    path.write_bytes(b"\0" * SIZE)
    fd = os.open(path, os.O_RDWR)
    try:
        controller.map_dma(LOST, SIZE, fd)
        assert kind(controller, LOST) == "guarded"
        data = os.urandom(4096)
        host.write(1, 0, data)
        assert_ok(host.io(rw_sqe(op.IO_READ, 0, 8, LOST + HALF)))
        assert path.read_bytes()[HALF : HALF + 4096] == data, "the device read into the file"
        os.truncate(path, 4096)
        assert_status(host.io(rw_sqe(op.IO_READ, 0, 8, LOST + HALF)), GENERIC, DATA_TRANSFER_ERROR)
        assert kind(controller, LOST) == "lost"
        controller.unmap_dma(LOST, SIZE)
    finally:
        os.close(fd)
    assert_still_works(host)


def test_remote_memory_is_neither_sealed_nor_guarded(controller: Controller) -> None:
    controller.map_dma_remote(LOST, SIZE)
    assert controller.dma_regions()[0].kind == "remote"


# -- other controllers --------------------------------------------------------------------------------


@pytest.fixture
def second() -> Iterator[tuple[Controller, Host]]:
    cfg = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=4 * MiB)], serial="SECOND")
    with Controller(cfg) as ctrl, Host(ctrl) as host:
        host.enable()
        host.create_io_queue_pair(1)
        yield ctrl, host


def test_other_controllers_in_the_process_are_untouched(
    host: Host, controller: Controller, second: tuple[Controller, Host]
) -> None:
    other_ctrl, other = second
    data = os.urandom(4096)
    other.write(1, 0, data)
    fd = add_region(host)
    os.ftruncate(fd, 0)
    c: Completion = host.io(rw_sqe(op.IO_READ, 0, 1, LOST))
    assert_status(c, GENERIC, DATA_TRANSFER_ERROR)
    assert other.read(1, 0, 8) == data
    assert other_ctrl.counters()["dma_regions_lost"] == 0
    assert [r.kind for r in other_ctrl.dma_regions()] == ["guarded"]
    assert not cfs(other)


# -- the handler chains every other SIGBUS ------------------------------------------------------------

CHILD = """
import faulthandler, mmap, os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
steps = sys.argv[1].split(",")

def truncated_mapping():
    fd = os.memfd_create("not-guest-memory")
    os.ftruncate(fd, 8192)
    m = mmap.mmap(fd, 8192)
    os.ftruncate(fd, 0)
    return m

def guest_memory(ctrl, iova):
    fd = os.memfd_create("guest")
    os.ftruncate(fd, 1 << 20)
    ctrl.map_dma(iova, 1 << 20, fd)
    return fd

ctrl = None
for step in steps:
    if step == "faulthandler":
        faulthandler.enable()
    elif step == "python-handler":
        signal.signal(signal.SIGBUS, lambda *a: print("python handler ran", flush=True))
    elif step == "guest":
        from nvmefast import Controller
        ctrl = ctrl or Controller()
        iova = 0x1_0000_0000 * (len(ctrl.dma_regions()) + 1)
        fd = guest_memory(ctrl, iova)
        os.ftruncate(fd, 0)
        status, _ = ctrl.engine.read_prp(iova, 0, 4096)
        print("guest fault survived, status", hex(status), flush=True)
    elif step == "map":
        from nvmefast import Controller
        ctrl = ctrl or Controller()
        guest_memory(ctrl, 0x100_0000_0000 + 0x1_0000_0000 * len(ctrl.dma_regions()))
    elif step == "kill":
        os.kill(os.getpid(), signal.SIGBUS)
        print("after kill", flush=True)
    elif step == "touch":
        print("touching", flush=True)
        truncated_mapping()[0]
        print("survived a non-guest fault", flush=True)
"""


def child(steps: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), steps], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("before", ["", "faulthandler,"], ids=["default", "faulthandler"])
def test_a_sigbus_outside_guest_memory_still_ends_the_process(before: str) -> None:
    # As without nvmefast: the default action, or faulthandler's report
    # and then the default action.
    alone = child(f"{before}touch")
    guarded = child(f"{before}map,touch")
    for r in (alone, guarded):
        assert r.returncode == -signal.SIGBUS, r
        assert "touching" in r.stdout and "survived" not in r.stdout
        assert ("Fatal Python error: Bus error" in r.stderr) == bool(before), r.stderr


def test_guest_faults_are_survived_with_faulthandler_installed_before_or_after() -> None:
    # faulthandler enabled after the first mapping takes SIGBUS over; the
    # next mapping puts the guard back on top and chains to it.
    r = child("map,faulthandler,guest,touch")
    assert r.returncode == -signal.SIGBUS, r
    assert "guest fault survived, status 0x4004" in r.stdout, r
    assert "Fatal Python error: Bus error" in r.stderr
    assert r.stderr.count("Fatal Python error") == 1, "the chain loops back into faulthandler"


def test_a_sent_sigbus_reaches_a_python_handler() -> None:
    r = child("python-handler,map,kill,guest")
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[:2] == ["python handler ran", "after kill"]
    assert "guest fault survived, status 0x4004" in r.stdout
