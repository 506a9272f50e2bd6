"""Code hygiene the project promises, checked with every test run:
cargo fmt and clippy clean (the core and the cargo-fuzz crate in fuzz/, its
own workspace), mypy --strict clean, `_core.pyi` true to the compiled module
(mypy.stubtest)."""

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


# The core, and the fuzz crate (its own workspace, so cargo sees it only
# when named).
CRATES = {"core": [], "fuzz": ["--manifest-path", "fuzz/Cargo.toml"]}


@needs_cargo
@pytest.mark.parametrize("crate", CRATES)
def test_cargo_fmt(crate: str) -> None:
    r = run("cargo", "fmt", *CRATES[crate], "--check")
    assert r.returncode == 0, r.stdout + r.stderr


@needs_cargo
@pytest.mark.timeout(900)
@pytest.mark.parametrize("crate", CRATES)
def test_cargo_clippy(crate: str) -> None:
    # The fuzz crate's target directory is the one its replay test
    # (tests/test_fuzz_replay.py) and `cargo fuzz` build in.
    target_dir = ["--target-dir", "fuzz/target"] if crate == "fuzz" else []
    args = [*CRATES[crate], *target_dir, "--all-targets", "--quiet"]
    r = run("cargo", "clippy", *args, "--", "-D", "warnings", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_mypy_strict() -> None:
    r = run(sys.executable, "-m", "mypy", "--strict", "python/nvmefast", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_stubs_match_the_compiled_module() -> None:
    r = run(sys.executable, "-m", "mypy.stubtest", "nvmefast._core", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
