"""Build the teaching notebooks from their cell texts, execute them on the smoke configuration, clean them.

    python tools/build_notebooks.py                 # write every notebook, execute in order, clean
    python tools/build_notebooks.py --only 03a 03b  # just these
    python tools/build_notebooks.py --no-execute    # write without running (outputs cleared)

The notebooks are the product; this script is how they are kept consistent. Each `parameters` cell is generated
from params/base.yaml + params/dev_offline.yaml + params/smoke.yaml (values) and base.yaml (comments), so the
notebooks' defaults are the smoke configuration by construction (tests/test_notebooks.py checks it stays so).
Cell texts live in tools/notebook_cells.py.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from asd_lib import nbclean, params as P  # noqa: E402
from asd_lib.run import NOTEBOOKS  # noqa: E402
import notebook_cells  # noqa: E402

CHECK = "# NBVAL_CHECK_OUTPUT"


def base_comments() -> dict[str, str]:
    """Comment of each key in params/base.yaml (text after '#' on the key's line)."""
    out = {}
    for line in (P.PARAMS_DIR / "base.yaml").read_text().splitlines():
        m = re.match(r"^(\w+):\s*(.*?)\s*#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(3)
    return out


def smoke_values() -> dict:
    """The notebooks' defaults: base + dev_offline + smoke."""
    return P.load("dev_offline", [P.PARAMS_DIR / "smoke.yaml"]).values


def parameters_source(keys: list[str]) -> str:
    """`name = literal  # comment` lines for the given keys."""
    values, comments = smoke_values(), base_comments()
    lines = []
    for k in keys:
        if k not in values:
            raise KeyError(f"parameter {k!r} is not in params/base.yaml; add it there first")
        lit = repr(values[k])
        lines.append(f"{k} = {lit}".ljust(34) + f"  # {comments.get(k, '')}".rstrip())
    return "\n".join(lines)


def build(name: str) -> nbformat.NotebookNode:
    """A notebook from its spec in notebook_cells: title, summary line, keys, body cells."""
    spec = notebook_cells.NOTEBOOKS[name]
    cells = [nbformat.v4.new_markdown_cell(spec["intro"].strip())]
    cells.append(nbformat.v4.new_code_cell(parameters_source(spec["keys"]), metadata={"tags": ["parameters"]}))
    for kind, text in spec["cells"]:
        text = text.strip("\n")
        if kind == "md":
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            src = (CHECK + "\n" + text) if kind == "check" else text
            cells.append(nbformat.v4.new_code_cell(src))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(nbclean.KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):  # stable ids: diffs stay readable
        c["id"] = f"{name[:3].rstrip('_')}-{i:02d}"
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 1200) -> None:
    """Run a notebook top to bottom in a fresh python3 kernel with cwd = repository root."""
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(ROOT)}}).execute()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="notebook name prefixes")
    ap.add_argument("--no-execute", action="store_true")
    args = ap.parse_args()
    names = [n for n, _ in NOTEBOOKS if n in notebook_cells.NOTEBOOKS]
    if args.only:
        names = [n for n in names if any(n.startswith(o) for o in args.only)]
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in names:
        nb = build(name)
        t0 = time.perf_counter()
        if not args.no_execute:
            execute(nb)
        path = ROOT / "notebooks" / f"{name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        text = nbclean.dumps(nbclean.clean(nb))
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        print(f"{name}: {'executed in %.1f s' % (time.perf_counter() - t0) if not args.no_execute else 'written'}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
