"""Score normalisation and fusion: offline rank fusion, online calibrated z fusion, decisions (notebook 04).

Pure numpy/pandas functions plus two readers of the score cache (``scores/<model>/<channel>/<scorer>/<machine>.npz``
with keys test, calib, names [, calib_names]), whose files ``asd_lib.artifacts`` finds and reads.

Offline (paper eq. 2, the authors' rank module): per machine, per scorer, per model (backbone) the raw test
scores become rank / n over that machine's test clips (average ranks for ties); mean over models; MIN over
scorers; decision = fused score > 0.5. A clip's score depends on all other test clips of its machine.

Online: each raw score is z-normalised with constants from CALIBRATION scores (training clips the scoring model
did not see: the authors' held-out split, or leave-one-out for KNN/LDN with calibration='loo'), then the same
mean-over-models / min-over-scorers fusion. Normalisations:
- 'pooled' (the default of docs/design.md, the authors' method): per scorer, the mean and the std of the calibration scores of
  each (machine, model), averaged over machines and models;
- 'per-machine': the mean and std of that machine's and model's own calibration scores;
- 'aau-constants': the authors' fixed constants (docs/reference.md §7), for parity; they belong to THEIR embeddings;
- 'streaming' (the paper text's "sliding-window z-score"): each test clip is z-scored with the mean/std of a
  window of the scores that came before it in a FIXED clip order (seeded with the calibration scores). This is
  NOT test-independent: a score depends on earlier clips and on the order. Labelled so in the output.
Decisions: 'calibration' (default) flags fused score > the ``quantile`` (0.9 by default, the level the organisers'
baseline uses for its gamma threshold) of the FUSED calibration scores, so the decision of a clip ignores other
test clips; 'aau-minmax' (the authors' rule, test-DEPENDENT) min-max scales the fused scores over the machine's
test clips and flags > 0.5.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from asd_lib.artifacts import load_scores, score_path, scored_machines

__all__ = [
    "AAU_Z_CONSTANTS",
    "rank_normalise",
    "zscore",
    "fuse",
    "threshold_decision",
    "aau_minmax_decision",
    "calibration_threshold",
    "z_constants",
    "streaming_zscore",
    "load_machine_scores",
    "list_machines",
    "fuse_offline",
    "fuse_online",
]

# The authors' hard-coded (mean, std) per scorer (docs/reference.md §7); 'gwrp' is their name for our 'ldn'.
# Their optional GMM is a different scorer (1 component, diagonal, raw embeddings): z = (s + 13.33) / 83.25.
AAU_Z_CONSTANTS: dict[str, tuple[float, float]] = {
    "knn": (0.0963, 0.0256),
    "ldn": (0.0119, 0.0034),
    "gwrp": (0.0119, 0.0034),
    "ae": (0.0207, 0.0051),
    "gmm": (-13.33, 83.25),
}


def check_aau_constants(loaded: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
                        scorers: Sequence[str]) -> None:
    """Refuse the authors' fixed z constants for a scorer they do not belong to.

    ``loaded``: {machine: {scorer: {model: score dict}}} as ``load_machine_scores`` returns them. Their GMM constants
    belong to their 1-component GMM on raw embeddings (``gmm_variant: aau-online``), not to the 6-component one.
    """
    missing = [s for s in scorers if s not in AAU_Z_CONSTANTS]
    if missing:
        raise ValueError(f"the authors have no z constants for {missing}")
    if "gmm" in scorers:
        variants = {d["variant"] for per in loaded.values() for d in per["gmm"].values()}
        if variants != {"aau-online"}:
            raise ValueError(f"the authors' GMM z constants belong to their online GMM (1 component, diagonal, raw "
                             f"embeddings); these GMM scores come from {sorted(variants)}. Score with "
                             "gmm_variant: aau-online, or leave gmm out of the online scorers")


ONLINE_DEFAULT_SCORERS = ("knn", "ae", "ldn")  # GMM dropped, as the authors did
OFFLINE_DEFAULT_SCORERS = ("knn", "gmm", "ae", "ldn")


# --------------------------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------------------------
def rank_normalise(scores: Any) -> np.ndarray:
    """(n,) raw scores -> rank / n in (0, 1], average ranks for ties (the authors' offline normalisation)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"rank_normalise: expected a non-empty 1-D score array, got shape {s.shape}")
    return rankdata(s) / len(s)


def zscore(scores: Any, mean: float, std: float) -> np.ndarray:
    """(n,) -> (scores - mean) / std."""
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"zscore: std must be a positive number, got {std}; the calibration scores are constant?")
    return (np.asarray(scores, dtype=np.float64) - mean) / std


