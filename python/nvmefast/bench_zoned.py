"""``nvmefast bench --zoned``: what zones cost.

Three workloads at each queue depth and completion mode, driven by the
core's host loop (``_core.bench_io``) like ``nvmefast bench``: 4 KiB
sequential writes on a conventional RAM namespace (the baseline), 4 KiB
sequential writes through the zones of a zoned RAM namespace of the same
size (each zone from its start to its capacity, then the next), and 4 KiB
Zone Appends (each zone filled by appends at the queue depth, then the
next). When every zone is used the host drains its queue and resets them
all; that time is reported apart, not counted in the writes' figures.
Then the rate of Zone Management Send Finish and Reset (QD 1, a zone at a
time, one block written first). Every row prints its ratio to the
baseline's and to the floor (random 4 KiB memcpy, the copy every write is).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from nvmefast.bench import BenchConfig, BenchSession, Floors, measure_floors
from nvmefast.config import NamespaceConfig, ZoneConfig

__all__ = ["ZonedResult", "format_zoned_table", "run_zoned_bench", "zoned_json"]

APPEND_TARGET = 0.9
"""Zone Append at QD 64 against plain writes: the issue's target."""
ZONEWRITE_TARGET = 0.95
"""Sequential writes through zones against plain ones: the issue's target."""
WORKLOADS = ("seqwrite", "zonewrite", "zoneappend")
ROUNDS = 5
"""Rounds of the target check: each runs the three workloads back to back at
the top queue depth; the median of the rounds' ratios is the figure (one
round's ratio swings with whatever else the machine runs)."""


@dataclasses.dataclass
class ZonedResult:
    """The figures of one ``--zoned`` run."""

    floors: Floors
    zone_bytes: int
    # (workload, mode, qd) -> the host loop's figures
    points: dict[tuple[str, str, int], dict[str, float]]
    mgmt: dict[str, float]
    # (workload, mode) -> each round's IOPS ratio to plain writes at the top QD
    rounds: dict[tuple[str, str], list[float]] = dataclasses.field(default_factory=dict)


def run_zoned_bench(cfg: BenchConfig, zone_bytes: int = 16 << 20,
                    progress: Callable[[str], None] | None = None) -> ZonedResult:
    """Measure every (workload, mode, QD) point of ``cfg`` and the Finish/Reset rates."""
    say = progress or (lambda _m: None)
    say("measuring floors (eventfd ping-pong, shared-memory ping-pong, 4 KiB memcpy)")
    floors = measure_floors(min(cfg.size_bytes, 1 << 30))
    plain = NamespaceConfig(size_bytes=cfg.size_bytes, lba_size=cfg.lba_size)
    zoned = dataclasses.replace(plain, zones=ZoneConfig(size_bytes=zone_bytes))
    points: dict[tuple[str, str, int], dict[str, float]] = {}
    total = len(cfg.qds) * len(cfg.modes) * len(WORKLOADS)
    n = 0
    # Both controllers at once, their points back to back: a shared
    # machine drifts, and the ratios are what is compared.
    with BenchSession(cfg, plain) as p, BenchSession(cfg, zoned) as z:
        say(f"filling both {cfg.size_bytes >> 20} MiB namespaces through the devices (sequential writes, QD 64)")
        p.fill()
        z.drive("poll", 64, 600.0, "zonefill")
        for mode in cfg.modes:
            for qd in cfg.qds:
                for workload in WORKLOADS:
                    n += 1
                    say(f"[{n}/{total}] {workload} {mode} QD{qd} for {cfg.seconds:g} s")
                    session = p if workload == "seqwrite" else z
                    points[(workload, mode, qd)] = session.drive(mode, qd, cfg.seconds, workload)
        rounds: dict[tuple[str, str], list[float]] = {}
        top = max(cfg.qds)
        for mode in cfg.modes:
            for i in range(ROUNDS):
                say(f"target check: {mode} QD{top}, round {i + 1}/{ROUNDS}")
                base = p.drive(mode, top, cfg.seconds / 2, "seqwrite")["iops"]
                for workload in WORKLOADS[1:]:
                    got = z.drive(mode, top, cfg.seconds / 2, workload)["iops"]
                    rounds.setdefault((workload, mode), []).append(got / max(base, 1e-9))
        say(f"zone Finish and Reset rates for {cfg.seconds:g} s")
        mgmt = z.drive("poll", 1, cfg.seconds, "zonemgmt")
    return ZonedResult(floors, zone_bytes, points, mgmt, rounds)


