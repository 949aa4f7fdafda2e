"""Online deployment: export a fitted online system to one folder, load it back, score one clip at a time.

The paper's online systems (DEV online, DEV+ADD online; paper section 3.3, docs/reference.md §7) give each
recording a score the moment it arrives, independently of every other recording. The batch pipeline computes
those scores for a whole test set at once (notebooks 02 -> 03a-d -> 04); this module packages what a single clip
needs and reproduces the batch scores one clip at a time:

    export_system(out_dir, params)      results/<regime>/{checkpoints,embeddings,scores} -> one folder
    sys = load_system(out_dir)          checks the manifest (files, hashes, label scheme, versions), loads it
    sys.score_clip("fan/test/x.wav")    -> dict: file, machine, per-scorer calibrated scores, fused, decision,
                                           latency split into load / preprocess / encode / score

The command line around it is ``python -m asd_lib.score`` (one JSON line per clip, a ``--watch`` mode).

Exported folder (every file listed with its sha256 in manifest.json; the folder is built in a temporary
sibling and renamed into place, so a reader never sees half a system):

    manifest.json        format version, versions (asd_lib, torch, sklearn, numpy, ...), label scheme, file hashes,
                         the export-time verification (refit scorers vs the cached raw scores, see below)
    system.json          models (id, kind, fbank recipe, file), channel, pooling, scorers, machines, fusion rule
    params.json          the parameters the system was built with (the merged params/*.yaml values)
    classes.json         the class-label scheme the backbones were fine-tuned on (list of class names)
    calibration.json     z constants (mean, std) per scorer as the system uses them, decision threshold per machine
    backbones/<model>.pt the fine-tuned checkpoints, official format (byte copies of results/<regime>/checkpoints)
    scorers/<model>/<machine>/<scorer>.json, .npz   the fitted scorers incl. the AAU preprocessing, written by
                         ``asd_lib.scorer_io.save_scorer``: class, parameters and scalars in the JSON, arrays (the
                         autoencoder's weights among them) in the npz

How the exported scores stay equal to the batch ones. The embedding of a clip is computed exactly as
``asd_lib.embed.embed_paths`` does (same loader, same ``pool_tokens``, same channel mean); the scorers are the very
ones the scoring stage fitted on the TRAINING embeddings and stored next to its scores (``artifacts.fitted_path``),
copied byte for byte, and the export REFUSES to write a system whose stored scorers do not reproduce the cached raw
test scores. The z constants and the per-machine thresholds come from ``asd_lib.fusion`` (``z_constants`` and
``fuse_online``) over the same calibration scores.

Loading a folder does no unrestricted unpickling: the scorers are read with ``json`` and ``np.load(allow_pickle=False)``
(``asd_lib.scorer_io.load_scorer``), the checkpoints with ``torch.load(weights_only=True)`` (torch's restricted
loader: tensors and plain containers only, no fallback). The manifest hashes detect damage and partial copies; they
are not a signature (whoever can write the folder can rewrite them).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asd_lib.artifacts import embedding_source, fitted_path, layout, load_embeddings
from asd_lib.fsutil import file_sha256, replace_dir, temp_dir
from asd_lib.scorer_io import load_scorer, save_scorer, scorer_files
from asd_lib.scorers import final_step, make_scorer, scorer_params_from

__all__ = [
    "FORMAT_VERSION",
    "MIN_SAMPLES",
    "ClipError",
    "SystemLoadError",
    "ExportError",
    "ModelSpec",
    "OnlineSystem",
    "export_system",
    "load_system",
    "machine_from_path",
    "batch_online_scores",
    "fusion_args_from",
]

FORMAT_VERSION = 2  # 2: scorers as JSON + npz (version 1 held joblib pickles)
FORMAT_NAME = "asd-kit online system"
SAMPLE_RATE = 16000
PATCH_FRAMES = 16  # both encoders cut the fbank into 16 x 16 patches
#: Shortest clip (samples at 16 kHz) that gives one 16-frame patch: 400 + 15 * 160 = 2800 (0.175 s).
MIN_SAMPLES = 400 + 160 * (PATCH_FRAMES - 1)
#: Peak level below which a clip counts as silent (about -120 dBFS; one 16-bit LSB is 3e-5).
SILENCE_PEAK = 1e-6
_CHANNELS = {"ch0": (0,), "ch1": (1,), "both": (0, 1)}
_ONLINE_NORMALISATIONS = ("pooled", "per-machine", "aau-constants")


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


# ------------------------------------------------------------------------------------------------ helpers
def _classes_digest(classes: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    import asd_lib

    return {"asd_lib": asd_lib.__version__, "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


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
    from sklearn.pipeline import Pipeline

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


def _resolve_params(params: Any) -> dict[str, Any]:
    """Params object, mapping, params.json (runner format), YAML file or system name -> flat dict of values."""
    from asd_lib import params as P

    if isinstance(params, P.Params):
        return dict(params.values)
    if isinstance(params, Mapping):
        vals = params.get("values", params) if "values" in params and isinstance(params["values"], Mapping) \
            else params
        return dict(vals)
    if isinstance(params, (str, Path)):
        s = str(params)
        if s in P.SYSTEMS:
            return dict(P.load(s).values)
        path = Path(s)
        if not path.is_file():
            raise ExportError(f"params not found: {s}; give results/<system>/params.json, a YAML file, a system "
                              f"name ({', '.join(P.SYSTEMS)}) or a dict of values")
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
            return dict(obj.get("values", obj))
        return dict(P.read_yaml(path))
    raise ExportError(f"params must be a Params, a mapping, a file or a system name, got {type(params).__name__}")


def fusion_args_from(params: Mapping[str, Any]) -> dict[str, Any]:
    """``asd_lib.fusion.fuse_online`` arguments of an online system's params (refuses test-dependent choices)."""
    if params.get("fusion_mode", "online") != "online":
        raise ExportError(f"system {params.get('system')!r} uses fusion_mode={params.get('fusion_mode')!r}: "
                          "offline rank fusion scores a clip against the other test clips, so it cannot score one "
                          "clip alone. Export an online system (dev_online, devadd_online)")
    normalisation = params.get("online_normalisation", "pooled")
    if normalisation not in _ONLINE_NORMALISATIONS:
        raise ExportError(f"online_normalisation={normalisation!r} cannot be exported: a per-clip system needs fixed "
                          f"constants ({' | '.join(_ONLINE_NORMALISATIONS)}); 'streaming' makes a clip's score depend "
                          "on the test clips before it")
    decision = params.get("online_decision", "calibration")
    if decision != "calibration":
        raise ExportError(f"online_decision={decision!r} min-max scales over the machine's TEST clips, so one clip "
                          "cannot be decided alone; export with online_decision: calibration (the test-independent "
                          "threshold on fused calibration scores)")
    return {"normalisation": normalisation, "decision": "calibration",
            "quantile": float(params.get("decision_quantile", 0.9)), "fusion": params.get("fusion_pool", "min")}


