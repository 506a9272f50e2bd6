"""``nvmefast serve``: the command line server, driven through its socket by
the raw vfio-user client, then stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfio_user_client import (
    VFIO_PCI_BAR0_REGION_INDEX,
    connect,
)
from vfio_user_host import (
    NvmeHost,
    short_socket_path,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def serve() -> Iterator[tuple[subprocess.Popen[str], str]]:
    directory, path = short_socket_path("cli")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path,
         "--namespace", "ram:8M", "--namespace", "null:1G:4096", "--iothreads", "2",
         "--serial", "CLI-SERIAL-7", "--model", "cli model", "--doorbells", "trap",
         "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate(timeout=5)
                pytest.fail(f"nvmefast serve did not listen (exit {proc.returncode}): {err}")
            time.sleep(0.05)
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def test_serve_brings_up_and_stops_on_sigterm(serve: tuple[subprocess.Popen[str], str]) -> None:
    proc, path = serve
    with connect(path) as client, NvmeHost(client) as host:
        bar0 = client.region_info(VFIO_PCI_BAR0_REGION_INDEX)
        assert not bar0.sparse_areas, "--doorbells trap must not offer the doorbells for mmap"
        host.enable()
        ident = host.identify_controller()
        assert (ident.sn, ident.mn) == ("CLI-SERIAL-7", "cli model")
        assert host.identify_namespace(2).lba_size == 4096
        host.create_io_queue_pair(1, 16)
        host.create_io_queue_pair(2, 16)
        data = bytes(range(256)) * 4
        assert host.write(1, 3, data).ok
        assert host.read(2, 3, 2) == data  # another queue, maybe another iothread
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not os.path.exists(path), "the socket file is left behind"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--namespace", "disk:64M"], "use ram:SIZE[:LBA][:OPT...], null:SIZE"),
        (["--namespace", "ram:lots"], "is not a size"),
        (["--namespace", "ram:1000:4096"], "multiple of the 4096-byte LBA"),
        (["--doorbells", "ring"], "invalid choice"),
    ],
)
def test_serve_rejects_bad_arguments_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nvmefast.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--socket", "/tmp/nvmefast-never.sock", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists("/tmp/nvmefast-never.sock")


def test_serve_refuses_a_socket_path_that_is_a_file(
    tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from nvmefast.cli import main

    path = os.path.join(os.fspath(tmp_path), "not-a-socket")
    with open(path, "w") as f:
        f.write("keep me")
    assert main(["serve", "--socket", path, "--namespace", "null:1M"]) == 1
    err = capsys.readouterr().err
    assert "exists and is not a socket" in err
    with open(path) as f:
        assert f.read() == "keep me"


@contextlib.contextmanager
def serving(tag: str, *args: str) -> Iterator[tuple[str, list[str]]]:
    """`nvmefast serve --socket PATH ARGS...`, listening: yields PATH and a list
    that holds the server's stderr once the block has stopped it by SIGTERM."""
    directory, path = short_socket_path(tag)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path, *args],
        stderr=subprocess.PIPE, text=True,
    )
    stderr: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            assert proc.poll() is None and time.monotonic() < deadline, "nvmefast serve did not listen"
            time.sleep(0.05)
        yield path, stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.append(proc.communicate(timeout=10)[1])
        shutil.rmtree(directory, ignore_errors=True)


def test_serve_trace_writes_json_lines(tmp_path: Path) -> None:
    import json

    trace = tmp_path / "trace.jsonl"
    with serving("trace", "--namespace", "ram:8M", "--trace", str(trace), "--log-level", "warning") as (path, _):
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            host.create_io_queue_pair(1, 16)
            assert host.write(1, 9, b"t" * 512).ok
    recs = [json.loads(line) for line in trace.read_text().splitlines()]
    io = [r for r in recs if r["kind"] == "io"]
    assert [(r["opcode"], r["slba"], r["nlb"], r["status"]) for r in io] == [(0x01, 9, 1, 0)]
    assert any(r["kind"] == "admin" and r["opcode"] == 0x05 for r in recs)  # Create I/O CQ
    assert any(r["kind"] == "register" and r["offset"] == 0x14 for r in recs)  # CC


def test_serve_fault_rules_apply_to_the_client_and_report_hits() -> None:
    rule = "write lba=9 count=1 -> status write-fault dnr"
    with serving("fault", "--namespace", "ram:8M", "--fault", rule) as (path, stderr):
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            host.create_io_queue_pair(1, 16)
            failed = host.write(1, 9, b"t" * 512)
            assert (failed.sct, failed.sc, failed.dnr) == (2, 0x80, True)
            assert host.write(1, 9, b"t" * 512).ok
    assert f"fault rule 1: {rule}" in stderr[0]
    assert "fault rule 1: 1 hits of 2 matches" in stderr[0]


def test_serve_refuses_a_bad_fault_rule() -> None:
    r = subprocess.run([sys.executable, "-m", "nvmefast.cli", "serve", "--socket", "/tmp/never.sock",
                        "--fault", "read lba=5..1 -> cfs"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "lba range 5..1 is empty" in r.stderr


def test_serve_says_each_startup_fact_once_in_one_format() -> None:
    import re

    rule = "read lba=5 -> status unrecovered-read-error"
    with serving("once", "--namespace", "ram:8M", "--namespace", "null:1G:4096", "--fault", rule) as (path, stderr):
        pass
    lines = stderr[0].splitlines()
    assert lines, "nothing logged at the default level"
    for line in lines:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} nvmefast (DEBUG|INFO|WARNING|ERROR) .+", line), line
    for fact in (f"listening on {path} ", "namespace 1: ram 8M", "namespace 2: null 1G", f"fault rule 1: {rule}",
                 "iothread(s)"):
        assert sum(fact in line for line in lines) == 1, (fact, lines)
    # The socket listens once the rest is said: the listening line comes last.
    start = [line for line in lines if "signal" not in line and "stopp" not in line and "hits of" not in line]
    assert "listening on" in start[-1], lines
    with serving("quiet", "--namespace", "ram:8M", "--log-level", "warning") as (_, stderr):
        pass
    assert stderr[0] == "", "--log-level warning silences the startup lines too"
