"""`nvmefast bench --backend file` end to end, kept short: it runs, I/O
completes, the data is verified and a floor is reported, with fio and
without it (fio hidden by emptying PATH); never how fast anything is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nvmefast import StateError, _core
from nvmefast.cli import main
from nvmefast.file_floor import Figures, combine, fio_command, parse_fio_json


def _io_uring_works() -> bool:
    """Whether this process may use io_uring (seccomp and old kernels refuse it)."""
    path = Path(__file__).resolve()  # any readable file of at least one block
    try:
        _core.floor_file_uring(str(path), rw="randread", qd=1, block_size=512, direct=False, seconds=0.001)
    except StateError:
        return False
    return True


IO_URING = _io_uring_works()
RAW_FLOOR = "raw_io_uring" if IO_URING else "none"
"""What the floor is without fio: the raw loop, or none where io_uring is refused."""
needs_fio = pytest.mark.skipif(
    shutil.which("fio") is None or not IO_URING, reason="fio is not installed, or io_uring is refused here"
)


def bench(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, qds: str = "1,4") -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    img = tmp_path / "disk.img"
    rc = main(
        ["bench", "--backend", "file", "--file", str(img), "--size", "8M", "--qd", qds, "--seconds", "0.1",
         "--json", str(out), *extra]
    )
    text = capsys.readouterr()
    assert rc == 0, text.out + text.err
    return json.loads(out.read_text()), text.out


def check_points(data: dict[str, Any], workloads: set[str], qds: set[int], floor: str) -> None:
    assert data["kind"] == "file"
    assert data["verified"] is True, data["verify_detail"]
    assert data["floor"]["kind"] == floor
    assert data["namespace"]["io"] in ("io_uring", "threads", "inline")
    assert data["namespace"]["cache"] in ("direct", "buffered")
    pts = {(p["workload"], p["qd"]): p for p in data["points"]}
    assert set(pts) == {(w, q) for w in workloads for q in qds}
    for (_, qd), p in pts.items():
        ours = p["ours"]
        assert ours["errors"] == 0
        assert ours["ios"] > qd
        assert 0 < ours["p50_us"] <= ours["p99_us"]
        if p["file_ops_per_io"] is not None:
            assert p["file_ops_per_io"] >= 0.9, "every 4 KiB command went to the file"
            if p["served_by"]:
                assert set(p["served_by"]) == {data["namespace"]["io"]}, "the path the core reports served them"
        fl = p["floor"]
        if floor == "none":
            assert fl is None and p["ratios"] == {}
            continue
        assert fl["kind"] == floor
        assert fl["errors"] == 0
        assert fl["ios"] > 0 and fl["kiops"] > 0 and fl["mean_us"] > 0
        assert set(p["ratios"]) == {"iops_vs_floor", "latency_vs_floor", "latency_p50_vs_floor"}


@needs_fio
def test_bench_file_beside_fio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = bench(tmp_path, capsys)
    check_points(data, {"randread", "randwrite"}, {1, 4}, "fio")
    assert data["file"]["created"] is True
    assert "I/O path: " in out and "fio" in out
    assert "nvmefast" in out and "IOPS " in out and "latency " in out
    # The floor ran with the O_DIRECT setting the core chose.
    assert ("--direct=1" in data["floor"]["description"]) == (data["namespace"]["cache"] == "direct")


def test_bench_file_without_fio(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    data, out = bench(tmp_path, capsys, "--rw", "randread", "--rounds", "2", qds="2")
    check_points(data, {"randread"}, {2}, RAW_FLOOR)
    assert [p["rounds"] for p in data["points"]] == [2]
    assert "fio not on PATH" in out
    if IO_URING:
        assert "raw loop" in out


def test_bench_file_threads_and_buffered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--io and --cache reach the core, and the bench says what it got."""
    data, out = bench(tmp_path, capsys, "--io", "threads", "--cache", "buffered", "--rw", "randwrite", qds="4")
    assert data["namespace"]["io"] == "threads"
    assert data["namespace"]["cache"] == "buffered"
    assert all(set(p["served_by"]) <= {"threads"} for p in data["points"])
    assert "I/O path: threads" in out
    assert data["verified"] is True, data["verify_detail"]
    assert "--direct=1" not in data["floor"]["description"]


def test_bench_file_existing_file_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--backend", "file", "--seconds", "0.1"]) == 2
    assert "needs --file PATH" in capsys.readouterr().err
    assert main(["bench", "--file", str(tmp_path / "x"), "--seconds", "0.1"]) == 2
    assert "needs --backend file" in capsys.readouterr().err
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\1" * 1000)
    assert main(["bench", "--backend", "file", "--file", str(odd), "--seconds", "0.1"]) == 1
    assert "not a multiple of the 512-byte LBA" in capsys.readouterr().err
    # An existing file keeps its size and contents (no fill).
    img = tmp_path / "keep.img"
    img.write_bytes(b"\7" * (1 << 20))
    rc = main(["bench", "--backend", "file", "--file", str(img), "--rw", "randread", "--qd", "1",
               "--seconds", "0.05", "--json", str(tmp_path / "k.json")])
    assert rc == 0
    data = json.loads((tmp_path / "k.json").read_text())
    assert data["file"]["created"] is False
    assert data["file"]["size_bytes"] == 1 << 20
    assert img.read_bytes() == b"\7" * (1 << 20), "a read-only run leaves the file as it was"


def test_fio_command_and_parse() -> None:
    cmd = fio_command("fio", "/tmp/a:b.img", "randwrite", 16, 4096, True, 0.25)
    assert "--filename=/tmp/a\\:b.img" in cmd
    assert {"--ioengine=io_uring", "--rw=randwrite", "--bs=4096", "--iodepth=16", "--direct=1", "--runtime=250ms"} <= set(cmd)
    side = {"iops": 50_000.0, "total_ios": 12_500, "runtime": 250,
            "lat_ns": {"mean": 20_000.0, "percentile": {"50.000000": 18_000, "99.000000": 40_000}}}
    text = "note: a warning line\n" + json.dumps({"jobs": [{"error": 0, "write": side, "read": {}}]})
    p = parse_fio_json(text, "randwrite")
    assert (p.kind, p.kiops, p.mean_us, p.p50_us, p.p99_us, p.ios, p.seconds) == ("fio", 50.0, 20.0, 18.0, 40.0, 12_500, 0.25)


def test_combine_rounds() -> None:
    a = Figures(kiops=10, mean_us=10, p50_us=9, p99_us=30, ios=1000, errors=0, seconds=0.1)
    b = Figures(kiops=30, mean_us=2, p50_us=1, p99_us=10, ios=3000, errors=1, seconds=0.1)
    c = combine([a, b, b])
    assert c.ios == 7000 and c.errors == 2 and c.seconds == pytest.approx(0.3)
    assert c.kiops == pytest.approx(7000 / 0.3 / 1000)
    assert c.mean_us == pytest.approx((10 * 1000 + 2 * 6000) / 7000)
    assert (c.p50_us, c.p99_us) == (1, 10)
