"""The control socket (``nvmefast serve --control PATH``, JSON lines) and
``nvmefast ctl``: requests, error replies that say what is wrong, and a
server that lives on through garbage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfio_user_client import connect
from vfio_user_host import NvmeHost, short_socket_path

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.cli import main
from nvmefast.control import MAX_LINE, ControlServer, control_request
from nvmefast.testing import build_sqe
from nvmefast.testing.namespaces import build_controller_list, build_create_structure

MiB = 1 << 20


@pytest.fixture
def served() -> Iterator[tuple[Controller, str]]:
    # A short directory: a UNIX socket address holds 107 bytes.
    directory = tempfile.mkdtemp(prefix="nvf-ctl-")
    path = os.path.join(directory, "ctl.sock")
    config = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=MiB)], capacity_bytes=256 * MiB)
    with Controller(config) as ctrl:
        server = ControlServer(path, ctrl)
        server.start()
        try:
            yield ctrl, path
        finally:
            server.stop()
            os.rmdir(directory)


def exchange(path: str, lines: list[bytes]) -> list[dict[str, object]]:
    """Send raw lines on one connection; the replies, one per non-empty line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b"".join(line + b"\n" for line in lines))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_requests(served: tuple[Controller, str]) -> None:
    ctrl, path = served
    reply = control_request(path, {"op": "add-namespace", "namespace": "ram:64M", "id": 7})
    assert reply == {"ok": True, "nsid": 2, "id": 7}
    assert ctrl.namespaces()[2].size == 64 * MiB
    assert control_request(path, {"op": "resize-namespace", "nsid": 2, "size": "128M"}) == {
        "ok": True, "nsid": 2, "size_bytes": 128 * MiB}  # fmt: skip
    assert control_request(path, {"op": "resize-namespace", "nsid": 2, "size": 32 * MiB})["ok"] is True
    listed = control_request(path, {"op": "list"})
    assert [(n["nsid"], n["size_bytes"], n["origin"]) for n in listed["namespaces"]] == [  # type: ignore[index]
        (1, MiB, "configured"), (2, 32 * MiB, "added")]  # fmt: skip
    assert listed["capacity"] == {"total_bytes": 256 * MiB, "unallocated_bytes": 256 * MiB - 33 * MiB}
    assert control_request(path, {"op": "remove-namespace", "nsid": 2}) == {"ok": True, "nsid": 2}
    assert list(ctrl.namespaces()) == [1]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"nsid": 1}', "unknown op"),
        (b'{"op": "format"}', "unknown op"),
        (b'{"op": 5}', "unknown op"),
        (b'{"op": "remove-namespace"}', "'nsid'"),
        (b'{"op": "remove-namespace", "nsid": "2"}', "'nsid'"),
        (b'{"op": "remove-namespace", "nsid": true}', "'nsid'"),
        (b'{"op": "remove-namespace", "nsid": 9}', "allocated: 1"),
        (b'{"op": "resize-namespace", "nsid": 1, "size": "big"}', "'size'"),
        (b'{"op": "resize-namespace", "nsid": 1, "size": [1]}', "'size'"),
        (b'{"op": "resize-namespace", "nsid": 1, "size": 1000}', "multiple"),
        (b'{"op": "resize-namespace", "nsid": 1, "size": "1T"}', "cannot grow"),
        (b'{"op": "add-namespace"}', "'namespace'"),
        (b'{"op": "add-namespace", "namespace": "tape:1G"}', "tape"),
        (b'{"op": "add-namespace", "namespace": "ram:1T"}', "unallocated"),
        (b'{"op": "add-namespace", "namespace": "file:/nonexistent/dir/x.img"}', "nonexistent"),
    ],
)
def test_errors_name_what_is_wrong_and_the_server_lives_on(served: tuple[Controller, str], line: bytes,
                                                           says: str) -> None:  # fmt: skip
    ctrl, path = served
    replies = exchange(path, [line, b'{"op": "list", "id": "after"}'])
    assert replies[0]["ok"] is False
    assert says in str(replies[0]["error"]), replies[0]
    assert replies[1]["ok"] is True and replies[1]["id"] == "after"
    assert list(ctrl.namespaces()) == [1]


def test_long_line_closes_only_that_connection(served: tuple[Controller, str]) -> None:
    _, path = served
    replies = exchange(path, [b"x" * (MAX_LINE + 10), b'{"op": "list"}'])
    assert len(replies) == 1 and "longer than" in str(replies[0]["error"])
    assert control_request(path, {"op": "list"})["ok"] is True


def test_a_client_that_vanishes_mid_line(served: tuple[Controller, str]) -> None:
    _, path = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b'{"op": "add-nam')
    assert control_request(path, {"op": "list"})["ok"] is True


def test_socket_is_private_and_refuses_a_second_server(served: tuple[Controller, str]) -> None:
    ctrl, path = served
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(Exception, match="in use"):
        ControlServer(path, ctrl).start()


