"""Linux's nvme driver, in a real guest through QEMU's ``vfio-user-pci``, driven
into its recovery paths by fault rules of `nvmefast serve --fault`.

One boot (``tests/guest/nvme_recovery.sh``, a 3 s I/O timeout) reads three
4 KiB blocks the server is set to fail once each:

- a completion delayed past the I/O timeout (not abortable): Linux aborts it
  (the Abort finds it in progress), resets the controller at the second
  timeout and reads again, and the read returns the block's data;
- a status with DNR (Unrecovered Read Error): the application's read fails
  (ENODATA, Linux's errno for a medium error), Linux does not retry, and the
  next read of the block works;
- CSTS.CFS: Linux sees the failed controller at its timeout, resets it, and
  the read completes.

The guest reports; the assertions are here, with the console and the server's
log attached to every failure. Skipped like the other guest tests when the
guest tool is missing or cannot be set up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guestutil import (  # noqa: F401  (tool and workdir are fixtures)
    BOOT_TIMEOUT,
    ROOT,
    SETUP_TIMEOUT,
    Boot,
    boot,
    build_initrd,
    report,
    start_server,
    tool,
    workdir,
)

GUEST_SCRIPT = ROOT / "tests" / "guest" / "nvme_recovery.sh"
MIB_SECTORS = (1 << 20) // 512
RULES = (
    f"read lba={8 * MIB_SECTORS} count=1 -> status unrecovered-read-error dnr",
    f"read lba={12 * MIB_SECTORS} count=1 -> delay 120s",
    f"read lba={16 * MIB_SECTORS} count=1 -> cfs",
)
IO_TIMEOUT = 3

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 2 * BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def recovery(tool: Path, workdir: Path) -> Boot:
    initrd = build_initrd(tool, GUEST_SCRIPT, workdir / "nvme_recovery.initrd.gz")
    extra: list[str] = []
    for rule in RULES:
        extra += ["--fault", rule]
    srv = start_server(workdir, "faults", tuple(extra))
    try:
        return boot(tool, srv, initrd, "recovery")
    finally:
        srv.stop()


def dmesg(b: Boot, case: str) -> str:
    return "\n".join(line for line in b.console.replace("\r", "").splitlines() if line.startswith(f"DMESG {case}: "))


def finished(b: Boot) -> None:
    d = b.diagnostics
    assert not b.fails, f"the guest reported FAIL {b.fails}{d()}"
    assert b.guest_exit == 0 and "done" in b.checks, f"the guest script did not finish{d()}"
    assert b.server_alive_after, f"the server died during the boot{d()}"
    assert b.checks.get("io_timeout_ms") == str(IO_TIMEOUT * 1000), f"the queue's io_timeout not set{d()}"
    for name in ("dnr", "delay", "cfs"):
        assert b.checks.get(f"write_{name}_rc") == "0", f"the pattern write at the {name} offset failed{d()}"


def hits(b: Boot, rule_id: int) -> int:
    m = re.search(rf"fault rule {rule_id}: (\d+) hits", b.server.log())
    assert m is not None, f"the server logged no hits for rule {rule_id}{b.diagnostics()}"
    return int(m[1])


def test_a_delayed_completion_past_the_timeout_is_aborted_then_reset_and_read_again(
    recovery: Boot, capsys: pytest.CaptureFixture[str]
) -> None:
    report(capsys, recovery)
    finished(recovery)
    c, d, log = recovery.checks, recovery.diagnostics, dmesg(recovery, "delay")
    assert c.get("delay_rc") == "0", f"the delayed read failed: {c.get('delay_err')}{d()}"
    assert c.get("delay_md5") == c["written_delay"], f"the read after the reset returned other data{d()}"
    assert re.search(r"I/O \d+ .*QID \d+ timeout, aborting", log), f"no abort at the first timeout{d()}"
    assert re.search(r"I/O \d+ QID \d+ timeout, reset controller", log), f"no reset at the second timeout{d()}"
    seconds = float(c["delay_seconds"])
    assert 2 * IO_TIMEOUT <= seconds < 60, f"{seconds} s: the read was served by the retry after the reset{d()}"
    assert c.get("delay_again_rc") == "0" and c.get("delay_state") == "live", f"not live after the reset{d()}"
    assert hits(recovery, 2) == 1


def test_a_status_with_dnr_fails_the_read_without_a_retry(
    recovery: Boot, capsys: pytest.CaptureFixture[str]
) -> None:
    finished(recovery)
    c, d, log = recovery.checks, recovery.diagnostics, dmesg(recovery, "dnr")
    assert c.get("dnr_rc") not in (None, "0"), f"the read with DNR succeeded{d()}"
    # A media error reaches the application as ENODATA (Linux's BLK_STS_MEDIUM).
    assert "No data available" in c.get("dnr_err", ""), f"the application got {c.get('dnr_err')!r}{d()}"
    assert re.search(r"critical medium error, dev nvme0n1", log), f"Linux did not report the medium error{d()}"
    assert not re.search(r"timeout|reset", log), f"a DNR status needs no timeout or reset{d()}"
    assert c.get("dnr_again_rc") == "0" and c.get("dnr_again_md5") == c["written_dnr"], f"the block is readable{d()}"
    assert hits(recovery, 1) == 1, "DNR: exactly one attempt reached the device"


def test_cfs_makes_linux_reset_the_controller(recovery: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    finished(recovery)
    c, d, log = recovery.checks, recovery.diagnostics, dmesg(recovery, "cfs")
    assert re.search(r"controller is down; will reset: CSTS=0x3", log), f"Linux did not see CSTS.CFS{d()}"
    assert c.get("cfs_rc") == "0", f"the read was not served after the reset: {c.get('cfs_err')}{d()}"
    assert c.get("cfs_md5") == c["written_cfs"], f"the read after the reset returned other data{d()}"
    assert c.get("cfs_again_rc") == "0" and c.get("cfs_state") == "live", f"not live after the reset{d()}"
    assert hits(recovery, 3) == 1
