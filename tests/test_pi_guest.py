"""End-to-end data protection with a real client: Linux 6.1's block integrity and
Debian's nvme-cli in a guest, against namespaces with metadata and protection
information.

One boot per target runs ``tests/guest/pi_checks.sh`` over six namespaces:

======  ===============  =========  ===========  ========================
NSID    LBA + MS         PI type    guard        Linux integrity format
======  ===============  =========  ===========  ========================
1       512 + 8          1          CRC-16       T10-DIF-TYPE1-CRC
2       4096 + 8         3          CRC-16       T10-DIF-TYPE3-CRC
3       4096 + 16        1 (first)  CRC-64/NVME  EXT-DIF-TYPE1-CRC64
4       512 + 16         1 (last)   CRC-16       nop
5       512 + 8 (ext)    1          CRC-16       none
6       4096 + 16 (ext)  3 (first)  CRC-16       none, size 0
======  ===============  =========  ===========  ========================

The targets are QEMU's own NVMe (``-device nvme-ns,ms=...,mset=0,pi=...``: the
control; a check that fails there is a wrong check) and `nvmefast serve` with
the same namespaces over vfio-user. On each namespace the guest writes and
reads through the block layer (Linux generates PI and verifies it), reads the
stored tuples back with nvme-cli ``-y/-M``, writes and reads with PRACT, hands
the controller PI of its own (good, a bad guard, a wrong reference tag, a wrong
application tag) and reads it through the block layer. The expected tuples
come from :mod:`piref` (bit-by-bit CRCs checked against the published
values), never from nvmefast. Against nvmefast, ``corrupt-pi`` fault rules
corrupt the guard or the reference tag of what a read returns: Linux's own
verification must catch it (the read fails with EILSEQ, the kernel logs the
tag error); against QEMU the same reads succeed. Namespaces 4 to 6 show what
Linux does with layouts it gives no integrity buffers to (a block-layer write
and read; for an extended one, the tuple the controller inserted).

The guest reports ``CHECK key=value`` lines (nvme-cli results as ``RC
STATUS``) and ``KLOG step=line`` kernel messages; the assertions are here, with
the console attached to every failure.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestbin import boot_builtin, build_initrd_with
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
from piref import Tuple, guard, pattern, pi_size, tuple_bytes

GUEST_SCRIPT = ROOT / "tests" / "guest" / "pi_checks.sh"
NS_BYTES = 64 << 20
PATTERN = pattern(65536, seed=24)
APP_PRACT = 0x1234
APP_HOST = 0x5678

# nvme-cli prints status values with DNR (4000h), More (2000h) and CRD (1800h); SCT/SC is 10:0.
SUCCESS = 0x000
INVALID_PI = 0x181
GUARD_CHECK = 0x282
APP_CHECK = 0x283
REF_CHECK = 0x284

pytestmark = pytest.mark.timeout(SETUP_TIMEOUT + 2 * BOOT_TIMEOUT)


STEP_MIB = {"blk": 1, "pract": 3, "host": 4, "badguard": 5, "badref": 6, "fault_guard": 7, "fault_ref": 8}
"""Where (in MiB) each step of the guest script writes and reads."""


@dataclasses.dataclass(frozen=True)
class PiNs:
    """One namespace of the test, and where each step of the guest script works on it."""

    nsid: int
    lba: int
    ms: int
    pi: int
    guard: str
    pi_first: bool
    integrity_format: str
    tag_size: int
    extended: bool = False
    mode: str = "full"
    """``full``: every check; ``linux``: what Linux makes of it, and one block-layer write and read."""

    @property
    def psize(self) -> int:
        return pi_size(self.guard)

    @property
    def prchk(self) -> int:
        """PRCHK as Linux sets it: guard and reference tag, guard only for Type 3."""
        return 0b100 if self.pi == 3 else 0b101

    def at(self, step: str) -> int:
        """The first LBA a step of the guest script works on: its own MiB of the namespace."""
        return (STEP_MIB[step] << 20) // self.lba

    def block(self, i: int) -> bytes:
        """Block ``i`` of the pattern the guest writes."""
        return PATTERN[i * self.lba : (i + 1) * self.lba]

    def md(self, t: Tuple) -> bytes:
        """One block's metadata holding tuple ``t`` (PI first or last; other bytes zero)."""
        pi = tuple_bytes(self.guard, t)
        pad = bytes(self.ms - self.psize)
        return pi + pad if self.pi_first else pad + pi

    def tuple_of(self, i: int, app: int, ref: int) -> Tuple:
        # With PI last and MS > PI size the guard would cover the bytes before it too; these
        # namespaces have MS == PI size (or PI first), so it is the data's CRC.
        return Tuple(guard(self.guard, self.block(i)), app, ref)

    def env(self) -> str:
        return "".join(
            f"{k}={v}\n"
            for k, v in (
                ("MODE", self.mode), ("EXT", int(self.extended)), ("L", self.lba), ("MS", self.ms), ("T", self.pi), ("P", self.psize), ("PRCHK", self.prchk),
                ("BLK_LBA", self.at("blk")), ("PRACT_LBA", self.at("pract")), ("HOSTPI_LBA", self.at("host")),
                ("BADGUARD_LBA", self.at('badguard')), ("BADREF_LBA", self.at('badref')),
                ("FAULT_LBAS", f"'{self.at('fault_guard')} {self.at('fault_ref')}'"),
            )
        )  # fmt: skip

    def files(self) -> dict[str, bytes]:
        good = self.tuple_of(0, APP_HOST, self.at("host"))
        bad_guard = Tuple(self.tuple_of(0, 0, 0).guard ^ 0x5A5A, 0, self.at("badguard"))
        bad_ref = self.tuple_of(0, 0, self.at('badref') + 1)
        return {
            f"/pi/n{self.nsid}/env": self.env().encode(),
            f"/pi/n{self.nsid}/good.md": self.md(good),
            f"/pi/n{self.nsid}/badguard.md": self.md(bad_guard),
            f"/pi/n{self.nsid}/badref.md": self.md(bad_ref),
        }

    def qemu_args(self, image: Path) -> list[str]:
        return [
            "-drive", f"file={image},if=none,id=pi{self.nsid},format=raw",
            "-device", f"nvme-ns,bus=nvme0,drive=pi{self.nsid},nsid={self.nsid},logical_block_size={self.lba},"
            f"physical_block_size={self.lba},ms={self.ms},mset={int(self.extended)},pi={self.pi},pil={int(self.pi_first)},"
            f"pif={2 if self.guard == 'crc64' else 0}",
        ]  # fmt: skip

    def cli(self) -> str:
        opts = [f"md={self.ms}", f"pi={self.pi}"]
        if self.guard != "crc16":
            opts.append(f"guard={self.guard}")
        if self.pi_first:
            opts.append("pi-first")
        if self.extended:
            opts.append("extended")
        return f"ram:{NS_BYTES >> 20}M:{self.lba}:" + ":".join(opts)

    def fault_rules(self) -> list[str]:
        return [
            f"read nsid={self.nsid} lba={self.at('fault_guard')} -> corrupt-pi=guard",
            f"read nsid={self.nsid} lba={self.at('fault_ref')} -> corrupt-pi=ref",
        ]


