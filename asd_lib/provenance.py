"""What a stage's result depends on beyond its parameters: the library code it runs and the data it reads.

The runner (``asd_lib.run``) keys every stage on its injected parameters, its notebook's source and its upstream
stages. Two more inputs make a stored result stale, and this module digests them:

- ``code_digest(source)``: the ``asd_lib`` modules a piece of code imports, followed transitively through the
  package (absolute and relative imports, and every parent package's ``__init__``), hashed by content. An edit to
  ``fusion.py`` changes the digest of the notebooks that import fusion, directly or through another module, and
  of no other. A sub-package (``scorers/``, ``finetune/``, ``backbones/``, ...) counts as a whole: once any of its
  modules is loaded, every file under its folder is digested, so that an edit to any of them changes the digest
  even where the package reaches a module in a way the import scan cannot see.
- ``data_digest(root)``: every file under a data folder by relative name, size and modification time, so that a
  deleted, added, replaced or touched file changes it (content hashes would cost minutes on the DCASE-size set);
  ``files_digest`` does the same for a list of files, ``clips_digest`` for a manifest's clips (fine-tuning's resume
  state, its fbank cache and the embedding cache record it).
- ``snapshot`` / ``written_files`` / ``damaged_output``: the files a stage wrote, with their hashes, and whether
  they are still as written when the stage's result is about to be reused.
"""
from __future__ import annotations

import ast
import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from asd_lib.fsutil import file_sha256

PACKAGE = "asd_lib"
ROOT = Path(__file__).resolve().parents[1]


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parse(code: str) -> ast.Module:
    """Parse notebook or module code; IPython magics and shell lines are dropped first when they break it."""
    try:
        return ast.parse(code)
    except SyntaxError:
        kept = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        return ast.parse("\n".join(kept))


def imported_modules(code: str, module: str | None = None) -> set[str]:
    """Names of the ``asd_lib`` modules that ``code`` imports directly.

    ``module`` is the dotted name of the module the code belongs to (for its relative imports); ``None`` for a
    notebook. ``from asd_lib import data`` names ``asd_lib.data``, as the submodule it is.
    """
    if module is None:
        package = None
    else:
        is_package = (_module_file(module) or Path()).name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_parse(code)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if _module_file(f"{target}.{a.name}")}
    return {m for m in found if _module_file(m)}


def package_modules(package: str) -> list[str]:
    """Every module under a package's folder (its sub-packages' too), by dotted name; [] for a plain module."""
    path = _module_file(package)
    if path is None or path.name != "__init__.py":
        return []
    out = []
    for file in sorted(path.parent.rglob("*.py")):
        parts = file.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith(".") for p in parts):
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@lru_cache(maxsize=None)
def _file_sha(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_closure(code: str) -> list[str]:
    """Every ``asd_lib`` module that running ``code`` loads: its imports, theirs, and their parent packages; with a
    sub-package of ``asd_lib``, every module of that sub-package."""
    todo, seen = list(imported_modules(code)), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        if mod != PACKAGE:
            todo += package_modules(mod)  # a sub-package is one unit: all of its files
        todo += list(imported_modules(_module_file(mod).read_text(), mod))
    return sorted(seen)


def code_digest(code: str) -> dict[str, str]:
    """{module: sha256 of its file} for ``module_closure(code)``: what a stage's result depends on in the library."""
    out = {}
    for mod in module_closure(code):
        path = _module_file(mod)
        out[mod] = _file_sha(path, path.stat().st_mtime_ns)
    return out


def data_digest(root: str | os.PathLike) -> str:
    """Digest of every file under ``root`` (relative name, size, mtime); 'absent' when there is no such folder."""
    root = Path(root)
    if not root.is_dir():
        return "absent"
    named = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        named += [((Path(folder) / name).relative_to(root).as_posix(), Path(folder) / name) for name in sorted(files)]
    return files_digest(named)


def clips_digest(rows) -> str:
    """``files_digest`` of a manifest's rows (its ``file_name`` and ``path`` columns), in their order."""
    return files_digest(zip(rows["file_name"], rows["path"]))


def files_digest(named: Iterable[tuple[str, str | os.PathLike]]) -> str:
    """Digest of (name, path) pairs by name, size and mtime of each file: it changes when a file is replaced,
    rewritten, touched, added or dropped (a regenerated data set with the same file names included)."""
    h = hashlib.sha256()
    for name, path in named:
        st = os.stat(path)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- stage outputs
# What a stage wrote, to check before its result is reused: a file it made may since have been deleted, truncated
# or replaced, and a stage reused over it would hand the damage on. The runner snapshots the results folder (name,
# size, mtime) before and after each stage; the files that appeared or changed are the stage's outputs, recorded
# with their sha256.


def snapshot(root: str | os.PathLike, skip: tuple[str | os.PathLike, ...] = ()) -> dict[str, tuple[int, int]]:
    """Relative name -> (size, mtime_ns) of every file under ``root``, leaving out the folders in ``skip``."""
    root = Path(root)
    skipped = {Path(s).resolve() for s in skip}
    out: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return out
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skipped)
        for name in files:
            path = here / name
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted while walking
                continue
            out[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def written_files(root: str | os.PathLike, before: dict[str, tuple[int, int]],
                  after: dict[str, tuple[int, int]]) -> dict[str, list]:
    """The files of ``after`` that are new or changed since ``before``: name -> [size, mtime_ns, sha256]."""
    root = Path(root)
    return {name: [*stat, file_sha256(root / name)] for name, stat in sorted(after.items())
            if before.get(name) != stat}


def damaged_output(root: str | os.PathLike, outputs: dict[str, list]) -> str | None:
    """None when every recorded output is as written; else a line naming the first one that is missing or whose
    content changed (a touched file with the same content is fine: the hash is compared when size or mtime differ)."""
    root = Path(root)
    for name, (size, mtime, digest) in outputs.items():
        path = root / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"its output {name} is missing"
        if (st.st_size, st.st_mtime_ns) != (size, mtime) and file_sha256(path) != digest:
            return f"its output {name} changed since it was written"
    return None
