"""The committed notebooks: numbering, skeleton, parameters cells that agree with params/*.yaml, clean and executed.

nbval itself (re-executing the notebooks and comparing the `# NBVAL_CHECK_OUTPUT` cells) runs from the Makefile:
    pytest --nbval-lax --sanitize-with tests/nbval_sanitize.cfg notebooks/
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from asd_lib import nbclean, params as P
from asd_lib.run import INJECTED, NOTEBOOKS, PRIMARY_SYSTEM

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NAME_RE = re.compile(r"^(\d{2})([a-z]?)_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")
NOTEBOOK_FILES = sorted(p for p in NB_DIR.glob("*.ipynb") if not p.name.startswith("_"))
OVERLAYS = sorted(p for p in P.PARAMS_DIR.glob("*.yaml") if p.stem not in ("base", *P.SYSTEMS))


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_notebook_names_follow_the_numbering_and_the_runner():
    names = [p.name for p in NOTEBOOK_FILES]
    bad = [n for n in names if not NAME_RE.match(n)]
    assert not bad, f"notebook names must be NN[a]_words.ipynb: {bad}"
    prefixes = [NAME_RE.match(n).group(1) + NAME_RE.match(n).group(2) for n in names]
    assert len(set(prefixes)) == len(prefixes), f"duplicate numbers: {prefixes}"
    assert names == sorted(names)
    assert [n + ".ipynb" for n, _ in NOTEBOOKS] == names, "asd_lib.run.NOTEBOOKS must list notebooks/ in order"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_skeleton(path: Path):
    nb = _nb(path)
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and _src(cells[0]).startswith("# "), "first cell: H1 title"
    assert len(_src(cells[0]).strip().splitlines()) >= 3, "title plus one line on what it teaches"
    assert cells[1]["metadata"].get("tags") == ["parameters"], "second cell: the parameters cell"
    code = [_src(c) for c in cells if c["cell_type"] == "code"]
    assert sum(s.count("plots.setup(") for s in code) == 1, "exactly one setup call"
    md = "\n".join(_src(c) for c in cells if c["cell_type"] == "markdown")
    for heading in ("## Artifacts written", "## Summary", "## Exercises"):
        assert heading in md, f"missing section {heading!r}"
    for s in code:
        if "NBVAL_CHECK_OUTPUT" in s:
            assert s.splitlines()[0].strip() == "# NBVAL_CHECK_OUTPUT", "marker on its own first line"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_parameters_cell_is_plain_literals_matching_the_smoke_config(path: Path):
    declared = P.notebook_parameters(path)  # raises on anything but `name = literal`
    smoke = P.load("dev_offline", [P.PARAMS_DIR / "smoke.yaml"]).values
    base = P.read_yaml(P.PARAMS_DIR / "base.yaml")
    for name, default in declared.items():
        assert name in base, f"{path.name} declares {name!r}, which params/base.yaml does not hold"
        assert default == smoke[name], f"{path.name}: default {name} = {default!r}, smoke config has {smoke[name]!r}"
    cell = next(c for c in _nb(path)["cells"] if "parameters" in c["metadata"].get("tags", []))
    for line in _src(cell).splitlines():
        assert "#" in line, f"{path.name}: parameter line without a comment: {line!r}"
    assert _src(cell) == P.smoke_parameters_cell(path), \
        f"{path.name}: parameters cell differs from params/*.yaml; rewrite it: python -m asd_lib.nbclean --parameters notebooks/"


def test_the_parameters_cell_tool_rewrites_that_cell_alone(tmp_path: Path):
    import shutil

    (tmp_path / "notebooks").mkdir()
    for f in ("03a_score_knn.ipynb", "03a_score_knn.py", "jupytext.toml"):
        shutil.copy(NB_DIR / f, tmp_path / "notebooks" / f)
    path = tmp_path / "notebooks" / "03a_score_knn.ipynb"
    nb = _nb(path)
    i = next(k for k, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    nb["cells"][i]["source"] = _src(nb["cells"][i]).replace("knn_k = 6", "knn_k = 3").replace("# dev | devadd", "# old")
    path.write_text(json.dumps(nb))
    assert nbclean.main(["--parameters", str(path)]) == 0
    fixed = _nb(path)
    assert _src(fixed["cells"][i]) == P.smoke_parameters_cell(NB_DIR / path.name)
    assert [_src(c) for k, c in enumerate(fixed["cells"]) if k != i] == [_src(c) for k, c in enumerate(nb["cells"]) if k != i]
    assert [c.get("outputs") for c in fixed["cells"]] == [c.get("outputs") for c in nb["cells"]]
    assert nbclean.main(["--check", str(path)]) == 0  # the twin follows


@pytest.mark.parametrize("overlay", [None, *OVERLAYS], ids=lambda p: "none" if p is None else p.stem)
@pytest.mark.parametrize("system", P.SYSTEMS)
def test_every_params_file_agrees_with_the_notebooks(system: str, overlay: Path | None):
    declared = P.declared_parameters(NOTEBOOK_FILES)
    params = P.load(system, [overlay] if overlay else [])
    P.validate(params, declared)  # unknown keys and type mismatches raise
    assert params["system"] == system


def test_base_yaml_is_the_complete_reference():
    declared = set().union(*P.declared_parameters(NOTEBOOK_FILES).values())
    base = set(P.read_yaml(P.PARAMS_DIR / "base.yaml"))
    assert declared == base, f"declared but not in base: {declared - base}; in base but unused: {base - declared}"


def test_online_and_offline_systems_share_the_regime_stages():
    declared = P.declared_parameters(NOTEBOOK_FILES)
    for regime in ("dev", "devadd"):
        on, off = P.load(f"{regime}_online"), P.load(f"{regime}_offline")
        for name, scope in NOTEBOOKS:
            if scope == "regime":
                d = declared[name + ".ipynb"]
                assert P.inject(on, d) == P.inject(off, d), f"{name} would run twice for {regime}"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_in_order(path: Path):
    code = [c for c in _nb(path)["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output"
    assert path.stat().st_size < 1_500_000, f"{path.name} is {path.stat().st_size} bytes; keep outputs small"


def test_notebooks_are_clean():
    out = subprocess.run([sys.executable, "-m", "asd_lib.nbclean", "--check", str(NB_DIR)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_nbclean_drops_run_metadata_and_keeps_tags_and_outputs(tmp_path: Path):
    nb = _nb(NOTEBOOK_FILES[0])
    dirty = json.loads(json.dumps(nb))
    dirty["metadata"]["papermill"] = {"duration": 1.0}
    dirty["metadata"]["language_info"]["version"] = "3.11.7"
    dirty["cells"][1]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    dirty["cells"][1]["metadata"]["papermill"] = {"status": "completed"}
    path = tmp_path / "00_x.ipynb"
    path.write_text(json.dumps(dirty))
    assert nbclean.main(["--check", str(path)]) == 1
    assert nbclean.main([str(path)]) == 0
    cleaned = _nb(path)
    assert "papermill" not in cleaned["metadata"] and "version" not in cleaned["metadata"]["language_info"]
    assert cleaned["cells"][1]["metadata"] == {"tags": ["parameters"]}
    assert [c.get("outputs") for c in cleaned["cells"]] == [c.get("outputs") for c in nb["cells"]]
    assert nbclean.main(["--check", str(path)]) == 0  # idempotent


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_line(path: Path):
    import nbformat
    from papermill.translators import PythonTranslator

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    found = {p.name for p in PythonTranslator.inspect(cell)}
    assert found == set(P.notebook_parameters(path)), "papermill cannot parse some lines (avoid '=' and '\"' in comments)"


def _demo() -> P.Params:
    return P.load(PRIMARY_SYSTEM, [P.PARAMS_DIR / "demo.yaml"])


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_outputs_are_the_demo_runs(path: Path):
    """Right after `parameters` comes papermill's cell of the demo run (tools/commit_notebooks.py), which nbval skips:
    CI executes the smoke configuration, a reader sees the outputs of the README's run and the values behind them."""
    cell = _nb(path)["cells"][2]
    assert cell["metadata"].get("tags") == [INJECTED, "nbval-skip"], f"{path.name}: run make demo, then make notebooks"
    defaults, injected = P.notebook_parameters(path), P.parse_parameters_source(_src(cell))
    assert {**defaults, **injected} == P.inject(_demo(), defaults)
    assert all(defaults[k] != v for k, v in injected.items()), "only what the demo changes, so exercises take effect"