# --------------------------------------------------------------------------------------------- the system
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
        from sklearn.pipeline import Pipeline

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
        from asd_lib.data import ALL_MACHINES

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
        import soundfile as sf

        from asd_lib.data import NonFiniteAudioError, load_clip, wav_truncation

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
        from asd_lib.embed import pool_tokens

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
        from asd_lib.fusion import fuse, threshold_decision, zscore

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


# --------------------------------------------------------------------------------------------- loading
def _expected_classes(expected: Any, with_channel: bool) -> list[str] | None:
    if expected is None:
        return None
    try:
        import pandas as pd

        if isinstance(expected, pd.DataFrame):
            from asd_lib.data import class_labels

            return class_labels(expected, channels=with_channel)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(expected, (str, Path)):
        obj = json.loads(Path(expected).read_text())
        return list(obj["classes"] if isinstance(obj, dict) else obj)
    return list(expected)


def load_system(system_dir: str | Path, expected_classes: Any = None, device: str = "cpu",
                strict_versions: bool = False) -> OnlineSystem:
    """Load an exported system after checking its manifest; SystemLoadError with every problem found.

    Checks: the folder and manifest.json exist and are of this format version; every listed file is present with
    its sha256; the class-label scheme matches ``expected_classes`` (a list, a classes.json path or a ``scan``
    DataFrame) when given. Version differences (asd_lib, torch, sklearn, numpy) become notes (``system.notes``
    and a warning), or errors with ``strict_versions``. Reads no pickle: scorers with ``load_scorer`` (JSON +
    npz), checkpoints with ``load_backbone`` (``torch.load(weights_only=True)``).
    """
    from asd_lib.backbones import load_backbone

    root = Path(system_dir).expanduser()
    if not root.is_dir():
        raise SystemLoadError(f"system folder not found: {root}. Export one with asd_lib.online.export_system "
                              "(or `python -m asd_lib.score --export ...`)")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise SystemLoadError(f"{root} is not an exported online system: manifest.json is missing. Export it "
                              "again with asd_lib.online.export_system")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as err:
        raise SystemLoadError(f"{mpath} is not valid JSON ({err}); the folder is damaged: export it again") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise SystemLoadError(f"{mpath}: format {manifest.get('format')!r} version "
                              f"{manifest.get('format_version')!r}; this asd_lib reads {FORMAT_NAME!r} version "
                              f"{FORMAT_VERSION}. Export the system again with this version of asd_lib")
    problems = []
    for rel, meta in sorted(manifest.get("files", {}).items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"missing file {rel}")
        elif file_sha256(f) != meta.get("sha256"):
            problems.append(f"hash mismatch for {rel} (changed or damaged since export)")
    for need in ("system.json", "calibration.json", "classes.json", "params.json"):
        if need not in manifest.get("files", {}):
            problems.append(f"the manifest does not list {need}")
    if problems:
        raise SystemLoadError(f"refusing to load {root}: " + "; ".join(problems)
                              + ". Copy the whole folder again or re-export the system")
    system = json.loads((root / "system.json").read_text())
    calib = json.loads((root / "calibration.json").read_text())
    cls = json.loads((root / "classes.json").read_text())
    classes, with_ch = list(cls["classes"]), bool(cls.get("classes_with_channel", True))
    scheme = manifest.get("label_scheme", {})
    if scheme.get("sha256") != _classes_digest(classes):
        raise SystemLoadError(f"{root}: classes.json does not match the label scheme in manifest.json")
    exp = _expected_classes(expected_classes, with_ch)
    if exp is not None and exp != classes:
        only_sys = sorted(set(classes) - set(exp))[:3]
        only_exp = sorted(set(exp) - set(classes))[:3]
        raise SystemLoadError(
            f"refusing to load {root}: it was built with another label scheme ({len(classes)} classes, "
            f"classes_with_channel={with_ch}) than the expected one ({len(exp)} classes). Only in the system: "
            f"{only_sys}; only expected: {only_exp}. Use a system fine-tuned on this data, or re-export")
    notes = []
    now = _versions()
    for k, v in manifest.get("versions", {}).items():
        if k in now and now[k] != v:
            notes.append(f"built with {k} {v}, running {now[k]}")
    if notes:
        msg = f"{root}: version differences: " + "; ".join(notes)
        if strict_versions:
            raise SystemLoadError(msg + " (strict_versions=True)")
        warnings.warn(msg + ". Scores may differ in the last digits", stacklevel=2)
    models = [ModelSpec(**m) for m in system["models"]]
    encoders = {}
    for spec in models:
        enc = load_backbone(root / spec.file, recipe=spec.recipe)
        encoders[spec.id] = enc.to(device).eval()
    scorers = {mc: {spec.id: {s: _load_scorer_of(root, spec.id, mc, s) for s in system["scorers"]}
                    for spec in models} for mc in system["machines"]}
    constants = {}
    for c in calib["z_constants"]:
        key = f"{c['machine']}|{c['model']}|{c['scorer']}" if "machine" in c else c["scorer"]
        constants[key] = (float(c["mean"]), float(c["std"]))
    params = json.loads((root / "params.json").read_text()).get("values", {})
    return OnlineSystem(models=models, encoders=encoders, scorers=scorers, scorer_ids=list(system["scorers"]),
                        constants=constants, thresholds={k: float(v) for k, v in
                                                         calib["decision"]["thresholds"].items()},
                        channel=system["channel"], pooling=system["pooling"], duration=system.get("duration"),
                        normalisation=calib["normalisation"], fusion=system["fusion"],
                        quantile=float(system.get("quantile", 0.9)), classes=classes, classes_with_channel=with_ch,
                        params=params, notes=notes, root=root, device=device)


