"""Replays every committed fuzz corpus in the normal test run, without a
fuzzer, so each seed (and each minimised crash committed there) stays fixed
and every fuzz rig keeps compiling against the core:

- ``vfio_user`` (``tests/fuzz/corpus/vfio_user``) through the atheris
  harness's oracle, without atheris;
- ``sqe`` and ``doorbells`` (``fuzz/corpus``): the cargo-fuzz crate is its
  own workspace, outside the main build, so ``cargo test`` at the top never
  compiles it. Here it is built (debug profile: a clean build takes seconds,
  not the half minute of ``--release``, and overflow checks are on, as with
  ``cargo fuzz run -a``) and its seeds are replayed twice: by the crate's
  replay tests, and through each target's own libFuzzer binary (no
  coverage instrumentation, which needs nightly; ``-runs=0`` runs the
  corpus and stops). A rig that no longer compiles fails here, with
  cargo's errors in the message.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = sorted((FUZZ / "corpus" / "vfio_user").iterdir())

FUZZ_CRATE = ROOT / "fuzz"
# Where `cargo fuzz` builds too (its artifacts go under a target-triple
# subdirectory, so the two never overwrite each other); git ignores it.
FUZZ_TARGET_DIR = FUZZ_CRATE / "target"
CARGO_TARGETS = ["sqe", "doorbells"]
# A clean debug build takes about 11 s on an idle 2-core machine; the bound
# is for a loaded one.
BUILD_TIMEOUT_S = 900


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_vfio_user", FUZZ / "fuzz_vfio_user.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return _harness()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", CORPUS, ids=[p.name for p in CORPUS])
def test_vfio_user_corpus_input_keeps_the_oracle(harness: ModuleType, seed: Path) -> None:
    harness.run_one(seed.read_bytes())


def _cargo_fuzz_crate(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``cargo test ARGS`` on the fuzz crate, with its committed lock file."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail(
            "cargo is not on PATH: the fuzz crate (fuzz/) is built by this test; install Rust "
            "(https://rustup.rs), as the README's test command needs it for `cargo test` anyway"
        )
    cmd = [
        cargo,
        "test",
        "--locked",
        "--manifest-path",
        str(FUZZ_CRATE / "Cargo.toml"),
        "--target-dir",
        str(FUZZ_TARGET_DIR),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def fuzz_binaries() -> Path:
    """Builds the cargo-fuzz crate (library, replay tests, one libFuzzer
    binary per target) once; the directory holding the binaries."""
    r = _cargo_fuzz_crate("--no-run")
    if r.returncode != 0 and "--locked" in r.stderr:
        pytest.fail(
            "fuzz/Cargo.lock is out of date (the core's dependencies changed): run "
            "`cargo test --manifest-path fuzz/Cargo.toml` once, which adds them to it, and "
            f"commit fuzz/Cargo.lock:\n{r.stderr[-3000:]}"
        )
    if r.returncode != 0:
        pytest.fail(
            "the cargo-fuzz crate (fuzz/) does not build against the core; fix the rig "
            f"(fuzz/src/) in the same change:\n{r.stderr[-6000:]}"
        )
    return FUZZ_TARGET_DIR / "debug"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
@pytest.mark.parametrize("target", CARGO_TARGETS)
def test_cargo_fuzz_seeds_replay_clean(fuzz_binaries: Path, target: str, tmp_path: Path) -> None:
    seeds = FUZZ_CRATE / "corpus" / target
    n = sum(1 for p in seeds.iterdir() if p.is_file())
    assert n > 0, f"no committed seeds in {seeds}"

    r = _cargo_fuzz_crate("--test", "replay", "--", "--exact", f"{target}_corpus_replays_clean")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-6000:] + r.stderr[-6000:]

    # The fuzzer's own entry point (fuzz_targets/<target>.rs) on the same
    # seeds; a crash would be written to tmp_path, not the working tree.
    r = subprocess.run(
        [str(fuzz_binaries / target), "-runs=0", f"-artifact_prefix={tmp_path}/", str(seeds)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert r.returncode == 0, r.stderr[-6000:]
    assert f"files: {n} " in r.stderr, f"libFuzzer did not read all {n} seeds:\n{r.stderr[-3000:]}"
    assert "Done " in r.stderr, r.stderr[-3000:]


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_a_sigbus_outside_guest_memory_reaches_libfuzzers_handler(fuzz_binaries: Path, tmp_path: Path) -> None:
    # The sqe rig's engine guards its guest memory, so nvmefast's SIGBUS
    # handler sits on top of libFuzzer's (with the rig's probe between
    # them). A fault anywhere else must travel down to libFuzzer, which
    # reports a crash, as without nvmefast; the rig says where it touched.
    seed = FUZZ_CRATE / "corpus" / "sqe" / "read-one-page"
    r = subprocess.run(
        [str(fuzz_binaries / "sqe"), f"-artifact_prefix={tmp_path}/", str(seed)],
        cwd=tmp_path,
        env={**os.environ, "NVMEFAST_FUZZ_STRAY_SIGBUS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "sqe: touching a truncated mapping outside guest memory" in r.stderr, r.stderr[-3000:]
    assert "ERROR: libFuzzer: deadly signal" in r.stderr, r.stderr[-3000:]
    assert "survived" not in r.stderr and r.returncode != 0, r.stderr[-3000:]
