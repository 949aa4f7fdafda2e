"""Atomic file and folder writes shared by every stage: a killed run never leaves half a file that a later run trusts."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # files get the permissions a plain open() would give them (mkstemp makes them 0600)


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
        os.chmod(tmp, 0o666 & ~_UMASK)
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
    with _atomic_file(path, "wb", sync=True) as fh:
        np.savez(fh, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a uniquely named temporary file in the same folder and a rename."""
    import torch  # heavy: keeps `import asd_lib.run` free of torch

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def temp_dir(out: str | os.PathLike) -> Path:
    """A fresh ``.<name>.tmp-<pid>`` folder beside ``out`` to build it in (then ``replace_dir``). Leftovers of
    runs that were killed (their process is gone) are deleted first, so they never pile up."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.tmp-*"):
        pid = old.name.rpartition("-")[2]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    return tmp


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (a ``.lock`` file in it) for the block, or raise ``FolderBusy`` at once.

    Two runs writing one results folder (or one fine-tuning output) would mix their files; the second refuses with
    the first one's process id. The lock is the OS's (``flock``): it disappears with the process, so a killed run
    never leaves a stale lock behind. Where ``fcntl`` is missing (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    try:
        import fcntl  # POSIX only: the except runs unlocked without it
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderBusy(f"{folder} is in use by {holder}; wait for that {what} to finish (or stop it), or "
                             "write to another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} ({what})")
        fh.flush()
        yield path
    finally:
        fh.close()
