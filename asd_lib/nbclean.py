"""Notebook cleaner: ``python -m asd_lib.nbclean [--check] PATH ...``.

Drops what a run leaves behind that is not content: notebook-level metadata other than the kernel spec and the
language name (papermill's parameters and timings, widget state, the Python version), and cell metadata other than
``tags`` (timings, ``collapsed``/``scrolled`` flags, papermill's per-cell status). Keeps sources, outputs and
execution counts, so the committed notebooks still show the smoke run (docs/conventions.md, "Notebooks").
``--check`` changes nothing and exits 1 when some file would change; CI runs it on ``notebooks/``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

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


def notebooks_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The .ipynb files named or found under the given folders (scratch notebooks `_*.ipynb` and checkpoints skipped)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in sorted(p.rglob("*.ipynb"))
                      if not f.name.startswith("_") and ".ipynb_checkpoints" not in f.parts]
        elif p.suffix == ".ipynb" and p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"not a notebook or folder: {p}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Clean notebooks in place, or with --check report the ones that would change (exit 1)."""
    ap = argparse.ArgumentParser(prog="python -m asd_lib.nbclean", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="notebooks or folders of notebooks")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = ap.parse_args(argv)
    try:
        files = notebooks_in(args.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dirty = []
    for f in files:
        text = f.read_text()
        try:
            new = clean_text(text)
        except (ValueError, KeyError) as exc:
            print(f"error: {f} is not a valid notebook: {exc}", file=sys.stderr)
            return 2
        if new != text:
            dirty.append(f)
            if not args.check:
                tmp = f.with_name(f".{f.name}.tmp{os.getpid()}")
                tmp.write_text(new)
                os.replace(tmp, f)
    verb = "would change" if args.check else "cleaned"
    for f in dirty:
        print(f"{verb}: {f}")
    if args.check and dirty:
        print(f"{len(dirty)} notebook(s) need cleaning: run python -m asd_lib.nbclean {' '.join(args.paths)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
