"""Namespace management, Write Uncorrectable, Device Self-test and Sanitize with a
real client: Linux 6.1 and Debian's nvme-cli in a guest.

``tests/guest/ns_checks.sh`` runs twice. First on QEMU's own NVMe (an NVM
subsystem with a second namespace made ``detached=on``), the control: QEMU
has Namespace Attachment but no Namespace Management, so that boot attaches
and detaches its namespace only. Then on ``nvmefast serve --capacity 128M
--namespace-dir DIR --control PATH`` with one 64 MiB namespace, through
``vfio-user-pci``, where the script creates a namespace with ``create-ns``,
attaches it (the block device appears: Linux rescans because the effects log
marks the command NIC), runs ``ns-rescan``, writes and reads it, detaches it
(the device goes), attaches it again (the data is still there), deletes it
(UNVMCAP returns to where it was), fails to create one past the capacity and
a thin-provisioned one, makes blocks uncorrectable with ``write-uncor`` (a
read fails as a medium error until they are written), runs a short
``device-self-test`` and reads the log, and sanitizes (block erase). Then it
asks the host, on the console, to add a namespace: the test runs
``nvmefast ctl PATH add-namespace`` and the guest waits, with no rescan,
until the notice brings the block device; likewise a resize (the size
changes) and a removal (the device goes).

Both boots must meet the same expectations where they overlap
(:data:`ATTACH_EXPECTED`): they come from the spec and from what Linux does,
not from either device, so a check the control fails is a wrong check.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guestbin import boot_builtin, build_initrd_with
from guestutil import (  # noqa: F401  (tool and workdir are fixtures)
    BOOT_TIMEOUT,
    GUEST_CPUS,
    ROOT,
    SETUP_TIMEOUT,
    Boot,
    Server,
    kill_session,
    short_dir,
    start_server,
    tool,
    workdir,
)

GUEST_SCRIPT = ROOT / "tests" / "guest" / "ns_checks.sh"
MiB = 1 << 20
NS1 = 64 * MiB
CAPACITY = 128 * MiB
CREATED = 32 * MiB  # create-ns -s 8192 -b 4096
NSZE = CREATED // 4096
BIG = (CAPACITY - NS1) // 4096 + 1  # one block more than is unallocated
ADDED = 32 * MiB  # nvmefast ctl add-namespace ram:32M
RESIZED = 48 * MiB

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 3 * BOOT_TIMEOUT)

# nvme-cli prints the status with DNR (4000h); SCT/SC is bits 10:0.
INVALID_FIELD = "0x4002"
INSUFFICIENT_CAPACITY = "0x4115"
ALREADY_ATTACHED = "0x4118"
NOT_ATTACHED = "0x411a"
THIN_PROVISIONING = "0x411b"
CONTROLLER_LIST_INVALID = "0x411c"


def _is(value: str) -> Callable[[str], bool]:
    return lambda got: got == value


def _has(*words: str) -> Callable[[str], bool]:
    return lambda got: all(w in got for w in words)


def _rc(status: str) -> Callable[[str], bool]:
    """An nvme-cli failure with ``status``."""
    return lambda got: got.split()[0] != "0" and got.split()[-1] == status


OK = _is("0 -")


ATTACH_EXPECTED: dict[str, Callable[[str], bool]] = {
    # Namespace Attachment (NVMe Base 2.0 5.19): nvme-cli 2.3 sends an empty list without -c.
    "attach_no_ctrl": _rc(CONTROLLER_LIST_INVALID),
    "attach_other_ctrl": _rc(CONTROLLER_LIST_INVALID),
    "attach": OK,
    "attach_dev": _is("0"),  # the block device appears without a rescan by hand
    "rescan": OK,
    "rescan_dev": _is("0"),
    "new_lba": _is("4096"),
    "attach_again": _rc(ALREADY_ATTACHED),
    "detach": OK,
    "detach_gone": _is("0"),  # and goes
    "detach_again": _rc(NOT_ATTACHED),
    "reattach": OK,
    "reattach_dev": _is("0"),
}
"""What both devices must show: attach, rescan, detach, reattach."""


def nvmefast_expected(checks: dict[str, str]) -> dict[str, Callable[[str], bool]]:
    """The nvmefast boot's expectations (some compare against values the guest read earlier)."""
    pattern = checks.get("pattern", "<missing>")
    new = checks.get("new_nsid", "<missing>")
    return {
        **ATTACH_EXPECTED,
        "oacs": lambda got: int(got, 16) & 0x18 == 0x18,  # Namespace Management (bit 3), Device Self-test (4)
        "nn": _is("256"),
        "mnan": _is("256"),
        "tnvmcap": _is(str(CAPACITY)),
        "unvmcap": _is(str(CAPACITY - NS1)),
        "active_before": _is("1,"),
        "allocated_before": _is("1,"),
        "create": OK,
        "create_out": _is("create-ns: Success, created nsid:2"),
        "new_nsid": _is("2"),
        "unvmcap_created": _is(str(CAPACITY - NS1 - CREATED)),
        "allocated_created": _is("1,2,"),
        "active_created": _is("1,"),  # created, not attached
        "created_nsze": _is(hex(NSZE)),  # Identify Namespace of an allocated NSID (CNS 11h)
        "created_flbas": _is("0x1"),  # the 4096-byte format -b 4096 found (CNS 00h FFFFFFFFh)
        "created_blocks": _is("nvme0n1 "),
        "ctrls_detached": _is("num of ctrls present: 0"),
        "attached_blocks": _is("nvme0n1 nvme0n2 "),
        "active_attached": _is("1,2,"),
        "ctrls_attached": _is("num of ctrls present: 1 [   0]:0 "),  # this controller (CNS 12h)
        "new_size": _is(str(CREATED // 512)),
        "new_rw": _is(f"0 {pattern}"),
        "detached_blocks": _is("nvme0n1 "),
        "reattach_data": _is(f"0 {pattern}"),
        "delete": OK,
        "delete_gone": _is("0"),
        "unvmcap_deleted": _is(str(CAPACITY - NS1)),  # back where it was
        "allocated_deleted": _is("1,"),
        "delete_again": _rc(INVALID_FIELD),
        "create_big": _rc(INSUFFICIENT_CAPACITY),
        "create_thin": _rc(THIN_PROVISIONING),
        "unvmcap_end": _is(str(CAPACITY - NS1)),
        # Write Uncorrectable: a read is an Unrecovered Read Error (ENODATA, a medium error).
        "uncor": OK,
        "uncor_read": _has("1", "No data available"),
        "uncor_dmesg": _has("sct 0x2 / sc 0x81", "critical medium error"),
        "uncor_write": _is("0"),
        "uncor_reread": _is(f"0 {checks.get('uncor_expect', '<missing>')}"),
        # Device Self-test: in progress for at least one 1 s poll, then passed (result 0).
        "dst": OK,
        "dst_out": _has("Short Device self-test started"),
        "dst_polls_running": lambda got: got.isdigit() and 1 <= int(got) < 60,
        "dst_log": OK,
        "dst_log_current": _is("0"),
        "dst_log_result0": _is("0"),
        # Sanitize: completed (SSTAT 001b, Global Data Erased), progress FFFFh when idle, zeroes after.
        "sanitize": OK,
        "sanitize_log": OK,
        "sanitize_sstat": _is("0x1"),  # as nvme-cli 2.3 prints it: the state bits (SOS 001b)
        "sanitize_raw": _is("ffff0101"),  # SPROG FFFFh, SSTAT 0101h: completed, Global Data Erased
        "sanitize_sprog": _is("65535"),
        "sanitized_read": _is(f"0 {checks.get('zero_expect', '<missing>')}"),
        # The host's namespaces: the notice brings them, no ns-rescan.
        "blocks_before_add": _is("nvme0n1 "),
        "added_nsid": _is(new),
        "added_size": _is(str(ADDED // 512)),
        "added_rw": _is(f"0 {pattern}"),
        "resized_size": _is(str(RESIZED // 512)),
        "resized_data": _is(f"0 {pattern}"),
        "removed_gone": _is("0"),
        "removed_blocks": _is("nvme0n1 "),
    }


def _dst_log_passed(hex_log: str) -> bool:
    # The raw log, read by our own parser's rule: current operation 0, newest entry a short test (1h), result 0h.
    data = bytes.fromhex(hex_log)
    return len(data) >= 8 and data[0] == 0 and data[4] == 0x10


def boot_with_host_steps(
    tool: Path, server: Server, initrd: Path, label: str, qemu_args: tuple[str, ...],
    on_step: Callable[[str], str],
) -> Boot:  # fmt: skip
    """Boot as ``guestutil.boot`` does, reading the console as it comes: each
    ``HOST-STEP ...`` line runs ``on_step`` (its result goes to the console log)."""
    env = {**os.environ, "GUEST_TIMEOUT": str(BOOT_TIMEOUT)}
    cmd = ["bash", str(tool), "run", str(server.socket), str(initrd), "-smp", str(GUEST_CPUS), *qemu_args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=env, start_new_session=True)  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []

    def pump_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_err() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())

    readers = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for r in readers:
        r.start()
    console: list[str] = []
    deadline = t0 + BOOT_TIMEOUT + 30
    try:
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                kill_session(proc.pid)
                console.append(f"[killed after {BOOT_TIMEOUT + 30} s]\n")
                break
            if line is None:
                break
            console.append(line)
            if m := re.match(r"HOST-STEP (.*)$", line.replace("\r", "").strip()):
                console.append(f"HOST-DONE {on_step(m[1])}\n")
        rc = proc.wait(30)
    except BaseException:
        kill_session(proc.pid)
        raise
    for r in readers:
        r.join(5)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    b = Boot(label, rc, time.monotonic() - t0, "".join(console), "".join(err), server)
    b.server_alive_after = server.alive()
    (server.log_path.parent / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    return b


def ctl(control: Path, *args: str) -> str:
    """``nvmefast ctl CONTROL ARGS...`` as a user runs it: exit status and output."""
    cmd = [sys.executable, "-c", "import sys; from nvmefast.cli import main; sys.exit(main())", "ctl", str(control), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return f"{out.returncode} {(out.stdout + out.stderr).strip()}"


@pytest.fixture(scope="module")
def initrd(tool: Path, workdir: Path) -> Path:
    # Skips, naming the package, where nvme-cli is missing and cannot be installed.
    return build_initrd_with(tool, GUEST_SCRIPT, workdir / "ns_checks.initrd", programs=("nvme",))


def assert_guest(b: Boot, expected: dict[str, Callable[[str], bool]]) -> None:
    """Every expectation, all mismatches in one message."""
    d = b.diagnostics
    assert not b.fails, f"{b.label}: the guest reported FAIL {b.fails}{d()}"
    assert b.guest_exit == 0, f"{b.label}: the guest script did not finish (GUEST-EXIT {b.guest_exit}){d()}"
    assert b.exit_status == 0, f"{b.label}: QEMU did not exit cleanly (status {b.exit_status}){d()}"
    wrong = [f"  {key}: {b.checks.get(key, '<missing>')!r}"
             for key, ok in expected.items() if key not in b.checks or not ok(b.checks[key])]  # fmt: skip
    assert not wrong, f"{b.label}: {len(wrong)} of {len(expected)} checks wrong:\n" + "\n".join(wrong) + d()


def summary(b: Boot) -> str:
    c = b.checks
    return (f"[{b.label}] {b.seconds:.1f} s wall, guest script {c.get('uptime_start', '?')}.."
            f"{c.get('uptime_end', '?')} s uptime, {len(c)} checks")  # fmt: skip


def test_qemu_attach_control(tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU's own Namespace Attachment meets the attach/detach expectations:
    the guest script checks the right things."""
    images = []
    for n, size in ((1, NS1), (2, CREATED)):
        image = workdir / f"qemu-ns{n}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        images.append(image)
    args = [
        "-drive", f"file={images[0]},if=none,id=nvm1,format=raw",
        "-drive", f"file={images[1]},if=none,id=nvm2,format=raw",
        "-device", "nvme-subsys,id=subsys0,nqn=nqn.2025-01.dev.nvmefast:qemu-control",
        "-device", "nvme,id=nvme0,serial=QEMU-NS-CONTROL,subsys=subsys0",
        "-device", "nvme-ns,bus=nvme0,drive=nvm1,nsid=1",
        "-device", "nvme-ns,bus=nvme0,drive=nvm2,nsid=2,logical_block_size=4096,physical_block_size=4096,"
                   "detached=on",
        "-append", "console=ttyS0 quiet panic=-1 ns.mode=qemu",
    ]  # fmt: skip
    b = boot_builtin(tool, initrd, workdir, "qemu attach", args)
    with capsys.disabled():
        print(f"\n{summary(b)}")
    assert_guest(b, {**ATTACH_EXPECTED, "new_size": _is(str(CREATED // 512)),
                     "reattach_data": _is(f"0 {b.checks.get('pattern')}"), "final_detach": OK})  # fmt: skip


def test_nvmefast_namespaces(tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Everything, against nvmefast through vfio-user-pci; the host adds,
    resizes and removes a namespace with `nvmefast ctl` while the guest runs."""
    control = short_dir(workdir) / "ns-control.sock"
    nsdir = workdir / "created"
    srv = start_server(workdir, "ns", ("--capacity", f"{CAPACITY >> 20}M", "--namespace-dir", str(nsdir),
                                       "--control", str(control)), namespace=f"ram:{NS1 >> 20}M")  # fmt: skip
    steps: list[str] = []

    def on_step(step: str) -> str:
        what, *rest = step.split()
        if what == "add":
            result = ctl(control, "add-namespace", f"ram:{ADDED >> 20}M")
        elif what == "resize":
            result = ctl(control, "resize-namespace", rest[0], f"{RESIZED >> 20}M")
        elif what == "remove":
            result = ctl(control, "remove-namespace", rest[0])
        else:
            result = f"unknown step {step!r}"
        steps.append(f"{step}: {result}")
        return result

    try:
        append = f"console=ttyS0 quiet panic=-1 ns.mode=nvmefast ns.nsze={NSZE} ns.big={BIG}"
        b = boot_with_host_steps(tool, srv, initrd, "nvmefast namespaces", ("-append", append), on_step)
    finally:
        srv.stop()
    with capsys.disabled():
        print(f"\n{summary(b)}; host steps: {'; '.join(steps)}")
    assert b.server_alive_after, f"the server died during the boot{b.diagnostics()}"
    assert [s.split(":")[1].split()[0] for s in steps] == ["0", "0", "0"], f"ctl failed: {steps}{b.diagnostics()}"
    assert_guest(b, nvmefast_expected(b.checks))
    assert _dst_log_passed(b.checks.get("dst_log_hex", "")), b.checks.get("dst_log_hex")
    # The created namespace was deleted: its image went with it; the manifest lists nothing.
    assert not list(nsdir.glob("ns*.img")), list(nsdir.iterdir())
    assert b'"namespaces": []' in (nsdir / "namespaces.json").read_bytes()
