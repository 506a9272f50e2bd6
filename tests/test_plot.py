"""``nvmefast bench --plot`` and ``nvmefast plot``: what the figure shows, the
image it writes, and what happens without matplotlib."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from nvmefast import ConfigError
from nvmefast.cli import main
from nvmefast.plot import figure_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, the first after the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, "not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _machine() -> dict[str, Any]:
    return {"machine": {"cpu_model": "Test CPU 9000", "cpus": 2, "python": "3", "platform": "x"},
            "time": "2026-01-02T03:04:05Z"}


def _point(mode: str, qd: int, kiops: float, mean_us: float) -> dict[str, Any]:
    return {"mode": mode, "qd": qd, "kiops": kiops, "mean_us": mean_us}


def test_in_process_lines_and_floors() -> None:
    doc = {
        "tool": "nvmefast bench",
        "config": {"backend": "ram", "size_bytes": 16 << 20, "doorbell": "mmio", "iothreads": 1, "seconds": 0.5},
        "floors": {"eventfd_rtt_ns": 5000.0, "shm_rtt_ns": 200.0, "memcpy_4k_per_s": 2e6},
        # Out of QD order on purpose: lines are drawn in QD order.
        "points": [_point("irq", 4, 400, 10), _point("irq", 1, 100, 10), _point("poll", 1, 300, 3.3)],
        **_machine(),
    }
    data = figure_data(doc)
    assert data.title == "nvmefast bench on Test CPU 9000, 2 CPUs, 2026-01-02"
    lines = {line.label: line for line in data.lines}
    assert set(lines) == {"irq", "poll"}
    assert (lines["irq"].qds, lines["irq"].kiops, lines["irq"].mean_us) == ([1, 4], [100, 400], [10, 10])
    refs = {(r.label, r.panel): r.value for r in data.references}
    # 2 M memcpys/s is 2,000 KIOPS; the round trips in microseconds.
    assert refs == {("random 4 KiB memcpy", "kiops"): 2000.0, ("eventfd round trip", "latency"): 5.0,
                    ("shared-memory round trip", "latency"): 0.2}
    # A null namespace copies nothing: no memcpy floor to compare with.
    doc["config"] = {**doc["config"], "backend": "null"}
    assert all(r.panel == "latency" for r in figure_data(doc).references)


def test_vfio_user_file_and_irq_results() -> None:
    vfio = {
        "tool": "nvmefast bench --vfio-user",
        "floors": {"eventfd_rtt_ns": 4000.0, "shm_rtt_ns": 100.0, "unix_socket_rtt_ns": 8000.0,
                   "memcpy_4k_per_s": 1e6},
        "points": [{"path": "in-process", "mode": "poll", "doorbell": "mmio", "qd": 1, "kiops": 900, "mean_us": 1.1},
                   {"path": "vfio-user", "mode": "poll", "doorbell": "trap", "qd": 1, "kiops": 90, "mean_us": 11}],
        "skipped": {"page": "the server offers no doorbell page"},
        **_machine(),
    }
    data = figure_data(vfio)
    assert {(line.label, line.dashed) for line in data.lines} == {("in-process poll mmio", True),
                                                                  ("vfio-user poll trap", False)}
    assert ("UNIX-socket round trip", 8.0) in {(r.label, r.value) for r in data.references}
    assert "page skipped: the server offers no doorbell page" in data.subtitle
    file_doc = {
        "tool": "nvmefast bench", "kind": "file",
        "file": {"path": "/x.img", "filesystem": "tmpfs"}, "namespace": {"io": "inline", "cache": "buffered"},
        "points": [{"workload": "randread", "mode": "irq", "qd": q, "ours": {"kiops": 10.0 * q, "mean_us": 2.0},
                    "floor": {"kind": "fio", "kiops": 12.0 * q, "mean_us": 1.5}} for q in (1, 4)],
        **_machine(),
    }
    data = figure_data(file_doc)
    ours, floor = data.lines
    assert (ours.label, ours.kiops, ours.dashed) == ("randread irq: nvmefast", [10.0, 40.0], False)
    assert (floor.label, floor.kiops, floor.dashed) == ("randread irq: fio (floor)", [12.0, 48.0], True)
    assert ours.group == floor.group, "a mode and its floor share a colour"
    irq_doc = {
        "tool": "nvmefast bench --irq", "floors": {"eventfd_rtt_ns": 3000.0, "shm_rtt_ns": 90.0},
        "end_to_end": [{"route": "eventfd", "qd": 64, "kiops": 800, "mean_us": 80},
                       {"route": "eventfd", "qd": 1, "kiops": 200, "mean_us": 5}],
        "coalescing": [{"route": "off", "qd": 1, "kiops": 100, "mean_us": 10}],
        **_machine(),
    }
    lines = {line.label: line for line in figure_data(irq_doc).lines}
    assert lines["end to end: eventfd"].qds == [1, 64] and lines["coalescing: off"].dashed


def test_a_document_that_is_not_a_bench_result_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="not a `nvmefast bench --json` result"):
        figure_data({"tool": "fio"})
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    assert main(["plot", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "is not JSON" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bench_plot_draws_a_png_and_plot_redraws_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image

    png, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    argv = ["bench", "--qd", "1,4", "--seconds", "0.1", "--size", "16M", "--backend", "null"]
    assert main([*argv, "--plot", str(png), "--json", str(js)]) == 0
    assert f"drew {png}" in capsys.readouterr().err
    # 12 x 5 inches at 100 dpi, as the module documents.
    assert png_size(png) == (1200, 500)
    pixels = matplotlib.image.imread(png)
    # The first line is drawn in matplotlib's first colour, C0 (#1f77b4).
    c0 = (0x1F / 255, 0x77 / 255, 0xB4 / 255)
    near_c0 = (abs(pixels[..., 0] - c0[0]) < 0.03) & (abs(pixels[..., 1] - c0[1]) < 0.03) & (
        abs(pixels[..., 2] - c0[2]) < 0.03)
    assert near_c0.sum() > 200, "no line in the first colour"
    again = tmp_path / "again.png"
    assert main(["plot", str(js), "-o", str(tmp_path / "no" / "again.png")]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert main(["plot", str(js), "-o", str(again)]) == 0
    # Redrawn from the JSON, the same figure: --plot draws what --json holds.
    assert (matplotlib.image.imread(again) == pixels).all()


def test_without_matplotlib_plot_fails_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as if it were not installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    png = tmp_path / "out.png"
    assert main(["bench", "--qd", "1", "--seconds", "0.1", "--size", "1M", "--plot", str(png)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'nvmefast[plot]'" in err and "matplotlib" in err, err
    assert "measuring floors" not in err, "checked before the benchmark runs"
    assert not png.exists()
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"tool": "nvmefast bench --irq", "floors": {"eventfd_rtt_ns": 1.0, "shm_rtt_ns": 1.0},
                              "end_to_end": [], "coalescing": []}))
    assert main(["plot", str(js), "-o", str(png)]) == 2
    assert "pip install 'nvmefast[plot]'" in capsys.readouterr().err


def test_plot_into_a_missing_directory_fails_before_measuring(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--seconds", "0.1", "--plot", str(tmp_path / "no" / "out.png")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "measuring floors" not in err, err