NAMESPACES = (
    PiNs(1, 512, 8, 1, "crc16", False, "T10-DIF-TYPE1-CRC", 2),
    PiNs(2, 4096, 8, 3, "crc16", False, "T10-DIF-TYPE3-CRC", 6),
    PiNs(3, 4096, 16, 1, "crc64", True, "EXT-DIF-TYPE1-CRC64", 2),
    # Linux 6.1 takes PI only first in the metadata or filling it: PI last behind 8 other bytes is "nop".
    PiNs(4, 512, 16, 1, "crc16", False, "nop", 0, mode="linux"),
    # Extended LBAs: no integrity buffers; Linux sends PRACT and the controller inserts and strips.
    PiNs(5, 512, 8, 1, "crc16", False, "none", 0, extended=True, mode="linux"),
    # Extended LBAs with more metadata than PI: Linux cannot use them at all (size 0).
    PiNs(6, 4096, 16, 3, "crc16", True, "none", 0, extended=True, mode="linux"),
)
FULL = tuple(ns for ns in NAMESPACES if ns.mode == "full")
FULL_IDS = [f"n{ns.nsid}" for ns in FULL]


def guest_files() -> dict[str, bytes]:
    files = {"/pi/pattern.bin": PATTERN}
    for ns in NAMESPACES:
        files.update(ns.files())
    return files


