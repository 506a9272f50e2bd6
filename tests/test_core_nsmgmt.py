"""The core's side of issue 25 from Python: Write Uncorrectable (I/O 04h)
through a host, and the engine's Device Self-test and Sanitize calls, their
status dicts, their errors and the background handler.

Expected statuses are the spec's (NVM Command Set 1.0 3.3.7: Unrecovered
Read Error 2/81h; Base 2.0 8.1.26: Sanitize In Progress 0/1Dh for every I/O
command but Flush); never read from the device first.
"""

from __future__ import annotations

import threading
import time

import pytest

from nvmefast import ConfigError, NvmeFastError
from nvmefast.status import DNR
from nvmefast.testing import Host, build_sqe

READ, WRITE, FLUSH, WRITE_UNCOR, WRITE_ZEROES = 0x02, 0x01, 0x00, 0x04, 0x08
UNRECOVERED_READ_ERROR = 0x2 << 8 | 0x81
SANITIZE_IN_PROGRESS = 0x1D


def wait_until(done: object, what: str) -> None:
    """Poll ``done()`` every 10 ms for up to 30 s."""
    assert callable(done)
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def read_status(host: Host, lba: int, buf: int | None = None) -> int:
    """Status of a one-block Read of namespace 1 (into ``buf``, or a new buffer)."""
    if buf is None:
        buf = host.alloc(4096)
    return host.io(build_sqe(READ, nsid=1, prp1=buf, cdw10=lba)).status


def test_write_uncorrectable_marks_until_written(host: Host) -> None:
    engine = host.controller.engine
    assert host.io(build_sqe(WRITE_UNCOR, nsid=1, cdw10=20, cdw12=3)).status == 0
    assert engine.uncorrectable_ranges(1) == [(20, 4)]
    assert read_status(host, 19) == 0
    assert read_status(host, 23) == DNR | UNRECOVERED_READ_ERROR
    assert host.io(build_sqe(WRITE_ZEROES, nsid=1, cdw10=20, cdw12=1)).status == 0
    assert engine.uncorrectable_ranges(1) == [(22, 2)]
    buf = host.alloc(4096)
    assert host.io(build_sqe(WRITE, nsid=1, prp1=buf, cdw10=22, cdw12=1)).status == 0
    assert engine.uncorrectable_ranges(1) == []
    assert read_status(host, 23) == 0
    with pytest.raises(ConfigError, match="does not exist"):
        engine.uncorrectable_ranges(9)


def test_self_test_status_dicts_and_errors(host: Host) -> None:
    engine = host.controller.engine
    ended: list[str] = []
    done = threading.Event()

    def handler(what: str) -> None:
        ended.append(what)
        done.set()

    engine.set_background_handler(handler)
    assert engine.self_test_status() == {
        "running": False, "extended": False, "percent": 0, "result": "none", "nsid": 0, "lba": None,
        "segment": 0,
    }
    assert host.io(build_sqe(WRITE_UNCOR, nsid=1, cdw10=77)).status == 0
    engine.self_test_start([1], True, 0.0)
    assert done.wait(30)
    status = engine.self_test_status()
    assert (status["running"], status["result"], status["nsid"], status["lba"]) == (False, "failed", 1, 77)
    assert ended == ["self-test"]
    # Long enough for a poller: running, under 100, then aborted (no handler call).
    engine.self_test_start([1], False, 60.0)
    with pytest.raises(NvmeFastError, match="abort it first"):
        engine.self_test_start([1], False, 0.0)
    wait_until(lambda: engine.self_test_status()["percent"] > 0, "showed progress")
    assert 0 < engine.self_test_status()["percent"] < 100
    assert engine.self_test_abort() is True
    assert engine.self_test_status()["result"] == "aborted"
    assert engine.self_test_abort() is False
    assert ended == ["self-test"]
    with pytest.raises(NvmeFastError, match="not allocated"):
        engine.self_test_start([5], False, 0.0)
    with pytest.raises(ConfigError, match="min_seconds"):
        engine.self_test_start([1], False, -1.0)


def test_sanitize_holds_io_off_and_erases(host: Host) -> None:
    engine = host.controller.engine
    buf = host.alloc(4096)
    host.write_mem(buf, b"\x5a" * 512)
    assert host.io(build_sqe(WRITE, nsid=1, prp1=buf, cdw10=5)).status == 0
    for bad, why in [("crypto", "SANICAP"), ("block-erase", "passes")]:
        with pytest.raises(ConfigError, match=why):
            engine.sanitize_start(bad, 0, 0 if bad == "block-erase" else 1)
    engine.sanitize_start("overwrite", 0x11223344, 2, True, False, 1.0)
    assert engine.sanitize_status()["state"] == "running"
    assert read_status(host, 5) == SANITIZE_IN_PROGRESS
    assert host.io(build_sqe(FLUSH, nsid=1)).status == 0, "Flush is let through"
    with pytest.raises(NvmeFastError, match="cannot be aborted"):
        engine.sanitize_start("block-erase")
    wait_until(lambda: engine.sanitize_status()["state"] != "running", "ended")
    assert engine.sanitize_status() == {"state": "done", "progress": 65535, "passes_done": 2}
    assert read_status(host, 5, buf) == 0
    got = host.read_mem(buf, 512)
    # Two passes, inverted between: the last wrote ~0x11223344, little endian.
    assert got == (0xEEDDCCBB).to_bytes(4, "little") * 128
