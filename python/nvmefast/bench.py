"""``nvmefast bench``: the QEMU thread's table, measured on this controller.

4 KiB random reads at each queue depth, completions taken by interrupt
(an eventfd per vector) or by polling the CQ phase tag. The controller is
brought up the way Linux does it (through the admin queue, by
:class:`nvmefast.testing.Host`); the I/O itself is driven by the core's
Rust host loop (``_core.bench_io``) so the figures measure the device, not
the interpreter. The floors are measured in the same run and every result
is printed as a ratio of its floor, because these machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmefast import _core
from nvmefast.config import ControllerConfig, NamespaceConfig
from nvmefast.controller import Controller
from nvmefast.testing import Host

__all__ = [
    "BenchConfig", "BenchSession", "Floors", "Point", "cpu_model", "format_table", "measure_floors", "point_from",
    "run_bench", "run_info",
]

BLOCK = 4096


@dataclass(frozen=True)
class BenchConfig:
    """What ``nvmefast bench`` runs."""

    qds: tuple[int, ...] = (1, 4, 16, 64)
    modes: tuple[str, ...] = ("irq", "poll")
    seconds: float = 2.0
    backend: str = "ram"
    size_bytes: int = 1 << 30
    lba_size: int = 512
    poll_us: int = 50
    doorbell: str = "mmio"
    """mmio, shadow (Doorbell Buffer Config + EventIdx), page (the shared
    doorbell page, workers poll) or ioeventfd (page + an eventfd per doorbell)."""
    iothreads: int = 1
    """I/O worker threads; with more than one, one queue pair per iothread,
    each driven by its own host thread, and the figures are their sum."""
    faults: tuple[str, ...] = ()
    """Fault rules (text form) installed on the controller: one that never
    fires (``nsid=99 -> cfs``) measures what an armed rule table costs."""


@dataclass
class Floors:
    """The raw primitives, measured in the same run."""

    eventfd_rtt_ns: float
    shm_rtt_ns: float
    memcpy_4k_per_s: float


@dataclass
class Point:
    """One (mode, queue depth) result."""

    mode: str
    qd: int
    kiops: float
    mean_us: float
    p50_us: float
    p99_us: float
    ios: int
    errors: int
    seconds: float
    interrupts_per_io: float
    doorbells_per_io: float
    mmio_doorbells_per_io: float = 0.0
    ratios: dict[str, float] = field(default_factory=dict)


def measure_floors(memcpy_bytes: int, seconds: float = 1.0) -> Floors:
    """Measure eventfd ping-pong, shared-memory ping-pong and random 4 KiB memcpy."""
    _core.floor_eventfd_pingpong(200, 0.2)  # wake both threads' paths once, untimed
    eventfd_rtt = _core.floor_eventfd_pingpong(1_000_000, seconds)
    shm_rtt = _core.floor_shm_pingpong(100_000_000, seconds / 2)
    memcpy = _core.floor_memcpy_4k(memcpy_bytes, seconds)
    return Floors(eventfd_rtt, shm_rtt, memcpy)


def _ratios(p: Point, floors: Floors, backend: str) -> dict[str, float]:
    mean_ns = p.mean_us * 1000
    r = {
        # Round-trip latency as a multiple of the primitive the host waits on.
        "latency_vs_eventfd_rtt": mean_ns / floors.eventfd_rtt_ns,
        "latency_vs_shm_rtt": mean_ns / floors.shm_rtt_ns,
    }
    if backend == "ram":
        # Every RAM read is one 4 KiB copy out of the namespace.
        r["iops_vs_memcpy"] = p.kiops * 1000 / floors.memcpy_4k_per_s
    return r


def _queue_entries(qd: int, mqes: int) -> int:
    return min(mqes + 1, max(16, 2 * qd))


class BenchSession:
    """A controller brought up through its admin queue, ready to drive points.

    ``ns`` (default: one of ``cfg``'s size, LBA size and backend) is the
    namespace. Use as a context manager; :meth:`drive` creates a fresh I/O queue pair
    for each point (so the Rust host loop starts from an empty ring) and
    deletes it afterwards.
    """

    def __init__(self, cfg: BenchConfig, ns: NamespaceConfig | None = None) -> None:
        self.cfg = cfg
        self.ns = ns or NamespaceConfig(size_bytes=cfg.size_bytes, lba_size=cfg.lba_size, backend=cfg.backend)
        pairs = max(1, cfg.iothreads)
        # A doorbell page written with no ioeventfd wakes nobody: workers
        # must poll. Everything else keeps the adaptive default.
        polling = "poll" if cfg.doorbell == "page" else "adaptive"
        ccfg = ControllerConfig(
            namespaces=[self.ns],
            max_io_queue_pairs=pairs,
            poll_us=cfg.poll_us,
            iothreads=cfg.iothreads,
            polling=polling,
        )
        self.controller = Controller(ccfg)
        for rule in cfg.faults:
            self.controller.faults.add(rule)
        self._page: tuple[int, int, int] | None = None
        self._shadow: tuple[int, int] | None = None
        try:
            self.host = Host(self.controller, memory_bytes=32 << 20)
            self.host.enable()
            self.host.set_num_queues(pairs, pairs)
            if cfg.doorbell == "shadow":
                pages = self.host.enable_shadow_doorbells()
                self._shadow = (pages.db, pages.ei)
            if cfg.doorbell in ("page", "ioeventfd"):
                self._page = self.controller.doorbell_page_fd()
        except BaseException:
            self.controller.close()
            raise

    def __enter__(self) -> BenchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear down the host and the controller."""
        if self._page is not None:
            os.close(self._page[0])
            self._page = None
        self.host.close()
        self.controller.close()

    def fill(self, prinfo: int = 0) -> int:
        """Write every block of the namespace once, through the device; returns blocks written."""
        return int(self.drive("poll", 64, 1.0, "fill", prinfo=prinfo)["ios"])

    def drive(
        self,
        mode: str,
        qd: int,
        seconds: float,
        workload: str = "randread",
        delivery: Callable[[Controller], None] | None = None,
        ring_each: bool = False,
        queues: int = 1,
        prinfo: int = 0,
    ) -> dict[str, float]:
        """Run one point on fresh queue pairs; returns ``_core.bench_io``'s figures.

        ``delivery``, with ``mode="poll"``: the CQ is created with interrupts
        enabled and ``delivery(controller)`` rewires vector 1 (an irqfd, the
        KVM ioctl, a callback) while the host keeps polling, so the figures
        show what each way of delivering interrupts costs the device.
        ``queues`` > 1: that many queue pairs at ``qd`` each, each driven by
        its own host thread; the figures are summed (latency: I/O-weighted).
        ``prinfo``: PRINFO of every command (ILBRT = SLBA).
        """
        host = self.host
        region = host.mem.regions[0]
        entries = _queue_entries(qd, host.mqes)
        irq = mode == "irq" or delivery is not None
        setups: list[dict[str, Any]] = []
        fds: list[int] = []
        try:
            for qid in range(1, queues + 1):
                qp = host.create_io_queue_pair(qid, entries=entries, vector=qid, irq=irq)
                buf = host.alloc(qd * BLOCK)
                kw: dict[str, Any] = dict(
                    mem_fd=region.fd,
                    mem_iova=region.iova,
                    mem_size=region.size,
                    sqid=qid,
                    sq_iova=qp.sq_iova,
                    cq_iova=qp.cq_iova,
                    qsize=entries,
                    buf_iova=buf,
                    nsid=1,
                    ns_lbas=self.ns.lbas,
                    lba_size=self.ns.lba_size,
                    block_size=BLOCK,
                    qd=qd,
                    seconds=seconds,
                    mode=mode,
                    eventfd=host.vector_fd(qid) if irq else None,
                    workload=workload,
                    ring_each=ring_each,
                    doorbell=self.cfg.doorbell,
                    shadow=self._shadow,
                    page_fd=self._page,
                    doorbell_stride=4 << self.controller.config.doorbell_stride,
                    prinfo=prinfo,
                )
                if self.cfg.doorbell == "ioeventfd":
                    pair = (os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC))
                    fds.extend(pair)
                    self.controller.set_doorbell_eventfd(2 * qid, pair[0])
                    self.controller.set_doorbell_eventfd(2 * qid + 1, pair[1])
                    kw["doorbell_eventfds"] = pair
                setups.append(kw)
            if delivery is not None:
                delivery(self.controller)
            engine = self.controller.engine
            if queues == 1:
                return _core.bench_io(engine, **setups[0])
            results: list[dict[str, float]] = [{} for _ in setups]
            errors: list[BaseException] = []

            def run(i: int) -> None:
                try:
                    results[i] = _core.bench_io(engine, **setups[i])
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(setups))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            return _sum_results(results)
        finally:
            for kw in setups:
                qid = int(kw["sqid"])
                host.free(int(kw["buf_iova"]))
                host.delete_io_queue_pair(qid)
                if self.cfg.doorbell == "ioeventfd":
                    self.controller.set_doorbell_eventfd(2 * qid, None)
                    self.controller.set_doorbell_eventfd(2 * qid + 1, None)
            for fd in fds:
                os.close(fd)
            if delivery is not None:
                # Give vector 1 back to the host's own eventfd.
                self.controller.set_vector_eventfd(1, host.vector_fd(1))


