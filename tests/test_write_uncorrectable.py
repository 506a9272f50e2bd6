"""Write Uncorrectable (I/O 04h, NVM Command Set 1.0 3.3.7): marked blocks read
back as Unrecovered Read Error (SCT 2h / SC 81h) until written; ONCS bit 1
and WUSL in Identify."""

from __future__ import annotations

from pathlib import Path

import pytest

from adminutil import MiB, u16
from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host, build_sqe

WRITE_UNCORRECTABLE, READ, COMPARE, WRITE_ZEROES, VERIFY = 0x04, 0x02, 0x05, 0x08, 0x0C
UNRECOVERED_READ_ERROR = (2, 0x81)
SUCCESS = (0, 0)
LBA_OUT_OF_RANGE = (0, 0x80)


def uncor(host: Host, slba: int, nlb: int, nsid: int = 1) -> tuple[int, int]:
    c = host.io(build_sqe(WRITE_UNCORRECTABLE, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=nlb - 1))
    return (c.sct, c.sc)


def rw(host: Host, opcode: int, slba: int, nlb: int, nsid: int = 1) -> tuple[int, int]:
    buf = host.alloc(nlb * 512)
    try:
        c = host.io(build_sqe(opcode, nsid=nsid, prp1=buf, cdw10=slba, cdw12=nlb - 1))
    finally:
        host.free(buf)
    return (c.sct, c.sc)


def test_advertised(host: Host) -> None:
    assert u16(host.identify(0x01), 520) & (1 << 1)  # ONCS bit 1
    assert host.identify(0x06, csi=0)[2] == 0  # WUSL: no limit beyond NLB


def test_marked_blocks_fail_reads_until_written(host: Host) -> None:
    host.write(1, 100, bytes(range(256)) * 2 * 4)
    assert uncor(host, 101, 2) == SUCCESS
    assert rw(host, READ, 100, 1) == SUCCESS  # the block before is fine
    assert rw(host, READ, 100, 4) == UNRECOVERED_READ_ERROR
    assert rw(host, READ, 102, 1) == UNRECOVERED_READ_ERROR
    assert rw(host, VERIFY, 102, 1) == UNRECOVERED_READ_ERROR
    assert rw(host, COMPARE, 101, 1) == UNRECOVERED_READ_ERROR
    assert rw(host, READ, 103, 1) == SUCCESS  # the block after
    host.write(1, 101, b"\x11" * 512)  # a write clears its block only
    assert host.read(1, 101, 1) == b"\x11" * 512
    assert rw(host, READ, 102, 1) == UNRECOVERED_READ_ERROR
    c = host.io(build_sqe(WRITE_ZEROES, nsid=1, cdw10=102, cdw12=0))
    assert c.ok
    assert host.read(1, 102, 1) == bytes(512)


def test_rejects(host: Host) -> None:
    nlb = 16 * MiB // 512
    assert uncor(host, nlb - 1, 2) == LBA_OUT_OF_RANGE
    assert uncor(host, 0, 1, nsid=2) == (0, 0x02)  # inactive NSID
    assert uncor(host, 0, 1, nsid=0) == (0, 0x0B)


def test_marks_outlive_a_restart_of_a_file_namespace(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    config = ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=str(image), size_bytes=MiB)])
    with Controller(config) as ctrl, Host(ctrl) as host:
        host.enable()
        host.create_io_queue_pair(1)
        assert uncor(host, 7, 1) == SUCCESS
        host.flush(1)
    with Controller(config) as ctrl, Host(ctrl) as host:
        host.enable()
        host.create_io_queue_pair(1)
        assert rw(host, READ, 7, 1) == UNRECOVERED_READ_ERROR
        assert ctrl.engine.uncorrectable_ranges(1) == [(7, 1)]


@pytest.mark.nvme_config(capacity_bytes=64 * MiB)
def test_a_resized_namespace_keeps_only_marks_inside(host: Host, controller: Controller) -> None:
    nsid = controller.add_namespace(NamespaceConfig(size_bytes=2 * MiB))
    host.identify_namespace(nsid)
    assert uncor(host, 4095, 1, nsid) == SUCCESS
    controller.resize_namespace(nsid, MiB)
    controller.resize_namespace(nsid, 2 * MiB)
    assert rw(host, READ, 4095, 1, nsid) == SUCCESS  # the mark went with the shrink
