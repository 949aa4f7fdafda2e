"""Commit the demo run's executed notebooks, so that a reader of notebooks/ sees the README's numbers.

    make demo                                   # or: asd-run --system all --params params/demo.yaml
    python tools/commit_notebooks.py            # every notebook of asd_lib.run.NOTEBOOKS (= make notebooks)
    python tools/commit_notebooks.py --only 01 02

For each notebook it takes the copy the runner executed for the paper's best system (DEV offline: the regime
stages of `dev`, fusion of `dev_offline`, the shared and report stages), checks that this copy ran from the
notebook as it is now (every cell but papermill's injected-parameters cell unchanged) with the demo's parameters
and without an error, tags the injected cell `nbval-skip`, cleans it (asd_lib.nbclean) and writes it over
notebooks/<name>.ipynb, and its jupytext twin notebooks/<name>.py from it. The injected cell keeps only the values
that differ from the `parameters` cell, so that an exercise's change there takes effect. A pair out of sync (a twin edited after
the run) is refused: sync it (make clean-notebooks) and run the demo again first.

A committed notebook then holds, in this order: the `parameters` cell (the quick smoke configuration, which
tests/test_notebooks.py keeps equal to params/smoke.yaml), papermill's injected cell (the demo's values where they
differ from it) and the demo run's outputs. Run All in JupyterLab reproduces those outputs; delete the injected cell to run the smoke
configuration instead. `make test` runs nbval, which skips the injected cell: CI executes every notebook with the
smoke parameters and compares the cells marked `# NBVAL_CHECK_OUTPUT`, whose outputs do not depend on the size of
the run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asd_lib import nbclean, params as P  # noqa: E402
from asd_lib.run import INJECTED, NOTEBOOKS, PRIMARY_SYSTEM, _cells, _rel, _stage_dir  # noqa: E402

SKIP = "nbval-skip"


def executed_copy(name: str, scope: str, params: P.Params) -> Path:
    """Where the runner wrote the executed copy of one notebook for these parameters."""
    folder, _ = _stage_dir(ROOT / params["results_dir"], scope, params["system"], params["regime"])
    return folder / f"{name}.ipynb"


def committed_form(name: str, scope: str, params: P.Params, label: str) -> dict:
    """The executed copy of one notebook, checked against the committed source and the parameters, ready to commit."""
    src, run = ROOT / "notebooks" / f"{name}.ipynb", executed_copy(name, scope, params)
    changes, errors = nbclean.sync(src, write=False)
    if changes or errors:  # e.g. a .py twin edited after the run: its edit would be lost
        raise SystemExit(f"{name}: " + "; ".join(changes + errors) + "\n  sync the pair first (make clean-notebooks), "
                         "then make demo again")
    if not run.is_file():
        raise SystemExit(f"{name}: no executed copy at {_rel(run)}; run `make demo` first")
    if _cells(run) != _cells(src):
        raise SystemExit(f"{name}: {_rel(run)} ran from another version of the notebook; run "
                         f"`make demo` again (it reruns the changed stages)")
    nb = json.loads(run.read_text())
    injected = [c for c in nb["cells"] if INJECTED in c["metadata"].get("tags", [])]
    want = P.inject(params, P.notebook_parameters(src))
    if len(injected) != 1 or P.parse_parameters_source("".join(injected[0]["source"]), str(run)) != want:
        raise SystemExit(f"{name}: {_rel(run)} ran with other parameters than {label}")
    if any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", [])):
        raise SystemExit(f"{name}: {_rel(run)} holds an error output")
    injected[0]["metadata"]["tags"] = [INJECTED, SKIP]
    injected[0]["id"] = INJECTED  # papermill draws a new random id at every run: a stable one keeps diffs quiet
    injected[0]["source"] = demo_cell(P.notebook_parameters(src), want)
    return nbclean.clean(nb)


def demo_cell(defaults: dict, values: dict) -> str:
    """The injected cell as committed: only the run's values that differ from the `parameters` cell, so that a
    setting an exercise changes in the `parameters` cell is not overridden by this one."""
    lines = [f"{k} = {v!r}" for k, v in values.items() if defaults.get(k) != v]
    return "\n".join(["# The demo run's values where they differ from the cell above (CI skips this cell; delete it "
                       "for the quick run)", *lines])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="notebook name prefixes")
    ap.add_argument("--params", nargs="*", default=["params/demo.yaml"], help="the run's overlays (default: the demo)")
    args = ap.parse_args()
    params = P.load(PRIMARY_SYSTEM, [ROOT / p for p in args.params])
    chosen = [(n, s) for n, s in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    label = " + ".join(["params/base.yaml", f"params/{PRIMARY_SYSTEM}.yaml", *args.params])
    ready = {name: committed_form(name, scope, params, label) for name, scope in chosen}  # check all before writing any
    for name, nb in ready.items():
        nbclean.write_pair(ROOT / "notebooks" / f"{name}.ipynb", nb)  # the notebook and its .py twin
        print(f"{name}: committed the outputs of {_rel(executed_copy(name, dict(NOTEBOOKS)[name], params))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
