"""The online watcher's file rules: a WAV is scored once, complete and stable; unfinished files wait and retry."""
from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from asd_lib.data import wav_state
from asd_lib.score import watch


class FakeSystem:
    """Records the files it is asked to score; 'scores' a file by reading it whole."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def score_clip(self, path, machine=None):
        frames = sf.info(str(path)).frames
        self.seen.append((Path(path).name, frames))
        return {"file": str(path), "notes": [], "latency_ms": 1.0, "frames": frames}


def _wav(path: Path, seconds: float = 1.0) -> bytes:
    sf.write(path, np.zeros((int(16000 * seconds), 2), np.float32) + 0.01, 16000, subtype="PCM_16")
    return path.read_bytes()


def _as_recording(full: bytes, keep: int) -> bytes:
    """The first `keep` bytes of a WAV with its size fields set to 0xFFFFFFFF, as a recorder leaves them."""
    head = bytearray(full[:keep])
    head[4:8] = struct.pack("<I", 0xFFFFFFFF)
    pos = full.index(b"data")
    head[pos + 4:pos + 8] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(head)


def test_wav_state_reads_the_header_against_the_size(tmp_path: Path):
    full = _wav(tmp_path / "a.wav")
    assert wav_state(tmp_path / "a.wav") == "complete"
    (tmp_path / "b.wav").write_bytes(full[: len(full) // 3])
    assert wav_state(tmp_path / "b.wav") == "incomplete"
    (tmp_path / "c.wav").write_bytes(_as_recording(full, len(full) // 2))
    assert wav_state(tmp_path / "c.wav") == "recording"
    (tmp_path / "d.wav").write_bytes(b"not audio at all")
    assert wav_state(tmp_path / "d.wav") == "other"


def test_an_unfinished_file_waits_then_errors_then_is_scored_when_complete(tmp_path: Path, capsys):
    full = _wav(tmp_path / "src.wav")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "rec.wav").write_bytes(_as_recording(full, 4000))  # a recorder that stalled
    (folder / "copy.wav").write_bytes(full[:5000])  # a copy that stalled, normal header

    def finish_later():
        time.sleep(1.5)
        (folder / "rec.wav").write_bytes(full)
        (folder / "copy.wav").write_bytes(full)

    system = FakeSystem()
    threading.Thread(target=finish_later).start()
    scored, failed = watch(system, folder, poll=0.05, settle=0.1, max_wait=0.5, max_files=4, timeout=20)
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    errors = sorted(Path(r["file"]).name for r in lines if r.get("error_kind") == "unfinished")
    assert errors == ["copy.wav", "rec.wav"] and (scored, failed) == (2, 2)
    assert sorted(system.seen) == [("copy.wav", 16000), ("rec.wav", 16000)]  # never scored on part of the audio


def test_a_growing_recording_is_not_scored_before_it_is_closed(tmp_path: Path):
    full = _wav(tmp_path / "src.wav")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "rec.wav").write_bytes(_as_recording(full, 4000))

    def record():
        for keep in range(8000, len(full), 8000):
            time.sleep(0.05)
            (folder / "rec.wav").write_bytes(_as_recording(full, keep))
        time.sleep(0.3)  # the recorder pauses, then closes the file with the real sizes
        (folder / "rec.wav").write_bytes(full)

    system = FakeSystem()
    threading.Thread(target=record).start()
    assert watch(system, folder, poll=0.05, settle=0.1, max_wait=30, max_files=1, timeout=20) == (1, 0)
    assert system.seen == [("rec.wav", 16000)]