# -- booting the two targets ------------------------------------------------------------


@dataclasses.dataclass
class Run:
    target: str
    boot: Boot
    klog: dict[str, list[str]]

    def check(self, key: str) -> str:
        assert key in self.boot.checks, f"[{self.target}] the guest reported no {key}" + self.boot.diagnostics()
        return self.boot.checks[key]

    def nvme(self, key: str) -> tuple[int, int | None]:
        """An nvme-cli result: (exit code, SCT/SC or None when nvme-cli printed no status)."""
        rc, status = self.check(key).split(" ", 1)
        return int(rc), None if status == "-" else int(status, 16) & 0x7FF

    def fail(self, what: str) -> str:
        return f"[{self.target}] {what}" + self.boot.diagnostics()


@pytest.fixture(scope="module")
def initrd(tool: Path, workdir: Path) -> Path:
    return build_initrd_with(tool, GUEST_SCRIPT, workdir / "pi_checks.initrd", ("nvme",), guest_files())


def _boot_qemu(tool: Path, initrd: Path, workdir: Path) -> Boot:
    args = ["-device", "nvme,id=nvme0,serial=PI-CONTROL"]
    for ns in NAMESPACES:
        image = workdir / f"qemu-pi{ns.nsid}.img"
        with open(image, "wb") as f:
            f.truncate(NS_BYTES)
        args += ns.qemu_args(image)
    return boot_builtin(tool, initrd, workdir, "pi qemu", args)


def _boot_nvmefast(tool: Path, initrd: Path, workdir: Path) -> Boot:
    extra: list[str] = []
    for ns in NAMESPACES[1:]:
        extra += ["--namespace", ns.cli()]
    for ns in FULL:
        for rule in ns.fault_rules():
            extra += ["--fault", rule]
    server = start_server(workdir, "pi", tuple(extra), namespace=NAMESPACES[0].cli())
    try:
        return boot(tool, server, initrd, "pi nvmefast")
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["qemu", "nvmefast"])
def run(request: pytest.FixtureRequest, tool: Path, initrd: Path, workdir: Path) -> Iterator[Run]:
    target: str = request.param
    b = (_boot_qemu if target == "qemu" else _boot_nvmefast)(tool, initrd, workdir)
    klog: dict[str, list[str]] = {}
    for line in b.console.replace("\r", "").splitlines():
        if m := re.match(r"KLOG ([\w.-]+)=(.*)$", line):
            klog.setdefault(m[1], []).append(m[2])
    yield Run(target, b, klog)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the checks ---------------------------------------------------------------------------