def test_ctl_cli(served: tuple[Controller, str], capsys: pytest.CaptureFixture[str]) -> None:
    ctrl, path = served
    assert main(["ctl", path, "add-namespace", "ram:64M"]) == 0
    assert capsys.readouterr().out == "namespace 2 added\n"
    assert main(["ctl", path, "resize-namespace", "2", "2G"]) == 1  # past the 256M capacity
    assert "cannot grow" in capsys.readouterr().err
    assert main(["ctl", path, "resize-namespace", "2", "128M"]) == 0
    assert capsys.readouterr().out == "namespace 2 resized to 128M\n"
    assert main(["ctl", path, "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[:2] == ["2", "128M"]
    assert main(["ctl", path, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["ctl", path, "remove-namespace", "2"]) == 0
    assert capsys.readouterr().out == "namespace 2 removed\n"
    assert main(["ctl", path, "remove-namespace", "2"]) == 1
    assert "allocated: 1" in capsys.readouterr().err
    assert main(["ctl", path + ".none", "list"]) == 1
    assert "control socket" in capsys.readouterr().err
    assert list(ctrl.namespaces()) == [1]


def test_serve_with_capacity_directory_and_control(tmp_path: Path) -> None:
    """`nvmefast serve --capacity --namespace-dir --control` with no --namespace, then
    `nvmefast ctl` adds one that the vfio-user client sees, and the server stops cleanly."""
    directory, path = short_socket_path("nsctl")
    control = os.path.join(directory, "ctl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path, "--capacity", "64M",
         "--namespace-dir", str(tmp_path / "ns"), "--control", control, "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not (os.path.exists(path) and os.path.exists(control)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nvmefast serve did not listen (exit {proc.returncode}): {proc.communicate(timeout=5)[1]}")
            time.sleep(0.05)
        ctl = subprocess.run([sys.executable, "-m", "nvmefast.cli", "ctl", control, "add-namespace", "ram:8M"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert (ctl.returncode, ctl.stdout) == (0, "namespace 1 added\n"), ctl.stderr
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            ident = host.identify_controller()
            assert ident.raw[280:296] == (64 * MiB).to_bytes(16, "little")  # TNVMCAP
            assert ident.raw[296:312] == (56 * MiB).to_bytes(16, "little")  # UNVMCAP
            assert host.identify_namespace(1).nsze == 8 * MiB // 512
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(control), "the control socket is left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _serve(path: str, directory: Path) -> subprocess.Popen[str]:
    """`nvmefast serve --capacity 64M --namespace-dir DIRECTORY`, listening at PATH."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path, "--capacity", "64M",
         "--namespace-dir", str(directory), "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"nvmefast serve did not listen (exit {proc.returncode}): {proc.communicate(timeout=5)[1]}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then the server must exit 0 (its stderr is collected, the pipe closed)."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def _admin_page(host: NvmeHost, opcode: int, data: bytes, **fields: int) -> int:
    """An admin command with ``data`` in a page at PRP1; returns DW0."""
    buf = host.alloc(4096)
    host.client.memory.write(buf, data)
    return host.admin(build_sqe(opcode, prp1=buf, **fields)).dw0


def test_serve_keeps_created_namespaces_across_a_restart(tmp_path: Path) -> None:
    """A namespace the client creates (0Dh) and attaches (15h) on `nvmefast serve
    --capacity 64M --namespace-dir DIR` is there again after the server restarts: the
    same NSID, attached, its size, its data, and the capacity it draws (Issue 25's
    "done when")."""
    directory, path = short_socket_path("nsdir")
    store = tmp_path / "ns"
    pattern = bytes(range(256)) * 16  # 4 KiB
    proc = _serve(path, store)
    try:
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            nsid = _admin_page(host, 0x0D, build_create_structure(4096), cdw10=0)  # 2 MiB of 512 B blocks
            assert nsid == 1
            _admin_page(host, 0x15, build_controller_list([0]), nsid=nsid, cdw10=0)
            host.create_io_queue_pair(1, irq=False)
            assert host.write(1, 100, pattern, nsid=nsid).ok
            flush = host.command(1, build_sqe(0x00, nsid=nsid), irq=False)  # I/O Flush
            assert flush.ok
        _stop(proc)
        proc = _serve(path, store)
        with connect(path) as client, NvmeHost(client) as host:
            host.enable()
            ident = host.identify_controller()
            assert ident.raw[296:312] == (62 * MiB).to_bytes(16, "little")  # UNVMCAP: 64M - 2M
            active = struct.unpack("<4I", host.identify(0x02)[:16])
            assert active == (1, 0, 0, 0)
            assert host.identify_namespace(1).nsze == 4096
            host.create_io_queue_pair(1, irq=False)
            assert host.read(1, 100, 8, nsid=1) == pattern
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
