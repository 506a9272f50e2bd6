"""The zoned real-guest harness: an initramfs with Debian's ``blkzone``,
``nvme`` (nvme-cli) and ``fio``, and a boot of QEMU's own ZNS device as the
control beside the vfio-user boot of ``guestutil``.

The initramfs is two cpio archives, concatenated (the kernel unpacks them in
order): first an uncompressed one holding the host's binaries and every
library ``ldd`` lists for them, at their own paths; then the gzip one that
``vfio-user-guest.sh initrd`` builds (busybox, the nvme modules, the test
script as ``/test.sh``). Uncompressed, because gunzipping fio's ~80 MiB of
libraries under TCG would cost seconds of every boot. The binaries come from
the host's Debian packages (``util-linux``, ``nvme-cli``, ``fio``);
``.ci/run`` installs the missing ones, and :func:`missing_tools` says which
are absent so a test can skip with that reason.

:func:`boot_qemu` boots the same guest with ``-device nvme`` +
``-device nvme-ns,zoned=true`` instead of ``vfio-user-pci``: the same
machine (qboot, TCG, 512 MiB of shared memfd RAM, q35) that
``vfio-user-guest.sh run`` builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from guestutil import BOOT_TIMEOUT, GUEST_CPUS, Boot, run_bounded

TOOLS = {"blkzone": "util-linux", "nvme": "nvme-cli", "fio": "fio"}
"""Guest binaries and the Debian package each comes from."""
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def tool_path(name: str) -> str | None:
    """Where the host has ``name`` (sbin included: blkzone and nvme live there)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_PATH])
    return shutil.which(name, path=path)


def missing_tools() -> list[str]:
    """``name (package)`` for each guest binary the host lacks."""
    return [f"{name} ({package})" for name, package in TOOLS.items() if tool_path(name) is None]


def _libraries(binary: str) -> list[str]:
    """The dynamic loader and every library ``ldd`` resolves for ``binary``."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs: list[str] = []
    for line in out.splitlines():
        if "not found" in line:
            raise RuntimeError(f"{binary}: unresolved library: {line.strip()}")
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "=>" and fields[2].startswith("/"):
            libs.append(fields[2])
        elif fields and fields[0].startswith("/"):
            libs.append(fields[0])  # the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    return libs


def _tools_cpio(out: Path) -> None:
    """An uncompressed newc archive of the tools and their libraries, at their host paths."""
    with tempfile.TemporaryDirectory(prefix="nvmefast-zns-initrd-") as tmp:
        root = Path(tmp)
        files: set[str] = set()
        for name in TOOLS:
            binary = tool_path(name)
            assert binary is not None
            files.add(binary)
            # The guest's PATH is /bin only: link each tool there too.
            (root / "bin").mkdir(exist_ok=True)
            os.symlink(binary, root / "bin" / name)
            files.update(_libraries(binary))
        for f in sorted(files):
            dest = root / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(f), dest)  # a symlinked library goes in as a file
        listing = "\n".join(str(p.relative_to(root)) for p in sorted(root.rglob("*"))) + "\n"
        with open(out, "wb") as f:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing.encode(), stdout=f,
                           cwd=root, check=True)


def build_tools_initrd(tool: Path, script: Path, out: Path) -> Path:
    """The initramfs running ``script`` with blkzone, nvme and fio inside (see the module doc)."""
    base = out.with_suffix(".base.gz")
    rc, stdout, stderr = run_bounded(["bash", str(tool), "initrd", str(script), str(base)], 120)
    assert rc == 0 and base.is_file(), f"`{tool} initrd` failed ({rc}):\n{stdout}{stderr}"
    tools = out.with_suffix(".tools.cpio")
    _tools_cpio(tools)
    # The uncompressed archive first: it must start 4-byte aligned, a gzip one need not.
    with open(out, "wb") as f:
        for part in (tools, base):
            with open(part, "rb") as p:
                shutil.copyfileobj(p, f)
    tools.unlink()
    base.unlink()
    return out


def guest_workdir(tool: Path) -> Path:
    """The tool's work directory (its ``W``: QEMU's root and the guest kernel)."""
    rc, out, err = run_bounded(["bash", str(tool), "eval", 'printf "%s\\n" "$W"'], 30)
    assert rc == 0 and out.strip(), f"cannot ask {tool} for its work directory: {err}"
    return Path(out.strip())


def qemu_zns_args(image: Path, *, zone_size: str, zone_capacity: str, max_open: int, max_active: int,
                  zasl: int, lba_size: int = 4096, serial: str = "QEMU-ZNS-CONTROL") -> list[str]:
    """QEMU's own ZNS device: one controller, one zoned namespace on ``image``."""
    return [
        "-drive", f"file={image},if=none,id=zns0,format=raw",
        "-device", f"nvme,id=nvme0,serial={serial},zoned.zasl={zasl}",
        "-device", (f"nvme-ns,bus=nvme0,drive=zns0,nsid=1,logical_block_size={lba_size},"
                    f"physical_block_size={lba_size},zoned=true,zoned.zone_size={zone_size},"
                    f"zoned.zone_capacity={zone_capacity},zoned.max_open={max_open},"
                    f"zoned.max_active={max_active}"),
    ]  # fmt: skip


def boot_qemu(tool: Path, initrd: Path, label: str, directory: Path, device_args: Sequence[str]) -> Boot:
    """Boot the guest on QEMU's built-in devices ``device_args`` (no vfio-user)."""
    kernel = guest_workdir(tool) / "kernel" / "vmlinuz"
    cmd = [
        "timeout", str(BOOT_TIMEOUT), "bash", str(tool), "qemu",
        "-bios", "qboot.rom", "-accel", "tcg", "-m", "512",
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "q35,memory-backend=mem",
        "-nographic", "-no-reboot", "-net", "none", "-smp", str(GUEST_CPUS),
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0 quiet panic=-1",
        *device_args,
    ]  # fmt: skip
    t0 = time.monotonic()
    rc, out, err = run_bounded(cmd, BOOT_TIMEOUT + 30)
    b = Boot(label, rc, time.monotonic() - t0, out, err, None)
    (directory / f"{label.replace(' ', '-')}.console.log").write_text(b.diagnostics())
    return b

