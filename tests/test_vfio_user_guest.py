"""End to end: a real Linux guest's ``nvme`` driver on `nvmefast serve`, through QEMU's ``vfio-user-pci``.

``vfio-user-guest.sh`` (the shared tool; ``NVMEFAST_GUEST_TOOL`` overrides where
it is looked for) provides the client: QEMU >= 10.1 from a Debian trixie root,
a Debian kernel and a busybox initramfs running ``tests/guest/nvme_e2e.sh``.
Its ``setup`` step needs root and the network the first time (minutes) and is
fast once done; when the tool is missing or setup fails the module is skipped
with setup's output as the reason. Nothing else skips it.

One server process serves two boots in turn: the first finds a zeroed
namespace and writes random patterns at several offsets (LBA 0, the last
LBAs, a 1 MiB transfer), the second must read the first boot's patterns back
(the RAM namespace lives as long as the server). A third boot, against a
server of its own, runs with guest RAM that has no fds (``NO_SHARED_MEM=1``),
so every DMA goes through vfio-user DMA_READ/DMA_WRITE messages.

The guest prints ``CHECK key=value`` / ``IRQ phase vector count`` lines on its
console (QEMU's stdout); the assertions are made here, with the guest console,
QEMU's stderr and the server's log attached to every failure (and kept, with
the guest console, in pytest's temporary directory: ``vfio-user-guest0/``).
``NVMEFAST_GUEST_SERVE_ARGS`` appends options to `nvmefast serve` (e.g.
``--doorbells mmap`` or ``--polling poll``) to try variants by hand.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestutil import (  # noqa: F401  (tool and workdir are fixtures)
    BOOT_TIMEOUT,
    GUEST_CPUS,
    MODEL,
    NAMESPACE_BYTES,
    ROOT,
    SERIAL,
    SETUP_TIMEOUT,
    Boot,
    Server,
    boot,
    build_initrd,
    kill_session,
    report,
    start_server,
    tool,
    workdir,
)

GUEST_SCRIPT = ROOT / "tests" / "guest" / "nvme_e2e.sh"

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 4 * BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def initrd(tool: Path, workdir: Path) -> Path:
    return build_initrd(tool, GUEST_SCRIPT, workdir / "nvme_e2e.initrd.gz")



@pytest.fixture(scope="module")
def server(tool: Path, workdir: Path) -> Iterator[Server]:
    """One server process for the first and the second boot."""
    srv = start_server(workdir, "shared-mem")
    yield srv
    srv.stop()




def assert_guest_ok(b: Boot) -> None:
    """Everything one boot must show, whatever the namespace held before it."""
    d = b.diagnostics
    assert not b.fails, f"{b.label}: the guest reported FAIL {b.fails}{d()}"
    assert b.guest_exit == 0, f"{b.label}: the guest script did not finish (GUEST-EXIT {b.guest_exit}){d()}"
    assert b.exit_status == 0, f"{b.label}: QEMU did not exit cleanly (status {b.exit_status}){d()}"
    assert b.server_alive_after, f"{b.label}: the server process died during the boot{d()}"
    c = b.checks
    assert c.get("state") == "live" and c.get("transport") == "pcie", f"{b.label}: controller state{d()}"
    assert c.get("model", "").rstrip() == MODEL, f"{b.label}: Identify model {c.get('model')!r}{d()}"
    assert c.get("serial", "").rstrip() == SERIAL, f"{b.label}: Identify serial {c.get('serial')!r}{d()}"
    assert int(c.get("size_sectors", 0)) * 512 == NAMESPACE_BYTES, f"{b.label}: namespace size{d()}"
    assert int(c.get("mq_count", 0)) >= 2, f"{b.label}: fewer than 2 I/O queues{d()}"
    regions = b.regions()
    assert len(regions) == 4, f"{b.label}: pattern regions {regions}{d()}"
    for name in regions:
        assert c.get(f"cmp_{name}") == "ok", f"{b.label}: pattern {name} read back differs{d()}"
        assert c[f"readback_{name}"] == c[f"written_{name}"], f"{b.label}: pattern {name}{d()}"
    if c.get("discard_max_bytes", "0") != "0":
        assert c.get("discard") == "ok", f"{b.label}: deallocated range does not read as zeroes{d()}"
    assert c.get("timeouts") == "0", f"{b.label}: the guest's nvme driver timed out commands{d()}"
    assert c.get("state_end") == "live", f"{b.label}: controller not live after the I/O{d()}"
    # Interrupts: the admin vector fired, and every I/O queue's vector fired during the I/O
    # (the guest read from each CPU in turn, and each CPU has a queue of its own).
    assert b.irqs.get("before", {}).get("nvme0q0", 0) > 0, f"{b.label}: no admin interrupts{d()}"
    vectors = b.io_vectors()
    assert len(vectors) >= 2, f"{b.label}: I/O vectors {vectors}{d()}"
    quiet = [v for v in vectors if b.irq_delta(v) <= 0]
    assert not quiet, f"{b.label}: no interrupts on {quiet} across the I/O{d()}"


def zero_md5(size: int) -> str:
    return hashlib.md5(bytes(size)).hexdigest()



# -- the tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_boot(tool: Path, server: Server, initrd: Path) -> Boot:
    return boot(tool, server, initrd, "boot 1")


def test_linux_guest_drives_the_controller(first_boot: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    """Driver binds, Identify strings, >= 2 I/O queues, interrupts, patterns written and read back."""
    report(capsys, first_boot)
    assert_guest_ok(first_boot)
    # QEMU's memory-backend-memfd seals guest RAM against shrinking (its
    # default, seal=on): the server trusts it, with no SIGBUS guard.
    maps = [line for line in first_boot.server.log().splitlines() if "DMA map" in line and "fd offset" in line]
    assert maps and all("sealed memfd: trusted, unguarded" in m for m in maps), (
        f"boot 1: guest RAM not mapped as a sealed memfd: {maps}{first_boot.diagnostics()}"
    )
    for name, size in first_boot.regions().items():
        assert first_boot.checks[f"before_{name}"] == zero_md5(size), (
            f"boot 1: region {name} of a fresh namespace is not zeroes{first_boot.diagnostics()}"
        )


def test_second_boot_on_the_same_server_reads_the_first_boots_data(
    tool: Path, server: Server, initrd: Path, first_boot: Boot, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server takes a second connection (after the first guest's shutdown and disconnect) and still has the data."""
    assert first_boot.regions(), f"boot 1 wrote no patterns to look for{first_boot.diagnostics()}"
    second = boot(tool, server, initrd, "boot 2")
    report(capsys, second)
    assert_guest_ok(second)
    for name in first_boot.regions():
        assert second.checks.get(f"before_{name}") == first_boot.checks[f"written_{name}"], (
            f"boot 2: region {name} does not hold what boot 1 wrote{second.diagnostics()}"
        )


