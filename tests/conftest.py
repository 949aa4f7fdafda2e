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


@pytest.fixture
def rerecordable(tiny_data, tmp_path):
    """``copy(machine) -> manifest`` of this test's own copy of one tiny-preset machine, and ``rerecord(manifest)``,
    which replaces its first training clip (by name) with another recording under the same name (the samples
    reversed), as a regenerated benchmark would."""
    import shutil

    import soundfile as sf

    from asd_lib.data import scan

    def copy(machine: str):
        shutil.copytree(tiny_data / "dev_data" / "raw" / machine, tmp_path / "data" / "dev_data" / "raw" / machine)
        return scan(tmp_path / "data")

    def rerecord(manifest) -> None:
        clip = manifest[manifest["split"] == "train"].sort_values("file_name")["path"].iloc[0]
        wave, sr = sf.read(clip)
        sf.write(clip, wave[::-1].copy(), sr, subtype="PCM_16")

    return copy, rerecord


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The `tiny` synthetic preset (seed 0), generated once per test session."""
    synth = pytest.importorskip("asd_lib.synth")
    out = tmp_path_factory.mktemp("synth_tiny")
    synth.generate(out, preset="tiny", seed=0)
    return out
