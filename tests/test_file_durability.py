"""Nothing acknowledged by Flush is lost when the server dies: issue 11's kill
test without a guest.

A child process serves a file namespace, writes known random blocks (one by
one and a batch in flight at once), issues Flush, and once the Flush has
completed says so and keeps writing elsewhere; the parent SIGKILLs it the
moment it reads the line. A new controller on the same file (which must get
the lock the dead one held) then reads every flushed block back. Once in
process (the Controller embedding contract) in every file mode, and once
through ``nvmefast serve --namespace file:PATH`` and a vfio-user client.

A SIGKILL leaves the page cache to the kernel, so this proves the data left
the process before the Flush completed, not that it reached the disk; that
Flush, FUA and a disabled write cache leave no dirty pages is
test_file_backend.py's, with cachestat(2) as the oracle.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fileutil import ENV_THREADS, MODES, FileMode, environment, file_namespace, scratch_dir
from nvmefast import Controller, ControllerConfig
from nvmefast.testing import Host
from nvmefast.testing import sqe as op

MiB = 1 << 20
SIZE = 32 * MiB
SCRATCH_LBA = 24 * MiB // 512
"""Where the child writes after its Flush: nothing there is promised."""

CHILD = textwrap.dedent("""
    import os, pickle, sys
    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    from nvmefast.testing import Host, build_sqe, data_pointers

    path, io, cache, plan_path, scratch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    with open(plan_path, "rb") as f:
        singles, batch = pickle.load(f)
    ns = NamespaceConfig(backend="file", path=path, size_bytes=int(sys.argv[6]), io=io, cache=cache)
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1, entries=64)
        for slba, data in singles:
            host.write(1, slba, data)
        # a batch in flight at once: the file sees them concurrently
        cids = []
        for slba, data in batch:
            buf = host.alloc(len(data))
            host.write_mem(buf, data)
            prps = host.build_prps(data_pointers(buf, len(data)))
            cids.append(host.submit(build_sqe(0x01, nsid=1, prp1=prps.prp1, prp2=prps.prp2,
                                              cdw10=slba, cdw12=len(data) // 512 - 1), 1))
        for cid in cids:
            assert host.wait(1, cid).ok
        host.flush(1)
        print("flushed", flush=True)
        n = 0
        while True:  # killed somewhere in here
            host.write(1, scratch + n % 1024 * 8, os.urandom(4096))
            n += 1
""")


def _plan(seed: int) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """Single writes (some overlapping: the later one wins) and a batch of
    disjoint ones, all below SCRATCH_LBA."""
    rng = random.Random(seed)
    singles = [(rng.randrange(0, SCRATCH_LBA - 256), rng.randbytes(512 * rng.choice((1, 8, 64, 255))))
               for _ in range(96)]
    batch = [(16 * MiB // 512 + i * 64, rng.randbytes(32 * 1024)) for i in range(32)]
    return singles, batch


def _expected(plan: tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]) -> dict[int, bytes]:
    blocks: dict[int, bytes] = {}
    for slba, data in plan[0] + plan[1]:
        for i in range(len(data) // 512):
            blocks[slba + i] = data[i * 512:(i + 1) * 512]
    return blocks


def _verify(host: Host, expected: dict[int, bytes]) -> None:
    lost = []
    # read in runs of consecutive blocks, 128 KiB at most per command
    lbas = sorted(expected)
    start = 0
    while start < len(lbas):
        end = start
        while end + 1 < len(lbas) and lbas[end + 1] == lbas[end] + 1 and end + 1 - start < 256:
            end += 1
        got = host.read(1, lbas[start], end - start + 1)
        for k, lba in enumerate(lbas[start:end + 1]):
            if got[k * 512:(k + 1) * 512] != expected[lba]:
                lost.append(lba)
        start = end + 1
    assert not lost, f"{len(lost)} flushed blocks lost or wrong after SIGKILL, first LBAs {lost[:10]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [*MODES, ENV_THREADS])
def test_flushed_data_survives_sigkill(mode: FileMode) -> None:
    with scratch_dir(mode.directory) as d, environment(mode.env):
        path = os.path.join(d, "disk.img")
        plan = _plan(seed=len(mode.io) * 31 + len(mode.cache))
        plan_path = os.path.join(d, "plan.pickle")
        with open(plan_path, "wb") as f:
            pickle.dump(plan, f)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path, mode.io, mode.cache, plan_path, str(SCRATCH_LBA), str(SIZE)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            child.send_signal(signal.SIGKILL)  # the moment the Flush is acknowledged
            if line != "flushed\n":
                pytest.fail(f"the child never flushed: {line!r} {child.communicate(timeout=30)[1][-2000:]}")
        finally:
            child.kill()
            child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        # The dead controller's lock goes with its process (a moment later when
        # its io_uring's teardown still holds the file: the core waits for it).
        with Controller(ControllerConfig(namespaces=[file_namespace(mode, path, None)])) as ctrl, \
                Host(ctrl) as host:
            host.enable()
            host.set_num_queues(1, 1)
            host.create_io_queue_pair(1)
            assert host.identify_namespace(1).nsze == SIZE // 512
            _verify(host, _expected(plan))


@pytest.mark.timeout(120)
def test_flushed_data_survives_sigkill_of_nvmefast_serve() -> None:
    from vfio_user_client import connect
    from vfio_user_host import NvmeHost, short_socket_path

    from nvmefast.testing import build_sqe

    directory, sock = short_socket_path("kill")
    with scratch_dir("/var/tmp") as d:
        path = os.path.join(d, "disk.img")
        with open(path, "wb") as f:
            f.truncate(16 * MiB)
        rng = random.Random(11)
        writes = [(rng.randrange(0, 16 * MiB // 512 - 64) // 8 * 8, rng.randbytes(32 * 1024)) for _ in range(24)]
        expected = _expected((writes, []))

        def serve() -> subprocess.Popen[str]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", sock, "--namespace", f"file:{path}",
                 "--doorbells", "trap"],  # info: the namespace line is read below
                stderr=subprocess.PIPE, text=True,
            )
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"nvmefast serve did not listen: {proc.communicate(timeout=10)[1]}")
                time.sleep(0.05)
            return proc

        first = serve()
        try:
            with connect(sock) as client, NvmeHost(client) as host:
                host.enable()
                host.create_io_queue_pair(1, 16)
                for slba, data in writes:
                    assert host.write(1, slba, data).ok
                flush = host.command(1, build_sqe(op.IO_FLUSH, nsid=1))
                assert flush.ok, str(flush)
                first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            _, log = first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        assert f"namespace 1: file 16M {path}" in log, log
        assert "io io_uring" in log or "io threads" in log, log
        os.unlink(sock)  # a killed server leaves its socket file behind
        second = serve()
        try:
            with connect(sock) as client, NvmeHost(client) as host:
                host.enable()
                host.create_io_queue_pair(1, 16)
                lost = [slba for slba, data in writes
                        if host.read(1, slba, len(data) // 512)
                        != b"".join(expected[slba + i] for i in range(len(data) // 512))]
                assert not lost, f"flushed writes at LBAs {lost} lost after SIGKILL of the server"
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
            shutil.rmtree(directory, ignore_errors=True)
