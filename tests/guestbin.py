"""An initramfs with Debian binaries: the guest of ``vfio-user-guest.sh`` plus
programs of this machine (nvme-cli, fio, blkzone, ...) and files a test made.

``vfio-user-guest.sh initrd`` builds a busybox initramfs whose ``/init`` loads
the nvme modules and runs a test script. :func:`build_initrd_with` puts a
second, uncompressed cpio archive in front of it holding each program at its
own path, the shared libraries ``ldd`` names at theirs (the same Debian
release as the guest's C library, since they come from one machine) and any
extra files the test wants in the guest (data patterns, expected metadata).
The kernel unpacks concatenated archives in order; an uncompressed archive
must start 4-byte aligned, so it goes first (the same trick as the shared
``guestperf.sh``). Guest scripts put ``/usr/sbin:/usr/bin:/sbin`` on PATH.

A program missing here is installed with ``apt-get`` when running as root
(Debian packages only, like the tool's own ``setup``); otherwise, or when that
fails, the calling test is skipped with the command that would install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from guestutil import BOOT_TIMEOUT, GUEST_CPUS, Boot, build_initrd, run_bounded

__all__ = ["DEBIAN_PACKAGES", "boot_builtin", "build_initrd_with", "guest_kernel", "require_programs"]

DEBIAN_PACKAGES: Mapping[str, str] = {
    "nvme": "nvme-cli",
    "fio": "fio",
    "blkzone": "util-linux",
    "blkdiscard": "util-linux",
    "sg_inq": "sg3-utils",
}
"""The Debian package of each program a guest test may ask for."""

_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def _which(program: str) -> str | None:
    # Programs in sbin are not on a non-root PATH; look there too.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(program, path=path)


def require_programs(programs: Sequence[str]) -> dict[str, Path]:
    """The absolute path of each program, installing missing ones with apt-get
    as root; skips the calling test when one stays missing."""
    missing = [p for p in programs if _which(p) is None]
    packages = sorted({DEBIAN_PACKAGES.get(p, p) for p in missing})
    if packages and os.geteuid() == 0 and shutil.which("apt-get"):
        rc, out, err = run_bounded(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if rc != 0:
            pytest.skip(f"apt-get install {' '.join(packages)} failed ({rc}): {(out + err)[-500:]}")
    found = {p: _which(p) for p in programs}
    still = [p for p, path in found.items() if path is None]
    if still:
        pytest.skip(
            f"the guest needs {', '.join(still)} from this machine: "
            f"apt-get install {' '.join(sorted({DEBIAN_PACKAGES.get(p, p) for p in still}))}"
        )
    return {p: Path(path) for p, path in found.items() if path is not None}


def _libraries(binary: Path) -> list[Path]:
    """The dynamic loader and the shared libraries of ``binary``, as ldd resolves them here."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" in out.stdout + out.stderr:
        return []
    if out.returncode != 0 or "not found" in out.stdout:
        raise AssertionError(f"ldd {binary} failed or left libraries unresolved:\n{out.stdout}{out.stderr}")
    return [Path(m[1]) for line in out.stdout.splitlines() if (m := _LDD_PATH.search(line))]


def _copy(src: Path, root: Path) -> None:
    dest = root / str(src).lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), dest)  # the file, not the symlink: the archive holds no links to follow


def build_initrd_with(
    tool: Path,
    script: Path,
    out: Path,
    programs: Sequence[str] = ("nvme",),
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """An initramfs running ``script`` (``vfio-user-guest.sh initrd``) with ``programs`` of this
    machine and their libraries at their own paths, and ``files`` (guest path -> contents)."""
    paths = require_programs(programs)
    with tempfile.TemporaryDirectory(prefix="guestbin-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for binary in paths.values():
            _copy(binary, root)
            for lib in _libraries(binary):
                _copy(lib, root)
        for guest_path, data in (files or {}).items():
            dest = root / guest_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        base = build_initrd(tool, script, Path(tmp) / "base.cpio.gz")
        # The uncompressed archive first (it must start 4-byte aligned), the tool's gzip one after.
        with open(out, "wb") as f:
            f.write(_cpio_bytes(root, names))
            f.write(base.read_bytes())
    return out


def _cpio_bytes(root: Path, names: Sequence[str]) -> bytes:
    proc = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input=("\n".join(names) + "\n").encode(),
        capture_output=True,
        cwd=root,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"cpio -o failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def guest_kernel(tool: Path) -> Path:
    """The guest kernel ``vfio-user-guest.sh setup`` fetched (its ``W``, default /var/tmp/nvmefast-guest)."""
    rc, out, err = run_bounded(["bash", str(tool), "eval", 'printf "%s\\n" "$W"'], 30)
    assert rc == 0 and out.strip(), f"cannot ask {tool} for its work directory ({rc}): {err}"
    return Path(out.strip()) / "kernel" / "vmlinuz"


def boot_builtin(tool: Path, initrd: Path, workdir: Path, label: str, device_args: Sequence[str]) -> Boot:
    """Boot the guest on QEMU's own devices (``device_args``: ``-drive``/``-device nvme...``), not
    vfio-user: the control for a guest test. The machine is the tool's ``run`` machine (qboot,
    TCG, 512 MiB of shared memfd RAM, q35, the same CPUs), started through its ``qemu`` entry."""
    cmd = [
        "timeout", str(BOOT_TIMEOUT), "bash", str(tool), "qemu",
        "-bios", "qboot.rom", "-accel", "tcg", "-m", "512", "-smp", str(GUEST_CPUS),
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "q35,memory-backend=mem",
        "-nographic", "-no-reboot", "-net", "none",
        "-kernel", str(guest_kernel(tool)), "-initrd", str(initrd), "-append", "console=ttyS0 quiet panic=-1",
        *device_args,
    ]  # fmt: skip
    t0 = time.monotonic()
    rc, out, err = run_bounded(cmd, BOOT_TIMEOUT + 30)
    b = Boot(label, rc, time.monotonic() - t0, out, err, None)
    (workdir / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    return b
