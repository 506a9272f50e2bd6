"""``nvmefast bench --vfio-user``: the server path, measured by a vfio-user client.

The client (Rust, ``_core.VfioUserBench``) connects to a vfio-user server
the way QEMU's ``vfio-user-pci`` does: VERSION, DMA_MAP of a memfd with its
fd, region and IRQ info, an mmap of BAR0's sparse-mmap doorbell area,
SET_IRQS with eventfds; it brings the controller up through BAR0 messages
and runs the in-process bench's host loop against it: 4 KiB random reads at
each queue depth, completions by interrupt (eventfd) or by polling the CQ
phase tag, doorbells rung in the mapped page, through shadow doorbells
(whose MMIO rings are posted REGION_WRITE messages), or as a message each
("trap").

With no socket it spawns its own ``nvmefast serve`` (a separate process, as
a VMM's server is) and places it: on a machine with two CPUs or more the
server's I/O worker gets the last CPU (``nvmefast serve --cpus``) and the
client the first. The same
run measures the in-process bench (``--mode poll``, MMIO doorbells) at each
queue depth, interleaved with the server-path points, and the floors: an
eventfd ping-pong, a shared-memory ping-pong, a UNIX-socket request/reply
round trip and random 4 KiB memcpys. The client writes namespace 1 (a fill,
so reads touch real pages, and a write/read-back check of the data path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmefast import _core
from nvmefast.bench import BenchConfig, BenchSession, Floors, measure_floors, point_from, run_info
from nvmefast.errors import ConfigError, StateError

__all__ = [
    "DOORBELLS",
    "VfioBenchConfig",
    "VfioFloors",
    "VfioPoint",
    "default_placement",
    "offered_doorbells",
    "format_vfio_table",
    "pinned",
    "run_vfio_bench",
    "spawned_server",
    "vfio_json",
    "vfio_point",
]

DOORBELLS = ("page", "shadow", "trap")
"""How the client rings: the mapped doorbell page, shadow doorbells + EventIdx
(MMIO rings as posted messages), or a posted REGION_WRITE message each."""


@dataclass(frozen=True)
class VfioBenchConfig:
    """What ``nvmefast bench --vfio-user`` runs."""

    socket: str | None = None
    """A listening vfio-user server; None spawns ``nvmefast serve`` for the run."""
    qds: tuple[int, ...] = (1, 4, 16, 64)
    modes: tuple[str, ...] = ("poll", "irq")
    doorbells: tuple[str, ...] | None = None
    """The ways to ring; None: every way the server offers (the rest are skipped, and the result says why)."""
    seconds: float = 2.0
    size_bytes: int = 1 << 30
    """The spawned server's RAM namespace (and the in-process one's)."""
    compare: bool = True
    """Measure the in-process bench (poll, MMIO doorbells) at each QD in the same run."""
    fill: bool = True
    verify_blocks: int = 64
    client_cpu: int | None = None
    """CPU for the client's host thread; None: the default placement."""
    server_cpus: tuple[int, ...] | None = None
    """CPUs of the spawned server; None: the default placement."""
    server_args: tuple[str, ...] = ()
    """Extra ``nvmefast serve`` arguments for the spawned server."""


@dataclass
class VfioFloors:
    """The raw primitives, measured in the same run."""

    eventfd_rtt_ns: float
    shm_rtt_ns: float
    unix_socket_rtt_ns: float
    memcpy_4k_per_s: float


@dataclass
class VfioPoint:
    """One (path, mode, doorbell, QD) result."""

    path: str
    """``vfio-user`` or ``in-process``."""
    mode: str
    doorbell: str
    qd: int
    kiops: float
    mean_us: float
    p50_us: float
    p99_us: float
    ios: int
    errors: int
    seconds: float
    interrupts_per_io: float
    messages_per_io: float
    mmio_doorbells_per_io: float
    vs_in_process: float | None = None
    """IOPS as a ratio of the in-process poll point at the same QD (poll rows)."""
    ratios: dict[str, float] = field(default_factory=dict)


def default_placement(cpus: Sequence[int] | None = None) -> tuple[int | None, tuple[int, ...] | None]:
    """(client CPU, server CPUs): on two CPUs or more, the client on the first and
    the server on the last; on one, no pinning."""
    avail = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(avail) < 2:
        return None, None
    return avail[0], (avail[-1],)


