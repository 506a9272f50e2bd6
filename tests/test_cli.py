"""`nvmefast bench` end to end, kept short: this checks that it works and
reports sane, self-consistent figures, never how fast it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nvmefast.cli import main, parse_size


def test_parse_size() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("64M") == 64 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("512KiB") == 512 << 10
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size("lots")


def test_bench_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    rc = main(["bench", "--qd", "1,8", "--seconds", "0.2", "--size", "16M", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr()
    assert "floors: eventfd ping-pong" in text.out
    assert "[4/4] poll QD8" in text.err, "progress goes to stderr"
    data = json.loads(out.read_text())
    assert set(data["floors"]) == {"eventfd_rtt_ns", "shm_rtt_ns", "memcpy_4k_per_s"}
    assert all(v > 0 for v in data["floors"].values())
    pts = {(p["mode"], p["qd"]): p for p in data["points"]}
    assert set(pts) == {("irq", 1), ("irq", 8), ("poll", 1), ("poll", 8)}
    for (mode, qd), p in pts.items():
        assert p["errors"] == 0
        assert p["ios"] > qd
        # Latency, IOPS and QD are tied by Little's law (within noise and the drain).
        assert p["kiops"] * 1000 * p["mean_us"] / 1e6 == pytest.approx(qd, rel=0.5)
        assert p["p50_us"] <= p["p99_us"]
        if mode == "poll":
            assert p["interrupts_per_io"] == 0, "poll-mode CQs are created with IEN=0"
        else:
            assert 0 < p["interrupts_per_io"] <= 1.0
        assert {"latency_vs_eventfd_rtt", "latency_vs_shm_rtt", "iops_vs_memcpy"} <= set(p["ratios"])


def test_bench_null_backend_and_bad_args() -> None:
    assert main(["bench", "--qd", "4", "--seconds", "0.1", "--backend", "null", "--mode", "poll", "--size", "1M"]) == 0
    r = subprocess.run(
        [sys.executable, "-m", "nvmefast.cli", "bench", "--qd", "0"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "queue depths must be positive" in r.stderr
    assert main(["bench", "--seconds", "0"]) == 2


def test_bench_irq_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "irq.json"
    assert main(["bench", "--irq", "--seconds", "0.1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "one delivery" in text and "interrupt coalescing" in text
    data = json.loads(out.read_text())
    assert {"eventfd", "python callback"} <= set(data["delivery_ns"])
    if data["kvm"] == "available":
        assert {"kvm irqfd", "KVM_SIGNAL_MSI"} <= set(data["delivery_ns"])
    assert all(ns > 0 for ns in data["delivery_ns"].values())
    for row in data["end_to_end"]:
        assert row["errors"] == 0
        if row["route"] == "none (IEN=0)":
            assert "deliveries_per_io" not in row
        else:
            # Every CQ batch is delivered once: at most one per completion
            # (plus the few admin-queue interrupts of the queue setup).
            assert 0 < row["deliveries_per_io"] <= 1.01
    rows = {(r["route"], r["qd"]): r for r in data["coalescing"]}
    # QD 1 never reaches THR 8: each completion waits for TIME (200 us).
    assert rows[("THR 8, TIME 200 us", 1)]["mean_us"] > 150
    assert rows[("off", 1)]["deliveries_per_io"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("doorbell", ["mmio", "shadow", "page", "ioeventfd"])
def test_bench_doorbell_modes(doorbell: str, tmp_path: Path) -> None:
    out = tmp_path / "db.json"
    argv = ["bench", "--qd", "1,16", "--seconds", "0.2", "--size", "16M", "--backend", "null"]
    assert main(argv + ["--doorbell", doorbell, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for p in data["points"]:
        assert p["errors"] == 0 and p["ios"] > 0
        if doorbell in ("page", "ioeventfd"):
            assert p["mmio_doorbells_per_io"] == 0, "page and ioeventfd modes make no MMIO write"
        elif doorbell == "mmio":
            assert p["mmio_doorbells_per_io"] == pytest.approx(p["doorbells_per_io"])
        else:
            # EventIdx lets the host skip rings: fewer MMIO writes than doorbell updates.
            assert p["mmio_doorbells_per_io"] < p["doorbells_per_io"]


def test_bench_two_iothreads(tmp_path: Path) -> None:
    out = tmp_path / "io2.json"
    argv = ["bench", "--qd", "4", "--seconds", "0.2", "--size", "16M", "--backend", "null", "--iothreads", "2"]
    assert main(argv + ["--mode", "poll", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["iothreads"] == 2
    assert all(p["errors"] == 0 and p["ios"] > 0 for p in data["points"])