def _load_scorer_of(root: Path, model: str, machine: str, scorer: str) -> Any:
    """The fitted scorer ``scorers/<model>/<machine>/<scorer>.{json,npz}`` of a system folder."""
    try:
        return load_scorer(root / "scorers" / model / machine / scorer)
    except (OSError, ValueError) as err:
        raise SystemLoadError(f"refusing to load {root}: {err}. Copy the whole folder again or re-export the "
                              "system") from None


# --------------------------------------------------------------------------------------------- export
def _checkpoint_info(ckpt: Path) -> tuple[str | None, list[str], bool]:
    """(fbank recipe, classes, classes_with_channel) recorded by asd_lib.finetune next to a checkpoint."""
    cfg_path = ckpt.parent / "config.json"
    recipe, classes, with_ch = None, [], True
    if cfg_path.is_file():
        blob = json.loads(cfg_path.read_text())
        recipe = blob.get("recipe")
        classes = list(blob.get("classes", []))
        with_ch = bool(blob.get("config", {}).get("classes_with_channel", True))
    head = ckpt.with_name(ckpt.stem + ".head.pt")
    if not classes and head.is_file():
        from asd_lib.finetune.heads import load_head  # torch

        classes = load_head(head)[1]
    return recipe, classes, with_ch


def _stored_scorers(score_root: Path, models: Sequence[str], machines: Sequence[str], scorer_ids: Sequence[str],
                    channel: str) -> dict[tuple[str, str, str], Path]:
    """(machine, model, scorer) -> the fitted scorer the scoring stage stored (``artifacts.fitted_path``)."""
    out = {}
    for mc in machines:
        for m in models:
            for sid in scorer_ids:
                path = fitted_path(score_root, m, channel, sid, mc)
                if not all(f.is_file() for f in scorer_files(path)):
                    raise ExportError(f"no fitted {sid} scorer of {m}/{mc} at {path}.json/.npz: the scores under "
                                      f"{score_root} were made by an older version of the kit; rerun the scoring "
                                      "notebooks (03*, or asd-run --only 03 --force)")
                out[mc, m, sid] = path
    return out