def test_guest_without_shared_memory(
    tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guest RAM without fds: the server must move data with DMA_READ / DMA_WRITE messages."""
    srv = start_server(workdir, "no-shared-mem")
    try:
        b = boot(tool, srv, initrd, "no shared mem", NO_SHARED_MEM="1")
    finally:
        srv.stop()
    report(capsys, b)
    assert_guest_ok(b)
    for name, size in b.regions().items():
        assert b.checks[f"before_{name}"] == zero_md5(size), f"region {name} of a fresh namespace{b.diagnostics()}"



def test_guest_with_mapped_doorbells(
    tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--doorbells mmap``: QEMU maps the doorbell page, the guest's doorbell
    writes land there with no message, and idle workers find them by
    scanning. (The other boots use the default, trapped doorbells: a posted
    REGION_WRITE each, which must never rewind a shadow doorbell.)"""
    srv = start_server(workdir, "mmap", ("--doorbells", "mmap"))
    try:
        b = boot(tool, srv, initrd, "mapped doorbells")
    finally:
        srv.stop()
    report(capsys, b)
    assert_guest_ok(b)


def boot_killing_the_server_after_flush(tool: Path, server: Server, initrd: Path, label: str) -> Boot:
    """Boot, and SIGKILL the server the moment the guest reports that its
    writes and their Flushes completed (``CHECK flushed_at``); then stop QEMU."""
    cmd = ["bash", str(tool), "run", str(server.socket), str(initrd), "-smp", str(GUEST_CPUS)]
    env = {**os.environ, "GUEST_TIMEOUT": str(BOOT_TIMEOUT)}
    t0 = time.monotonic()
    lines: list[str] = []
    killed = threading.Event()
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", env=env, start_new_session=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.replace("\r", "").startswith("CHECK flushed_at=") and not killed.is_set():
                    server.proc.send_signal(signal.SIGKILL)
                    killed.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            killed.wait(BOOT_TIMEOUT)
        finally:
            # The guest cannot finish without its device: stop QEMU either way.
            kill_session(proc.pid)
        reader.join(30)
        err = proc.stderr.read()
        rc = proc.wait()
    server.proc.wait(10)
    b = Boot(label, rc, time.monotonic() - t0, "".join(lines), err, server)
    b.server_alive_after = server.alive()
    (server.log_path.parent / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    assert killed.is_set(), f"{label}: the guest never reported its flushed writes{b.diagnostics()}"
    return b


def test_file_namespace_keeps_flushed_data_across_a_killed_server(
    tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--namespace file:disk.img``: the guest writes and flushes, the server
    dies by SIGKILL right after the Flush completes, and a new server on the
    same image serves the data back to a new boot."""
    image = workdir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(NAMESPACE_BYTES)
    first = start_server(workdir, "file-1", namespace=f"file:{image}")
    try:
        b1 = boot_killing_the_server_after_flush(tool, first, initrd, "file boot 1")
    finally:
        first.stop()
    assert first.exit_status == -signal.SIGKILL, f"server 1 ended with {first.exit_status}{b1.diagnostics()}"
    regions = b1.regions()
    assert len(regions) == 4 and all(f"written_{n}" in b1.checks for n in regions), (
        f"file boot 1: the guest did not write every region{b1.diagnostics()}"
    )
    for name, size in regions.items():
        assert b1.checks[f"before_{name}"] == zero_md5(size), f"file boot 1: a fresh image is not zeroes{b1.diagnostics()}"
    second = start_server(workdir, "file-2", namespace=f"file:{image}")
    try:
        b2 = boot(tool, second, initrd, "file boot 2")
    finally:
        second.stop()
    report(capsys, b1, b2)
    assert_guest_ok(b2)
    for name in regions:
        assert b2.checks.get(f"before_{name}") == b1.checks[f"written_{name}"], (
            f"file boot 2: region {name} lost what boot 1 flushed before the kill{b2.diagnostics()}"
        )
