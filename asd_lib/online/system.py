"""The online system in memory (``OnlineSystem``) and what it raises.

An ``OnlineSystem`` holds the encoders, the fitted scorers, the z constants and the per-machine thresholds;
it reads and checks one clip (WAV path or array), embeds it as ``asd_lib.embed.embed_paths`` does, scores and
fuses it as ``asd_lib.fusion.fuse_online`` does, and writes itself to a folder (``save``). Also here: the
errors of the whole package (``ClipError``, ``SystemLoadError``, ``ExportError``), ``ModelSpec`` and
``machine_from_path``. Torch is imported only inside the methods that run the encoders.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
from sklearn.pipeline import Pipeline

from asd_lib.data import ALL_MACHINES, NonFiniteAudioError, load_clip, wav_truncation
from asd_lib.embed import pool_tokens
from asd_lib.fsutil import file_sha256, replace_dir, temp_dir
from asd_lib.fusion import fuse, threshold_decision, zscore
from asd_lib.online.common import (FORMAT_NAME, FORMAT_VERSION, MIN_SAMPLES, PATCH_FRAMES, SAMPLE_RATE,
                                   SILENCE_PEAK, _CHANNELS, _classes_digest, _versions)
from asd_lib.scorer_io import save_scorer, scorer_files


class ClipError(ValueError):
    """One clip could not be scored; ``kind`` says why (missing, unreadable, truncated, mono, short, silent, nan,
    too-long, unknown-machine), ``file`` which clip."""

    def __init__(self, kind: str, message: str, file: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.file = file


class SystemLoadError(RuntimeError):
    """An exported system folder is incomplete, altered, of another format or of another label scheme."""


class ExportError(RuntimeError):
    """The batch artifacts cannot be turned into an online system (missing stage, offline system, mismatch)."""


@dataclass
class ModelSpec:
    """One backbone of the ensemble as the exported system knows it."""

    id: str            # '<backbone>@<epoch>', e.g. 'beats@2'
    kind: str          # 'beats' | 'eat'
    recipe: str        # fbank recipe: 'beats' | 'eat' | 'aau'
    file: str          # path of the checkpoint inside the system folder
    embed_dim: int
    source: str = ""   # where it was copied from (informative)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _same_fitted(a: Any, b: Any) -> bool:
    """True when two fitted AAUPreprocess-like transformers have the same class, parameters and quantiles."""
    if type(a) is not type(b) or a.get_params() != b.get_params():
        return False
    qa, qb = getattr(a, "quantile_", None), getattr(b, "quantile_", None)
    if qa is None or qb is None:
        return False
    return all(np.array_equal(getattr(qa, k), getattr(qb, k)) for k in ("quantiles_", "references_"))


def _decision(est: Any, X: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
    """``est.decision_function(X)``; for a Pipeline its first step's output is cached by object (shared steps)."""
    if not isinstance(est, Pipeline) or len(est.steps) < 2:
        return est.decision_function(X)
    first = est.steps[0][1]
    key = id(first)
    if key not in cache:
        cache[key] = first.transform(X)
    Xt = cache[key]
    for _, step in est.steps[1:-1]:
        Xt = step.transform(Xt)
    return est.steps[-1][1].decision_function(Xt)


def machine_from_path(path: str | Path, known: Sequence[str]) -> str | None:
    """Machine type from a clip path: a parent folder (``<machine>/test/x.wav``, ``<machine>/x.wav``) or a name
    prefix (``<machine>_...wav``, ``<machine>-...wav``); None when neither names one of ``known``."""
    p = Path(path)
    parents = [q.name for q in p.parents][:3]
    for name in parents:
        if name in known:
            return name
    stem = p.name
    for m in sorted(known, key=len, reverse=True):  # longest first: ToyCarEmu before ToyCar
        if stem.startswith(m) and len(stem) > len(m) and stem[len(m)] in "_-.":
            return m
    return None


