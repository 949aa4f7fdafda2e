"""Notebook cleaner and pair sync: ``python -m asd_lib.nbclean [--check] PATH ...``.

Cleaning drops what a run leaves behind that is not content: notebook-level metadata other than the kernel spec and
the language name (papermill's parameters and timings, widget state, the Python version, the ``jupytext`` entry
JupyterLab adds on save), cell metadata other than ``tags`` (timings, ``collapsed``/``scrolled`` flags, papermill's
per-cell status) and blank lines at the end of a cell. It keeps sources, outputs and execution counts, so the
committed notebooks still show the demo run (docs/conventions.md, "Notebooks").

Pairs: where a jupytext configuration pairs the notebooks (``notebooks/jupytext.toml``: ``formats =
"ipynb,py:percent"``, read by JupyterLab too), each ``NN_name.ipynb`` has a twin ``NN_name.py`` that holds its cells
without outputs, exactly as jupytext writes it from the cleaned notebook. The pairing lives in that file, not in the
notebooks' metadata, so cleaning a notebook keeps it paired. Without ``--check`` each notebook is cleaned and its pair
synced: the file of the pair saved last supplies the cells (JupyterLab saves both; a ``.py`` edited in an editor is
newer, and its cells go into the notebook, where the cells it changed lose their outputs until ``make demo`` and
``make notebooks`` refresh them), the ``.ipynb`` keeps the outputs, and the twin is rewritten from the result. After
a git merge or checkout the files' times say little about which side was edited: read the lines this prints (which
file took whose cells) before committing. A twin without its notebook is an error, unless it is named on the
command line: then its notebook is created from it.

``--check`` changes nothing and exits 1 when some file would change (a notebook to clean, a twin missing, out of
sync or without its notebook); CI runs it on ``notebooks/`` (``make test``).

nbformat and jupytext (about a second to import) are imported inside the functions that use them, so importing
this module and ``--help`` stay fast.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from asd_lib import params as P
from asd_lib.fsutil import atomic_write_text

KEEP_CELL_METADATA = ("tags",)
KEEP_NOTEBOOK_METADATA = ("kernelspec",)
KERNELSPEC = {"display_name": "Python 3 (asd-kit)", "language": "python", "name": "asd-kit"}  # `make venv`


def clean(nb: dict[str, Any]) -> dict[str, Any]:
    """Return a cleaned copy of a notebook (JSON dict): run metadata gone, tags/outputs/counts kept."""
    out = json.loads(json.dumps(nb))
    meta = out.get("metadata", {})
    new_meta: dict[str, Any] = {k: meta[k] for k in KEEP_NOTEBOOK_METADATA if k in meta}
    if "kernelspec" in new_meta:
        new_meta["kernelspec"] = dict(KERNELSPEC)
    new_meta["language_info"] = {"name": meta.get("language_info", {}).get("name", "python")}
    out["metadata"] = new_meta
    for cell in out.get("cells", []):
        cmeta = cell.get("metadata", {})
        cell["metadata"] = {k: cmeta[k] for k in KEEP_CELL_METADATA if cmeta.get(k)}
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        cell["source"] = cell.get("source", "").rstrip()  # the py:percent twin cannot hold trailing blank lines
        if cell.get("cell_type") == "code":
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream" and isinstance(o.get("text"), list):
                    o["text"] = "".join(o["text"])
                if "metadata" in o and o.get("output_type") in ("display_data", "execute_result"):
                    o["metadata"] = {k: v for k, v in o["metadata"].items() if k != "papermill"}
    return out


def dumps(nb: dict[str, Any]) -> str:
    """Serialise a notebook the way nbformat does (indent 1, sorted keys, trailing newline)."""
    import nbformat

    return nbformat.writes(nbformat.from_dict(nb)) + "\n"


def clean_text(text: str) -> str:
    """Cleaned serialisation of notebook JSON text."""
    return dumps(clean(json.loads(text)))


# ----------------------------------------------------------------------------------------------------------
# pairs: a notebook and its jupytext twin(s)


@dataclass(frozen=True)
class Twin:
    """A text file that jupytext pairs with a notebook: its path, its jupytext format and the configuration."""

    path: Path
    fmt: dict[str, str]
    config: Any  # jupytext.config.JupytextConfiguration


def _config(folder: Path) -> Any:
    from jupytext.config import load_jupytext_config

    return load_jupytext_config(str(folder))


def twins(notebook: Path) -> list[Twin]:
    """The twins of a notebook under the jupytext configuration of its folder (``notebooks/jupytext.toml``: one,
    ``NN_name.py``); [] when no configuration pairs it."""
    from jupytext.paired_paths import paired_paths

    config = _config(notebook.parent)
    formats = config.default_formats(str(notebook)) if config is not None else None
    if not formats:
        return []
    return [Twin(Path(p), fmt, config) for p, fmt in paired_paths(str(notebook), "ipynb", formats)
            if fmt["extension"] != ".ipynb"]


def notebook_of(text_file: Path) -> Path | None:
    """The .ipynb a twin belongs to (whether or not it exists), or None when no jupytext configuration pairs it."""
    from jupytext.formats import long_form_multiple_formats
    from jupytext.paired_paths import paired_paths

    config = _config(text_file.parent)
    formats = config.default_formats(str(text_file)) if config is not None else None
    if not formats:
        return None
    fmt = next((f for f in long_form_multiple_formats(formats) if f["extension"] == text_file.suffix), None)
    if fmt is None:
        return None
    return next((Path(p) for p, f in paired_paths(str(text_file), fmt, formats) if f["extension"] == ".ipynb"), None)


def twin_text(nb: dict[str, Any], twin: Twin) -> str:
    """What jupytext writes in the twin for this (cleaned) notebook: its cells and tags, no outputs."""
    import jupytext
    import nbformat

    return jupytext.writes(nbformat.from_dict(json.loads(json.dumps(nb))), fmt=dict(twin.fmt), config=twin.config)


def read_twin(text: str, twin: Twin) -> Any:
    """The notebook (nbformat node, no outputs) that jupytext reads from a twin's text."""
    import jupytext

    return jupytext.reads(text, fmt=dict(twin.fmt), config=twin.config)


