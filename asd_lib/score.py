"""Score clips with an exported online system, one JSON line per clip (``asd_lib.online``).

    python -m asd_lib.score --system-dir DIR FILE.wav [FILE.wav ...] [--machine fan]
    python -m asd_lib.score --system-dir DIR --watch FOLDER [--max-files N] [--timeout S]
    python -m asd_lib.score --export DIR --params results/dev_online/params.json   (export a finished run)

Each scored clip prints ``{"file", "machine", "scores": {scorer: calibrated z}, "raw", "fused", "threshold",
"decision", "latency_ms", "latency_parts_ms": {"load", "preprocess", "encode", "score"}, "notes"}``. A clip that
cannot be scored prints ``{"file", "error", "error_kind"}`` on stdout and a message on stderr, and scoring goes on.

Input rules (documented choices):
- mono file: accepted when the system scores channel 0 only (the authors' ch0 systems): its one channel IS the
  near mic, a note says so; refused for ch1 / both systems, whose far-mic channel a mono file does not have;
- another sample rate: resampled to 16 kHz (torchaudio, as ``asd_lib.data.load_clip``), with a note;
- shorter than one patch (2800 samples = 16 fbank frames = 0.175 s), silent (peak < 1e-6), NaN/inf samples,
  truncated or non-WAV files, an unknown machine type: an error line, never a score.
The machine type comes from ``--machine``, else the clip's folder (``<machine>/test/x.wav``) or a name prefix
(``<machine>_x.wav``). ``--watch`` polls FOLDER (recursively) and scores every WAV once, when its size and mtime
have been stable for ``--settle`` seconds and its RIFF header agrees with its size. A file still being recorded
(header sizes 0 or 0xFFFFFFFF) or copied (fewer bytes than its header declares) waits; unchanged for ``--max-wait``
seconds it gets an error line, and it is tried again when it changes. The watcher keeps going after errors and
stops on Ctrl-C, after ``--max-files`` clips (errors count) or after ``--timeout`` seconds. Exit status: 0 all scored, 1 some clip failed, 2 no system.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from asd_lib import logs

AUDIO_SUFFIXES = (".wav", ".wave")


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def score_one(system: Any, path: str | Path, machine: str | None = None) -> bool:
    """Score one file and print its JSON line (or an error line); True when it was scored."""
    from asd_lib.online import ClipError  # sklearn, scipy, pandas: keeps --help light

    try:
        res = system.score_clip(path, machine=machine)
    except ClipError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        _emit({"file": str(path), "error": str(err), "error_kind": err.kind})
        return False
    except Exception as err:  # keep a watcher alive whatever one file does
        print(f"error: {path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        _emit({"file": str(path), "error": f"{type(err).__name__}: {err}", "error_kind": "internal"})
        return False
    for note in res["notes"]:
        print(f"note: {path}: {note}", file=sys.stderr, flush=True)
    res["latency_ms"] = round(res["latency_ms"], 3)
    _emit(res)
    return True


def _candidates(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file():
            yield p


def watch(system: Any, folder: str | Path, machine: str | None = None, poll: float = 0.5, settle: float = 1.0,
          max_files: int | None = None, timeout: float | None = None, skip_existing: bool = False,
          max_wait: float = 60.0) -> tuple[int, int]:
    """Poll ``folder`` and score each new WAV once it is complete and stable; returns (scored, failed).

    A file is scored when its size and mtime have not changed for ``settle`` seconds AND its RIFF header agrees with
    its size (``data.wav_state``). A file still being recorded (header sizes 0 / 0xFFFFFFFF) or copied (fewer bytes
    than declared) waits; after ``max_wait`` seconds of no change it gets an error line, and it is tried again as
    soon as it changes. Files that are not WAV at all go to the reader, which refuses them with an error line.
    """
    from asd_lib.data import wav_state  # pandas: keeps --help light

    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"error: watch folder not found: {folder}")
    done: dict[Path, tuple[int, int] | None] = {p: None for p in _candidates(folder)} if skip_existing else {}
    retry: set[Path] = set()  # refused as unfinished: tried again when they change
    pending: dict[Path, tuple[tuple[int, int], float]] = {}  # path -> ((size, mtime_ns), unchanged since)
    scored = failed = 0
    start = time.monotonic()
    print(f"watching {folder} (poll {poll} s, settle {settle} s, unfinished files wait up to {max_wait} s); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        while True:
            now = time.monotonic()
            for p in _candidates(folder):
                try:
                    st = p.stat()
                except OSError:
                    continue  # vanished between listing and stat
                sig = (st.st_size, st.st_mtime_ns)
                if p in done:
                    if p not in retry or done[p] == sig:
                        continue
                    del done[p]  # an unfinished file changed: look at it again
                    retry.discard(p)
                prev = pending.get(p)
                if prev is None or prev[0] != sig or st.st_size == 0:
                    pending[p] = (sig, now)
                    continue
                if now - prev[1] < settle:
                    continue
                state = wav_state(p)
                if state in ("recording", "incomplete"):
                    if now - prev[1] < max_wait:
                        continue
                    why = "still being recorded (header sizes not written)" if state == "recording" else \
                        "shorter than its header declares (a copy still running, or cut short)"
                    print(f"error: {p}: {why} after {max_wait:g} s unchanged; trying again when it changes",
                          file=sys.stderr, flush=True)
                    _emit({"file": str(p), "error": f"{why}; waited {max_wait:g} s", "error_kind": "unfinished"})
                    retry.add(p)
                    ok = False
                else:
                    ok = score_one(system, p, machine)
                pending.pop(p, None)
                done[p] = sig
                scored, failed = scored + ok, failed + (not ok)
                if max_files is not None and scored + failed >= max_files:
                    return scored, failed
            if timeout is not None and time.monotonic() - start >= timeout:
                print(f"watch: timeout after {timeout} s", file=sys.stderr, flush=True)
                return scored, failed
            time.sleep(poll)
    except KeyboardInterrupt:
        print("watch: stopped", file=sys.stderr, flush=True)
    return scored, failed


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m asd_lib.score", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("files", nargs="*", help="WAV files to score")
    ap.add_argument("--system-dir", help="folder written by asd_lib.online.export_system")
    ap.add_argument("--machine", default=None, help="machine type of every clip (default: from folder or name)")
    ap.add_argument("--watch", metavar="FOLDER", default=None, help="score new WAV files as they appear")
    ap.add_argument("--poll", type=float, default=0.5, help="watch: seconds between folder scans")
    ap.add_argument("--settle", type=float, default=1.0, help="watch: seconds a file's size must stay unchanged")
    ap.add_argument("--max-files", type=int, default=None, help="watch: stop after this many clips")
    ap.add_argument("--timeout", type=float, default=None, help="watch: stop after this many seconds")
    ap.add_argument("--skip-existing", action="store_true", help="watch: ignore files present at start")
    ap.add_argument("--max-wait", type=float, default=60.0,
                    help="watch: seconds an unfinished WAV (header sizes not written, or fewer bytes than declared) "
                         "may stay unchanged before it gets an error line (it is retried when it changes)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N for the encoders")
    ap.add_argument("--expect-classes", default=None, metavar="JSON",
                    help="refuse a system whose class list differs from this classes.json")
    ap.add_argument("--export", metavar="DIR", default=None, help="export the online system of a finished run")
    ap.add_argument("--params", default=None, help="--export: results/<system>/params.json, YAML or system name")
    ap.add_argument("--results-dir", default=None, help="--export: results root (default: from the params)")
    ap.add_argument("--overwrite", action="store_true", help="--export: replace an existing folder")
    args = ap.parse_args(argv)
    logs.configure(info_stream="stderr")  # stdout carries the JSON lines

    if args.threads:
        import torch  # heavy: only with --threads

        torch.set_num_threads(args.threads)
    from asd_lib import online  # sklearn, scipy, pandas: keeps --help light

    if args.export:
        if not args.params:
            ap.error("--export needs --params")
        try:
            out = online.export_system(args.export, args.params, results_dir=args.results_dir,
                                       overwrite=args.overwrite)
        except (online.ExportError, FileExistsError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"exported {out}", file=sys.stderr)
        return 0
    if not args.system_dir:
        ap.error("--system-dir is required (or --export)")
    if not args.files and not args.watch:
        ap.error("give WAV files to score or --watch FOLDER")
    t0 = time.perf_counter()
    try:
        system = online.load_system(args.system_dir, expected_classes=args.expect_classes, device=args.device)
    except online.SystemLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"loaded {args.system_dir} in {time.perf_counter() - t0:.2f} s: {system.describe()}", file=sys.stderr,
          flush=True)
    for note in system.notes:
        print(f"note: {note}", file=sys.stderr)
    failed = 0
    for f in args.files:
        failed += not score_one(system, f, args.machine)
    if args.watch:
        _, wf = watch(system, args.watch, args.machine, args.poll, args.settle, args.max_files, args.timeout,
                      args.skip_existing, args.max_wait)
        failed += wf
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