def _sum_results(results: Sequence[dict[str, float]]) -> dict[str, float]:
    ios = sum(r["ios"] for r in results)
    total: dict[str, float] = {
        k: sum(r[k] for r in results)
        for k in ("ios", "errors", "iops", "interrupts", "doorbells", "mmio_doorbells", "eventfd_doorbells")
    }
    for k in ("mean_ns", "p50_ns", "p99_ns"):
        total[k] = sum(r[k] * r["ios"] for r in results) / max(1.0, ios)
    total["seconds"] = max(r["seconds"] for r in results)
    return total


def point_from(mode: str, qd: int, r: dict[str, float], floors: Floors, backend: str) -> Point:
    """A :class:`Point` from ``bench_io``'s figures, with its floor ratios."""
    ios = max(1, int(r["ios"]))
    p = Point(
        mode=mode,
        qd=qd,
        kiops=r["iops"] / 1000,
        mean_us=r["mean_ns"] / 1000,
        p50_us=r["p50_ns"] / 1000,
        p99_us=r["p99_ns"] / 1000,
        ios=int(r["ios"]),
        errors=int(r["errors"]),
        seconds=r["seconds"],
        interrupts_per_io=r["interrupts"] / ios,
        doorbells_per_io=r["doorbells"] / ios,
        mmio_doorbells_per_io=r.get("mmio_doorbells", r["doorbells"]) / ios,
    )
    p.ratios = _ratios(p, floors, backend)
    return p


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> tuple[Floors, list[Point]]:
    """Run every (mode, QD) point of ``cfg``; returns the floors and the points."""
    say = progress or (lambda _m: None)
    total = len(cfg.qds) * len(cfg.modes)
    points: list[Point] = []
    say("measuring floors (eventfd ping-pong, shared-memory ping-pong, 4 KiB memcpy)")
    floors = measure_floors(min(cfg.size_bytes, 1 << 30))
    with BenchSession(cfg) as session:
        if cfg.backend == "ram":
            say(f"filling the {cfg.size_bytes >> 20} MiB namespace through the device (sequential writes, QD 64)")
            t = time.monotonic()
            blocks = session.fill()
            say(f"  wrote {blocks} blocks in {time.monotonic() - t:.1f} s")
        n = 0
        for mode in cfg.modes:
            for qd in cfg.qds:
                n += 1
                say(f"[{n}/{total}] {mode} QD{qd} for {cfg.seconds:g} s")
                r = session.drive(mode, qd, cfg.seconds, queues=max(1, cfg.iothreads))
                points.append(point_from(mode, qd, r, floors, cfg.backend))
    return floors, points


