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
``--doorbells trap`` or ``--polling poll``) to try variants by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUEST_SCRIPT = ROOT / "tests" / "guest" / "nvme_e2e.sh"

SERIAL = "NVMEFAST-E2E-0001"
MODEL = "nvmefast vfio-user e2e"
NAMESPACE_BYTES = 64 << 20
IOTHREADS = 2
GUEST_CPUS = 2  # so Linux creates one I/O queue per CPU: >= 2 queues

SETUP_TIMEOUT = 45 * 60  # from scratch: mmdebstrap a trixie root with QEMU, fetch a kernel
# One TCG boot: about 10 s on the project machine when all is well; GUEST_TIMEOUT (the tool's) overrides.
BOOT_TIMEOUT = int(os.environ.get("GUEST_TIMEOUT", "180"))
SERVER_START_TIMEOUT = 30

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 4 * BOOT_TIMEOUT)


# -- running things -----------------------------------------------------------------


def run_bounded(
    cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, str, str]:
    """Run ``cmd`` in its own process group; (exit status or None on timeout, stdout, stderr).

    On timeout the whole group is killed, so no QEMU or apt is left behind.
    """
    with subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return None, out, err + f"\n[killed after {timeout:.0f} s]"
        except BaseException:  # pytest-timeout or ^C: leave nothing running behind us
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            raise


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def tool_candidates() -> list[Path]:
    """Where the guest tool is looked for: $NVMEFAST_GUEST_TOOL alone when set, else the shared checkouts."""
    if env := os.environ.get("NVMEFAST_GUEST_TOOL"):
        return [Path(env)]
    return [ROOT.parent / "shared" / "tools" / "vfio-user-guest.sh", Path("/work/shared/tools/vfio-user-guest.sh")]


def short_dir(base: Path) -> Path:
    """``base``, or a fresh directory under /tmp when a socket path in ``base`` would be too long."""
    if len(str(base / "nvme.sock")) < 100:
        return base
    return Path(tempfile.mkdtemp(prefix="nvmefast-vu-", dir="/tmp"))


# -- the server ---------------------------------------------------------------------


class Server:
    """`nvmefast serve` as a subprocess, its stdout and stderr in a log file."""

    def __init__(
        self, directory: Path, name: str, extra: tuple[str, ...] = (), namespace: str = f"ram:{NAMESPACE_BYTES >> 20}M"
    ) -> None:
        self.socket = short_dir(directory) / f"{name}.sock"
        self.log_path = directory / f"{name}-server.log"
        self.args = [
            "serve",
            "--socket", str(self.socket),
            "--namespace", namespace,
            "--serial", SERIAL,
            "--model", MODEL,
            "--iothreads", str(IOTHREADS),
            *extra,
            *shlex.split(os.environ.get("NVMEFAST_GUEST_SERVE_ARGS", "")),
        ]  # fmt: skip
        # Exactly what the `nvmefast` console script runs (nvmefast.cli:main), with this interpreter.
        cmd = [sys.executable, "-c", "import sys; from nvmefast.cli import main; sys.exit(main())", *self.args]
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=directory,
        )
        self.exit_status: int | None = None

    def wait_for_socket(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"`nvmefast {shlex.join(self.args)}` exited with {self.proc.returncode} before "
                            f"creating its socket:\n{self.log()}")  # fmt: skip
            try:
                if stat.S_ISSOCK(self.socket.stat().st_mode):
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        pytest.fail(f"`nvmefast {shlex.join(self.args)}` did not create {self.socket} within "
                    f"{SERVER_START_TIMEOUT} s:\n{self.log()}")  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_status = self.proc.returncode
        self._log.close()


@pytest.fixture(scope="module")
def tool() -> Path:
    """The guest tool, set up (idempotent); skips when it is missing or setup fails."""
    candidates = tool_candidates()
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        pytest.skip(f"vfio-user-guest.sh not found (looked at {', '.join(map(str, candidates))}; "
                    "NVMEFAST_GUEST_TOOL names it)")  # fmt: skip
    t0 = time.monotonic()
    rc, out, err = run_bounded(["bash", str(path), "setup"], SETUP_TIMEOUT)
    if rc != 0:
        status = "timed out" if rc is None else f"exited with {rc}"
        pytest.skip(f"`{path} setup` {status} after {time.monotonic() - t0:.0f} s "
                    f"(needs root, the network and apt the first time):\n{tail(out + err, 25)}")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vfio-user-guest")


@pytest.fixture(scope="module")
def initrd(tool: Path, workdir: Path) -> Path:
    out = workdir / "nvme_e2e.initrd.gz"
    rc, stdout, stderr = run_bounded(["bash", str(tool), "initrd", str(GUEST_SCRIPT), str(out)], 120)
    assert rc == 0 and out.is_file(), f"`{tool} initrd` failed ({rc}):\n{stdout}{stderr}"
    return out


def start_server(directory: Path, name: str, extra: tuple[str, ...] = (), namespace: str | None = None) -> Server:
    server = Server(directory, name, extra) if namespace is None else Server(directory, name, extra, namespace)
    try:
        server.wait_for_socket()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(tool: Path, workdir: Path) -> Iterator[Server]:
    """One server process for the first and the second boot."""
    srv = start_server(workdir, "shared-mem")
    yield srv
    srv.stop()