def test_guest_ran_to_the_end(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    b = run.boot
    with capsys.disabled():
        print(f"\n[{run.target}] {b.seconds:.1f} s wall; devices at {b.checks.get('dev_at', '?')} s, "
              f"done at {b.checks.get('uptime_end', '?')} s guest uptime; {b.checks.get('nvme_version', '?')}")  # fmt: skip
    assert not b.fails, run.fail(f"the guest script failed: {b.fails}")
    assert b.guest_exit == 0 and "uptime_end" in b.checks, run.fail("the guest script did not finish")
    if b.server is not None:
        assert b.server_alive_after, run.fail("the server died")
    # CTRATT bit 15 (ELBAS): Linux then asks CNS 05h for the guard format of each namespace.
    assert int(run.check("ctratt"), 16) & (1 << 15), run.fail("CTRATT.ELBAS is clear")


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_linux_registers_integrity(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    assert run.check("format" + s) == ns.integrity_format, run.fail(f"nvme0n{ns.nsid} integrity format")
    assert run.check("tag_size" + s) == str(ns.tag_size), run.fail("tag_size")
    assert run.check("capable" + s) == "1", run.fail("device_is_integrity_capable")
    assert run.check("interval" + s) == str(ns.lba), run.fail("protection_interval_bytes")
    assert run.check("verify_generate" + s) == "1 1", run.fail("read_verify / write_generate")
    assert run.check("lba_size" + s) == str(ns.lba), run.fail("logical_block_size")
    # QEMU keeps the metadata in the same image, after the data; nvmefast beside it.
    blocks = NS_BYTES // (ns.lba + ns.ms) if run.target == "qemu" else NS_BYTES // ns.lba
    assert run.check("size_sectors" + s) == str(blocks * ns.lba // 512), run.fail("size")


@pytest.mark.parametrize("ns", NAMESPACES, ids=lambda ns: f"n{ns.nsid}")
def test_identify_namespace_as_nvme_cli_reads_it(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    assert int(run.check("id_mc" + s), 16) == 0b11, run.fail("MC: extended and separate metadata")
    assert int(run.check("id_dpc" + s), 16) == 0x1F, run.fail("DPC: types 1-3, first and last")
    assert int(run.check("id_dps" + s), 16) == ns.pi | (8 if ns.pi_first else 0), run.fail("DPS")
    flbas = int(run.check("id_flbas" + s), 16)
    assert bool(flbas & 0x10) == ns.extended, run.fail("FLBAS bit 4: metadata at the end of the data")
    inuse = run.check("id_inuse" + s)
    m = re.match(r"lbaf\s+(\d+) : ms:(\d+) lbads:(\d+) rp:\d+", inuse)
    assert m, run.fail(f"no LBA format in use: {inuse!r}")
    assert int(m[1]) == flbas & 0xF and int(m[2]) == ns.ms and 1 << int(m[3]) == ns.lba, run.fail(inuse)
    pif = re.search(r"pif:(\d+)", run.check("nvm_inuse" + s))
    assert pif and int(pif[1]) == (2 if ns.guard == "crc64" else 0), run.fail("ELBAF.PIF of the format in use")


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_block_layer_reads_back_intact(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    assert run.check("blk_direct" + s) == md5(PATTERN), run.fail("O_DIRECT write + read")
    assert run.check("blk_buffered" + s) == md5(PATTERN), run.fail("page cache write + read")


LINUX = tuple(ns for ns in NAMESPACES if ns.mode == "linux")


@pytest.mark.parametrize("ns", LINUX, ids=[f"n{ns.nsid}" for ns in LINUX])
def test_layouts_linux_gives_no_integrity_buffers(run: Run, ns: PiNs) -> None:
    """PI last behind other metadata: Linux 6.1 registers ``nop`` and moves metadata it never
    fills or checks. Extended LBAs: no integrity at all, Linux sets PRACT and the controller
    inserts the tuple (guard = CRC of the data, app 0, ref = the LBA) and strips it again."""
    s = f"_n{ns.nsid}"
    assert (run.check("format" + s), run.check("tag_size" + s), run.check("capable" + s)) == (
        ns.integrity_format, "0", "0"), run.fail("integrity")  # fmt: skip
    if ns.extended and ns.ms > ns.psize:
        assert run.check("size_sectors" + s) == "0", run.fail("an extended namespace Linux cannot use")
        return
    assert run.check("blk_rw" + s) == f"0 {md5(PATTERN[: 2 * ns.lba])}", run.fail("block-layer write + read")
    blocks = NS_BYTES // (ns.lba + ns.ms) if run.target == "qemu" else NS_BYTES // ns.lba
    assert run.check("size_sectors" + s) == str(blocks * ns.lba // 512), run.fail("size")
    if ns.extended:
        assert run.nvme("ext_read" + s) == (0, None), run.fail("nvme read of data and metadata together")
        got = Tuple.parse(ns.guard, bytes.fromhex(run.check("ext_md" + s)))
        assert got == ns.tuple_of(0, 0, ns.at("blk")), run.fail("the tuple the controller inserted for Linux")


def _tuples(run: Run, key: str, ns: PiNs, count: int) -> list[Tuple]:
    raw = bytes.fromhex(run.check(key))
    assert len(raw) == count * ns.ms, run.fail(f"{key}: {len(raw)} bytes of metadata, want {count * ns.ms}")
    out = []
    for i in range(count):
        md = raw[i * ns.ms : (i + 1) * ns.ms]
        out.append(Tuple.parse(ns.guard, md[: ns.psize] if ns.pi_first else md[ns.ms - ns.psize :]))
    return out


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_stored_pi_is_what_linux_generated(run: Run, ns: PiNs) -> None:
    """Linux's tuples as the device stored them: guard = CRC of the block, app 0, ref = the
    LBA (Type 1) or 0 (Type 3)."""
    s = f"_n{ns.nsid}"
    assert run.nvme("kernel_read" + s) == (0, None), run.fail("nvme read -y -M -p 0")
    assert run.check("kernel_data" + s) == md5(PATTERN[: 2 * ns.lba]), run.fail("data")
    want = [ns.tuple_of(i, 0, ns.at("blk") + i if ns.pi == 1 else 0) for i in range(2)]
    assert _tuples(run, "kernel_md" + s, ns, 2) == want, run.fail("stored tuples")


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_pract_inserts_and_strips(run: Run, ns: PiNs) -> None:
    """nvme-cli --prinfo with PRACT: the controller generates the tuples (guard = CRC of the
    data, app = LBAT, ref = ILBRT + i for Type 1, ILBRT for Type 3), checks and strips them."""
    s = f"_n{ns.nsid}"
    assert run.nvme("pract_write" + s) == (0, None), run.fail("PRACT write")
    assert run.nvme("pract_read" + s) == (0, None), run.fail("PRACT read with checks")
    assert run.check("pract_data" + s) == md5(PATTERN[: 2 * ns.lba]), run.fail("PRACT read data")
    assert run.nvme("pract_md_read" + s) == (0, None), run.fail("nvme read -y -M")
    want = [ns.tuple_of(i, APP_PRACT, ns.at("pract") + (i if ns.pi != 3 else 0)) for i in range(2)]
    assert _tuples(run, "pract_md" + s, ns, 2) == want, run.fail("tuples the controller generated")
    assert run.check("pract_blk" + s) == f"0 {md5(ns.block(0))}", run.fail("block-layer read of PRACT data")


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_host_pi_checked_by_the_controller(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    assert run.nvme("host_write" + s) == (0, None), run.fail("write with good PI, guard/app/ref checked")
    assert run.nvme("host_read" + s) == (0, None), run.fail("read with good PI, checked")
    assert _tuples(run, "host_md" + s, ns, 1) == [ns.tuple_of(0, APP_HOST, ns.at("host"))], run.fail("tuple")
    assert run.nvme("host_badapp" + s)[1] == APP_CHECK, run.fail("app tag 5679h against 5678h, mask FFFFh")
    assert run.nvme("host_maskedapp" + s) == (0, None), run.fail("app tag mismatch outside LBATM")
    assert run.check("host_blk" + s) == f"0 {md5(ns.block(0))}", run.fail("block-layer read")


def _protection_error_logged(run: Run, key: str, sc: int) -> None:
    lines = run.klog.get(key, [])
    assert any("protection error" in line for line in lines), run.fail(f"{key}: no 'protection error' logged")
    assert any(f"sc 0x{sc:x}" in line for line in lines), run.fail(f"{key}: no 'sc 0x{sc:x}' logged")


def _eilseq(run: Run, key: str) -> None:
    rc, message = run.check(key).split(" ", 1)
    assert rc == "1" and os.strerror(errno.EILSEQ) in message, run.fail(f"{key}: want EILSEQ, got {message!r}")


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_bad_guard_is_refused(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    assert run.nvme("badguard_write" + s)[1] == GUARD_CHECK, run.fail("write with a bad guard, guard checked")
    assert run.nvme("badguard_store" + s) == (0, None), run.fail("the same write, unchecked")
    assert run.nvme("badguard_read" + s)[1] == GUARD_CHECK, run.fail("read, guard checked")
    assert run.nvme("badguard_pract_read" + s)[1] == GUARD_CHECK, run.fail("PRACT read, guard checked")
    assert run.nvme("badguard_unchecked" + s) == (0, None), run.fail("read, unchecked")
    _eilseq(run, "badguard_blk" + s)
    _protection_error_logged(run, "badguard_blk" + s, GUARD_CHECK & 0xFF)


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_wrong_reference_tag_is_refused(run: Run, ns: PiNs) -> None:
    s = f"_n{ns.nsid}"
    # Type 1: ILBRT must be the SLBA; Type 3 has no reference tag to check.
    assert run.nvme("badref_cmd" + s)[1] == INVALID_PI, run.fail("ILBRT = SLBA + 1 with PRCHK ref")
    if ns.pi == 3:
        assert run.nvme("badref_write" + s)[1] == INVALID_PI, run.fail("Type 3 write with PRCHK ref")
        assert run.nvme("badref_store" + s) == (0, None), run.fail("unchecked write")
        assert run.nvme("badref_read" + s)[1] == INVALID_PI, run.fail("Type 3 read with PRCHK ref")
        assert run.check("badref_blk" + s) == f"0 {md5(ns.block(0))}", run.fail("Linux checks no Type 3 ref")
        return
    assert run.nvme("badref_write" + s)[1] == REF_CHECK, run.fail("write with a wrong stored ref tag")
    assert run.nvme("badref_store" + s) == (0, None), run.fail("unchecked write")
    assert run.nvme("badref_read" + s)[1] == REF_CHECK, run.fail("read, ref checked")
    _eilseq(run, "badref_blk" + s)
    _protection_error_logged(run, "badref_blk" + s, REF_CHECK & 0xFF)


@pytest.mark.parametrize("ns", FULL, ids=FULL_IDS)
def test_corrupt_pi_rule_fails_the_guest_read(run: Run, ns: PiNs) -> None:
    """``corrupt-pi=guard`` / ``=ref`` on what a read returns: the controller checked the stored PI
    and passed, Linux's own verification catches the corruption. QEMU has no rule: reads succeed."""
    s = f"_n{ns.nsid}"
    guard_key, ref_key = f"fault{ns.at('fault_guard')}{s}", f"fault{ns.at('fault_ref')}{s}"
    intact = f"0 {md5(ns.block(0))}"
    if run.target == "qemu":
        assert run.check(guard_key) == intact and run.check(ref_key) == intact, run.fail("control reads")
        assert not run.klog.get(guard_key) and not run.klog.get(ref_key), run.fail("control logged errors")
        return
    _eilseq(run, guard_key)
    assert any(f"nvme0n{ns.nsid}: guard tag error" in line for line in run.klog.get(guard_key, [])), run.fail(
        "no 'guard tag error' in the kernel log"
    )
    if ns.pi == 3:
        assert run.check(ref_key) == intact, run.fail("Linux checks no Type 3 reference tag")
        return
    _eilseq(run, ref_key)
    assert any(f"nvme0n{ns.nsid}: ref tag error" in line for line in run.klog.get(ref_key, [])), run.fail(
        "no 'ref tag error' in the kernel log"
    )