def _rate(count: float, ns: float) -> float:
    return count / (ns * 1e-9) if ns else 0.0


def format_zoned_table(cfg: BenchConfig, r: ZonedResult) -> str:
    """The human table: each zoned row beside the plain writes at the same point."""
    f = r.floors
    lines = [
        f"nvmefast bench --zoned: 4 KiB writes, RAM namespaces of {cfg.size_bytes >> 20} MiB (LBA {cfg.lba_size} B), "
        f"zones of {r.zone_bytes >> 20} MiB, {cfg.seconds:g} s per point",
        f"floors: eventfd ping-pong {f.eventfd_rtt_ns / 1000:.2f} us round trip | shared-memory ping-pong "
        f"{f.shm_rtt_ns / 1000:.3f} us | random 4 KiB memcpy {f.memcpy_4k_per_s / 1e6:.2f} M/s",
        "",
        f"{'workload':<11}{'mode':<6}{'QD':>4}{'KIOPS':>10}{'mean us':>10}{'p99 us':>10}"
        f"{'vs plain':>10}{'vs memcpy':>11}",
    ]
    for workload in WORKLOADS:
        for mode in cfg.modes:
            for qd in cfg.qds:
                p = r.points[(workload, mode, qd)]
                base = r.points[("seqwrite", mode, qd)]
                ratio = p["iops"] / base["iops"] if base["iops"] else 0.0
                lines.append(
                    f"{workload:<11}{mode:<6}{qd:>4}{p['iops'] / 1000:>10.1f}{p['mean_ns'] / 1000:>10.2f}"
                    f"{p['p99_ns'] / 1000:>10.2f}{ratio:>9.2f}x{p['iops'] / f.memcpy_4k_per_s:>10.2f}x"
                )
    lines.append("")
    top = max(cfg.qds)
    for workload, target in (("zoneappend", APPEND_TARGET), ("zonewrite", ZONEWRITE_TARGET)):
        for mode in cfg.modes:
            ratios = r.rounds.get((workload, mode), [])
            got = statistics.median(ratios) if ratios else 0.0
            verdict = "meets" if got >= target else "BELOW"
            spread = f"{min(ratios):.2f}..{max(ratios):.2f}" if ratios else "-"
            lines.append(
                f"target: {workload} {mode} QD{top} {got:.2f}x plain writes (median of {len(ratios)} back-to-back "
                f"rounds, {spread}; {verdict} >= {target}x)"
            )
    m = r.mgmt
    resets = sum(p.get("zone_resets", 0) for p in r.points.values())
    reset_ns = sum(p.get("zone_reset_ns", 0) for p in r.points.values())
    lines.append(
        f"zone management (QD 1, a block written first): Finish {_rate(m['zone_finishes'], m['zone_finish_ns']) / 1000:.1f} K/s, "
        f"Reset {_rate(m['zone_resets'], m['zone_reset_ns']) / 1000:.1f} K/s; "
        f"Reset of every zone between laps: {_rate(resets, reset_ns) / 1000:.1f} K zones/s"
    )
    return "\n".join(lines)


def zoned_json(cfg: BenchConfig, r: ZonedResult) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "config": dataclasses.asdict(cfg),
        "zone_bytes": r.zone_bytes,
        "floors": dataclasses.asdict(r.floors),
        "points": [{"workload": w, "mode": m, "qd": q, **p} for (w, m, q), p in r.points.items()],
        "zone_management": r.mgmt,
        "target_rounds": [{"workload": w, "mode": m, "ratios": v} for (w, m), v in r.rounds.items()],
    }


def failed(r: ZonedResult) -> Sequence[str]:
    """The points that saw a failed command."""
    return [f"{w} {m} QD{q}" for (w, m, q), p in r.points.items() if p["errors"]]
