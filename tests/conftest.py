"""Shared pytest fixtures: paths to the shared test vectors and a tiny synthetic dataset built once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def tv_dir() -> Path:
    """Folder of the reference test vectors copied into the project (tests/data)."""
    return DATA


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The `tiny` synthetic preset (seed 0), generated once per test session."""
    synth = pytest.importorskip("asd_lib.synth")
    out = tmp_path_factory.mktemp("synth_tiny")
    synth.generate(out, preset="tiny", seed=0)
    return out
