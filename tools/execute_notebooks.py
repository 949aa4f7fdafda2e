"""Re-execute the committed notebooks in place, in pipeline order, and clean them.

    python tools/execute_notebooks.py                 # every notebook, in the order of asd_lib.run.NOTEBOOKS
    python tools/execute_notebooks.py --only 00b 01   # just these (name prefixes)

The notebooks in notebooks/ are the source: edit them in JupyterLab (which saves the .py twin with the notebook) or
edit a twin notebooks/NN_name.py, then run this so that the committed outputs and execution counts are those of a
top-to-bottom run. Each notebook is first synced with its twin (`python -m asd_lib.nbclean`: a twin saved after the
notebook gives the cells), then runs with its own `parameters` cell (the smoke configuration, which
tests/test_notebooks.py keeps in line with params/smoke.yaml) in a fresh kernel whose working directory is the
repository root, and is written back cleaned, its twin rewritten from it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asd_lib import nbclean  # noqa: E402
from asd_lib.run import KERNEL, NOTEBOOKS  # noqa: E402


os.environ.setdefault("TQDM_DISABLE", "1")  # committed outputs hold no progress widgets (the kernels inherit this)


def execute(path: Path, timeout: int = 1800) -> None:
    """Sync one notebook with its twin, run it top to bottom and write it back cleaned with its twin (atomically)."""
    from nbclient import NotebookClient

    synced, errors = nbclean.sync(path)
    if errors:
        raise SystemExit("\n".join(f"error: {e}" for e in errors))
    for line in synced:
        print(line, flush=True)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, resources={"metadata": {"path": str(ROOT)}}).execute()
    nbclean.write_pair(path, nb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="notebook name prefixes")
    args = ap.parse_args()
    names = [n for n, _ in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in names:
        t0 = time.perf_counter()
        execute(ROOT / "notebooks" / f"{name}.ipynb")
        print(f"{name}: executed in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