# -- a boot -------------------------------------------------------------------------


@dataclasses.dataclass
class Boot:
    label: str
    exit_status: int | None  # the tool's (QEMU's; 124 from `timeout`); None if we killed it
    seconds: float
    console: str  # QEMU's stdout: the guest's serial console
    qemu_stderr: str
    server: Server
    checks: dict[str, str] = dataclasses.field(default_factory=dict)
    irqs: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # phase -> vector -> count
    fails: list[str] = dataclasses.field(default_factory=list)
    guest_exit: int | None = None
    server_alive_after: bool = False

    def __post_init__(self) -> None:
        for line in self.console.replace("\r", "").splitlines():
            if m := re.match(r"CHECK ([\w.-]+)=(.*)$", line):
                self.checks[m[1]] = m[2]
            elif m := re.match(r"IRQ (\w+) (\S+) (\d+)$", line):
                self.irqs.setdefault(m[1], {})[m[2]] = int(m[3])
            elif line.startswith("FAIL "):
                self.fails.append(line[5:])
            elif m := re.search(r"GUEST-EXIT (\d+)", line):
                self.guest_exit = int(m[1])

    def regions(self) -> dict[str, int]:
        """Pattern region name -> size in bytes, as the guest reported them."""
        return {k[len("region_") :]: int(v.split()[1]) for k, v in self.checks.items() if k.startswith("region_")}

    def io_vectors(self) -> list[str]:
        return sorted(v for v in self.irqs.get("after", {}) if re.fullmatch(r"nvme\d+q[1-9]\d*", v))

    def irq_delta(self, vector: str) -> int:
        return self.irqs.get("after", {}).get(vector, 0) - self.irqs.get("before", {}).get(vector, 0)

    def diagnostics(self) -> str:
        return (
            f"\n===== {self.label}: tool exit {self.exit_status}, guest exit {self.guest_exit}, "
            f"{self.seconds:.1f} s, server alive after: {self.server_alive_after}\n"
            f"----- guest console -----\n{self.console.replace(chr(13), '')}\n"
            f"----- QEMU stderr -----\n{self.qemu_stderr}\n"
            f"----- server log ({self.server.log_path}) -----\n{tail(self.server.log(), 200)}\n"
        )

    def summary(self) -> str:
        c = self.checks
        irq = ", ".join(
            f"{v} {self.irqs.get('before', {}).get(v, 0)}->{n}" for v, n in sorted(self.irqs.get("after", {}).items())
        )
        qemu = "; ".join(self.qemu_stderr.strip().splitlines()) or "nothing"
        return (
            f"[{self.label}] {self.seconds:.1f} s wall; guest at test {c.get('uptime_start', '?')} s, "
            f"nvme0n1 at {c.get('dev_at', '?')} s, done {c.get('uptime_end', '?')} s uptime; "
            f"queues: {c.get('mq_count', '?')} blk-mq ({c.get('queues_msg', '?')}); O_DIRECT {c.get('direct', '?')}; "
            f"irqs: {irq or 'none seen'}; QEMU stderr: {qemu}"
        )


def boot(tool: Path, server: Server, initrd: Path, label: str, **env: str) -> Boot:
    """Boot the guest once against ``server``; returns when the guest powered off (or the time ran out)."""
    full_env = {**os.environ, "GUEST_TIMEOUT": str(BOOT_TIMEOUT), **env}
    cmd = ["bash", str(tool), "run", str(server.socket), str(initrd), "-smp", str(GUEST_CPUS)]
    t0 = time.monotonic()
    rc, out, err = run_bounded(cmd, BOOT_TIMEOUT + 30, env=full_env)
    b = Boot(label, rc, time.monotonic() - t0, out, err, server)
    b.server_alive_after = server.alive()
    (server.log_path.parent / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    return b


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


def report(capsys: pytest.CaptureFixture[str], *boots: Boot) -> None:
    with capsys.disabled():
        for b in boots:
            print(f"\n{b.summary()}")


# -- the tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_boot(tool: Path, server: Server, initrd: Path) -> Boot:
    return boot(tool, server, initrd, "boot 1")


def test_linux_guest_drives_the_controller(first_boot: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    """Driver binds, Identify strings, >= 2 I/O queues, interrupts, patterns written and read back."""
    report(capsys, first_boot)
    assert_guest_ok(first_boot)
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



def test_guest_with_trapped_doorbells(
    tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--doorbells trap``: no sparse mmap, so QEMU posts every doorbell
    write as a REGION_WRITE message and the workers sleep until one arrives
    (a late posted write must never rewind a shadow doorbell)."""
    srv = start_server(workdir, "trap", ("--doorbells", "trap"))
    try:
        b = boot(tool, srv, initrd, "trapped doorbells")
    finally:
        srv.stop()
    report(capsys, b)
    assert_guest_ok(b)


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: the tool runs QEMU under
    `timeout`, which makes a process group of its own, so killpg misses it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: the session
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


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
