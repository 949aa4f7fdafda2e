"""Atomic file and folder writes shared by every stage: a killed run never leaves half a file that a later run trusts."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def _atomic_file(path: str | os.PathLike, mode: str, sync: bool = False) -> Iterator[IO]:
    """An open temporary file in ``path``'s folder that becomes ``path`` by a rename once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as fh:
            yield fh
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename; returns the path."""
    with _atomic_file(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays) -> Path:
    """``numpy.savez`` to ``path`` through a synced temporary file and a rename; returns the path."""
    import numpy as np

    with _atomic_file(path, "wb", sync=True) as fh:
        np.savez(fh, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a uniquely named temporary file in the same folder and a rename."""
    import torch

    with _atomic_file(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an existing ``out`` with two renames."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
