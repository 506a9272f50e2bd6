"""The real-guest harness of the guest tests: `nvmefast serve` as a
subprocess, a QEMU boot through ``vfio-user-guest.sh`` (the shared tool;
``NVMEFAST_GUEST_TOOL`` overrides where it is looked for), and the boot's
console parsed into its ``CHECK key=value`` / ``IRQ phase vector count`` /
``FAIL`` lines.

Test modules import the module-scoped fixtures ``tool`` (the tool, set up;
skips when it is missing or setup fails) and ``workdir``.
``NVMEFAST_GUEST_SERVE_ARGS`` appends options to every `nvmefast serve`
(e.g. ``--doorbells mmap``) to try variants by hand.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SERIAL = "NVMEFAST-E2E-0001"
MODEL = "nvmefast vfio-user e2e"
NAMESPACE_BYTES = 64 << 20
IOTHREADS = 2
GUEST_CPUS = 2  # so Linux creates one I/O queue per CPU: >= 2 queues

SETUP_TIMEOUT = 45 * 60  # from scratch: mmdebstrap a trixie root with QEMU, fetch a kernel
# One TCG boot: about 10 s on the project machine when all is well; GUEST_TIMEOUT (the tool's) overrides.
BOOT_TIMEOUT = int(os.environ.get("GUEST_TIMEOUT", "180"))
SERVER_START_TIMEOUT = 30

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


SHARED_TOOL = ROOT.parent / "shared" / "tools" / "vfio-user-guest.sh"
"""The guest tool beside the repository: ../shared/tools from its root."""


def tool_candidates() -> list[Path]:
    """Where the guest tool is looked for: $NVMEFAST_GUEST_TOOL alone when set (a checkout
    elsewhere, a worktree), else ../shared/tools beside the repository."""
    if env := os.environ.get("NVMEFAST_GUEST_TOOL"):
        return [Path(env)]
    return [SHARED_TOOL]


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



def build_initrd(tool: Path, script: Path, out: Path) -> Path:
    """An initramfs whose test body is ``script`` (the tool's ``initrd`` step)."""
    rc, stdout, stderr = run_bounded(["bash", str(tool), "initrd", str(script), str(out)], 120)
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




@dataclasses.dataclass
class Boot:
    label: str
    exit_status: int | None  # the tool's (QEMU's; 124 from `timeout`); None if we killed it
    seconds: float
    console: str  # QEMU's stdout: the guest's serial console
    qemu_stderr: str
    server: Server | None  # None: QEMU's own device, no vfio-user server
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
        server = (
            "" if self.server is None
            else f"----- server log ({self.server.log_path}) -----\n{tail(self.server.log(), 200)}\n"
        )
        return (
            f"\n===== {self.label}: tool exit {self.exit_status}, guest exit {self.guest_exit}, "
            f"{self.seconds:.1f} s, server alive after: {self.server_alive_after}\n"
            f"----- guest console -----\n{self.console.replace(chr(13), '')}\n"
            f"----- QEMU stderr -----\n{self.qemu_stderr}\n{server}"
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


def boot(
    tool: Path, server: Server, initrd: Path, label: str, qemu_args: Sequence[str] = (), **env: str
) -> Boot:
    """Boot the guest once against ``server`` (``qemu_args`` appended to QEMU's); returns
    when the guest powered off (or the time ran out)."""
    full_env = {**os.environ, "GUEST_TIMEOUT": str(BOOT_TIMEOUT), **env}
    cmd = ["bash", str(tool), "run", str(server.socket), str(initrd), "-smp", str(GUEST_CPUS), *qemu_args]
    t0 = time.monotonic()
    rc, out, err = run_bounded(cmd, BOOT_TIMEOUT + 30, env=full_env)
    b = Boot(label, rc, time.monotonic() - t0, out, err, server)
    b.server_alive_after = server.alive()
    (server.log_path.parent / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    return b


def report(capsys: pytest.CaptureFixture[str], *boots: Boot) -> None:
    with capsys.disabled():
        for b in boots:
            print(f"\n{b.summary()}")


# -- the tests ----------------------------------------------------------------------


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
