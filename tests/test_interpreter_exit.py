"""A process exits promptly with its controllers still open.

Each case runs a script in a fresh interpreter that leaves a controller (or
a bare engine, or a vfio-user server with a client) live at exit, sometimes
with a worker inside a Python admin handler or notifier at that moment, and
checks the exit code and the time it took. Before the fix these hung
forever: a finalizer joined workers that could never re-take the GIL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(60)

# A controller with a host that brought it up and ran I/O on queue pair 1.
HOST_PRELUDE = """
    import os, sys, threading, time
    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    from nvmefast.testing import Host, build_sqe
    from nvmefast.testing.sqe import ADMIN_GET_FEATURES, IO_WRITE

    c = Controller(ControllerConfig(namespaces=[NamespaceConfig(size_bytes=4 << 20)]))
    host = Host(c, memory_bytes=4 << 20)
    host.enable()
    host.create_io_queue_pair(1, 16)
    data = os.urandom(4096)
    host.write(1, 0, data)
    assert host.read(1, 0, 8) == data

    def in_admin_handler(body):
        # Make body(sqe) the admin handler; return once a worker is inside it.
        inside = threading.Event()
        def handler(sqe):
            inside.set()
            return body(sqe)
        c._engine.set_admin_handler(handler)
        host.submit(build_sqe(ADMIN_GET_FEATURES, cdw10=7))
        assert inside.wait(5)
"""


def run(script: str, *, timeout: float = 20, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``script`` in a new interpreter; the result and the seconds it took."""
    start = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the interpreter did not exit within {timeout} s; stderr: {e.stderr!r}")
    return r, time.monotonic() - start


def test_exit_with_a_live_controller() -> None:
    r, took = run("""
        from nvmefast import Controller
        c = Controller()
        raise SystemExit(0)
    """)
    assert r.returncode == 0, r.stderr
    assert took < 5
    assert "panicked" not in r.stderr


def test_exit_code_kept_with_a_live_controller() -> None:
    r, took = run("""
        import sys
        from nvmefast import Controller
        c = Controller()
        sys.exit(7)
    """)
    assert r.returncode == 7, r.stderr
    assert took < 5


def test_uncaught_exception_with_a_live_controller() -> None:
    r, took = run("""
        from nvmefast import Controller
        c = Controller()
        raise RuntimeError("boom")
    """)
    assert r.returncode == 1
    assert "RuntimeError: boom" in r.stderr
    assert took < 5


def test_exit_right_after_start() -> None:
    # The workers may still be starting when finalization begins.
    for _ in range(5):
        r, took = run("""
            from nvmefast import Controller
            Controller(); Controller()
        """)
        assert r.returncode == 0, r.stderr
        assert "panicked" not in r.stderr
        assert took < 5


def test_exit_with_io_queues_after_io() -> None:
    r, took = run(HOST_PRELUDE + """
    sys.exit(3)
    """)
    assert r.returncode == 3, r.stderr
    assert took < 5


def test_exception_with_io_queues_and_commands_in_flight() -> None:
    r, took = run(HOST_PRELUDE + """
    for i in range(8):
        host.submit(build_sqe(IO_WRITE, nsid=1, prp1=host.alloc(4096), cdw10=i, cdw12=7), qid=1)
    raise KeyError("in flight")
    """)
    assert r.returncode == 1
    assert "KeyError: 'in flight'" in r.stderr
    assert took < 5


def test_exit_while_a_worker_is_in_the_admin_handler() -> None:
    # The exit hook waits for the handler, which then completes normally.
    r, took = run(HOST_PRELUDE + """
    handle = c._admin.handle
    def slow(sqe):
        time.sleep(1)
        print("handler done", flush=True)
        return handle(sqe)
    in_admin_handler(slow)
    sys.exit(0)
    """)
    assert r.returncode == 0, r.stderr
    assert "handler done" in r.stdout
    assert took < 8


def test_exit_while_a_worker_is_in_a_notifier() -> None:
    r, took = run(HOST_PRELUDE + """
    inside = threading.Event()
    def slow(vector):
        inside.set()
        time.sleep(1)
        print("notifier done", flush=True)
    c.set_vector_callback(1, slow)
    host.submit(build_sqe(IO_WRITE, nsid=1, prp1=host.alloc(4096), cdw10=9, cdw12=7), qid=1)
    assert inside.wait(5)
    raise SystemExit(0)
    """)
    assert r.returncode == 0, r.stderr
    assert "notifier done" in r.stdout
    assert took < 8


def test_exit_with_a_handler_that_never_returns() -> None:
    # The exit hook gives up on it after its grace period and says so.
    r, took = run(HOST_PRELUDE + """
    in_admin_handler(lambda sqe: threading.Event().wait())
    sys.exit(5)
    """)
    assert r.returncode == 5, r.stderr
    assert "still in a Python handler" in r.stderr
    assert took < 12


@pytest.mark.parametrize("handler_seconds", [30, 0, 0.001, 0.01])
def test_exit_when_finalization_closes_the_controller(handler_seconds: float) -> None:
    # With the exit hooks gone, Controller.__del__ closes the controller
    # during finalization while a worker is in the admin handler: it must
    # not wait for that worker, and a handler returning meanwhile (its
    # time.sleep re-taking the GIL) must not take the process down.
    r, took = run(HOST_PRELUDE + f"""
    import atexit
    in_admin_handler(lambda sqe: time.sleep({handler_seconds}))
    atexit._clear()
    sys.exit(0)
    """)
    assert r.returncode == 0, r.stderr
    assert took < 5


def test_dropping_a_started_engine_does_not_deadlock() -> None:
    # Dealloc holds the GIL; the workers need it on their way out.
    r, took = run("""
        import gc
        from nvmefast._core import Engine
        e = Engine(namespaces=[(1 << 20, 512, "ram")], msix_vectors=2, max_qid=2,
                   max_queue_entries=64, mdts_bytes=1 << 17, poll_us=10)
        e.start()
        del e
        gc.collect()
        print("dropped", flush=True)
    """)
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stdout
    assert took < 5


def test_exit_with_a_live_vfio_user_server_and_client() -> None:
    # DMA through the socket: workers call into Python for every access.
    directory = tempfile.mkdtemp(prefix="nvmefast-exit-", dir="/tmp")  # sun_path is short
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    try:
        r, took = run(f"""
            import sys
            from nvmefast.vfio_user import VfioUserServer
            from vfio_user_client import connect
            from vfio_user_host import NvmeHost, make_config

            server = VfioUserServer({os.path.join(directory, "s")!r}, make_config())
            server.start()
            client = connect(server.path)
            host = NvmeHost(client, dma="socket")
            host.enable()
            host.create_io_queue_pair(1, 16)
            assert host.write(1, 0, b"\\x5a" * 512).ok
            sys.exit(4)
        """, env=env)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert r.returncode == 4, r.stderr
    assert took < 8