def _check_settings(est: Any, scorer: str, vals: Mapping[str, Any], where: str) -> None:
    """ExportError unless a stored scorer has the settings these params give (parameters, preprocessing, seed)."""
    sp = scorer_params_from(vals).get(scorer, {})
    want = make_scorer(scorer, preprocess=vals.get("preprocess", "aau"), seed=int(vals.get("seed", 0)), **sp)
    got_steps = [type(e).__name__ for e in getattr(est, "named_steps", {"": est}).values()]
    want_steps = [type(e).__name__ for e in getattr(want, "named_steps", {"": want}).values()]
    drop = {"device"}  # where it ran, not what it computes
    got = {k: v for k, v in final_step(est).get_params().items() if k not in drop}
    exp = {k: v for k, v in final_step(want).get_params().items() if k not in drop}
    if got_steps != want_steps or got != exp:
        diff = sorted(k for k in set(got) | set(exp) if got.get(k) != exp.get(k))
        raise ExportError(f"{where}: the {scorer} scorer the scoring stage stored ({' + '.join(got_steps)}"
                          + (f"; {', '.join(f'{k}={got.get(k)!r}' for k in diff)}" if diff else "")
                          + f") is not the one these params describe ({' + '.join(want_steps)}"
                          + (f"; {', '.join(f'{k}={exp.get(k)!r}' for k in diff)}" if diff else "")
                          + "): rerun the scoring notebooks (03*) with these params, or export with the params "
                          "the scores were made with")


def batch_online_scores(score_root: str | Path, models: Sequence[str], scorers: Sequence[str], channel: str,
                        fusion_args: Mapping[str, Any], machines: Sequence[str] | None = None) -> dict:
    """The batch pipeline's online result for reference: ``fusion.fuse_online`` on the score cache."""
    from asd_lib.fusion import fuse_online

    return fuse_online(score_root, models, scorers, channel=channel, machines=machines, **dict(fusion_args))