@dataclass
class OnlineSystem:
    """A fitted online system in memory: encoders, fitted scorers, calibration constants, thresholds.

    ``scorers[machine][model][scorer]`` are fitted estimators; ``constants`` maps a scorer id (pooled /
    aau-constants) or 'machine|model|scorer' (per-machine) to (mean, std); ``thresholds[machine]`` is the
    decision level on the fused score.
    """

    models: list[ModelSpec]
    encoders: dict[str, Any]
    scorers: dict[str, dict[str, dict[str, Any]]]
    scorer_ids: list[str]
    constants: dict[str, tuple[float, float]]
    thresholds: dict[str, float]
    channel: str = "ch0"
    pooling: str = "gem"
    duration: float | None = None
    normalisation: str = "pooled"
    fusion: str = "min"
    quantile: float = 0.9
    classes: list[str] = field(default_factory=list)
    classes_with_channel: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    root: Path | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._share_preprocessing()

    def _share_preprocessing(self) -> None:
        """Let pipelines of one (machine, model) whose fitted first steps are identical share one object, so a
        clip is quantile-transformed once per model instead of once per scorer (same numbers, less time)."""
        for per_model in self.scorers.values():
            for per_scorer in per_model.values():
                seen: list[Any] = []
                for est in per_scorer.values():
                    if not isinstance(est, Pipeline) or len(est.steps) < 2:
                        continue
                    pre = est.steps[0][1]
                    for other in seen:
                        if _same_fitted(pre, other):
                            est.steps[0] = (est.steps[0][0], other)
                            break
                    else:
                        seen.append(pre)

    # ---- description
    @property
    def machines(self) -> list[str]:
        """Machine types this system can score (sorted)."""
        return sorted(self.scorers)

    @property
    def channels(self) -> tuple[int, ...]:
        """Audio channels the scoring embedding uses."""
        return _CHANNELS[self.channel]

    def describe(self) -> str:
        """One line: models, scorers, machines, channel."""
        return (f"online system: models {[m.id for m in self.models]}, scorers {self.scorer_ids}, channel "
                f"{self.channel}, pooling {self.pooling}, {self.normalisation} z + {self.fusion} fusion, "
                f"{len(self.machines)} machines ({', '.join(self.machines)})")

    # ---- clip input
    def resolve_machine(self, clip: Any, machine: str | None = None) -> str:
        """Machine type of a clip: the ``machine`` argument, else its folder or name prefix; ClipError if unknown."""
        where = str(clip) if isinstance(clip, (str, Path)) else "<array>"
        if machine is not None:
            if machine not in self.scorers:
                raise ClipError("unknown-machine", f"unknown machine type {machine!r} for {where}: this system "
                                f"scores {', '.join(self.machines)}", where)
            return machine
        if not isinstance(clip, (str, Path)):
            raise ClipError("unknown-machine", "an array clip needs machine=... (one of "
                            f"{', '.join(self.machines)})", where)
        found = machine_from_path(clip, sorted(set(self.machines) | set(ALL_MACHINES)))
        if found is None:
            raise ClipError("unknown-machine", f"cannot tell the machine type of {where}: put it in a folder named "
                            f"after the machine (<machine>/test/x.wav), prefix its name with the machine, or pass "
                            f"--machine (one of {', '.join(self.machines)})", where)
        if found not in self.scorers:
            raise ClipError("unknown-machine", f"machine type {found!r} of {where} is not one this system was "
                            f"fitted on ({', '.join(self.machines)}); use a system of the right regime "
                            "(DEV+ADD covers the additional machines)", where)
        return found

    def read_clip(self, path: str | Path) -> tuple[np.ndarray, list[str]]:
        """Load the scored channel(s) of a WAV as float32 (C, T) at 16 kHz, the way ``embed_paths`` does; notes."""
        p = Path(path)
        if not p.is_file():
            raise ClipError("missing", f"audio file not found: {p}", str(p))
        trunc = wav_truncation(p)
        if trunc:
            raise ClipError("truncated", f"truncated WAV: its header announces {trunc[0]} bytes of audio, the file "
                            f"holds {trunc[1]}: {p}. The copy was cut short; copy or record it again", str(p))
        try:
            info = sf.info(str(p))
        except Exception as err:  # libsndfile raises several classes
            raise ClipError("unreadable", f"not a readable WAV file: {p} ({err}). Give a 16 kHz WAV recording",
                            str(p)) from None
        notes: list[str] = []
        chans = self.channels
        if info.channels == 1 or info.channels <= max(chans):
            if info.channels == 1 and chans == (0,):
                notes.append("mono file: its only channel is scored as channel 0 (near mic), the channel this "
                             "system scores")
            else:
                raise ClipError("mono", f"expected a stereo file, got {info.channels} channel: {p}. This system "
                                f"scores channel(s) {self.channel} ({'far mic' if chans == (1,) else 'both mics'}), "
                                "which a mono recording does not have", str(p))
        elif info.channels > 2:
            notes.append(f"{info.channels}-channel file: channel(s) {list(chans)} scored")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                wave = load_clip(p, channels=chans, sample_rate=SAMPLE_RATE)
            except NonFiniteAudioError as err:
                raise ClipError("nan", f"{err} The recording is corrupt; check the recorder.", str(p)) from None
            except ValueError as err:
                kind = "truncated" if "truncated" in str(err) else "unreadable"
                raise ClipError(kind, str(err), str(p)) from None
        if info.samplerate != SAMPLE_RATE:
            notes.append(f"sample rate {info.samplerate} Hz: resampled to {SAMPLE_RATE} Hz (the system was fitted "
                         "on 16 kHz audio; scores of resampled clips are comparable only approximately)")
            # embed_paths crops / pads every clip to round(frames * 16000 / sr) samples
            n = int(round(info.frames * SAMPLE_RATE / info.samplerate))
            wave = wave[:, :n] if wave.shape[1] >= n else np.pad(wave, ((0, 0), (0, n - wave.shape[1])))
        for w in caught:
            if "resampled" not in str(w.message):
                notes.append(str(w.message))
        return np.ascontiguousarray(wave, dtype=np.float32), notes

    def check_wave(self, wave: np.ndarray, where: str) -> None:
        """Refuse waves that cannot give a meaningful score: NaN/inf samples, silence, shorter than one patch."""
        bad = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
        if bad:
            raise ClipError("nan", f"{bad} NaN or infinite samples in {where}: the recording is corrupt; check the "
                            "recorder (a float WAV with invalid values)", where)
        if wave.shape[-1] < MIN_SAMPLES:
            raise ClipError("short", f"clip too short: {where} has {wave.shape[-1]} samples "
                            f"({wave.shape[-1] / SAMPLE_RATE:.3f} s at 16 kHz); the encoders need at least "
                            f"{MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s, one patch of {PATCH_FRAMES} "
                            "fbank frames)", where)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak < SILENCE_PEAK:
            raise ClipError("silent", f"silent clip: {where} (peak {peak:.1e} in the scored channel(s) "
                            f"{self.channel}); the microphone may be disconnected. No score is given for silence",
                            where)

    # ---- embedding and scoring
    def embed(self, wave: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """wave (C, T) float32 16 kHz -> ({model: embedding (D,) float32}, {'preprocess', 'encode': seconds}).

        Same computation as ``asd_lib.embed.embed_paths`` for a batch of one clip: tokens of every channel,
        ``pool_tokens``, mean over channels. Encoders that share an fbank recipe share one fbank computation.
        """
        import torch

        from asd_lib.backbones import BackboneError

        t_pre = t_enc = 0.0
        out: dict[str, np.ndarray] = {}
        fbanks: dict[tuple, Any] = {}
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)[None])  # (1, C, T) as embed_paths
        bsz, c, t = x.shape
        with torch.inference_mode():
            for spec in self.models:
                enc = self.encoders[spec.id]
                key = (type(enc).preprocess, enc.recipe, int(enc.cfg.get("target_length", 1024)))
                t0 = time.perf_counter()
                if key not in fbanks:
                    fbanks[key] = enc.preprocess(x.reshape(bsz * c, t).to(self.device))
                t1 = time.perf_counter()
                try:
                    tokens = enc.forward_fbank(fbanks[key])
                except BackboneError as err:
                    raise ClipError("too-long", f"{err}", None) from None
                emb = pool_tokens(tokens, self.pooling, spec.kind).reshape(bsz, c, -1).mean(dim=1)
                out[spec.id] = emb.cpu().numpy()[0]
                t2 = time.perf_counter()
                t_pre += t1 - t0
                t_enc += t2 - t1
        return out, {"preprocess": t_pre, "encode": t_enc}

    def _constant(self, machine: str, model: str, scorer: str) -> tuple[float, float]:
        if self.normalisation == "per-machine":
            return self.constants[f"{machine}|{model}|{scorer}"]
        return self.constants[scorer]

    def score_embeddings(self, embeddings: Mapping[str, np.ndarray], machine: str) -> dict[str, Any]:
        """{model: (n, D) or (D,)} embeddings of one machine -> raw, calibrated (z) and fused scores, decisions.

        Returns a dict: 'raw' {scorer: {model: (n,)}}, 'z' {scorer: (n,) mean over models}, 'fused' (n,),
        'decision' (n,) int, 'threshold' float. Uses ``asd_lib.fusion.zscore``, ``fuse`` and
        ``threshold_decision`` exactly as ``fuse_online`` does.
        """
        raw: dict[str, dict[str, np.ndarray]] = {}
        z: dict[str, list[np.ndarray]] = {}
        cache: dict[int, np.ndarray] = {}
        for s in self.scorer_ids:
            raw[s], z[s] = {}, []
            for spec in self.models:
                X = np.asarray(embeddings[spec.id], dtype=np.float32)
                X = (X[None] if X.ndim == 1 else X).astype(np.float64)  # as score_embeddings reads the cache
                r = np.asarray(_decision(self.scorers[machine][spec.id][s], X, cache), dtype=np.float64)
                raw[s][spec.id] = r
                mean, std = self._constant(machine, spec.id, s)
                z[s].append(zscore(r, mean, std))
        per_scorer, combined = fuse(z, self.fusion)
        thr = float(self.thresholds[machine])
        return {"raw": raw, "z": per_scorer, "fused": combined, "decision": threshold_decision(combined, thr),
                "threshold": thr}

    def score_clip(self, clip: str | Path | np.ndarray, machine: str | None = None,
                   sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
        """Score one clip (a WAV path, or an array (C, T) / (T,) with ``machine``) -> a JSON-ready dict.

        Keys: file, machine, scores {scorer: calibrated z, mean over models}, raw {scorer: {model: raw}}, fused,
        threshold, decision (0/1), latency_ms (total), latency_parts_ms {load, preprocess, encode, score}, notes.
        Raises ClipError (with ``kind``) for input that cannot be scored.
        """
        t0 = time.perf_counter()
        where = str(clip) if isinstance(clip, (str, Path)) else "<array>"
        if isinstance(clip, (str, Path)) and not Path(clip).is_file():
            raise ClipError("missing", f"audio file not found: {where}", where)
        mc = self.resolve_machine(clip, machine)
        if isinstance(clip, (str, Path)):
            wave, notes = self.read_clip(clip)
        else:
            wave, notes = self._array_clip(np.asarray(clip), sample_rate)
        self.check_wave(wave, where)
        t1 = time.perf_counter()
        try:
            embs, parts = self.embed(wave)
        except ClipError as err:
            raise ClipError(err.kind, f"{where}: {err}", where) from None
        t2 = time.perf_counter()
        res = self.score_embeddings(embs, mc)
        t3 = time.perf_counter()
        ms = {"load": 1e3 * (t1 - t0), "preprocess": 1e3 * parts["preprocess"], "encode": 1e3 * parts["encode"],
              "score": 1e3 * (t3 - t2)}
        return {
            "file": where,
            "machine": mc,
            "scores": {s: float(v[0]) for s, v in res["z"].items()},
            "raw": {s: {m: float(v[0]) for m, v in d.items()} for s, d in res["raw"].items()},
            "fused": float(res["fused"][0]),
            "threshold": res["threshold"],
            "decision": int(res["decision"][0]),
            "latency_ms": 1e3 * (t3 - t0),
            "latency_parts_ms": {k: round(v, 3) for k, v in ms.items()},
            "notes": notes,
        }

    def _array_clip(self, arr: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
        notes: list[str] = []
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise ClipError("unreadable", f"expected an array (channels, samples) or (samples,), got {a.shape}")
        chans = self.channels
        if a.shape[0] == 1 or a.shape[0] <= max(chans):
            if a.shape[0] == 1 and chans == (0,):
                notes.append("mono array: scored as channel 0")
            else:
                raise ClipError("mono", f"array with {a.shape[0]} channel(s): this system scores {self.channel}")
        else:
            a = a[list(chans)]
        if sample_rate != SAMPLE_RATE:
            import torch
            import torchaudio.functional as AF

            n = int(round(a.shape[1] * SAMPLE_RATE / sample_rate))
            a = AF.resample(torch.from_numpy(np.ascontiguousarray(a)), int(sample_rate), SAMPLE_RATE).numpy()
            a = a[:, :n] if a.shape[1] >= n else np.pad(a, ((0, 0), (0, n - a.shape[1])))
            notes.append(f"sample rate {sample_rate} Hz: resampled to {SAMPLE_RATE} Hz")
        return np.ascontiguousarray(a, dtype=np.float32), notes

    # ---- persistence
    def save(self, out_dir: str | Path, overwrite: bool = False, extra_manifest: Mapping[str, Any] | None = None,
             checkpoint_sources: Mapping[str, str | Path] | None = None,
             scorer_sources: Mapping[tuple[str, str, str], str | Path] | None = None) -> Path:
        """Write the system folder atomically (temp sibling + rename); returns its path.

        ``checkpoint_sources``: model id -> official checkpoint file to copy byte for byte; models without one are
        written with ``encoder.save`` (official format). ``scorer_sources``: (machine, model id, scorer) -> the
        ``scorer_io`` files (path without suffix) of that fitted scorer, copied byte for byte; the others are written
        with ``save_scorer``.
        """
        out = Path(out_dir).expanduser().absolute()
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it, or choose "
                                  "another folder")
        tmp = temp_dir(out)
        try:
            sources = dict(checkpoint_sources or {})
            models = []
            for spec in self.models:
                rel = f"backbones/{spec.id}.pt"
                (tmp / "backbones").mkdir(exist_ok=True)
                if spec.id in sources:
                    shutil.copyfile(sources[spec.id], tmp / rel)
                else:
                    self.encoders[spec.id].save(tmp / rel)
                models.append({**asdict(spec), "file": rel})
            stored = dict(scorer_sources or {})
            for mc, per_model in self.scorers.items():
                for mid, per_scorer in per_model.items():
                    for sid, est in per_scorer.items():
                        dest = tmp / "scorers" / mid / mc / sid
                        if (mc, mid, sid) in stored:
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            for src, dst in zip(scorer_files(stored[mc, mid, sid]), scorer_files(dest)):
                                shutil.copyfile(src, dst)
                        else:
                            save_scorer(est, dest)
            system = {"models": models, "channel": self.channel, "pooling": self.pooling,
                      "duration": self.duration, "scorers": list(self.scorer_ids), "machines": self.machines,
                      "sample_rate": SAMPLE_RATE, "normalisation": self.normalisation, "fusion": self.fusion,
                      "decision": "calibration", "quantile": self.quantile}
            _write_json(tmp / "system.json", system)
            _write_json(tmp / "params.json", {"values": self.params})
            _write_json(tmp / "classes.json", {"classes_with_channel": self.classes_with_channel,
                                               "classes": list(self.classes)})
            consts = [dict(zip(("machine", "model", "scorer"), k.split("|")), mean=v[0], std=v[1])
                      if "|" in k else {"scorer": k, "mean": v[0], "std": v[1]} for k, v in self.constants.items()]
            _write_json(tmp / "calibration.json", {
                "normalisation": self.normalisation, "z_constants": consts,
                "decision": {"rule": "fused score > threshold", "quantile": self.quantile,
                             "of": "fused calibration scores (training clips unseen by the scorer)",
                             "thresholds": {m: float(self.thresholds[m]) for m in self.machines}}})
            files = {}
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    files[f.relative_to(tmp).as_posix()] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
            manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "system": self.params.get("system", ""), "regime": self.params.get("regime", ""),
                        "versions": _versions(),
                        "label_scheme": {"n_classes": len(self.classes), "sha256": _classes_digest(self.classes),
                                         "classes_with_channel": self.classes_with_channel},
                        "files": files, **dict(extra_manifest or {})}
            _write_json(tmp / "manifest.json", manifest)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.root = out
        return out