def fuse(normalised: Mapping[str, Sequence[np.ndarray]], fusion: str = "min") -> tuple[dict[str, np.ndarray],
                                                                                       np.ndarray]:
    """({scorer: [per-model (n,) arrays]}) -> (per-scorer mean over models, fused (n,)): min (eq. 2), mean or max."""
    if not normalised:
        raise ValueError("fuse: no scorers given")
    fused = {name: np.mean([np.asarray(a, dtype=np.float64) for a in arrs], axis=0)
             for name, arrs in normalised.items()}
    stacked = np.stack(list(fused.values()))
    if fusion == "min":
        combined = np.min(stacked, axis=0)
    elif fusion == "mean":
        combined = np.mean(stacked, axis=0)
    elif fusion == "max":
        combined = np.max(stacked, axis=0)
    else:
        raise ValueError(f"fuse: fusion must be 'min', 'mean' or 'max', got {fusion!r}")
    return fused, combined


def threshold_decision(scores: Any, threshold: float = 0.5) -> np.ndarray:
    """(n,) -> (n,) int decisions, 1 where score > threshold (strict, as the authors)."""
    return (np.asarray(scores) > threshold).astype(np.int64)


def aau_minmax_decision(scores: Any, threshold: float = 0.5) -> np.ndarray:
    """The authors' online decision: min-max scale over the given (test) clips, flag > threshold. TEST-DEPENDENT."""
    s = np.asarray(scores, dtype=np.float64)
    span = s.max() - s.min()
    scaled = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    return threshold_decision(scaled, threshold)


def calibration_threshold(fused_calib: Any, quantile: float = 0.9) -> float:
    """Decision level from FUSED calibration scores (normal training clips): their `quantile` (linear interp.)."""
    c = np.asarray(fused_calib, dtype=np.float64)
    if c.size == 0:
        raise ValueError("calibration_threshold: no fused calibration scores (no clip is shared by all scorers)")
    return float(np.quantile(c, quantile))