def _cells(cells: Iterable[Any]) -> list[tuple[str, str, list[str]]]:
    return [(c["cell_type"], c["source"], list(c.get("metadata", {}).get("tags", []))) for c in cells]


def round_trip_problem(nb: dict[str, Any], twin: Twin) -> str | None:
    """None when the twin written from the (cleaned) notebook reads back as the same cells, types and tags; else
    which cell does not."""
    back = read_twin(twin_text(nb, twin), twin)
    a, b = _cells(nb["cells"]), _cells(back.cells)
    if a == b:
        return None
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (f"cell {i + 1} does not survive the round trip through {twin.path.name} (a line '# %%' inside a cell "
            f"starts a new cell there); change the cell")


def combine(inputs: Any, nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook ``nb`` with the cells of ``inputs`` (a twin read back): a cell whose type and source are
    unchanged keeps its id, outputs and execution count; a changed one keeps its id and loses its outputs (re-execute
    it); a new one starts empty. Tags come from ``inputs``."""
    import nbformat

    old = nb["cells"]
    new = inputs.cells
    with_ids = (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) >= (4, 5)
    out: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(None, [(c["cell_type"], c["source"]) for c in old],
                                      [(c.cell_type, c.source) for c in new], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        for k, j in enumerate(range(j1, j2)):
            src = new[j]
            meta = {m: copy.deepcopy(src.metadata[m]) for m in KEEP_CELL_METADATA if src.metadata.get(m)}
            if op == "equal":
                cell = copy.deepcopy(old[i1 + k])
            else:
                maker = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                         "raw": nbformat.v4.new_raw_cell}[src.cell_type]
                cell = json.loads(json.dumps(maker(src.source)))
                prev = old[i1 + k] if op == "replace" and i1 + k < i2 else None
                if prev is not None and "id" in prev:
                    cell["id"] = prev["id"]
                if not with_ids:
                    cell.pop("id", None)
            cell["metadata"] = meta
            out.append(cell)
    result = copy.deepcopy(nb)
    result["cells"] = out
    return result


def write_pair(path: Path, nb: dict[str, Any]) -> None:
    """Write a notebook cleaned, then its twins from it (tools/commit_notebooks.py)."""
    cleaned = clean(nb)
    atomic_write_text(path, dumps(cleaned))
    for t in twins(path):
        atomic_write_text(t.path, twin_text(cleaned, t))


def sync(path: Path, write: bool = True) -> tuple[list[str], list[str]]:
    """Clean one notebook and sync it with its twins (see the module docstring); with ``write=False`` change
    nothing. Returns (what changed or would change, errors), one line each."""
    text = path.read_text()
    cleaned = clean(json.loads(text))
    pairs = twins(path)
    verb = "cleaned" if write else "would change"
    changes: list[str] = []
    source = None  # a twin saved after the notebook whose cells differ: it supplies the cells
    for t in pairs:
        if t.path.is_file() and t.path.stat().st_mtime_ns > path.stat().st_mtime_ns and \
                t.path.read_text() != twin_text(cleaned, t):
            source = t
            break
    took = False  # whether the notebook takes cells from that twin
    if source is not None:
        before = _cells(cleaned["cells"])
        cleaned = clean(combine(read_twin(source.path.read_text(), source), cleaned))
        took = _cells(cleaned["cells"]) != before
        if took:
            changes.append(f"{'updated' if write else 'out of sync'}: {path} "
                           f"({'took' if write else 'would take'} the cells of {source.path}, saved after it; "
                           f"refresh its outputs: make demo, make notebooks)")
    for t in pairs:
        problem = round_trip_problem(cleaned, t)
        if problem:
            return changes, [f"{path}: {problem}"]
    new = dumps(cleaned)
    if new != text and not took:
        changes.append(f"{verb}: {path}")
    twin_writes = []
    for t in pairs:
        expected = twin_text(cleaned, t)
        if not t.path.is_file():
            changes.append(f"{'wrote' if write else 'missing twin'}: {t.path} (of {path})")
        elif t.path.read_text() != expected:
            if not (took and t is source):
                changes.append(f"{'rewrote' if write else 'out of sync'}: {t.path} "
                               f"({'from' if write else 'differs from'} {path})")
        else:
            continue
        twin_writes.append((t.path, expected))
    if write:
        if new != text:
            atomic_write_text(path, new)
        for p, expected in twin_writes:  # after the notebook: the twin is the newer file, as JupyterLab leaves it
            atomic_write_text(p, expected)
    return changes, []


def create_from_twin(text_file: Path, notebook: Path) -> None:
    """Write a new notebook (no outputs, the kit's kernel) from a twin whose notebook does not exist yet."""
    pairs = [t for t in twins(notebook) if t.path == text_file]
    nb = read_twin(text_file.read_text(), pairs[0])
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    write_pair(notebook, json.loads(json.dumps(nb)))


def write_parameters_cell(path: Path) -> bool:
    """Rewrite a notebook's tagged ``parameters`` cell from params/ (``params.smoke_parameters_cell``: its names, the
    smoke values, base.yaml's comments), and its twin; nothing else changes. True when the cell changed."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    text = P.smoke_parameters_cell(path)
    old = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    if old.rstrip() == text:
        return False
    cell["source"] = text
    write_pair(path, nb)
    return True


def _skipped(p: Path) -> bool:
    return p.name.startswith("_") or ".ipynb_checkpoints" in p.parts


def collect(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path], list[Path]]:
    """(notebooks, twins without a notebook found in the folders, twins without a notebook named) for the paths:
    notebooks, twins (standing for their notebook) or folders. Scratch files `_*` and checkpoints are skipped."""
    from jupytext.formats import NOTEBOOK_EXTENSIONS

    notebooks: list[Path] = []
    orphans: list[Path] = []
    named: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            notebooks += [f for f in sorted(p.rglob("*.ipynb")) if not _skipped(f)]
            for f in sorted(p.rglob("*")):
                if f.suffix != ".ipynb" and f.suffix in NOTEBOOK_EXTENSIONS and f.is_file() and not _skipped(f):
                    nb = notebook_of(f)
                    if nb is not None and not nb.is_file():
                        orphans.append(f)
        elif p.suffix == ".ipynb" and p.is_file():
            notebooks.append(p)
        elif p.is_file() and notebook_of(p) is not None:
            nb = notebook_of(p)
            (notebooks if nb.is_file() else named).append(nb if nb.is_file() else p)
        else:
            raise FileNotFoundError(f"not a notebook, a notebook's twin or a folder: {p}")
    return list(dict.fromkeys(notebooks)), orphans, named


def notebooks_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The .ipynb files named or found under the given folders (scratch notebooks `_*.ipynb` and checkpoints
    skipped); a twin named stands for its notebook."""
    return collect(paths)[0]


def main(argv: list[str] | None = None) -> int:
    """Clean notebooks and sync their twins in place, or with --check report what would change (exit 1)."""
    ap = argparse.ArgumentParser(prog="python -m asd_lib.nbclean", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="notebooks, their .py twins, or folders of notebooks")
    ap.add_argument("--parameters", action="store_true",
                    help="only rewrite each notebook's parameters cell from params/*.yaml (the smoke values, "
                         "base.yaml's comments) and its twin, then stop")
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if a notebook would change or a pair is out of sync")
    args = ap.parse_args(argv)
    try:
        files, orphans, named = collect(args.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.parameters:
        for f in files:
            if write_parameters_cell(f):
                print(f"rewrote the parameters cell: {f} (refresh its outputs: make demo, make notebooks)")
        return 0
    changes: list[str] = []
    errors: list[str] = []
    for f in files:
        try:
            done, bad = sync(f, write=not args.check)
        except (ValueError, KeyError) as exc:
            print(f"error: {f} is not a valid notebook: {exc}", file=sys.stderr)
            return 2
        changes += done
        errors += bad
    for f in orphans + named:
        nb = notebook_of(f)
        if args.check:
            changes.append(f"no notebook: {f} (a twin without {nb})")
        elif f in named:
            create_from_twin(f, nb)
            changes.append(f"created: {nb} (from {f}; list it in asd_lib.run.NOTEBOOKS, then make demo and "
                           "make notebooks)")
        else:
            errors.append(f"{f} has no notebook {nb}: git rm it if the notebook was renamed or removed, or create "
                          f"the notebook from it: python -m asd_lib.nbclean {f}")
    for line in changes:
        print(line)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if args.check and changes:
        print(f"{len(changes)} file(s) need cleaning or syncing: run python -m asd_lib.nbclean {' '.join(args.paths)}"
              f" (in each pair the file saved last gives the cells, the .ipynb the outputs)", file=sys.stderr)
    if errors:
        return 2
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