def _commit_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("commit_notebooks", ROOT / "tools" / "commit_notebooks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_commit_notebooks_takes_only_a_current_run_with_the_demo_parameters(tmp_path: Path):
    tool = _commit_tool()
    name, scope = "03a_score_knn", "regime"
    src = NB_DIR / f"{name}.ipynb"
    params = _demo().updated({"results_dir": str(tmp_path)}, "test")
    values = P.inject(params, P.notebook_parameters(src))
    nb = _nb(src)
    body = [c for c in nb["cells"] if INJECTED not in c["metadata"].get("tags", [])]

    def executed(values: dict, cells: list) -> None:  # what papermill would leave in the run's folder
        injected = {"cell_type": "code", "execution_count": 2, "id": "injected", "outputs": [],
                    "metadata": {"tags": [INJECTED], "papermill": {"status": "completed"}},
                    "source": "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())}
        path = tool.executed_copy(name, scope, params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**nb, "cells": cells[:2] + [injected] + cells[2:]}))

    executed(values, body)
    out = tool.committed_form(name, scope, params, "demo")
    assert out["cells"][2]["metadata"] == {"tags": [INJECTED, "nbval-skip"]}
    kept = P.parse_parameters_source(_src(out["cells"][2]))
    assert kept and set(kept) < set(values) and {**P.notebook_parameters(src), **kept} == values
    assert out == nbclean.clean(out)
    with pytest.raises(SystemExit, match="other parameters"):
        executed({**values, "knn_k": 3}, body)
        tool.committed_form(name, scope, params, "demo")
    with pytest.raises(SystemExit, match="another version of the notebook"):
        edited = json.loads(json.dumps(body))
        edited[-1]["source"] = _src(edited[-1]) + "\n(edited)"
        executed(values, edited)
        tool.committed_form(name, scope, params, "demo")
