"""QEMU's own ZNS device for the zoned real-guest test: the control beside
the vfio-user boot. The initramfs with Debian's ``blkzone``, ``nvme`` and
``fio`` and the boot of QEMU's built-in devices are :mod:`guestbin`'s."""

from __future__ import annotations

from pathlib import Path

ZONED_PROGRAMS = ("blkzone", "nvme", "fio")
"""What the zoned guest script runs: util-linux's blkzone, nvme-cli and fio."""


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