def format_table(cfg: BenchConfig, floors: Floors, points: Sequence[Point]) -> str:
    """The human table: one row per point, each with its ratio to the floor."""
    lines = [
        f"nvmefast bench: 4 KiB random reads, {cfg.backend} namespace of {cfg.size_bytes >> 20} MiB "
        f"(LBA {cfg.lba_size} B), {cfg.seconds:g} s per point, worker polls {cfg.poll_us} us, "
        f"doorbells by {cfg.doorbell}, {cfg.iothreads} iothread(s)"
        + (f" ({cfg.iothreads} queue pairs, one host thread each, QD per pair)" if cfg.iothreads > 1 else "")
        + "".join(f"\nfault rule: {rule}" for rule in cfg.faults),
        f"floors: eventfd ping-pong {floors.eventfd_rtt_ns / 1000:.2f} us round trip | "
        f"shared-memory ping-pong {floors.shm_rtt_ns / 1000:.3f} us | "
        f"random 4 KiB memcpy {floors.memcpy_4k_per_s / 1e6:.2f} M/s",
        "",
        f"{'mode':<5}{'QD':>4}{'KIOPS':>10}{'mean us':>10}{'p50 us':>9}{'p99 us':>9}"
        f"{'irq/IO':>8}{'db/IO':>7}{'mmio/IO':>9}  vs floor",
    ]
    for p in points:
        if p.mode == "irq":
            vs = f"latency {p.ratios['latency_vs_eventfd_rtt']:.2f}x eventfd RTT"
        else:
            vs = f"latency {p.ratios['latency_vs_shm_rtt']:.1f}x shm RTT"
        if "iops_vs_memcpy" in p.ratios:
            vs += f", IOPS {p.ratios['iops_vs_memcpy']:.2f}x memcpy"
        err = f"  ({p.errors} errors!)" if p.errors else ""
        lines.append(
            f"{p.mode:<5}{p.qd:>4}{p.kiops:>10.1f}{p.mean_us:>10.2f}{p.p50_us:>9.2f}{p.p99_us:>9.2f}"
            f"{p.interrupts_per_io:>8.2f}{p.doorbells_per_io:>7.2f}{p.mmio_doorbells_per_io:>9.3f}  {vs}{err}"
        )
    lines.append("")
    lines.append("QEMU hw/nvme (qemu-devel 2022, fio in a guest): 38/123/210/329 KIOPS at QD 1/4/16/64")
    return "\n".join(lines)


def to_json(cfg: BenchConfig, floors: Floors, points: Sequence[Point]) -> dict[str, Any]:
    """The same figures as a JSON-able dict."""
    return {
        "tool": "nvmefast bench",
        "version": _core.__version__,
        "config": asdict(cfg),
        "floors": asdict(floors),
        "points": [asdict(p) for p in points],
        **run_info(),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where it says none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_info() -> dict[str, Any]:
    """Where and when a result was measured: the ``machine`` and ``time`` of every bench JSON."""
    return {
        "machine": {
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