def export_system(out_dir: str | Path, params: Any, *, results_dir: str | Path | None = None,
                  machines: Sequence[str] | None = None,
                  overwrite: bool = False, rtol: float = 1e-7, atol: float = 1e-10) -> Path:
    """Export the online system of a finished batch run to ``out_dir``; returns the folder.

    ``params``: the system's parameters (results/<system>/params.json, a Params, a dict of values, a YAML or a
    system name); ``results_dir`` overrides ``params['results_dir']``. Reads results/<regime>/checkpoints,
    embeddings and scores; takes the scorers the scoring stage fitted and stored (``artifacts.fitted_path``, copied
    byte for byte: nothing is refitted), checks that they reproduce the cached raw test scores (``rtol``/``atol``;
    ExportError otherwise) and that the fused scores equal ``fuse_online``'s, then writes the folder atomically.
    """
    from asd_lib import params as P
    from asd_lib.fusion import AAU_Z_CONSTANTS, check_aau_constants, list_machines, load_machine_scores, z_constants

    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it, or choose "
                              "another folder")
    vals = _resolve_params(params)
    fargs = fusion_args_from(vals)
    regime = vals.get("regime", "dev")
    rdir = Path(results_dir) if results_dir is not None else Path(vals.get("results_dir", "results"))
    if results_dir is None and not rdir.is_absolute() and not rdir.exists():
        rdir = P.ROOT / rdir
    lay = layout(rdir, regime, vals.get("system", ""))
    models = lay.models(vals.get("ensemble", []), float(vals.get("epoch_scale", 1.0)),
                        vals.get("epoch_selection", "fixed"))
    if not models:
        raise ExportError("the params name no models (ensemble is empty)")
    scorer_ids = list(vals.get("scorers", ["knn", "ae", "ldn"]))
    channel, pooling = vals.get("channel", "ch0"), vals.get("pooling", "gem")

    # ---- backbones and the label scheme
    all_machines = list_machines(lay.scores, models, scorer_ids, channel)
    specs, sources, classes, with_ch = [], {}, None, True
    for m in models:
        ckpt = lay.checkpoint(m)
        if not ckpt.is_file():
            raise ExportError(f"checkpoint of {m} not found: {ckpt}; run the fine-tuning stage "
                              "(notebook 01_finetune_arcface) of this regime first")
        recipe, cls, wch = _checkpoint_info(ckpt)
        backbone = m.partition("@")[0]
        if recipe is None:
            recipe = vals.get("sslam_recipe", "aau") if backbone.startswith("sslam") else "beats"
        if not cls:
            raise ExportError(f"no class list next to {ckpt} (config.json or {ckpt.stem}.head.pt)")
        if classes is None:
            classes, with_ch = cls, wch
        elif cls != classes:
            raise ExportError(f"{m} was fine-tuned on another label scheme ({len(cls)} classes) than {models[0]} "
                              f"({len(classes)}); every backbone of one system must share it")
        from asd_lib.backbones import load_backbone

        made_from = {embedding_source(lay.embeddings, m, channel, mc, split)
                     for mc in all_machines for split in ("train", "test")}
        if made_from != {file_sha256(ckpt)}:
            raise ExportError(f"the cached {channel} embeddings of {m} under {lay.embeddings} were not made from "
                              f"{ckpt} as it is now (its sha256 differs from the one they recorded): rerun the "
                              "embedding and scoring stages (notebooks 02 and 03*) before exporting")
        enc = load_backbone(ckpt, recipe=recipe)
        specs.append(ModelSpec(id=m, kind=enc.kind, recipe=enc.recipe, file=f"backbones/{m}.pt",
                               embed_dim=int(enc.embed_dim), source=str(ckpt)))
        sources[m] = ckpt
        del enc

    # ---- scorers: refit and verify against the cache
    chosen = list(machines) if machines is not None else all_machines
    missing = sorted(set(chosen) - set(all_machines))
    if missing:
        raise ExportError(f"machines {missing} have no cached scores for every model and scorer under {lay.scores}")
    stored = _stored_scorers(lay.scores, models, chosen, scorer_ids, channel)
    fitted: dict[str, dict[str, dict[str, Any]]] = {mc: {m: {} for m in models} for mc in chosen}
    for (mc, m, sid), path in stored.items():
        try:
            fitted[mc][m][sid] = load_scorer(path)
        except (OSError, ValueError) as err:
            raise ExportError(f"cannot read the fitted {sid} scorer of {m}/{mc}: {err}") from None
        _check_settings(fitted[mc][m][sid], sid, vals, f"{path}.json")

    worst_raw = 0.0
    for mc in chosen:
        names, cached = load_machine_scores(lay.scores, models, scorer_ids, mc, channel)
        for m in models:
            te = load_embeddings(lay.embeddings, m, channel, mc, "test")
            pos = {n: i for i, n in enumerate(np.asarray(te["names"]).astype(str))}
            Xte = te["emb"][[pos[n] for n in names]].astype(np.float64)
            for s in scorer_ids:
                mine = fitted[mc][m][s].decision_function(Xte)
                ref = cached[s][m]["test"]
                if not np.allclose(mine, ref, rtol=rtol, atol=atol):
                    err = float(np.max(np.abs(mine - ref)))
                    raise ExportError(
                        f"the stored {s} scorer of {m}/{mc} does not reproduce the cached raw test scores in "
                        f"{lay.score(m, channel, s, mc)} (max abs diff {err:.3g}): the two files "
                        f"are not from one run of the scoring stage; rerun the scoring notebooks (03*, or asd-run "
                        f"--only 03 --force)")
                worst_raw = max(worst_raw, float(np.max(np.abs(mine - ref), initial=0.0)))

    # ---- calibration constants and thresholds (fusion module, over ALL machines as the batch run)
    norm = fargs["normalisation"]
    if norm == "aau-constants":
        check_aau_constants({mc: load_machine_scores(lay.scores, models, scorer_ids, mc, channel)[1]
                             for mc in all_machines}, scorer_ids)
        constants = {s: tuple(map(float, AAU_Z_CONSTANTS[s])) for s in scorer_ids}
    else:
        calib = {}
        for mc in all_machines:
            _, sc = load_machine_scores(lay.scores, models, scorer_ids, mc, channel)
            calib.update({(mc, m, s): sc[s][m]["calib"] for m in models for s in scorer_ids})
        zc = z_constants(calib, "pooled" if norm == "pooled" else "per-machine")
        constants = {(k if isinstance(k, str) else "|".join(k)): (float(v[0]), float(v[1])) for k, v in zc.items()
                     if isinstance(k, str) or k[0] in chosen}
    batch = batch_online_scores(lay.scores, models, scorer_ids, channel, fargs, machines=all_machines)
    thresholds = {mc: float(batch[mc].attrs["threshold"]) for mc in chosen}

    system = OnlineSystem(models=specs, encoders={}, scorers=fitted, scorer_ids=scorer_ids, constants=constants,
                          thresholds=thresholds, channel=channel, pooling=pooling, duration=None,
                          normalisation=norm, fusion=fargs["fusion"], quantile=fargs["quantile"],
                          classes=list(classes or []), classes_with_channel=with_ch, params=vals)
    # ---- end-to-end check on the cached test embeddings: fused scores and decisions equal fuse_online's
    worst_fused = 0.0
    for mc in chosen:
        names = np.asarray(batch[mc]["names"]).astype(str)
        embs = {}
        for m in models:
            te = load_embeddings(lay.embeddings, m, channel, mc, "test")
            pos = {n: i for i, n in enumerate(np.asarray(te["names"]).astype(str))}
            embs[m] = te["emb"][[pos[n] for n in names]]
        res = system.score_embeddings(embs, mc)
        diff = np.abs(res["fused"] - batch[mc]["score"].to_numpy())
        worst_fused = max(worst_fused, float(diff.max(initial=0.0)))
        if not np.allclose(res["fused"], batch[mc]["score"].to_numpy(), rtol=1e-9, atol=1e-9) or \
                not np.array_equal(res["decision"], batch[mc]["decision"].to_numpy()):
            raise ExportError(f"internal check failed for {mc}: fused scores of the exported scorers differ from "
                              f"fuse_online by {diff.max():.3g}; please report this")
    extra = {"verification": {
        "scorers_vs_cached_raw_test_scores_max_abs_diff": worst_raw,
        "fused_vs_fuse_online_max_abs_diff": worst_fused,
        "machines_checked": chosen, "note": "scores of the cached test EMBEDDINGS; clip-level equality (audio -> "
        "embedding) is tested in tests/test_online.py"},
        "built_from": {"results_dir": str(rdir), "regime": regime, "models": models}}
    return system.save(out_dir, overwrite=overwrite, extra_manifest=extra, checkpoint_sources=sources,
                       scorer_sources=stored)
