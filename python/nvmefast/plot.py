"""Figures of ``nvmefast bench`` results: KIOPS and mean latency against queue depth.

Drawn from the document ``nvmefast bench --json`` writes, in each of its
forms (in-process, ``--vfio-user``, ``--backend file``, ``--irq``), so a
figure is drawn as a run ends (``nvmefast bench --plot out.png``) or later
from its JSON (``nvmefast plot RESULT.json -o out.png``). Two panels: KIOPS
and mean latency, each against QD on a log-2 axis; one line per mode; the
floors measured in the same run as reference lines (the 4 KiB memcpy rate
as an IOPS line, the eventfd and shared-memory round trips as latency
lines; a file run's floor, fio on the same file, as a dashed line per
mode); titled with the machine's CPU model, CPU count and the date.

:func:`figure_data` reads a document into lines without matplotlib;
:func:`draw` needs matplotlib (``pip install 'nvmefast[plot]'``) and uses
its Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nvmefast.errors import ConfigError, NvmeFastError

__all__ = [
    "DPI",
    "INSTALL_HINT",
    "FigureData",
    "Line",
    "PlotUnavailableError",
    "Reference",
    "draw",
    "figure_data",
    "load_result",
    "plot_result",
    "require_matplotlib",
]

WIDTH_IN, HEIGHT_IN, DPI = 12.0, 5.0, 100
"""The figure's size in inches and its resolution: a 1200 x 500 pixel PNG."""
INSTALL_HINT = "pip install 'nvmefast[plot]'"


class PlotUnavailableError(NvmeFastError):
    """matplotlib, which drawing needs, is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` (saying how to install it) unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise PlotUnavailableError(f"drawing a plot needs matplotlib ({e}): {INSTALL_HINT}") from None


@dataclass
class Line:
    """One mode's points: KIOPS and mean latency at each QD."""

    label: str
    qds: list[int] = field(default_factory=list)
    kiops: list[float] = field(default_factory=list)
    mean_us: list[float] = field(default_factory=list)
    group: str = ""
    """Lines of one group share a colour (a mode and its floor)."""
    dashed: bool = False


@dataclass
class Reference:
    """A floor measured in the same run: a horizontal line in one panel."""

    label: str
    value: float
    panel: str
    """``"kiops"`` or ``"latency"`` (us)."""


@dataclass
class FigureData:
    """What one figure shows."""

    title: str
    subtitle: str
    lines: list[Line]
    references: list[Reference]


