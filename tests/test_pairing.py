"""Each notebook is paired with a jupytext py:percent twin (notebooks/jupytext.toml): the committed pairs are in sync,
`python -m asd_lib.nbclean --check` fails when either side is edited alone, and the sync puts them back together.

Every test that edits works on copies in a temporary folder; the committed files are only read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from asd_lib import nbclean

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
CONFIG = NB_DIR / "jupytext.toml"
NOTEBOOK_FILES = sorted(p for p in NB_DIR.glob("*.ipynb") if not p.name.startswith("_"))
NAME = "03a_score_knn"  # the pair the editing tests copy


def _copy_pair(tmp_path: Path, name: str = NAME) -> tuple[Path, Path]:
    """Copy one committed pair and the jupytext configuration into tmp_path/notebooks; the twin saved last."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(CONFIG, folder / CONFIG.name)
    nb, py = folder / f"{name}.ipynb", folder / f"{name}.py"
    shutil.copy(NB_DIR / nb.name, nb)
    shutil.copy(NB_DIR / py.name, py)
    _touch(nb, 1_000)
    _touch(py, 2_000)
    return nb, py


def _touch(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def _cells(path: Path) -> list[dict]:
    """A notebook file's cells, each source one string (the files store them as lists of lines)."""
    cells = json.loads(path.read_text())["cells"]
    for c in cells:
        c["source"] = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    return cells


def _code_cells(path: Path) -> list[dict]:
    return [c for c in _cells(path) if c["cell_type"] == "code"]


def test_the_pairing_is_in_the_configuration_not_in_the_notebooks():
    assert CONFIG.is_file()
    for path in NOTEBOOK_FILES:
        (twin,) = nbclean.twins(path)
        assert twin.path == path.with_suffix(".py")
        assert twin.fmt == {"extension": ".py", "format_name": "percent"}
        assert "jupytext" not in json.loads(path.read_text())["metadata"]  # nbclean drops it; the config pairs


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_twin_is_what_jupytext_writes_from_the_notebook(path: Path):
    twin = path.with_suffix(".py")
    assert twin.is_file(), f"{twin.name} missing: run python -m asd_lib.nbclean notebooks/"
    (t,) = nbclean.twins(path)
    nb = nbclean.clean(json.loads(path.read_text()))
    assert twin.read_text() == nbclean.twin_text(nb, t), f"{twin.name} out of sync: run python -m asd_lib.nbclean notebooks/"
    text = twin.read_text()
    assert not text.startswith("# ---"), "no jupytext header in the twins (notebook_metadata_filter = '-all')"
    assert '"output_type"' not in text and "execution_count" not in text


def test_every_twin_has_its_notebook():
    twins = sorted(p for p in NB_DIR.glob("*.py") if not p.name.startswith("_"))
    assert [p.stem for p in twins] == [p.stem for p in NOTEBOOK_FILES]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_round_trip_keeps_sources_types_and_tags(path: Path):
    (t,) = nbclean.twins(path)
    back = nbclean.read_twin(path.with_suffix(".py").read_text(), t)
    assert [(c.cell_type, c.source, c.metadata.get("tags")) for c in back.cells] == \
        [(c["cell_type"], c["source"], c["metadata"].get("tags")) for c in _cells(path)]
    assert back.cells[1].metadata["tags"] == ["parameters"]
    assert all(set(c.metadata) <= {"tags"} for c in back.cells)


def test_the_committed_folder_passes_the_check(capsys):
    assert nbclean.main(["--check", str(NB_DIR)]) == 0, capsys.readouterr()


def test_editing_only_the_twin_fails_the_check_and_the_sync_takes_it(tmp_path: Path, capsys):
    nb, py = _copy_pair(tmp_path)
    before = _code_cells(nb)
    text = py.read_text()
    line = next(ln for ln in text.splitlines() if "import" in ln)
    py.write_text(text.replace(line, line + "  # edited in the .py", 1))
    _touch(py, 3_000)
    folder = str(nb.parent)

    assert nbclean.main(["--check", folder]) == 1
    out = capsys.readouterr()
    assert f"out of sync: {nb}" in out.out and str(py) in out.out
    assert f"run python -m asd_lib.nbclean {folder}" in out.err
    assert nb.read_text() == (NB_DIR / nb.name).read_text() and "edited in the .py" in py.read_text()  # --check wrote nothing

    assert nbclean.main([folder]) == 0
    after = _code_cells(nb)
    changed = [i for i, c in enumerate(after) if "# edited in the .py" in c["source"]]
    assert len(changed) == 1 and len(after) == len(before)
    (i,) = changed
    assert after[i]["outputs"] == [] and after[i]["execution_count"] is None  # to be re-executed
    assert after[i]["id"] == before[i]["id"]
    assert [c for j, c in enumerate(after) if j != i] == [c for j, c in enumerate(before) if j != i]
    assert nbclean.main(["--check", folder]) == 0


def test_editing_only_the_notebook_fails_the_check_and_the_sync_rewrites_the_twin(tmp_path: Path, capsys):
    nb, py = _copy_pair(tmp_path)
    data = json.loads(nb.read_text())
    data["cells"] = _cells(nb)
    cell = next(c for c in data["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", []))
    cell["source"] += "\nprint('edited in the notebook')"
    nb.write_text(json.dumps(data, indent=1))
    _touch(nb, 3_000)
    folder = str(nb.parent)

    assert nbclean.main(["--check", folder]) == 1
    out = capsys.readouterr()
    assert f"out of sync: {py} (differs from {nb})" in out.out
    assert "edited in the notebook" not in py.read_text()

    assert nbclean.main([folder]) == 0
    assert "print('edited in the notebook')" in py.read_text()
    assert "print('edited in the notebook')" in "".join(c["source"] for c in _cells(nb))
    assert nbclean.main(["--check", folder]) == 0


def test_a_twin_saved_last_that_differs_only_in_layout_is_rewritten(tmp_path: Path, capsys):
    nb, py = _copy_pair(tmp_path)
    py.write_text(py.read_text().replace("\n\n# %%", "\n\n\n\n# %%", 1))  # blank lines the cleaner drops
    _touch(py, 3_000)
    assert nbclean.main(["--check", str(nb.parent)]) == 1
    assert f"out of sync: {py} (differs from {nb})" in capsys.readouterr().out
    assert nbclean.main([str(nb.parent)]) == 0
    assert nb.read_text() == (NB_DIR / nb.name).read_text() and py.read_text() == (NB_DIR / py.name).read_text()


def test_a_missing_twin_or_a_twin_without_its_notebook_fails_the_check(tmp_path: Path, capsys):
    nb, py = _copy_pair(tmp_path)
    folder = str(nb.parent)
    py.unlink()
    assert nbclean.main(["--check", folder]) == 1
    assert f"missing twin: {py}" in capsys.readouterr().out
    assert nbclean.main([folder]) == 0 and py.read_text() == (NB_DIR / py.name).read_text()

    orphan = nb.parent / "09_new_stage.py"
    shutil.copy(py, orphan)
    assert nbclean.main(["--check", folder]) == 1
    assert f"no notebook: {orphan}" in capsys.readouterr().out
    assert nbclean.main([folder]) == 2  # a folder sync never creates a notebook (it may have been renamed)
    assert "git rm it" in capsys.readouterr().err and not orphan.with_suffix(".ipynb").exists()
    assert nbclean.main([str(orphan)]) == 0  # named: create it
    created = json.loads(orphan.with_suffix(".ipynb").read_text())
    assert created["metadata"]["kernelspec"] == nbclean.KERNELSPEC
    assert [c["source"] for c in _cells(orphan.with_suffix(".ipynb"))] == [c["source"] for c in _cells(nb)]
    assert nbclean.main(["--check", folder]) == 0


def test_a_cell_the_twin_cannot_hold_is_an_error(tmp_path: Path, capsys):
    nb, py = _copy_pair(tmp_path)
    data = json.loads(nb.read_text())
    data["cells"] = _cells(nb)
    data["cells"][2]["source"] += "\n# %%\nx = 1"
    nb.write_text(json.dumps(data, indent=1))
    _touch(nb, 3_000)
    assert nbclean.main(["--check", str(nb)]) == 2
    assert "does not survive the round trip" in capsys.readouterr().err


def test_clean_drops_trailing_blank_lines_that_the_twin_cannot_hold():
    nb = json.loads(NOTEBOOK_FILES[0].read_text())
    nb["cells"] = _cells(NOTEBOOK_FILES[0])
    nb["cells"][2]["source"] += "\n\n  "
    assert nbclean.clean(nb)["cells"][2]["source"] == _cells(NOTEBOOK_FILES[0])[2]["source"]


def test_a_jupyterlab_save_leaves_a_synced_pair_that_only_needs_cleaning(tmp_path: Path, capsys):
    jupytext = pytest.importorskip("jupytext")
    nb, py = _copy_pair(tmp_path)
    py.unlink()
    cm = jupytext.TextFileContentsManager(root_dir=str(nb.parent))  # what `make lab` runs, pairing from the config
    model = cm.get(nb.name)
    model["content"].cells[1].metadata["collapsed"] = True
    model["content"].cells[3].source += "\nprint('edited in JupyterLab')"
    cm.save(model, nb.name)
    assert py.is_file()
    assert nbclean.main(["--check", str(nb.parent)]) == 1
    out = capsys.readouterr().out
    assert f"would change: {nb}" in out and "out of sync" not in out and "missing" not in out
    assert nbclean.main([str(nb.parent)]) == 0
    assert nbclean.main(["--check", str(nb.parent)]) == 0
    assert "print('edited in JupyterLab')" in py.read_text()

