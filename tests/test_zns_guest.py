"""Zoned namespaces in a real Linux 6.1 guest, with Debian's blkzone, nvme-cli and fio.

One guest script (``tests/guest/zns_checks.sh``) runs twice with the same
zone geometry: first on QEMU's own ZNS (``-device nvme-ns,zoned=true``),
the control, then on `nvmefast serve --namespace ram:...:zone=...` through
``vfio-user-pci``. Both must meet the same expectations (:data:`EXPECTED`),
which come from the geometry and the ZNS spec, not from either device: if the
control fails them, the test is wrong. The script checks that Linux sees a
host-managed zoned disk with the configured zone size and limits, reports
zones with blkzone, writes at the write pointer and off it (an I/O error,
Zone Invalid Write with DNR, so Linux does not retry), appends with nvme-cli
and reads the data back at the assigned LBA, moves zones through open,
close, finish and reset (blkzone and nvme-cli, single zones and Select
All), runs into the open and active limits, and runs fio in zoned mode:
sequential writes with crc32c verify over four zones and random writes over
four more.

Skipped with the reason when the guest tool is missing or cannot be set up
(``guestutil``) or the host lacks one of the binaries the guest needs
(``.ci/run`` installs them from apt).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from guestutil import (  # noqa: F401  (tool and workdir are fixtures)
    BOOT_TIMEOUT,
    ROOT,
    SETUP_TIMEOUT,
    Boot,
    boot,
    start_server,
    tool,
    workdir,
)
from guestbin import boot_builtin, build_initrd_with
from zonedguest import ZONED_PROGRAMS, qemu_zns_args

GUEST_SCRIPT = ROOT / "tests" / "guest" / "zns_checks.sh"

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 3 * BOOT_TIMEOUT)

# The geometry both devices get: 16 zones of 8 MiB with 6 MiB writable, 4 KiB LBAs,
# at most 4 open and 6 active zones, zone appends up to 64 KiB.
NAMESPACE = 128 << 20
ZONE = 8 << 20
ZONE_CAP = 6 << 20
LBA = 4096
MAX_OPEN = 4
MAX_ACTIVE = 6
ZASL_BYTES = 64 << 10
ZASL = 4  # 2**4 * 4 KiB (CAP.MPSMIN) pages = 64 KiB

NVMEFAST_NAMESPACE = (
    f"ram:{NAMESPACE >> 20}M:{LBA}:zone={ZONE >> 20}M:zone-cap={ZONE_CAP >> 20}M:"
    f"max-open={MAX_OPEN}:max-active={MAX_ACTIVE}:zasl={ZASL_BYTES >> 10}K"
)

ZONES = NAMESPACE // ZONE
ZONE_SECTORS = ZONE // 512
ZSLBA_2 = 2 * ZONE // LBA
APPEND_BLOCKS = 8192 // LBA


def _sectors(n: int) -> str:
    # blkzone prints a zone's write pointer offset in sectors, %06x.
    return f"0x{n:06x}"


def _is(value: str) -> Callable[[str], bool]:
    return lambda got: got == value


def _nonzero(got: str) -> bool:
    return got not in ("", "0")


def _has(*words: str) -> Callable[[str], bool]:
    return lambda got: all(w in got for w in words)


EXPECTED: dict[str, Callable[[str], bool]] = {
    # What Linux made of the namespace (zns.md 7.2, 7.7).
    "state": _is("live"),
    "zoned": _is("host-managed"),
    "chunk_sectors": _is(str(ZONE_SECTORS)),
    "nr_zones": _is(str(ZONES)),
    "max_open_zones": _is(str(MAX_OPEN)),
    "max_active_zones": _is(str(MAX_ACTIVE)),
    "zone_append_max_bytes": _is(str(ZASL_BYTES)),
    "lba_size": _is(str(LBA)),
    "size_sectors": _is(str(NAMESPACE // 512)),
    "ro": _is("0"),
    # nvme-cli's zns plugin: Identify CNS 06h/05h with CSI 02h (MOR/MAR 0's based).
    "zns_id_ctrl_rc": _is("0"),
    "zasl": _is(str(ZASL)),
    "zns_id_ns_rc": _is("0"),
    "zoc": _is("0"),
    "mor": _is(hex(MAX_OPEN - 1)),
    "mar": _is(hex(MAX_ACTIVE - 1)),
    "zsze": _is(f"zsze:{ZONE // LBA:#x}"),
    # blkzone report of a fresh device: every zone Empty, sequential write required.
    "report_zones": _is(str(ZONES)),
    "report_empty": _is(str(ZONES)),
    "report_types": _is("type: 2(SEQ_WRITE_REQUIRED) "),
    "zone0_cap": _is(_sectors(ZONE_CAP // 512)),
    "zone0_len": _is(_sectors(ZONE_SECTORS)),
    "report_last_start": _is(f"0x{(ZONES - 1) * ZONE_SECTORS:09x}"),
    # Writes at the write pointer advance it (Empty -> Implicitly Opened); writes
    # above and below it fail with Zone Invalid Write (SCT 1h, SC BCh) and DNR, so
    # Linux tries each once; the write pointer and the data stay.
    "write_at_wp_rc": _is("0"),
    "zone1_after_write": _is(f"{_sectors(128)} oi"),
    "write_at_wp2_rc": _is("0"),
    "zone1_after_write2": _is(f"{_sectors(256)} oi"),
    "write_above_wp_rc": _nonzero,
    "write_above_wp_err": _has("Input/output error"),
    "write_below_wp_rc": _nonzero,
    "write_off_wp_dmesg": _is("sct 0x1 / sc 0xbc) DNR ;"),
    "write_off_wp_retries": _is("2"),
    "zone1_after_bad_writes": _is(f"{_sectors(256)} oi"),
    "zone1_readback": _is("same"),
    "zone1_above_wp_zero": _is("yes"),
    # Zone Append: each lands at the write pointer and returns its LBA.
    "zone2_zslba": _is(str(ZSLBA_2)),
    "append1_rc": _is("0"),
    "append1_lba": _is(str(ZSLBA_2)),
    "append2_rc": _is("0"),
    "append2_lba": _is(str(ZSLBA_2 + APPEND_BLOCKS)),
    "zone2_after_appends": _is(f"{_sectors(2 * 8192 // 512)} oi"),
    "append5_lba": _is(str(ZSLBA_2 + 4 * APPEND_BLOCKS)),
    "append5_readback": _is("same"),
    "append_not_zslba_rc": _nonzero,
    "append_not_zslba_out": _has("Invalid Field in Command"),
    "append_over_zasl_rc": _nonzero,
    "append_over_zasl_out": _has("Invalid Field in Command"),
    "zone2_end": _is(f"{_sectors(5 * 8192 // 512)} oi"),
    # Zone Management Send, one zone at a time.
    **{f"{tool}_{op}_rc": _is("0") for tool in ("bz", "nv") for op in ("open", "close", "finish", "reset")},
    **{f"{tool}_open": _is(f"{_sectors(0)} oe") for tool in ("bz", "nv")},
    **{f"{tool}_close": _is(f"{_sectors(0)} cl") for tool in ("bz", "nv")},
    **{f"{tool}_finish": _is(f"{_sectors(ZONE_SECTORS)} fu") for tool in ("bz", "nv")},
    **{f"{tool}_reset": _is(f"{_sectors(0)} em") for tool in ("bz", "nv")},
    "nv_close_empty_rc": _nonzero,
    "nv_close_empty_out": _has("Invalid Zone State Transition"),
    "nv_report_rc": _is("0"),
    # Select All: Close takes the open zones, Finish the closed ones, Reset all.
    "before_select_all": _is(f"em:{ZONES - 2} oi:2 "),
    "nv_close_all_rc": _is("0"),
    "after_close_all": _is(f"cl:2 em:{ZONES - 2} "),
    "nv_finish_all_rc": _is("0"),
    "after_finish_all": _is(f"em:{ZONES - 2} fu:2 "),
    "bz_reset_all_rc": _is("0"),
    "after_reset_all": _is(f"em:{ZONES} "),
    # Limits: the fifth explicit open is Too Many Open Zones (ETOOMANYREFS), and
    # with four closed and two open zones the next is Too Many Active Zones (EOVERFLOW).
    "open_over_limit_rc": _nonzero,
    "open_over_limit_err": _has("Too many references"),
    "open_over_limit": _is(f"em:{ZONES - MAX_OPEN} oe:{MAX_OPEN} "),
    "open_to_active_limit_rc": _is("0"),
    "open_over_active_rc": _nonzero,
    "open_over_active_err": _has("Value too large"),
    "open_over_active": _is(f"cl:{MAX_OPEN} em:{ZONES - MAX_ACTIVE} oe:{MAX_ACTIVE - MAX_OPEN} "),
    "limits_reset_rc": _is("0"),
    # fio --zonemode=zbd: sequential writes fill the four zones' capacity and verify;
    # random writes run without an I/O error.
    "fio_seq_rc": _is("0"),
    "fio_seq_err": _is("err= 0"),
    "fio_seq_verify_errors": _is("0"),
    "fio_seq_written": _has(f"io={4 * ZONE_CAP >> 20}.0MiB"),
    "fio_seq_full_zones": _is("4"),
    "fio_rand_rc": _is("0"),
    "fio_rand_err": _is("err= 0"),
    "fio_io_errors": _is("0"),
    "final_reset_rc": _is("0"),
    "final": _is(f"em:{ZONES} "),
    "timeouts": _is("0"),
    "state_end": _is("live"),
}
"""Each CHECK key the guest prints, and what its value must be on a correct device."""

FAULT_ZONE = 7
FAULT_RULE = f"write zone={FAULT_ZONE} count=1 -> zone-readonly"
FAULT_EXPECTED: dict[str, Callable[[str], bool]] = {
    # The rule moves the zone to Read Only before the write runs: Zone Is Read Only (BAh),
    # the zone reports "ro", the Changed Zone List names it, and with AEC bit 27 set the
    # Zone Descriptor Changed notice (type 2h, info EFh, log BFh) reaches Linux, which logs it.
    "fault_aec_rc": _is("0"),
    "fault_write_rc": _nonzero,
    "fault_zone_cond": _is("ro"),
    "fault_dmesg": _is("async event result 00bfef02;sc 0xba;"),
    "fault_changed_rc": _is("0"),
    "fault_changed_has_zone": _nonzero,
    # Read Only -> Reset is Invalid Zone State Transition; Offline Zone takes it offline,
    # and then reads fail too (Zone Is Offline).
    "fault_reset_rc": _nonzero,
    "fault_offline_rc": _is("0"),
    "fault_zone_after_offline": _is("of"),
    "fault_read_offline_rc": _nonzero,
}
"""What the zone fault shows in the nvmefast boot."""


@pytest.fixture(scope="module")
def initrd(tool: Path, workdir: Path) -> Path:
    # Skips, naming the packages, where the binaries are missing and cannot be installed.
    return build_initrd_with(tool, GUEST_SCRIPT, workdir / "zns_checks.initrd", programs=ZONED_PROGRAMS)


def assert_zoned_guest(b: Boot, expected: dict[str, Callable[[str], bool]] = EXPECTED) -> None:
    """Every expectation of ``expected``, all mismatches in one message."""
    d = b.diagnostics
    assert not b.fails, f"{b.label}: the guest reported FAIL {b.fails}{d()}"
    assert b.guest_exit == 0, f"{b.label}: the guest script did not finish (GUEST-EXIT {b.guest_exit}){d()}"
    assert b.exit_status == 0, f"{b.label}: QEMU did not exit cleanly (status {b.exit_status}){d()}"
    wrong = [
        f"  {key}: {b.checks.get(key, '<missing>')!r}"
        for key, ok in expected.items()
        if key not in b.checks or not ok(b.checks[key])
    ]
    assert not wrong, f"{b.label}: {len(wrong)} of {len(expected)} checks wrong:\n" + "\n".join(wrong) + d()


def summary(b: Boot) -> str:
    c = b.checks
    return (f"[{b.label}] {b.seconds:.1f} s wall, guest script {c.get('uptime_start', '?')}.."
            f"{c.get('uptime_end', '?')} s uptime; fio seq {c.get('fio_seq_written', '?')}; "
            f"fio rand {c.get('fio_rand_written', '?')}")  # fmt: skip


def test_qemu_zns_control(tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU's own ZNS meets every expectation: the guest script checks the right things.
    (It has no zone faults to inject: the fault section does not run.)"""
    image = workdir / "qemu-zns.img"
    with open(image, "wb") as f:
        f.truncate(NAMESPACE)
    args = qemu_zns_args(image, zone_size=f"{ZONE >> 20}M", zone_capacity=f"{ZONE_CAP >> 20}M",
                         max_open=MAX_OPEN, max_active=MAX_ACTIVE, zasl=ZASL, lba_size=LBA)  # fmt: skip
    b = boot_builtin(tool, initrd, workdir, "qemu zns", args)
    with capsys.disabled():
        print(f"\n{summary(b)}")
    assert_zoned_guest(b)


def test_nvmefast_zns(tool: Path, workdir: Path, initrd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nvmefast's zoned namespace, through vfio-user-pci, meets the same expectations, and a
    zone fault rule shows in the guest as the spec says."""
    srv = start_server(workdir, "zns", ("--fault", FAULT_RULE), namespace=NVMEFAST_NAMESPACE)
    try:
        # The later -append replaces the tool's kernel command line: the same one plus the zone.
        b = boot(tool, srv, initrd, "nvmefast zns",
                 ("-append", f"console=ttyS0 quiet panic=-1 zns.fault_zone={FAULT_ZONE}"))
    finally:
        srv.stop()
    with capsys.disabled():
        print(f"\n{summary(b)}")
    assert b.server_alive_after, f"the server died during the boot{b.diagnostics()}"
    assert_zoned_guest(b, {**EXPECTED, **FAULT_EXPECTED})