@contextmanager
def spawned_server(
    size_bytes: int, cpus: tuple[int, ...] | None = None, extra: Sequence[str] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``nvmefast serve`` on a temporary socket with one RAM namespace of
    ``size_bytes``, its I/O worker pinned to ``cpus`` (``--cpus``: its
    socket and Python threads stay free to run anywhere); yields (socket
    path, process)."""
    if size_bytes % (1 << 20):
        raise ConfigError(f"size_bytes {size_bytes} must be a whole number of MiB")
    with tempfile.TemporaryDirectory(prefix="nvmefast-vu-") as d:
        path = os.path.join(d, "s")
        cmd = [
            sys.executable, "-m", "nvmefast.cli", "serve", "--socket", path,
            # The doorbell page is offered (mmap), whatever serve's default:
            # the client picks page, shadow or trap per point.
            "--namespace", f"ram:{size_bytes >> 20}M", "--doorbells", "mmap", "--log-level", "warning", *extra,
        ]
        if cpus:
            cmd += ["--cpus", ",".join(str(c) for c in cpus)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(path):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise StateError(f"nvmefast serve exited with {proc.returncode}: {err.strip()}")
                if time.monotonic() > deadline:
                    raise StateError(f"nvmefast serve did not listen on {path} within 30 s")
                time.sleep(0.02)
            yield path, proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


@contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin the calling thread to ``cpus`` (threads it starts inherit them)."""
    if not cpus:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def measure_vfio_floors(memcpy_bytes: int, seconds: float = 1.0) -> VfioFloors:
    """The in-process bench's floors plus a UNIX-socket request/reply round trip."""
    f = measure_floors(memcpy_bytes, seconds)
    _core.floor_unix_socket_rtt(200, 0.2)
    unix = _core.floor_unix_socket_rtt(1_000_000, seconds / 2)
    return VfioFloors(f.eventfd_rtt_ns, f.shm_rtt_ns, unix, f.memcpy_4k_per_s)


def vfio_point(path: str, mode: str, doorbell: str, qd: int, r: dict[str, float], floors: VfioFloors) -> VfioPoint:
    """A ``VfioPoint`` from the figures ``VfioUserBench.point`` (or
    ``BenchSession.drive``) returned, with its floor ratios."""
    b = point_from(mode, qd, r, Floors(floors.eventfd_rtt_ns, floors.shm_rtt_ns, floors.memcpy_4k_per_s), "ram")
    p = VfioPoint(
        path=path,
        doorbell=doorbell,
        messages_per_io=r.get("messages", 0) / max(1, b.ios),
        **{k: v for k, v in asdict(b).items() if k not in ("doorbells_per_io", "ratios")},
    )
    mean_ns = p.mean_us * 1000
    p.ratios = {
        "latency_vs_eventfd_rtt": mean_ns / floors.eventfd_rtt_ns,
        "latency_vs_shm_rtt": mean_ns / floors.shm_rtt_ns,
        "latency_vs_unix_socket_rtt": mean_ns / floors.unix_socket_rtt_ns,
        "iops_vs_memcpy": p.kiops * 1000 / floors.memcpy_4k_per_s,
    }
    return p


@dataclass
class VfioResult:
    """What a run measured."""

    floors: VfioFloors
    points: list[VfioPoint]
    verified_blocks: int
    mismatched_blocks: int
    info: dict[str, Any]
    placement: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    """Doorbell modes left out because the server does not offer them, and why."""


def _check(cfg: VfioBenchConfig) -> None:
    if not cfg.qds or any(not 1 <= q <= 1023 for q in cfg.qds):
        raise ConfigError(f"qds {cfg.qds} must be queue depths in 1..1023")
    for m in cfg.modes:
        if m not in ("poll", "irq"):
            raise ConfigError(f"mode {m!r} must be 'poll' or 'irq'")
    for d in cfg.doorbells or ():
        if d not in DOORBELLS:
            raise ConfigError(f"doorbell {d!r} must be one of {', '.join(DOORBELLS)}")
    if not 0 < cfg.seconds <= 600:
        raise ConfigError(f"seconds {cfg.seconds} must be in (0, 600]")
    if not 0 <= cfg.verify_blocks <= 1 << 16:
        raise ConfigError(f"verify_blocks {cfg.verify_blocks} must be in 0..65536")
    if cfg.socket is None and (cfg.size_bytes <= 0 or cfg.size_bytes % (1 << 20)):
        raise ConfigError(f"size_bytes {cfg.size_bytes} must be a positive whole number of MiB")
    allowed = os.sched_getaffinity(0)
    for cpu in ((cfg.client_cpu,) if cfg.client_cpu is not None else ()) + (cfg.server_cpus or ()):
        if cpu not in allowed:
            raise ConfigError(f"CPU {cpu} is not one this process may run on ({sorted(allowed)}): pick from those")
    if cfg.server_cpus is not None and not cfg.server_cpus:
        raise ConfigError("server_cpus must name at least one CPU (or be None for the default placement)")
    if cfg.socket is not None and cfg.server_cpus is not None:
        raise ConfigError("server_cpus places a spawned server: pin your own server with `nvmefast serve` options")


def run_vfio_bench(cfg: VfioBenchConfig, progress: Callable[[str], None] | None = None) -> VfioResult:
    """Run the sweep of ``cfg`` against its server (spawned when ``cfg.socket`` is None)."""
    _check(cfg)
    say = progress or (lambda _m: None)
    client_cpu, server_cpus = default_placement()
    if cfg.client_cpu is not None:
        client_cpu = cfg.client_cpu
    if cfg.server_cpus is not None:
        server_cpus = cfg.server_cpus
    say("measuring floors (eventfd ping-pong, shared-memory ping-pong, UNIX-socket round trip, 4 KiB memcpy)")
    floors = measure_vfio_floors(min(cfg.size_bytes, 1 << 30))
    placement: dict[str, Any] = {"client_cpu": client_cpu}
    client_cpus = None if client_cpu is None else (client_cpu,)
    with _server(cfg, server_cpus, placement) as sock, pinned(client_cpus):
        say(f"connecting to {sock}")
        client = _core.VfioUserBench(sock)
        session: BenchSession | None = None
        try:
            info = dict(client.info())
            doorbells, skipped = offered_doorbells(info, cfg.doorbells, sock)
            for mode, why in skipped.items():
                say(f"skipping {mode} doorbells: {why}")
            if cfg.fill:
                t = time.monotonic()
                say(f"filling namespace 1 ({info['lbas'] * info['lba_size'] >> 20} MiB) through the server")
                r = client.fill()
                say(f"  wrote {r['ios']} blocks in {time.monotonic() - t:.1f} s")
            mismatched = client.verify(cfg.verify_blocks) if cfg.verify_blocks else 0
            if mismatched:
                raise StateError(f"{mismatched} of {cfg.verify_blocks} blocks read back different from what was written")
            if cfg.compare:
                size = info["lbas"] * info["lba_size"]
                # The in-process worker where the server's runs, its host thread where the client's does.
                with pinned(server_cpus):
                    session = BenchSession(BenchConfig(size_bytes=size, lba_size=int(info["lba_size"])))
                if cfg.fill:
                    say(f"filling the in-process namespace ({size >> 20} MiB)")
                    session.fill()
            points = _sweep(cfg, doorbells, client, session, floors, say)
        finally:
            client.close()
            if session is not None:
                session.close()
    return VfioResult(floors, points, cfg.verify_blocks, mismatched, info, placement, skipped)


def offered_doorbells(
    info: dict[str, Any], wanted: tuple[str, ...] | None, sock: str
) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the doorbell modes to measure, {mode left out: why}) for a server that
    answered ``VfioUserBench.info`` with ``info``. Modes asked for by name
    (``wanted``) that the server cannot do are a StateError naming the fix."""
    # mode -> (what the server lacks, what would offer it)
    cannot: dict[str, tuple[str, str]] = {}
    if not info["doorbell_page"]:
        cannot["page"] = ("offers no doorbell page (it traps doorbell writes)", "`nvmefast serve --doorbells mmap`")
    if wanted is None:
        return tuple(d for d in DOORBELLS if d not in cannot), {
            d: f"the server {cannot[d][0]}; {cannot[d][1]} offers it" for d in DOORBELLS if d in cannot
        }
    for d in wanted:
        if d in cannot:
            others = " or ".join(x for x in DOORBELLS if x not in cannot)
            raise StateError(
                f"the server at {sock} {cannot[d][0]}: serve with {cannot[d][1]}, or measure {others} "
                "(--doorbell; without it, bench measures every mode the server offers)"
            )
    return wanted, {}


@contextmanager
def _server(cfg: VfioBenchConfig, cpus: tuple[int, ...] | None, placement: dict[str, Any]) -> Iterator[str]:
    if cfg.socket is not None:
        placement["server"] = cfg.socket
        yield cfg.socket
        return
    with spawned_server(cfg.size_bytes, cpus, cfg.server_args) as (path, proc):
        placement["server"] = "spawned"
        placement["server_cpus"] = list(cpus) if cpus else None
        placement["server_pid"] = proc.pid
        yield path


def _sweep(
    cfg: VfioBenchConfig,
    doorbells: tuple[str, ...],
    client: Any,
    session: BenchSession | None,
    floors: VfioFloors,
    say: Callable[[str], None],
) -> list[VfioPoint]:
    # Shadow doorbells last at each QD: turning them off again takes a controller reset.
    order = sorted(doorbells, key=lambda d: d == "shadow")
    combos = [(m, d) for d in order for m in cfg.modes]
    per_qd = len(combos) + (1 if session is not None else 0)
    total = per_qd * len(cfg.qds)
    points: list[VfioPoint] = []
    n = 0
    for qd in cfg.qds:
        base: VfioPoint | None = None
        if session is not None:
            n += 1
            say(f"[{n}/{total}] in-process poll QD{qd} for {cfg.seconds:g} s")
            base = vfio_point("in-process", "poll", "mmio", qd, session.drive("poll", qd, cfg.seconds), floors)
            points.append(base)
        for mode, doorbell in combos:
            n += 1
            say(f"[{n}/{total}] vfio-user {mode} {doorbell} QD{qd} for {cfg.seconds:g} s")
            r = client.point(qd=qd, mode=mode, doorbell=doorbell, seconds=cfg.seconds)
            p = vfio_point("vfio-user", mode, doorbell, qd, r, floors)
            if base is not None and mode == "poll" and base.kiops > 0:
                p.vs_in_process = p.kiops / base.kiops
            points.append(p)
    return points


def format_vfio_table(cfg: VfioBenchConfig, res: VfioResult) -> str:
    """The human table: one row per point, with messages per I/O and floor ratios."""
    f = res.floors
    where = res.placement.get("server")
    lines = [
        f"nvmefast bench --vfio-user: 4 KiB random reads through {'a spawned nvmefast serve' if where == 'spawned' else where}, "
        f"{cfg.seconds:g} s per point; client on CPU {res.placement.get('client_cpu')}, "
        f"server on CPUs {res.placement.get('server_cpus')}",
        f"floors: eventfd ping-pong {f.eventfd_rtt_ns / 1000:.2f} us | shared-memory ping-pong {f.shm_rtt_ns / 1000:.3f} us | "
        f"UNIX-socket round trip {f.unix_socket_rtt_ns / 1000:.2f} us | random 4 KiB memcpy {f.memcpy_4k_per_s / 1e6:.2f} M/s",
        f"data path: {res.verified_blocks - res.mismatched_blocks}/{res.verified_blocks} blocks written and read back intact",
        *(f"skipped {mode} doorbells: {why}" for mode, why in res.skipped.items()),
        "",
        f"{'path':<11}{'mode':<5}{'doorbell':<9}{'QD':>3}{'KIOPS':>9}{'mean us':>9}{'p50 us':>8}{'p99 us':>8}"
        f"{'irq/IO':>7}{'msg/IO':>8}  vs",
    ]
    for p in res.points:
        if p.vs_in_process is not None:
            vs = f"{p.vs_in_process:.2f}x in-process"
        elif p.mode == "irq":
            vs = f"latency {p.ratios['latency_vs_eventfd_rtt']:.2f}x eventfd RTT"
        else:
            vs = f"latency {p.ratios['latency_vs_shm_rtt']:.1f}x shm RTT"
        err = f"  ({p.errors} errors!)" if p.errors else ""
        lines.append(
            f"{p.path:<11}{p.mode:<5}{p.doorbell:<9}{p.qd:>3}{p.kiops:>9.1f}{p.mean_us:>9.2f}{p.p50_us:>8.2f}"
            f"{p.p99_us:>8.2f}{p.interrupts_per_io:>7.2f}{p.messages_per_io:>8.3f}  {vs}{err}"
        )
    lines.append("")
    lines.append("SPDK nvmf_tgt (vfio-user, malloc bdev) + spdk_nvme_perf on this kind of machine: "
                 "664 K / 1.03 M / 1.17 M / 1.22 M IOPS at QD 1/4/16/64, 1.50 us at QD 1")
    return "\n".join(lines)


def vfio_json(cfg: VfioBenchConfig, res: VfioResult) -> dict[str, Any]:
    """The same figures as a JSON-able dict."""
    return {
        "tool": "nvmefast bench --vfio-user",
        "version": _core.__version__,
        "config": asdict(cfg),
        "floors": asdict(res.floors),
        "points": [asdict(p) for p in res.points],
        "verified_blocks": res.verified_blocks,
        "mismatched_blocks": res.mismatched_blocks,
        "namespace": res.info,
        "placement": res.placement,
        "skipped": res.skipped,
        **run_info(),
    }
