"""``nvmefast bench --backend file``: a file namespace beside its floor.

4 KiB random reads and writes at each queue depth on a file (or block
device) namespace, driven by the core's Rust host loop exactly as the
in-memory bench is, each point followed at once by its floor on the same
file (fio's io_uring engine, or the raw io_uring loop when fio is missing:
:mod:`nvmefast.file_floor`) with the same block size, queue depth and
O_DIRECT setting as the core chose, so that noise hits both. The I/O path
and cache mode the core used (``Engine.namespace_info``) are printed, and
the data is verified through the device against the file afterwards.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmefast import _core
from nvmefast.bench import BLOCK, BenchConfig, BenchSession, run_info
from nvmefast.config import NamespaceConfig
from nvmefast.errors import ConfigError
from nvmefast.file_floor import Figures, FloorPoint, FloorRunner, combine, figures_from

__all__ = [
    "FileBench",
    "FileBenchConfig",
    "FileBenchResult",
    "FilePoint",
    "failed",
    "file_json",
    "format_file_table",
    "prepare_file",
    "parse_workloads",
    "run_file_bench",
    "verify_data",
]

WORKLOADS = ("randread", "randwrite")
TARGET_IOPS_QD64 = 0.8
"""Issue 11: on a tmpfs file, QD64 IOPS at least this fraction of fio's."""
TARGET_LATENCY_QD1 = 1.5
"""Issue 11: on a tmpfs file, QD1 latency at most this multiple of fio's."""
_FILL_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileBenchConfig:
    """What ``nvmefast bench --backend file`` runs."""

    path: str
    qds: tuple[int, ...] = (1, 4, 16, 64)
    workloads: tuple[str, ...] = WORKLOADS
    modes: tuple[str, ...] = ("irq",)
    """How the host loop takes completions: irq (an eventfd, as fio waits in
    io_uring_enter) and/or poll."""
    seconds: float = 2.0
    size_bytes: int = 1 << 30
    """The size of the file when the bench creates it (a missing or empty
    regular file); an existing file keeps its size."""
    lba_size: int = 512
    cache: str = "auto"
    io: str = "auto"
    poll_us: int = 50
    rounds: int = 1
    """Each point is this many alternations of (ours, its floor), ``seconds`` each, combined."""


@dataclass
class FilePoint:
    """One (workload, mode, QD): ours, the floor measured right after, and their ratios."""

    workload: str
    mode: str
    qd: int
    rounds: int
    """Rounds of (ours, floor) combined in the figures."""
    ours: Figures
    interrupts_per_io: float
    file_ops_per_io: float | None
    """Requests the core sent to the file per command (None: the core does not count them)."""
    served_by: dict[str, float]
    """Share of those requests per I/O path ("io_uring", "threads", "inline")."""
    floor: FloorPoint | None
    ratios: dict[str, float] = field(default_factory=dict)

    def errors_note(self) -> str:
        """Empty, or what failed: error statuses on our side or the floor's."""
        notes = []
        if self.ours.errors:
            notes.append(f"{self.ours.errors} errors!")
        if self.floor is not None and self.floor.errors:
            notes.append(f"floor: {self.floor.errors} errors!")
        return ", ".join(notes)


@dataclass
class FileBenchResult:
    """Everything one run measured."""

    cfg: FileBenchConfig
    size_bytes: int
    created: bool
    filesystem: str
    namespace: dict[str, Any]
    floor: str
    floor_kind: str
    points: list[FilePoint]
    verified: bool
    verify_detail: str

    @property
    def direct(self) -> bool:
        """Whether the core opened the file with O_DIRECT."""
        return self.namespace.get("cache") == "direct"

    def targets(self) -> dict[str, dict[str, Any]]:
        """Issue 11's targets (meant for a tmpfs file), judged on this run's points."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.points:
            if p.floor is None:
                continue
            if p.qd == 64:
                r = p.ratios["iops_vs_floor"]
                out[f"{p.workload} {p.mode} QD64 IOPS"] = {"ratio": r, "target": f">= {TARGET_IOPS_QD64}x", "met": r >= TARGET_IOPS_QD64}
            if p.qd == 1:
                r = p.ratios["latency_vs_floor"]
                out[f"{p.workload} {p.mode} QD1 mean latency"] = {"ratio": r, "target": f"<= {TARGET_LATENCY_QD1}x", "met": r <= TARGET_LATENCY_QD1}
        return out


def _filesystem(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/self/mountinfo), or "unknown"."""
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = fields[4].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, right.split()[0]
    except OSError:
        pass
    return fstype


