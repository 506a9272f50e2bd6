"""The floor of ``nvmefast bench --backend file``: what the file itself does.

fio (Debian's ``fio``, its io_uring engine, default options) on the same
file, with the same block size, queue depth and O_DIRECT setting, when
``fio`` is on ``PATH``; otherwise the project's own raw io_uring loop on the
file (``_core.floor_file_uring``), which does what fio's engine does with
nothing between the loop and the kernel.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nvmefast import _core
from nvmefast.errors import NvmeFastError

__all__ = ["Figures", "FloorPoint", "combine", "figures_from", "FloorRunner", "FloorUnavailable", "fio_command", "parse_fio_json"]

WORKLOADS = ("randread", "randwrite")


class FloorUnavailable(NvmeFastError):
    """fio's run or output was unusable (the runner then falls back)."""


@dataclass
class Figures:
    """One measured point: KIOPS and submit-to-completion latency."""

    kiops: float
    mean_us: float
    p50_us: float
    p99_us: float
    ios: int
    errors: int
    seconds: float


def figures_from(r: dict[str, float]) -> Figures:
    """:class:`Figures` from the core's dict (``bench_io``, ``floor_file_uring``)."""
    return Figures(
        kiops=r["iops"] / 1000,
        mean_us=r["mean_ns"] / 1000,
        p50_us=r["p50_ns"] / 1000,
        p99_us=r["p99_ns"] / 1000,
        ios=int(r["ios"]),
        errors=int(r["errors"]),
        seconds=r["seconds"],
    )


def combine(runs: Sequence[Figures]) -> Figures:
    """Rounds of one point as one: IOPS over all their time, the I/O-weighted
    mean latency, the median of their p50s and of their p99s."""
    if not runs:
        raise ValueError("combine needs at least one run")
    ios = sum(f.ios for f in runs)
    seconds = sum(f.seconds for f in runs)
    return Figures(
        kiops=ios / max(seconds, 1e-9) / 1000,
        mean_us=sum(f.mean_us * f.ios for f in runs) / max(ios, 1),
        p50_us=statistics.median(f.p50_us for f in runs),
        p99_us=statistics.median(f.p99_us for f in runs),
        ios=ios,
        errors=sum(f.errors for f in runs),
        seconds=seconds,
    )


@dataclass
class FloorPoint(Figures):
    """One floor measurement, in the units of the bench's own points."""

    kind: str
    """``"fio"`` or ``"raw_io_uring"``."""


def _fio_filename(path: str) -> str:
    # fio splits --filename at ':' (several files); a literal colon is '\:'.
    return path.replace("\\", "\\\\").replace(":", "\\:")


def fio_command(fio: str, path: str, workload: str, qd: int, block_size: int, direct: bool, seconds: float) -> list[str]:
    """The fio command line for one floor point (total latency percentiles, JSON out)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    return [
        fio,
        "--name=nvmefast-floor",
        f"--filename={_fio_filename(path)}",
        "--ioengine=io_uring",
        f"--rw={workload}",
        f"--bs={block_size}",
        f"--iodepth={qd}",
        f"--direct={int(direct)}",
        "--time_based",
        f"--runtime={max(1, round(seconds * 1000))}ms",
        # Uniform random offsets with repeats, as the device's host loop draws them.
        "--norandommap",
        # Submit-to-completion latency (what the device's host loop times), with percentiles.
        "--lat_percentiles=1",
        "--output-format=json",
    ]


def parse_fio_json(text: str, workload: str) -> FloorPoint:
    """A :class:`FloorPoint` from fio's ``--output-format=json`` output."""
    start = text.find("{")
    if start < 0:
        raise FloorUnavailable(f"fio printed no JSON: {text[:200]!r}")
    data: dict[str, Any] = json.loads(text[start:])
    job = data["jobs"][0]
    if job.get("error"):
        raise FloorUnavailable(f"fio job error {job['error']}")
    side = job["read" if workload == "randread" else "write"]
    lat = side["lat_ns"]
    pct = lat.get("percentile", {})
    figures = figures_from(
        {
            "iops": side["iops"],
            "mean_ns": lat["mean"],
            "p50_ns": pct.get("50.000000", 0),
            "p99_ns": pct.get("99.000000", 0),
            "ios": side["total_ios"],
            "errors": 0,
            "seconds": side["runtime"] / 1000,
        }
    )
    return FloorPoint(**asdict(figures), kind="fio")


class FloorRunner:
    """Measures floor points on one file: fio if found (falls back to the
    raw loop, saying why, if fio fails), else the raw io_uring loop."""

    def __init__(self, path: str, direct: bool, block_size: int = 4096) -> None:
        self.path = path
        self.direct = direct
        self.block_size = block_size
        self.fio = shutil.which("fio")
        self.fio_version: str | None = None
        self.raw_failed = False
        self.note = ""
        """Why the floor is not fio, when it is not."""
        if self.fio is not None:
            try:
                r = subprocess.run([self.fio, "--version"], capture_output=True, text=True, timeout=30)
                self.fio_version = r.stdout.strip() or None
            except (OSError, subprocess.SubprocessError) as e:
                self._drop_fio(f"fio --version failed: {e}")
        else:
            self.note = "fio not on PATH"

    @property
    def kind(self) -> str:
        """``"fio"``, ``"raw_io_uring"`` or ``"none"`` (neither works): what the next point uses."""
        if self.fio is not None:
            return "fio"
        return "none" if self.raw_failed else "raw_io_uring"

    def describe(self) -> str:
        """One line: what the floor is."""
        direct = f"O_DIRECT {'on' if self.direct else 'off'}"
        if self.fio is not None:
            return f"{self.fio_version or 'fio'} --ioengine=io_uring --direct={int(self.direct)}, same file, same QD, {self.block_size} B blocks"
        if self.raw_failed:
            return f"none: {self.note}"
        return f"raw io_uring loop on the same file ({direct}, same QD, {self.block_size} B blocks; {self.note})"

    def _drop_fio(self, why: str) -> None:
        self.fio = None
        self.note = why

    def measure(self, workload: str, qd: int, seconds: float) -> FloorPoint | None:
        """One floor point: ``workload`` at ``qd`` for ``seconds``; None once neither fio nor the raw loop works."""
        if self.fio is not None:
            cmd = fio_command(self.fio, self.path, workload, qd, self.block_size, self.direct, seconds)
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
                if r.returncode != 0:
                    raise FloorUnavailable(f"fio exited {r.returncode}: {(r.stderr or r.stdout).strip()[:300]}")
                return parse_fio_json(r.stdout, workload)
            except (OSError, subprocess.SubprocessError, FloorUnavailable, KeyError, ValueError) as e:
                self._drop_fio(f"fio failed ({e}); fell back")
        if self.raw_failed:
            return None
        try:
            raw = _core.floor_file_uring(
                self.path, rw=workload, qd=qd, block_size=self.block_size, direct=self.direct, seconds=seconds
            )
        except NvmeFastError as e:
            self.raw_failed = True
            self.note += f"; the raw io_uring loop failed too: {e}" if self.note else f"the raw io_uring loop failed: {e}"
            return None
        return FloorPoint(**asdict(figures_from(raw)), kind="raw_io_uring")