def z_constants(calib: Mapping[tuple[str, str, str], np.ndarray], mode: str = "pooled",
                ddof: int = 0) -> dict[Any, tuple[float, float]]:
    """Z constants from calibration scores keyed (machine, model, scorer).

    'pooled' -> {scorer: (mean of per-(machine, model) means, mean of per-(machine, model) stds)} (the authors'
    averaging); 'per-machine' -> {(machine, model, scorer): (mean, std)}.
    """
    per = {}
    for key, c in calib.items():
        c = np.asarray(c, dtype=np.float64)
        if c.size < 2:
            raise ValueError(f"z_constants: {key} has {c.size} calibration scores; need at least 2")
        per[key] = (float(np.mean(c)), float(np.std(c, ddof=ddof)))
    if mode == "per-machine":
        return per
    if mode == "pooled":
        out: dict[Any, tuple[float, float]] = {}
        for scorer in sorted({k[2] for k in per}):
            vals = [v for k, v in per.items() if k[2] == scorer]
            out[scorer] = (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
        return out
    raise ValueError(f"z_constants: mode must be 'pooled' or 'per-machine', got {mode!r}")


def streaming_zscore(scores: Any, history: Any, window: int = 200, order: Sequence[int] | None = None,
                     ddof: int = 0) -> np.ndarray:
    """'Streaming' z: clip t (in `order`) is z-scored with the mean/std of the last `window` scores before it.

    The window starts filled with `history` (calibration scores) and then takes in the test scores as they come,
    so a clip's value DEPENDS on the clips before it and on the order (not test-independent). Returns (n,) in the
    input index order.
    """
    s = np.asarray(scores, dtype=np.float64)
    hist = list(np.asarray(history, dtype=np.float64)[-window:])
    if len(hist) < 2:
        raise ValueError("streaming_zscore: needs at least 2 calibration scores to start the window")
    order = np.arange(len(s)) if order is None else np.asarray(order)
    out = np.empty_like(s)
    for i in order:
        w = np.asarray(hist[-window:])
        sd = np.std(w, ddof=ddof)
        out[i] = (s[i] - w.mean()) / (sd if sd > 0 else 1.0)
        hist.append(s[i])
    return out


# --------------------------------------------------------------------------------------------------------------
# readers of the score cache
# --------------------------------------------------------------------------------------------------------------
def list_machines(score_root: str | Path, models: Sequence[str], scorers: Sequence[str],
                  channel: str = "ch0") -> list[str]:
    """Machines that have a score file for every (model, scorer)."""
    sets = [set(scored_machines(score_root, m, channel, s)) for m in models for s in scorers]
    common = set.intersection(*sets) if sets else set()
    if not common:
        raise FileNotFoundError(f"no machine has scores for every model {list(models)} and scorer {list(scorers)} "
                                f"under {score_root}/<model>/{channel}/<scorer>/; run asd_lib.scorers.score_embeddings")
    return sorted(common)


def load_machine_scores(score_root: str | Path, models: Sequence[str], scorers: Sequence[str], machine: str,
                        channel: str = "ch0") -> tuple[np.ndarray, dict[str, dict[str, dict[str, np.ndarray]]]]:
    """(test names, {scorer: {model: {'test', 'calib', 'calib_names'}}}) with every test array in the same order."""
    names: np.ndarray | None = None
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for scorer in scorers:
        out[scorer] = {}
        for model in models:
            path = score_path(score_root, model, channel, scorer, machine)
            z = load_scores(path)
            test, calib, nm = z["test"], z["calib"], z["names"]
            cn = z.get("calib_names", np.array([f"#calib{i}" for i in range(len(calib))]))
            variant = z.get("variant", "")
            if names is None:
                names = nm
            elif not np.array_equal(nm, names):
                if sorted(nm.tolist()) != sorted(names.tolist()):
                    raise ValueError(f"{path}: its test clips differ from those of the other score files of "
                                     f"machine {machine}; re-run score_embeddings with force=True")
                pos = {n: i for i, n in enumerate(nm)}
                test = test[[pos[n] for n in names]]
            out[scorer][model] = {"test": test, "calib": calib, "calib_names": cn, "variant": variant}
    assert names is not None
    return names, out


def _frame(names: np.ndarray, score: np.ndarray, decision: np.ndarray, **attrs: Any) -> pd.DataFrame:
    df = pd.DataFrame({"names": names, "score": score, "decision": decision.astype(int)})
    df.attrs.update(attrs)
    return df


def fuse_offline(score_root: str | Path, models: Sequence[str], scorers: Sequence[str] = OFFLINE_DEFAULT_SCORERS,
                 channel: str = "ch0", fusion: str = "min", threshold: float = 0.5,
                 machines: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Offline system: {machine: DataFrame(names, score, decision)} with rank/n fusion and decision > threshold."""
    machines = list(machines) if machines is not None else list_machines(score_root, models, scorers, channel)
    result = {}
    for machine in machines:
        names, sc = load_machine_scores(score_root, models, scorers, machine, channel)
        normed = {s: [rank_normalise(sc[s][m]["test"]) for m in models] for s in scorers}
        _, combined = fuse(normed, fusion)
        result[machine] = _frame(names, combined, threshold_decision(combined, threshold), mode="offline-rank",
                                 fusion=fusion, threshold=threshold, test_independent=False)
    return result


def _common_calib(sc: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], scorers, models) -> list[str]:
    sets = [set(sc[s][m]["calib_names"].tolist()) for s in scorers for m in models]
    common = sorted(set.intersection(*sets))
    if not common:
        raise ValueError("fuse_online: no calibration clip is shared by all scorers and models, so fused calibration "
                         "scores (and the decision threshold) cannot be formed; re-run score_embeddings with one "
                         "seed for all models (it stores calib_names), or use decision='aau-minmax'")
    return common


def fuse_online(score_root: str | Path, models: Sequence[str], scorers: Sequence[str] = ONLINE_DEFAULT_SCORERS,
                channel: str = "ch0", normalisation: str = "pooled", decision: str = "calibration",
                quantile: float = 0.9, fusion: str = "min", window: int = 200, order: str = "name",
                machines: Sequence[str] | None = None, constants: Mapping[str, tuple[float, float]] | None = None,
                ddof: int = 0) -> dict[str, pd.DataFrame]:
    """Online system: {machine: DataFrame(names, score, decision)} from calibrated z-scores (see module docstring).

    normalisation: 'pooled' (default) | 'per-machine' | 'aau-constants' | 'streaming'; ``constants`` overrides the
    pooled ones ({scorer: (mean, std)}). decision: 'calibration' (fused calibration quantile, test-independent) or
    'aau-minmax' (test-dependent). 'streaming' orders the clips by name (``order='name'``) or keeps file order
    (``order='file'``); its output is labelled ``test_independent=False``.
    """
    if normalisation not in ("pooled", "per-machine", "aau-constants", "streaming"):
        raise ValueError(f"fuse_online: unknown normalisation {normalisation!r}")
    if decision not in ("calibration", "aau-minmax"):
        raise ValueError(f"fuse_online: decision must be 'calibration' or 'aau-minmax', got {decision!r}")
    machines = list(machines) if machines is not None else list_machines(score_root, models, scorers, channel)
    loaded = {mc: load_machine_scores(score_root, models, scorers, mc, channel) for mc in machines}
    calib = {(mc, m, s): loaded[mc][1][s][m]["calib"] for mc in machines for m in models for s in scorers}
    if normalisation == "aau-constants":
        check_aau_constants({mc: loaded[mc][1] for mc in machines}, scorers)
        pooled = {s: AAU_Z_CONSTANTS[s] for s in scorers}
    elif normalisation == "pooled":
        pooled = dict(constants) if constants is not None else z_constants(calib, "pooled", ddof)
    per_machine = z_constants(calib, "per-machine", ddof) if normalisation == "per-machine" else {}

    result = {}
    for mc in machines:
        names, sc = loaded[mc]
        common = _common_calib(sc, scorers, models)
        z_test: dict[str, list[np.ndarray]] = {}
        z_cal: dict[str, list[np.ndarray]] = {}
        for s in scorers:
            z_test[s], z_cal[s] = [], []
            for m in models:
                entry = sc[s][m]
                pos = {n: i for i, n in enumerate(entry["calib_names"])}
                cal_common = entry["calib"][[pos[n] for n in common]]
                if normalisation == "streaming":
                    ordr = np.argsort(names, kind="stable") if order == "name" else np.arange(len(names))
                    z_test[s].append(streaming_zscore(entry["test"], entry["calib"], window, ordr, ddof))
                    hist = entry["calib"][-window:]
                    z_cal[s].append(zscore(cal_common, hist.mean(), np.std(hist, ddof=ddof)))
                else:
                    mean, std = per_machine[(mc, m, s)] if normalisation == "per-machine" else pooled[s]
                    z_test[s].append(zscore(entry["test"], mean, std))
                    z_cal[s].append(zscore(cal_common, mean, std))
        _, combined = fuse(z_test, fusion)
        if decision == "aau-minmax":
            dec, thr = aau_minmax_decision(combined), float("nan")
        else:
            _, fused_cal = fuse(z_cal, fusion)
            thr = calibration_threshold(fused_cal, quantile)
            dec = threshold_decision(combined, thr)
        result[mc] = _frame(names, combined, dec, mode=f"online-{normalisation}", decision_rule=decision,
                            threshold=thr, fusion=fusion,
                            test_independent=normalisation != "streaming" and decision != "aau-minmax")
    return result
