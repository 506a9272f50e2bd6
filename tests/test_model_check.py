"""The interrupt mask/pending contract, model-checked with loom: every
interleaving of notifications with mask, function mask and unmask on other
threads (rust/irq.rs `loom_tests`). Built in its own target directory
because `--cfg loom` swaps the core's mutex and atomics for loom's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
@pytest.mark.timeout(900)
def test_loom_interrupt_state() -> None:
    env = dict(os.environ, RUSTFLAGS="--cfg loom", CARGO_TARGET_DIR=str(ROOT / "target" / "loom"))
    r = subprocess.run(
        ["cargo", "test", "--release", "--lib", "loom"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "2 passed" in r.stdout, r.stdout[-2000:]
