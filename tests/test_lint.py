"""Code hygiene the project promises, checked with every test run:
cargo fmt and clippy clean, mypy --strict clean, `_core.pyi` true to the
compiled module (mypy.stubtest)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")


def run(*cmd: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@needs_cargo
def test_cargo_fmt() -> None:
    r = run("cargo", "fmt", "--check")
    assert r.returncode == 0, r.stdout + r.stderr


@needs_cargo
@pytest.mark.timeout(900)
def test_cargo_clippy() -> None:
    r = run("cargo", "clippy", "--all-targets", "--quiet", "--", "-D", "warnings", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_mypy_strict() -> None:
    r = run(sys.executable, "-m", "mypy", "--strict", "python/nvmefast", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_stubs_match_the_compiled_module() -> None:
    r = run(sys.executable, "-m", "mypy.stubtest", "nvmefast._core", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
