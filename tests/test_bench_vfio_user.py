"""``nvmefast bench --vfio-user``: the Rust vfio-user benchmark client.

The CI smoke test (short, asserting that I/O completed and the data came
back intact) plus the client's behaviour against a server in this process,
checked through the server's own counters: the socket thread sees no message
per I/O once the doorbell page is mapped, one per doorbell when trapped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmefast import ConfigError, StateError, _core
from nvmefast.bench_vfio_user import VfioBenchConfig, default_placement, run_vfio_bench
from nvmefast.cli import main
from vfio_user_host import make_config, running_server, short_socket_path

pytestmark = pytest.mark.timeout(120)

MEM = 16 << 20


@pytest.fixture
def server() -> Iterator[tuple[object, str]]:
    with running_server(make_config()) as (srv, path):
        yield srv, path


def _delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_cli_smoke_spawns_a_server_and_verifies_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vu.json"
    rc = main(["bench", "--vfio-user", "--qd", "1,4", "--seconds", "0.2", "--size", "64M", "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "UNIX-socket round trip" in table and "64/64 blocks written and read back intact" in table
    doc = json.loads(out.read_text())
    assert doc["mismatched_blocks"] == 0 and doc["verified_blocks"] == 64
    assert doc["placement"]["server"] == "spawned"
    assert {"eventfd_rtt_ns", "shm_rtt_ns", "unix_socket_rtt_ns", "memcpy_4k_per_s"} <= set(doc["floors"])
    vu = [p for p in doc["points"] if p["path"] == "vfio-user"]
    # Every (mode, doorbell) at every QD ran, and ran I/O without errors.
    assert {(p["mode"], p["doorbell"], p["qd"]) for p in vu} == {
        (m, d, q) for m in ("poll", "irq") for d in ("page", "shadow", "trap") for q in (1, 4)
    }
    for p in vu:
        assert p["ios"] > 0 and p["errors"] == 0, p
    inproc = [p for p in doc["points"] if p["path"] == "in-process"]
    assert [p["qd"] for p in inproc] == [1, 4] and all(p["ios"] > 0 for p in inproc)
    for p in vu:
        if p["doorbell"] == "page":
            assert p["messages_per_io"] == 0, p
        if p["doorbell"] == "trap" and p["mode"] == "poll" and p["qd"] == 1:
            # QD1: every command is one SQ-tail and one CQ-head message.
            assert p["messages_per_io"] == pytest.approx(2.0, abs=0.01), p
        if p["mode"] == "poll":
            assert p["vs_in_process"] is not None and p["vs_in_process"] > 0


def test_cli_rejects_what_the_server_path_cannot_measure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--vfio-user", "--backend", "null"]) == 2
    assert "--vfio-user measures one RAM namespace" in capsys.readouterr().err
    assert main(["bench", "--vfio-user", "--doorbell", "mmio"]) == 2
    assert "rings by page, shadow, trap" in capsys.readouterr().err
    assert main(["bench", "--doorbell", "trap"]) == 2
    assert "add --vfio-user" in capsys.readouterr().err
    # A socket nobody listens on: an NvmeFastError with the path, exit 1.
    directory, path = short_socket_path("none")
    assert main(["bench", "--vfio-user", path, "--seconds", "0.1", "--qd", "1"]) == 1
    assert path in capsys.readouterr().err
    os.rmdir(directory)


def test_page_doorbells_need_no_socket_message_per_io(server: tuple[object, str]) -> None:
    srv, path = server
    bench = _core.VfioUserBench(path, mem_bytes=MEM)
    try:
        assert bench.socket == path
        info = bench.info()
        assert info["doorbell_page"] is True and info["lbas"] * info["lba_size"] == 16 << 20
        before = srv.controller.counters()  # type: ignore[attr-defined]
        r = bench.point(qd=4, mode="poll", doorbell="page", seconds=0.3)
        after = srv.controller.counters()  # type: ignore[attr-defined]
        assert r["ios"] > 100 and r["errors"] == 0
        # The server ran every command the client counted (plus the queue
        # pair's create/delete on the admin queue) ...
        assert _delta(after, before, "io_commands") == r["ios"]
        assert _delta(after, before, "admin_commands") == 4
        # ... and its socket thread saw only the admin queue's doorbells
        # (two per admin command): no message at all during the I/O.
        assert r["messages"] == 0
        assert _delta(after, before, "doorbell_writes") == 8
        # Rung in the page instead: at least one SQ tail per QD-sized batch.
        assert r["doorbells"] >= r["ios"] // 4
    finally:
        bench.close()


def test_trapped_doorbells_are_a_message_each_and_shadow_cuts_them(server: tuple[object, str]) -> None:
    srv, path = server
    bench = _core.VfioUserBench(path, mem_bytes=MEM)
    try:
        before = srv.controller.counters()  # type: ignore[attr-defined]
        t = bench.point(qd=1, mode="poll", doorbell="trap", seconds=0.3)
        after = srv.controller.counters()  # type: ignore[attr-defined]
        assert t["ios"] > 10 and t["errors"] == 0
        assert t["messages"] == t["mmio_doorbells"] == 2 * t["ios"]
        # The server saw each of them as a trapped doorbell write (and the
        # admin queue's four commands, two writes each).
        assert _delta(after, before, "doorbell_writes") == t["messages"] + 8
        s = bench.point(qd=16, mode="poll", doorbell="shadow", seconds=0.3)
        assert s["ios"] > 100 and s["errors"] == 0
        # EventIdx: a ring only when the worker asked for one.
        assert s["messages"] < s["ios"]
        # Shadow mode is left by a controller reset; the page works after it.
        p = bench.point(qd=2, mode="irq", doorbell="page", seconds=0.2)
        assert p["ios"] > 10 and p["errors"] == 0 and p["messages"] == 0
        assert bench.verify(16, seed=3) == 0
    finally:
        bench.close()


def test_verify_writes_and_reads_back_through_the_server(server: tuple[object, str]) -> None:
    srv, path = server
    bench = _core.VfioUserBench(path, mem_bytes=MEM)
    try:
        before = srv.controller.counters()  # type: ignore[attr-defined]
        assert bench.verify(24, seed=7) == 0
        after = srv.controller.counters()  # type: ignore[attr-defined]
        assert _delta(after, before, "io_commands") == 48
        fill = bench.fill()
        # 16 MiB in 4 KiB writes.
        assert fill["ios"] == (16 << 20) // 4096 and fill["errors"] == 0
    finally:
        bench.close()


def test_a_trap_server_offers_no_page_and_the_client_says_so() -> None:
    with running_server(make_config(), doorbells="trap") as (_srv, path):
        bench = _core.VfioUserBench(path, mem_bytes=MEM)
        try:
            assert bench.info()["doorbell_page"] is False
            with pytest.raises(StateError, match="no doorbell page"):
                bench.point(qd=1, mode="poll", doorbell="page", seconds=0.1)
            # The refusal left no queue pair behind: the next point works.
            r = bench.point(qd=1, mode="irq", doorbell="trap", seconds=0.1)
            assert r["ios"] > 0 and r["errors"] == 0
            assert bench.verify(4) == 0
        finally:
            bench.close()
        # Asked for by name: an error naming the fix.
        with pytest.raises(StateError, match=r"offers no doorbell page .*--doorbells mmap"):
            run_vfio_bench(VfioBenchConfig(socket=path, qds=(1,), doorbells=("page", "trap"), seconds=0.1,
                                           fill=False, compare=False))
        # Not asked for: measured what the server offers, said what was skipped.
        res = run_vfio_bench(VfioBenchConfig(socket=path, qds=(1,), seconds=0.1, fill=False, compare=False))
        assert {(p.doorbell, p.mode) for p in res.points} == {
            (d, m) for d in ("shadow", "trap") for m in ("poll", "irq")}
        assert all(p.ios > 0 and p.errors == 0 for p in res.points)
        assert list(res.skipped) == ["page"] and "--doorbells mmap" in res.skipped["page"]


def test_cli_against_a_default_serve_skips_the_page_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, path = short_socket_path("default")
    # `nvmefast serve` as a user starts it: default doorbells (trapped).
    proc = subprocess.Popen([sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path,
                             "--namespace", "ram:16M", "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            assert proc.poll() is None and time.monotonic() < deadline, "nvmefast serve did not listen"
            time.sleep(0.05)
        out = tmp_path / "vu.json"
        argv = ["bench", "--vfio-user", path, "--qd", "1", "--seconds", "0.1", "--no-compare"]
        assert main([*argv, "--json", str(out)]) == 0
        captured = capsys.readouterr()
        assert "skipped page doorbells: the server offers no doorbell page" in captured.out
        assert "skipping page doorbells" in captured.err, "said while it runs, too"
        doc = json.loads(out.read_text())
        assert {p["doorbell"] for p in doc["points"]} == {"shadow", "trap"}
        assert "page" in doc["skipped"]
        # Named explicitly, the page is an error that says how to get one.
        assert main([*argv, "--doorbell", "page"]) == 1
        err = capsys.readouterr().err
        assert "offers no doorbell page" in err and "nvmefast serve --doorbells mmap" in err, err
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def test_bad_arguments_are_config_errors(server: tuple[object, str]) -> None:
    _srv, path = server
    with pytest.raises(ConfigError, match="mem_bytes"):
        _core.VfioUserBench(path, mem_bytes=12345)
    bench = _core.VfioUserBench(path, mem_bytes=MEM)
    try:
        with pytest.raises(ConfigError, match="qd 0"):
            bench.point(qd=0, mode="poll", doorbell="page", seconds=0.1)
        with pytest.raises(ConfigError, match="mode"):
            bench.point(qd=1, mode="spin", doorbell="page", seconds=0.1)
        with pytest.raises(ConfigError, match="doorbell"):
            bench.point(qd=1, mode="poll", doorbell="mmio", seconds=0.1)
        with pytest.raises(ConfigError, match="seconds"):
            bench.point(qd=1, mode="poll", doorbell="page", seconds=0)
    finally:
        bench.close()
    with pytest.raises(StateError, match="closed"):
        bench.info()
    for bad, match in [
        (dict(qds=(0,)), "qds"),
        (dict(modes=("spin",)), "mode"),
        (dict(doorbells=("mmio",)), "doorbell"),
        (dict(seconds=0.0), "seconds"),
        (dict(client_cpu=4096), "CPU 4096"),
        (dict(server_cpus=()), "at least one CPU"),
        (dict(size_bytes=(1 << 20) + 1), "MiB"),
    ]:
        with pytest.raises(ConfigError, match=match):
            run_vfio_bench(VfioBenchConfig(**bad))  # type: ignore[arg-type]


def test_a_peer_that_is_not_a_vfio_user_server_is_a_state_error() -> None:
    directory, path = short_socket_path("peer")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)

    def answer_garbage() -> None:
        conn, _ = lsock.accept()
        conn.recv(4096)
        conn.sendall(b"\xff" * 16)
        conn.close()

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    try:
        with pytest.raises(StateError, match="cannot bring up the controller"):
            _core.VfioUserBench(path, mem_bytes=MEM)
    finally:
        t.join(5)
        lsock.close()
        os.unlink(path)
        os.rmdir(directory)
    with pytest.raises(StateError, match="cannot bring up"):
        _core.VfioUserBench(path, mem_bytes=MEM)


def test_default_placement_puts_client_first_and_server_last() -> None:
    assert default_placement([0]) == (None, None)
    assert default_placement([3, 1, 2]) == (1, (3,))


@pytest.mark.parametrize("doorbell", ["trap", "page"])
def test_a_server_that_goes_away_mid_run_is_a_state_error(doorbell: str) -> None:
    with running_server(make_config()) as (srv, path):
        bench = _core.VfioUserBench(path, mem_bytes=MEM)
        stopper = threading.Timer(0.3, srv.stop)
        stopper.start()
        try:
            # Trapped: the socket refuses the next doorbell; page: the
            # worker stops and nothing completes. Either way an error, not
            # a hang or a panic.
            with pytest.raises(StateError):
                bench.point(qd=4, mode="poll", doorbell=doorbell, seconds=30)
        finally:
            stopper.join()
            bench.close()