def _device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def prepare_file(cfg: FileBenchConfig, progress: Callable[[str], None]) -> tuple[int, bool]:
    """Make ``cfg.path`` ready; returns (its size in bytes, whether the bench created its data).

    A missing or empty regular file is created at ``cfg.size_bytes`` and
    filled with random data (so reads touch real blocks, not holes, for the
    device and for fio alike). A block device is used as it is, and only
    for reads: writes would destroy its data.
    """
    try:
        st = os.stat(cfg.path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"bench file {cfg.path!r}: {e.strerror}") from None
    if st is not None and stat.S_ISBLK(st.st_mode):
        if "randwrite" in cfg.workloads:
            raise ConfigError(
                f"{cfg.path} is a block device and random writes would destroy its data; "
                "pass --rw randread, or bench a regular file"
            )
        return _device_size(cfg.path), False
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"bench file {cfg.path!r} is neither a regular file nor a block device")
    if st is not None and st.st_size > 0:
        if st.st_size % cfg.lba_size:
            raise ConfigError(
                f"bench file {cfg.path!r}: its size {st.st_size} is not a multiple of the {cfg.lba_size}-byte LBA; "
                f"truncate it to {st.st_size - st.st_size % cfg.lba_size} or remove it"
            )
        return st.st_size, False
    size = cfg.size_bytes - cfg.size_bytes % _FILL_CHUNK or _FILL_CHUNK
    progress(f"creating {cfg.path} ({size >> 20} MiB of random data)")
    chunk = bytearray(os.urandom(_FILL_CHUNK))
    try:
        fd = os.open(cfg.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"bench file {cfg.path!r}: cannot create it: {e.strerror}") from None
    try:
        for i in range(size // _FILL_CHUNK):
            chunk[:8] = i.to_bytes(8, "little")
            os.write(fd, chunk)
        os.fsync(fd)
    except OSError as e:
        raise ConfigError(f"bench file {cfg.path!r}: cannot fill it: {e.strerror}") from None
    finally:
        os.close(fd)
    return size, True


def verify_data(session: BenchSession, path: str, size: int, writes: bool, blocks: int = 16) -> tuple[bool, str]:
    """Reads (and, if ``writes``, writes then flushes) random 4 KiB blocks
    through the device and compares them with the file read directly."""
    host = session.host
    lba = session.ns.lba_size
    nlb = BLOCK // lba
    rng = random.Random(0x5EED)
    offsets = [rng.randrange(size // BLOCK) * BLOCK for _ in range(blocks)]
    host.create_io_queue_pair(1, entries=16, vector=1)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for off in offsets:
            got = host.read(1, off // lba, nlb)
            want = os.pread(fd, BLOCK, off)
            if got != want:
                return False, f"read at byte {off}: the device returned data that is not the file's"
        if not writes:
            return True, f"{blocks} random 4 KiB blocks read through the device match the file"
        written = {off: os.urandom(BLOCK) for off in offsets}
        for off, data in written.items():
            host.write(1, off // lba, data)
        host.flush(1)
        for off, data in written.items():
            if host.read(1, off // lba, nlb) != data:
                return False, f"write at byte {off}: read back through the device differs"
            if os.pread(fd, BLOCK, off) != data:
                return False, f"write at byte {off}: the file does not hold what the device acknowledged"
        return True, (
            f"{blocks} random 4 KiB blocks read through the device match the file; "
            f"{len(written)} written and flushed through the device read back through it and from the file"
        )
    finally:
        os.close(fd)
        host.delete_io_queue_pair(1)


def _file_ops(engine: _core.Engine) -> dict[str, int]:
    """The core's file_ops counters: all requests, and by the path that served them."""
    return {k: int(v) for k, v in engine.counters().items() if k.startswith("file_ops")}


def _ops_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def _ops_summary(ops: dict[str, int], ios: int) -> tuple[float | None, dict[str, float]]:
    """Requests per command, and the share each I/O path served."""
    total = ops.get("file_ops")
    if total is None:
        return None, {}
    served = {k.removeprefix("file_ops_"): v / max(1, total) for k, v in ops.items() if k != "file_ops" and v > 0}
    return total / max(1, ios), served


class FileBench:
    """A controller with the file namespace of ``cfg``, brought up through
    its admin queue, and the floor runner for the same file.

    Use as a context manager; :meth:`point` measures one point and its
    floor, :meth:`verify` checks the data (both reusable by pytest-benchmark).
    """

    def __init__(self, cfg: FileBenchConfig, progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.size, self.created = prepare_file(cfg, progress or (lambda _m: None))
        ns = NamespaceConfig(
            size_bytes=self.size, lba_size=cfg.lba_size, backend="file", path=cfg.path, cache=cfg.cache, io=cfg.io
        )
        base = BenchConfig(
            qds=cfg.qds, modes=cfg.modes, seconds=cfg.seconds, backend="file", size_bytes=self.size,
            lba_size=cfg.lba_size, poll_us=cfg.poll_us,
        )
        self.session = BenchSession(base, ns)
        try:
            self.info: dict[str, Any] = dict(self.engine.namespace_info(1))
            self.floor = FloorRunner(cfg.path, self.info.get("cache") == "direct", BLOCK)
        except BaseException:
            self.session.close()
            raise

    @property
    def engine(self) -> _core.Engine:
        """The controller's engine (not kept: a live reference keeps the file open after close)."""
        return self.session.controller.engine

    def __enter__(self) -> FileBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear down the controller."""
        self.session.close()

    def ours(self, workload: str, mode: str, qd: int, seconds: float) -> tuple[dict[str, float], dict[str, int]]:
        """The device's side of a point: ``bench_io``'s figures, and the file requests it made (by path)."""
        ops0 = _file_ops(self.engine)
        r = self.session.drive(mode, qd, seconds, workload)
        return r, _ops_delta(ops0, _file_ops(self.engine))

    def with_floor(
        self, workload: str, mode: str, qd: int, seconds: float, r: dict[str, float], ops: dict[str, int]
    ) -> FilePoint:
        """Measures the floor of a point :meth:`ours` just ran, and the point."""
        ours = figures_from(r)
        fl = self.floor.measure(workload, qd, seconds)
        return _point(workload, mode, qd, ours, r["interrupts"], ops, fl, 1)

    def point(self, workload: str, mode: str, qd: int, seconds: float, rounds: int = 1) -> FilePoint:
        """``rounds`` times: ``workload`` at ``qd`` through the device for
        ``seconds``, then its floor on the same file for as long; the rounds
        combined (:func:`nvmefast.file_floor.combine`)."""
        ours: list[Figures] = []
        floors: list[FloorPoint] = []
        interrupts = 0.0
        ops: dict[str, int] = {}
        for _ in range(rounds):
            r, round_ops = self.ours(workload, mode, qd, seconds)
            ours.append(figures_from(r))
            interrupts += r["interrupts"]
            ops = {k: ops.get(k, 0) + v for k, v in round_ops.items()}
            fl = self.floor.measure(workload, qd, seconds)
            if fl is not None:
                floors.append(fl)
        o = combine(ours)
        floor = None
        if floors and len(floors) == rounds:
            floor = FloorPoint(**asdict(combine(floors)), kind=floors[-1].kind)
        return _point(workload, mode, qd, o, interrupts, ops, floor, rounds)

    def verify(self) -> tuple[bool, str]:
        """:func:`verify_data` on this namespace (writes only if ``cfg`` writes)."""
        return verify_data(self.session, self.cfg.path, self.size, "randwrite" in self.cfg.workloads)


def _point(
    workload: str, mode: str, qd: int, ours: Figures, interrupts: float, ops: dict[str, int],
    floor: FloorPoint | None, rounds: int,
) -> FilePoint:
    per_io, served = _ops_summary(ops, ours.ios)
    p = FilePoint(
        workload=workload, mode=mode, qd=qd, rounds=rounds, ours=ours, interrupts_per_io=interrupts / max(1, ours.ios),
        file_ops_per_io=per_io, served_by=served, floor=floor,
    )
    if floor is not None and floor.kiops > 0 and floor.mean_us > 0:
        p.ratios = {"iops_vs_floor": ours.kiops / floor.kiops, "latency_vs_floor": ours.mean_us / floor.mean_us}
        if floor.p50_us > 0:
            p.ratios["latency_p50_vs_floor"] = ours.p50_us / floor.p50_us
    return p


def run_file_bench(cfg: FileBenchConfig, progress: Callable[[str], None] | None = None) -> FileBenchResult:
    """Run every (QD, workload, mode) point of ``cfg``, each followed at once by its floor."""
    say = progress or (lambda _m: None)
    points: list[FilePoint] = []
    with FileBench(cfg, say) as fb:
        say(f"namespace 1: {fb.info.get('io')} I/O, cache {fb.info.get('cache')}; floor: {fb.floor.describe()}")
        total = len(cfg.qds) * len(cfg.workloads) * len(cfg.modes)
        n = 0
        for qd in cfg.qds:
            for workload in cfg.workloads:
                for mode in cfg.modes:
                    n += 1
                    say(
                        f"[{n}/{total}] {workload} {mode} QD{qd}: {cfg.rounds} x ({cfg.seconds:g} s ours, "
                        f"{cfg.seconds:g} s {fb.floor.kind})"
                    )
                    points.append(fb.point(workload, mode, qd, cfg.seconds, cfg.rounds))
        say("verifying data through the device against the file")
        verified, detail = fb.verify()
        info = dict(fb.engine.namespace_info(1))
        floor, kind = fb.floor.describe(), fb.floor.kind
    return FileBenchResult(
        cfg=cfg, size_bytes=fb.size, created=fb.created, filesystem=_filesystem(cfg.path), namespace=info,
        floor=floor, floor_kind=kind, points=points, verified=verified, verify_detail=detail,
    )


def _io_path(info: dict[str, Any]) -> str:
    io = info.get("io")
    if io == "io_uring":
        return "io_uring"
    if io == "threads":
        return "threads (preadv2/pwritev2 pool: io_uring refused or not chosen)"
    if io == "inline":
        return "inline (preadv2/pwritev2 on the worker: the file has no asynchronous path, e.g. tmpfs)"
    return str(io)


def _served(points: list[FilePoint]) -> str:
    """Which paths served the run's requests, as shares of them."""
    total: dict[str, float] = {}
    n = 0.0
    for p in points:
        weight = (p.file_ops_per_io or 0.0) * p.ours.ios
        n += weight
        for path, share in p.served_by.items():
            total[path] = total.get(path, 0.0) + share * weight
    if n <= 0 or not total:
        return ""
    return "; requests served by " + ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in sorted(total.items()))


def format_file_table(res: FileBenchResult) -> str:
    """The human table: our row and the floor's row for each point, with ratios."""
    cfg = res.cfg
    cache = res.namespace.get("cache")
    lines = [
        f"nvmefast bench: 4 KiB random {' and '.join(w[4:] + 's' for w in cfg.workloads)}, file namespace "
        f"{cfg.path} ({res.filesystem}, {res.size_bytes >> 20} MiB, LBA {cfg.lba_size} B), "
        f"{cfg.seconds:g} s per point" + (f", {cfg.rounds} rounds of (ours, floor) per point" if cfg.rounds > 1 else ""),
        f"I/O path: {_io_path(res.namespace)}; cache: {cache} ({'O_DIRECT' if res.direct else 'page cache'}); "
        f"asked --io {cfg.io} --cache {cfg.cache}{_served(res.points)}",
        f"floor, measured right after each point{' (each round)' if cfg.rounds > 1 else ''}: {res.floor}",
        f"data: {'verified' if res.verified else 'NOT VERIFIED'}: {res.verify_detail}",
        "",
        f"{'rw':<10}{'mode':<5}{'QD':>4}  {'who':<9}{'KIOPS':>9}{'mean us':>10}{'p50 us':>9}{'p99 us':>9}  vs floor",
    ]
    for p in res.points:
        o = p.ours
        vs = ""
        if p.ratios:
            vs = f"IOPS {p.ratios['iops_vs_floor']:.2f}x, mean latency {p.ratios['latency_vs_floor']:.2f}x"
            if "latency_p50_vs_floor" in p.ratios:
                vs += f" (p50 {p.ratios['latency_p50_vs_floor']:.2f}x)"
        note = p.errors_note()
        if note:
            vs += f"  ({note})"
        lines.append(
            f"{p.workload:<10}{p.mode:<5}{p.qd:>4}  {'nvmefast':<9}{o.kiops:>9.1f}{o.mean_us:>10.2f}{o.p50_us:>9.2f}{o.p99_us:>9.2f}  {vs}"
        )
        if p.floor is not None:
            f = p.floor
            name = "fio" if f.kind == "fio" else "raw loop"
            lines.append(
                f"{'':<19}  {name:<9}{f.kiops:>9.1f}{f.mean_us:>10.2f}{f.p50_us:>9.2f}{f.p99_us:>9.2f}"
            )
    targets = res.targets()
    if targets:
        lines.append("")
        lines.append(f"issue 11 targets (for a tmpfs file; this one is on {res.filesystem}):")
        for name, t in targets.items():
            lines.append(f"  {name}: {t['ratio']:.2f}x the floor (target {t['target']}): {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def failed(res: FileBenchResult) -> bool:
    """Whether the run should exit non-zero: an error status, a floor error or unverified data."""
    return not res.verified or any(p.ours.errors or (p.floor is not None and p.floor.errors) for p in res.points)


def file_json(res: FileBenchResult) -> dict[str, Any]:
    """The same figures as a JSON-able dict."""
    return {
        "tool": "nvmefast bench",
        "kind": "file",
        "version": _core.__version__,
        "config": asdict(res.cfg),
        "file": {"path": res.cfg.path, "size_bytes": res.size_bytes, "created": res.created, "filesystem": res.filesystem},
        "namespace": res.namespace,
        "floor": {"kind": res.floor_kind, "description": res.floor},
        "points": [asdict(p) for p in res.points],
        "targets": res.targets(),
        "verified": res.verified,
        "verify_detail": res.verify_detail,
        **run_info(),
    }


def parse_workloads(text: str) -> tuple[str, ...]:
    """``--rw``: randread, randwrite or both."""
    return WORKLOADS if text == "both" else (text,)

