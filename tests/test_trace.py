"""``Controller.trace``: the opt-in record of every command and register write.

The oracle is what the test's host did: each command it submitted appears
once with its queue, CID, opcode, NSID, LBA range and the status it got,
fetched before completed; nothing is recorded while the trace is off; a
full ring keeps the newest records and counts the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmefast import CommandError, ConfigError, Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host

READ, WRITE = 0x02, 0x01


@pytest.fixture
def ctrl() -> Iterator[Controller]:
    with Controller(ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20)])) as c:
        yield c


def _host(c: Controller) -> Host:
    h = Host(c)
    h.enable()
    h.set_num_queues(1, 1)
    h.create_io_queue_pair(1)
    return h


def test_commands_and_register_writes_are_recorded(ctrl: Controller) -> None:
    ctrl.trace.start(1000)
    assert ctrl.trace.on
    with _host(ctrl) as h:
        h.write(1, 5, b"w" * 1024)
        assert h.read(1, 5, 2) == b"w" * 1024
        with pytest.raises(CommandError):
            h.read(1, 1 << 40, 1)  # past the namespace: LBA Out of Range
    recs = ctrl.trace.records()
    io = [r for r in recs if r["kind"] == "io"]
    assert [(r["opcode"], r["slba"], r["nlb"], r["qid"], r["nsid"]) for r in io] == [
        (WRITE, 5, 2, 1, 1), (READ, 5, 2, 1, 1), (READ, 1 << 40, 1, 1, 1)]
    assert [r["status"] for r in io[:2]] == [0, 0]
    assert io[2]["status"] & 0x7FF == 0x80  # SCT 0, SC 80h: LBA Out of Range
    assert all(r["worker"] == 1 and r["fetch_ns"] <= r["done_ns"] for r in io)
    assert io[0]["done_ns"] <= io[1]["fetch_ns"]  # QD1: one after the other
    admin = [r for r in recs if r["kind"] == "admin"]
    # Set Features (Number of Queues), Create I/O CQ, Create I/O SQ at least.
    assert {0x09, 0x05, 0x01} <= {r["opcode"] for r in admin}
    assert all(r["qid"] == 0 and r["status"] == 0 for r in admin)
    regs = [r for r in recs if r["kind"] == "register"]
    assert any(r["offset"] == 0x14 and r["value"] & 1 for r in regs)  # CC.EN = 1
    assert any(r["offset"] >= 0x1000 for r in regs)  # doorbells by MMIO
    assert ctrl.trace.records() == []  # drained


def test_off_records_nothing_and_stop_keeps_what_was_recorded(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        h.write(1, 0, b"x" * 512)
        assert ctrl.trace.records() == [] and not ctrl.trace.on
        ctrl.trace.start(100)
        h.read(1, 0, 1)
        ctrl.trace.stop()
        h.read(1, 0, 1)
    io = [r for r in ctrl.trace.records() if r["kind"] == "io"]
    assert len(io) == 1 and io[0]["opcode"] == READ


def test_a_full_ring_keeps_the_newest(ctrl: Controller) -> None:
    with _host(ctrl) as h:
        ctrl.trace.start(4)
        for lba in range(10):
            h.write(1, lba, bytes([lba]) * 512)
        ctrl.trace.stop()
    recs = ctrl.trace.records()
    assert len(recs) == 4 and ctrl.trace.dropped > 0
    assert recs[-1]["kind"] == "register" or recs[-1]["slba"] == 9


def test_json_lines_and_iteration(ctrl: Controller, tmp_path: Path) -> None:
    ctrl.trace.start(1000)
    with _host(ctrl) as h:
        for lba in range(3):
            h.write(1, lba, b"j" * 512)
    out = tmp_path / "t.jsonl"
    n = ctrl.trace.write_jsonl(out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert n == len(lines) > 3
    assert [x["slba"] for x in lines if x["kind"] == "io"] == [0, 1, 2]
    with _host_again(ctrl) as h:
        h.read(1, 0, 1)
    assert any(r["kind"] == "io" for r in ctrl.trace)


def _host_again(c: Controller) -> Host:
    c.function_reset()
    return _host(c)


def test_file_namespace_commands_are_traced(tmp_path: Path) -> None:
    cfg = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=1 << 20, backend="file", path=tmp_path / "d.img")])
    with Controller(cfg) as c:
        c.trace.start(100)
        with _host(c) as h:
            h.write(1, 7, b"f" * 512)
            assert h.read(1, 7, 1) == b"f" * 512
        io = [r for r in c.trace.records() if r["kind"] == "io"]
        assert [(r["opcode"], r["slba"], r["status"]) for r in io] == [(WRITE, 7, 0), (READ, 7, 0)]


def test_bad_capacity_is_a_config_error(ctrl: Controller) -> None:
    with pytest.raises(ConfigError, match="capacity"):
        ctrl.trace.start(0)
    with pytest.raises(ConfigError, match="capacity"):
        ctrl.trace.start(1.5)  # type: ignore[arg-type]