def load_result(path: str) -> dict[str, Any]:
    """Read what ``nvmefast bench --json`` wrote (ConfigError if it is not that)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON ({e}); give what `nvmefast bench --json` wrote") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a `nvmefast bench --json` result")
    return doc


def _title(doc: Mapping[str, Any], variant: str) -> str:
    machine = doc.get("machine") or {}
    cpu = machine.get("cpu_model") or "unknown CPU"
    cpus = machine.get("cpus")
    date = str(doc.get("time", ""))[:10] or "undated"
    return f"nvmefast bench{variant} on {cpu}, {cpus} CPUs, {date}"


def _add(lines: dict[tuple[str, ...], Line], key: tuple[str, ...], label: str, qd: int, kiops: float,
         mean_us: float, group: str, dashed: bool = False) -> None:
    line = lines.setdefault(key, Line(label, group=group, dashed=dashed))
    line.qds.append(int(qd))
    line.kiops.append(float(kiops))
    line.mean_us.append(float(mean_us))


def _round_trips(floors: Mapping[str, Any]) -> list[Reference]:
    refs = [Reference("eventfd round trip", floors["eventfd_rtt_ns"] / 1000, "latency"),
            Reference("shared-memory round trip", floors["shm_rtt_ns"] / 1000, "latency")]
    if "unix_socket_rtt_ns" in floors:
        refs.append(Reference("UNIX-socket round trip", floors["unix_socket_rtt_ns"] / 1000, "latency"))
    return refs


def _memcpy(floors: Mapping[str, Any]) -> Reference:
    return Reference("random 4 KiB memcpy", floors["memcpy_4k_per_s"] / 1000, "kiops")


def figure_data(doc: Mapping[str, Any]) -> FigureData:
    """The lines and reference lines of a ``nvmefast bench --json`` document."""
    tool, kind = doc.get("tool"), doc.get("kind")
    lines: dict[tuple[str, ...], Line] = {}
    refs: list[Reference] = []
    if tool == "nvmefast bench" and kind == "file":
        for p in doc["points"]:
            name = f"{p['workload']} {p['mode']}"
            _add(lines, (name,), f"{name}: nvmefast", p["qd"], p["ours"]["kiops"], p["ours"]["mean_us"], name)
            if p.get("floor"):
                f = p["floor"]
                _add(lines, (name, "floor"), f"{name}: {f['kind']} (floor)", p["qd"], f["kiops"], f["mean_us"],
                     name, dashed=True)
        ns = doc.get("namespace") or {}
        fil = doc.get("file") or {}
        title = _title(doc, " --backend file")
        sub = (f"4 KiB random I/O on {fil.get('path')} ({fil.get('filesystem')}), io {ns.get('io')}, "
               f"cache {ns.get('cache')}; dashed: the floor on the same file")
    elif tool == "nvmefast bench --vfio-user":
        for p in doc["points"]:
            name = f"{p['path']} {p['mode']} {p['doorbell']}"
            _add(lines, (name,), name, p["qd"], p["kiops"], p["mean_us"], name, dashed=p["path"] != "vfio-user")
        refs = [_memcpy(doc["floors"]), *_round_trips(doc["floors"])]
        title = _title(doc, " --vfio-user")
        skipped = doc.get("skipped") or {}
        sub = "4 KiB random reads through a vfio-user client; dashed: the same reads in-process" + "".join(
            f"; {mode} skipped: {why}" for mode, why in skipped.items())
    elif tool == "nvmefast bench --irq":
        for section, rows in (("end to end", doc["end_to_end"]), ("coalescing", doc["coalescing"])):
            for r in rows:
                name = f"{section}: {r['route']}"
                _add(lines, (name,), name, r["qd"], r["kiops"], r["mean_us"], name, dashed=section == "coalescing")
        refs = _round_trips(doc["floors"])
        title = _title(doc, " --irq")
        sub = "null namespace; end to end: host polls, only the interrupt route differs; dashed: coalescing"
    elif tool == "nvmefast bench" and kind is None:
        cfg = doc["config"]
        for p in doc["points"]:
            _add(lines, (p["mode"],), p["mode"], p["qd"], p["kiops"], p["mean_us"], p["mode"])
        refs = _round_trips(doc["floors"])
        if cfg.get("backend") == "ram":
            refs.insert(0, _memcpy(doc["floors"]))
        title = _title(doc, "")
        sub = (f"4 KiB random reads, {cfg['backend']} namespace of {cfg['size_bytes'] >> 20} MiB, "
               f"doorbells by {cfg['doorbell']}, {cfg['iothreads']} iothread(s), {cfg['seconds']:g} s per point")
    else:
        raise ConfigError(f"not a `nvmefast bench --json` result (tool {tool!r}, kind {kind!r})")
    for line in lines.values():
        order = sorted(range(len(line.qds)), key=line.qds.__getitem__)
        line.qds = [line.qds[i] for i in order]
        line.kiops = [line.kiops[i] for i in order]
        line.mean_us = [line.mean_us[i] for i in order]
    return FigureData(title, sub, list(lines.values()), refs)


def draw(data: FigureData, path: str | os.PathLike[str]) -> None:
    """Draw ``data`` to ``path`` (the format from its extension: png, svg, pdf)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    _plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg: no display, same pixels everywhere
    fig.suptitle(f"{data.title}\n{data.subtitle}", fontsize=10)
    kiops_ax, lat_ax = fig.subplots(1, 2)
    groups = list(dict.fromkeys(line.group for line in data.lines))
    qds = sorted({q for line in data.lines for q in line.qds})
    for line in data.lines:
        style = dict(color=f"C{groups.index(line.group) % 10}", linestyle="--" if line.dashed else "-",
                     marker="o", markersize=4, label=line.label)
        kiops_ax.plot(line.qds, line.kiops, **style)
        lat_ax.plot(line.qds, line.mean_us, **style)
    greys = ("0.25", "0.45", "0.6")
    for i, ref in enumerate(data.references):
        ax = kiops_ax if ref.panel == "kiops" else lat_ax
        ax.axhline(ref.value, color=greys[i % len(greys)], linestyle=":", linewidth=1.2,
                   label=f"{ref.label} ({ref.value:,.0f} KIOPS)" if ref.panel == "kiops"
                   else f"{ref.label} ({ref.value:.2f} us)")
    for ax, ylabel in ((kiops_ax, "KIOPS"), (lat_ax, "mean latency (us)")):
        ax.set_xscale("log", base=2)
        if qds:
            ax.xaxis.set_major_locator(FixedLocator(qds))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(_plain)
        ax.set_xlabel("queue depth")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        # Each panel lists its own floors; the modes share one legend beside both.
        handles, labels = ax.get_legend_handles_labels()
        n = len(data.lines)
        if handles[n:]:
            ax.legend(handles[n:], labels[n:], fontsize=7, loc="best")
    handles, labels = kiops_ax.get_legend_handles_labels()
    fig.legend(handles[: len(data.lines)], labels[: len(data.lines)], loc="outside right upper", fontsize=8)
    kiops_ax.set_ylim(bottom=0)
    lat_ax.set_yscale("log")
    # 0.5, 1, 2, 5, 10 ... read better than powers of ten.
    lat_ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    lat_ax.yaxis.set_major_formatter(_plain)
    lat_ax.yaxis.set_minor_formatter(NullFormatter())
    fig.savefig(path, dpi=DPI)


def plot_result(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw a ``nvmefast bench --json`` document to ``path``."""
    draw(figure_data(doc), path)
