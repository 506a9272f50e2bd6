"""Replays the committed vfio-user fuzz corpus (``tests/fuzz/corpus/vfio_user``)
through the fuzz harness's oracle, without atheris: every seed, and every
minimised crash committed there, stays fixed in the normal test run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = sorted((FUZZ / "corpus" / "vfio_user").iterdir())


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
