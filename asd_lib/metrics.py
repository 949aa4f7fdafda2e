"""The official DCASE Task 2 evaluation, reproduced value for value, and the paper-style numbers kept apart.

Definitions follow the organisers' evaluator (nttcslab/dcase2024_task2_evaluator, 2024 code; docs/reference.md §2):

* AUC (source|target): ``roc_auc_score`` over that domain's normal clips plus ALL anomalous clips of the section.
* AUC (all): over every clip of the section.  pAUC: ``roc_auc_score(y, s, max_fpr=0.1)`` over every clip
  (McClish-standardised, chance 0.5).
* precision/recall/F1 per domain from the decisions, with ``sys.float_info.epsilon`` guarding the divisions.
* official score: ``scipy.stats.hmean`` of [all AUC(source)] + [all AUC(target)] + [all pAUC], each floored at eps.
* the evaluator's summary rows and its "CI95" (leave-one-out spread of the AUC and pAUC of ALL clips pooled over
  machines, not a CI of the official score), with the quirks that come with them.

Ours, labelled as ours: a textbook jackknife interval of the official score (pseudo-values, clips deleted one at a
time).  The paper's (AAU) metric (per-domain AUC with that domain's anomalies only, 14-number harmonic mean without
eps floor) is computed by :func:`paper_style_scores` only, never mixed into the official numbers.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from asd_lib.data import scan
from asd_lib.fsutil import atomic_write_text  # noqa: F401  (re-exported: submission and evaluate use it)
import pandas as pd
import scipy.stats
from sklearn import metrics as skm

EPS = sys.float_info.epsilon
MAX_FPR = 0.1

#: columns of the evaluator's per-section table (system1_result.csv), in its order
RESULT_COLUMNS = ["AUC (all)", "AUC (source)", "AUC (target)", "pAUC", "precision (source)", "precision (target)",
                  "recall (source)", "recall (target)", "F1 score (source)", "F1 score (target)"]
#: columns of the evaluator's summary rows
SUMMARY_COLUMNS = ["AUC", "pAUC", "precision", "recall", "F1 score"]
MACHINE_SUMMARY_ROWS = ["arithmetic mean", "harmonic mean", "source harmonic mean", "target harmonic mean"]
OVERALL_SUFFIX = " over all machine types, sections, and domains"
OVERALL_SUMMARY_ROWS = [r + OVERALL_SUFFIX for r in MACHINE_SUMMARY_ROWS]

SCORE_FILE_RE = re.compile(r"^anomaly_score_(?P<machine>.+)_section_(?P<section>\d\d)_test\.csv$")
_GT_RE = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d\d)_test\.csv$")
_DEV_RE = re.compile(r"^section_(?P<section>\d\d)_(?P<domain>source|target)_test_(?P<label>normal|anomaly)_"
                     r"(?P<index>\d{4})(?:_[^/\\]+)?\.wav$")


class EvaluationError(ValueError):
    """Bad submission or ground-truth input; the message names the file (and row) and what to do."""


# ----------------------------------------------------------------------------------------------------------------
# per-section numbers
# ----------------------------------------------------------------------------------------------------------------
def auc_domain(y_true: np.ndarray, scores: np.ndarray, domain: np.ndarray, which: int) -> float:
    """Official AUC of one domain (0 source, 1 target): that domain's normals vs ALL anomalies; inputs (n,)."""
    y_true, scores, domain = np.asarray(y_true), np.asarray(scores), np.asarray(domain)
    keep = (domain == which) | (y_true != 0)
    return float(skm.roc_auc_score(y_true[keep], scores[keep]))


def pauc(y_true: np.ndarray, scores: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """Official pAUC: sklearn's McClish-standardised partial AUC up to ``max_fpr`` over all clips; inputs (n,)."""
    return float(skm.roc_auc_score(np.asarray(y_true), np.asarray(scores), max_fpr=max_fpr))


def decision_metrics(y_true: np.ndarray, decisions: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) as the evaluator computes them: eps-guarded divisions; inputs (n,) of 0/1."""
    tn, fp, fn, tp = skm.confusion_matrix(np.asarray(y_true), np.asarray(decisions), labels=[0, 1]).ravel()
    prec = tp / np.maximum(tp + fp, EPS)
    rec = tp / np.maximum(tp + fn, EPS)
    f1 = 2.0 * prec * rec / np.maximum(prec + rec, EPS)
    return float(prec), float(rec), float(f1)


def _finite_for_ranking(scores: np.ndarray) -> np.ndarray:
    """Scores unchanged when finite; with +-inf present, their ranks (same order and ties, so same AUC/pAUC)."""
    if np.all(np.isfinite(scores)):
        return scores
    return scipy.stats.rankdata(scores, method="dense").astype(float)


def section_metrics(y_true: np.ndarray, scores: np.ndarray, domain: np.ndarray,
                    decisions: np.ndarray) -> dict[str, float]:
    """One row of the evaluator's table (keys = RESULT_COLUMNS); y_true 1 = anomaly, domain 1 = target; all (n,)."""
    y_true = np.asarray(y_true).astype(float)
    scores = _finite_for_ranking(np.asarray(scores, dtype=float))
    domain = np.asarray(domain).astype(float)
    decisions = np.asarray(decisions).astype(int)
    row: dict[str, float] = {}
    row["AUC (all)"] = float(skm.roc_auc_score(y_true, scores))
    row["pAUC"] = pauc(y_true, scores)
    for name, idx in (("source", 0), ("target", 1)):
        row[f"AUC ({name})"] = auc_domain(y_true, scores, domain, idx)
        sel = domain == idx
        p, r, f = decision_metrics(y_true[sel], decisions[sel])
        row[f"precision ({name})"], row[f"recall ({name})"], row[f"F1 score ({name})"] = p, r, f
    return {c: row[c] for c in RESULT_COLUMNS}


# ----------------------------------------------------------------------------------------------------------------
# means, summaries and the official score
# ----------------------------------------------------------------------------------------------------------------
def _performance(table: pd.DataFrame) -> np.ndarray:
    """(5, 2n) array of the evaluator: [AUC_s.., AUC_t..], [pAUC.., pAUC..], [P_s.., P_t..], [R..], [F1..]."""
    def col(c: str) -> list[float]:
        return [float(v) for v in table[c].tolist()]
    return np.array([
        col("AUC (source)") + col("AUC (target)"),
        col("pAUC") + col("pAUC"),
        col("precision (source)") + col("precision (target)"),
        col("recall (source)") + col("recall (target)"),
        col("F1 score (source)") + col("F1 score (target)"),
    ], dtype=float)


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The four mean rows the evaluator prints under a table (a-mean, floored h-mean, source/target h-mean)."""
    perf = _performance(table)
    half = perf.shape[1] // 2
    rows = [
        np.mean(perf, axis=1),
        scipy.stats.hmean(np.maximum(perf, EPS), axis=1),
        scipy.stats.hmean(np.maximum(perf[:, :half], EPS), axis=1),
        scipy.stats.hmean(np.maximum(perf[:, half:], EPS), axis=1),
    ]
    return pd.DataFrame([list(map(float, r)) for r in rows], index=MACHINE_SUMMARY_ROWS, columns=SUMMARY_COLUMNS)


def official_score(auc_source: Sequence[float], auc_target: Sequence[float], paucs: Sequence[float]) -> float:
    """Official score: scipy hmean of [AUC_s...] + [AUC_t...] + [pAUC...] (21 numbers on dev), floored at eps."""
    allp = np.array([list(auc_source) + list(auc_target) + list(paucs)], dtype=float)
    return float(scipy.stats.hmean(np.maximum(allp, EPS), axis=None))


def evaluator_jackknife(y_true: np.ndarray, scores: np.ndarray, *, fast: bool = True) -> dict[str, float]:
    """The evaluator's "CI95": leave-one-out AUC and pAUC of ALL clips pooled (n,), sigma from the LOO estimates.

    Returns auc_ci95, pauc_ci95, auc_jack, pauc_jack (means of pseudo-values) and ``official score ci95`` (mean of
    the two CIs, as the evaluator writes it).  Not a CI of the official score; (n-1) times narrower than a textbook
    jackknife.  ``fast`` uses an exact count-based leave-one-out (checked against sklearn in the tests).
    """
    y = np.asarray(y_true).astype(int)
    s = _finite_for_ranking(np.asarray(scores, dtype=float))
    if fast:
        loo_auc, loo_pauc = _loo_auc_pauc(y, s)
    else:
        n = len(y)
        idx = np.arange(n)
        loo_auc = np.array([skm.roc_auc_score(y[idx != i], s[idx != i]) for i in range(n)])
        loo_pauc = np.array([skm.roc_auc_score(y[idx != i], s[idx != i], max_fpr=MAX_FPR) for i in range(n)])
    out: dict[str, float] = {}
    for key, full, loo in (("auc", skm.roc_auc_score(y, s), loo_auc),
                           ("pauc", skm.roc_auc_score(y, s, max_fpr=MAX_FPR), loo_pauc)):
        jack, ci = _jackknife_from_loo(float(full), loo, textbook=False)
        out[f"{key}_jack"], out[f"{key}_ci95"] = jack, ci
    out["official score ci95"] = float(np.mean([out["auc_ci95"], out["pauc_ci95"]]))
    return out


def _jackknife_from_loo(theta: float, loo: np.ndarray, textbook: bool) -> tuple[float, float]:
    """(mean of pseudo-values, t_{0.975,n-1} * sigma); sigma from LOO estimates (evaluator) or pseudo-values."""
    n = len(loo)
    pseudo = n * theta - (n - 1) * np.asarray(loo)
    jack = float(np.mean(pseudo))
    t_crit = abs(scipy.stats.t.ppf(0.025, n - 1))
    if textbook:  # standard error of the mean of pseudo-values = sqrt((n-1)/n * sum (loo - mean)^2)
        sigma = math.sqrt(float(np.sum((pseudo - pseudo.mean()) ** 2)) / (n * (n - 1)))
    else:  # the evaluator's formula, applied to the leave-one-out estimates themselves
        sigma = math.sqrt(float(np.sum((np.asarray(loo) - np.mean(loo)) ** 2)) / (n * (n - 1)))
    return jack, float(t_crit * sigma)


def _roc_groups(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct score values in decreasing order with per-value negative and positive counts; group id per clip."""
    uniq, inv = np.unique(s, return_inverse=True)
    g = len(uniq) - 1 - inv  # group 0 = highest score
    fp = np.bincount(g, weights=(y == 0).astype(float), minlength=len(uniq))
    tp = np.bincount(g, weights=(y == 1).astype(float), minlength=len(uniq))
    return fp, tp, g


def _auc_pauc_from_groups(fp: np.ndarray, tp: np.ndarray, max_fpr: float = MAX_FPR) -> tuple[float, float]:
    """Full AUC and McClish pAUC from per-threshold counts (decreasing score), ties as one diagonal ROC step."""
    fps = np.concatenate([[0.0], np.cumsum(fp)])
    tps = np.concatenate([[0.0], np.cumsum(tp)])
    fpr, tpr = fps / fps[-1], tps / tps[-1]
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    y_at = np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]])
    xs = np.append(fpr[:stop], max_fpr)
    ys = np.append(tpr[:stop], y_at)
    part = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))
    min_area, max_area = 0.5 * max_fpr ** 2, max_fpr
    return auc, 0.5 * (1 + (part - min_area) / (max_area - min_area))


def _loo_auc_pauc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out AUC and pAUC for every clip, from grouped counts (removing a clip edits one group)."""
    fp, tp, g = _roc_groups(y, s)
    auc = np.empty(len(y))
    pa = np.empty(len(y))
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    for i in range(len(y)):
        key = (int(g[i]), int(y[i]))
        if key not in cache:
            f, t = fp.copy(), tp.copy()
            if y[i] == 1:
                t[g[i]] -= 1
            else:
                f[g[i]] -= 1
            cache[key] = _auc_pauc_from_groups(f, t)
        auc[i], pa[i] = cache[key]
    return auc, pa


def official_score_jackknife(sections: Sequence["SectionData"]) -> dict[str, float]:
    """OURS (not the evaluator's): textbook jackknife 95 % interval of the official score, deleting one clip at a time.

    Pseudo-values n*theta - (n-1)*theta_(i) over all clips of all sections; returns official score, jackknife
    estimate, standard error, ci95 half-width and the interval bounds.
    """
    base = [section_metrics(sd.y_true, sd.scores, sd.domain, sd.decisions) for sd in sections]
    aus = [r["AUC (source)"] for r in base]
    aut = [r["AUC (target)"] for r in base]
    pas = [r["pAUC"] for r in base]
    theta = official_score(aus, aut, pas)
    loo: list[float] = []
    for k, sd in enumerate(sections):
        y, d = np.asarray(sd.y_true).astype(int), np.asarray(sd.domain).astype(int)
        s = _finite_for_ranking(np.asarray(sd.scores, float))
        cache: dict[tuple[int, int, int], float] = {}
        uniq, inv = np.unique(s, return_inverse=True)
        for i in range(len(y)):
            key = (int(inv[i]), int(y[i]), int(d[i]))
            if key not in cache:
                keep = np.ones(len(y), bool)
                keep[i] = False
                yy, ss, dd = y[keep], s[keep], d[keep]
                a_s, a_t, p = list(aus), list(aut), list(pas)
                a_s[k] = _fast_auc(yy, ss, dd, 0)
                a_t[k] = _fast_auc(yy, ss, dd, 1)
                p[k] = _auc_pauc_from_groups(*_roc_groups(yy, ss)[:2])[1]
                cache[key] = official_score(a_s, a_t, p)
            loo.append(cache[key])
    loo_arr = np.array(loo)
    n = len(loo_arr)
    jack, ci = _jackknife_from_loo(theta, loo_arr, textbook=True)
    se = float(ci / abs(scipy.stats.t.ppf(0.025, n - 1)))
    return {"official score": theta, "jackknife estimate": jack, "standard error": se, "ci95": ci,
            "ci95 low": theta - ci, "ci95 high": theta + ci, "n clips": n}


def _fast_auc(y: np.ndarray, s: np.ndarray, d: np.ndarray, which: int) -> float:
    """Official domain AUC via grouped counts (same value as sklearn up to float rounding)."""
    keep = (d == which) | (y != 0)
    return _auc_pauc_from_groups(*_roc_groups(y[keep], s[keep])[:2])[0]


# ----------------------------------------------------------------------------------------------------------------
# paper-style (AAU) numbers: a different metric, kept separate
# ----------------------------------------------------------------------------------------------------------------
def paper_style_scores(sections: Sequence["SectionData"] | "EvaluationResult") -> dict:
    """NOT OFFICIAL. The AAU paper's metric: per-domain AUC with that domain's clips only, their mean per section,
    the official pAUC, and Omega = scipy hmean of [section AUC means] + [pAUCs] (14 numbers on dev, no eps floor).
    """
    if isinstance(sections, EvaluationResult):
        sections = sections.sections
    per: dict[str, dict[str, float]] = {}
    mach_auc, mach_pauc = [], []
    for sd in sections:
        y = np.asarray(sd.y_true).astype(int)
        s = _finite_for_ranking(np.asarray(sd.scores, float))
        d = np.asarray(sd.domain).astype(int)
        a_src = float(skm.roc_auc_score(y[d == 0], s[d == 0]))
        a_tgt = float(skm.roc_auc_score(y[d == 1], s[d == 1]))
        m = float(np.mean([a_src, a_tgt]))
        p = pauc(y, s)
        key = sd.machine if sd.section == "00" else f"{sd.machine}_section_{sd.section}"
        per[key] = {"AUC_source_domain_only": a_src, "AUC_target_domain_only": a_tgt,
                    "section_AUC_mean": m, "pAUC": p}
        mach_auc.append(m)
        mach_pauc.append(p)
    return {
        "label": "paper-style (AAU code), NOT the official DCASE score",
        "per_machine": per,
        "omega_hmean14": float(scipy.stats.hmean(np.array(mach_auc + mach_pauc, dtype=float))),
        "mean_auc": float(np.mean(mach_auc)),
        "mean_pauc": float(np.mean(mach_pauc)),
    }


# ----------------------------------------------------------------------------------------------------------------
# reading a submission
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SectionData:
    """Aligned inputs of one machine/section, sorted by (eval-style) name; arrays (n,)."""
    machine: str
    section: str
    names: list[str]
    y_true: np.ndarray
    domain: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    score_file: str = ""
    decision_file: str = ""


def _read_two_column(path: Path, kind: str) -> list[tuple[str, str, int]]:
    """Rows (name, value text, 1-based row number) of a headerless `name,value` CSV; errors name file and row."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EvaluationError(f"{kind} file not found: {path}") from None
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2 or row[1].strip() == "":
            raise EvaluationError(f"{path} row {lineno}: expected 'name,value', got {','.join(row)!r}")
        rows.append((row[0].strip(), row[1].strip(), lineno))
    if not rows:
        raise EvaluationError(f"{path}: the file is empty; expected one 'name,value' row per test clip")
    return rows


def read_scores(path: str | os.PathLike) -> dict[str, tuple[float, int]]:
    """name -> (score, row) from an anomaly_score CSV; NaN, non-numeric and duplicate rows are errors."""
    path = Path(path)
    out: dict[str, tuple[float, int]] = {}
    for name, val, lineno in _read_two_column(path, "anomaly score"):
        try:
            x = float(val)
        except ValueError:
            raise EvaluationError(f"{path} row {lineno}: score {val!r} of {name!r} is not a number "
                                  "(the organisers' format has no header: 'name,score' per row)") from None
        if math.isnan(x):
            raise EvaluationError(f"{path} row {lineno}: score of {name!r} is NaN; every clip needs a finite score")
        if name in out:
            raise EvaluationError(f"{path} row {lineno}: clip {name!r} appears twice (first at row {out[name][1]})")
        out[name] = (x, lineno)
    return out


def read_decisions(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """name -> (0|1, row) from a decision_result CSV; values other than 0/1 are errors."""
    path = Path(path)
    out: dict[str, tuple[int, int]] = {}
    for name, val, lineno in _read_two_column(path, "decision result"):
        try:
            x = float(val)
        except ValueError:
            x = float("nan")
        if x not in (0.0, 1.0):
            raise EvaluationError(f"{path} row {lineno}: decision {val!r} of {name!r} must be 0 or 1")
        if name in out:
            raise EvaluationError(f"{path} row {lineno}: clip {name!r} appears twice (first at row {out[name][1]})")
        out[name] = (int(x), lineno)
    return out


def _read_gt(path: Path) -> dict[str, str]:
    """name -> value of a ground-truth CSV (no header)."""
    out: dict[str, str] = {}
    for name, val, _ in _read_two_column(path, "ground truth"):
        out[name] = val
    return out


def _label_from_name(name: str) -> tuple[int, int] | None:
    """(anomaly 0/1, target 0/1) from a whole dev-style name, or None for an eval-style (unlabelled) name."""
    m = _DEV_RE.match(name)
    if not m:
        return None
    return int(m["label"] == "anomaly"), int(m["domain"] == "target")


def _check_dev_complete(path: Path, section: str, names: Iterable[str]) -> None:
    """Without ground truth or a data folder, a dev submission must follow one of the two numberings of the real
    dev test sets: the four (domain, label) groups of N clips each numbered 0000..N-1 (fan: N = 50), or one
    numbering 0000..4N-1 shared by the four groups of N clips (ToyCar: 0000-0199)."""
    groups: dict[tuple[str, str], list[int]] = {(d, lab): [] for d in ("source", "target")
                                                for lab in ("normal", "anomaly")}
    for name in names:
        m = _DEV_RE.match(name)
        if m["section"] != section:
            raise EvaluationError(f"{path}: clip {name!r} belongs to section {m['section']}, not {section}")
        groups[m["domain"], m["label"]].append(int(m["index"]))
    sizes = sorted({len(v) for v in groups.values()})
    every = sorted(i for v in groups.values() for i in v)
    n = max(sizes)
    per_group = all(sorted(v) == list(range(n)) for v in groups.values())
    shared = len(sizes) == 1 and every == list(range(4 * n))
    if not (per_group or shared):
        counts = ", ".join(f"{d} {lab} {len(v)}" for (d, lab), v in groups.items())
        raise EvaluationError(f"{path}: the clip names do not make a complete dev test set ({counts} rows; each "
                              "group must hold the same number of clips, numbered without gaps or repeats); "
                              "submit one row per test clip, or pass --data DIR (the test clips) or --ground-truth DIR")


def expected_test_clips(data_root: str | os.PathLike, submission: str | os.PathLike | None = None
                        ) -> dict[str, set[str]]:
    """{machine: names of its test clips} of a data folder (``data.scan``): what a complete submission scores.

    With ``submission``, only the sets (dev: labelled names; eval: ``section_00_NNNN.wav``) that its machines'
    files belong to: a dev submission is not asked for the evaluation machines of the same download.
    """
    test = scan(data_root)
    test = test[test["split"] == "test"]
    if submission is not None:
        mine = {m["machine"] for f in Path(submission).iterdir() if (m := SCORE_FILE_RE.match(f.name))}
        sets = set(test.loc[test["machine"].isin(mine), "set"])
        test = test[test["set"].isin(sets)] if sets else test
    return {m: set(g["file_name"]) for m, g in test.groupby("machine")}


def _find_gt_root(ground_truth: str | os.PathLike) -> Path:
    """Folder holding ground_truth_data/ (accepts the folder itself or one of its three subfolders)."""
    p = Path(ground_truth)
    if (p / "ground_truth_data").is_dir():
        return p
    if p.name.startswith("ground_truth_") and (p.parent / "ground_truth_data").is_dir():
        return p.parent
    raise EvaluationError(f"ground-truth folder {p} has no ground_truth_data/ subfolder; pass the folder that "
                          "holds ground_truth_data/, ground_truth_domain/ and ground_truth_attributes/")


def load_submission(sub_dir: str | os.PathLike, ground_truth: str | os.PathLike | None = None,
                    machines: Iterable[str] | None = None,
                    expected: dict[str, set[str]] | None = None) -> list[SectionData]:
    """Read and check a submission folder; return one SectionData per machine/section in the evaluator's order.

    Completeness: with ``ground_truth`` every clip it lists must be scored; else with ``expected`` ({machine: test
    clip names}, e.g. ``expected_test_clips(data_root)``) every machine and exactly its clips; else the dev naming
    rule of ``_check_dev_complete``. Names are matched whole.
    """
    sub = Path(sub_dir)
    if not sub.is_dir():
        raise EvaluationError(f"submission folder not found: {sub}")
    found: dict[tuple[str, str], Path] = {}
    for f in sorted(sub.iterdir()):
        m = SCORE_FILE_RE.match(f.name)
        if m:
            found[(m["machine"], m["section"])] = f
    gt_root = _find_gt_root(ground_truth) if ground_truth is not None else None
    if gt_root is not None:
        gt_keys = set()
        for f in (gt_root / "ground_truth_data").iterdir():
            m = _GT_RE.match(f.name)
            if m:
                gt_keys.add((m["machine"], m["section"]))
        for (mach, sec), f in found.items():
            if (mach, sec) not in gt_keys:
                raise EvaluationError(f"{f}: machine {mach!r} section {sec} is absent from the ground truth in "
                                      f"{gt_root / 'ground_truth_data'}; remove the file or pass the right folder")
        gt_machines = sorted({k[0] for k in gt_keys})
        gt_sections = sorted({k[1] for k in gt_keys})
        keys = [(m, s) for m in gt_machines for s in gt_sections]
    elif expected is not None:
        unknown = sorted({m for m, _ in found} - set(expected))
        if unknown:
            raise EvaluationError(f"{sub}: score files for machine(s) {unknown} that the data folder does not have "
                                  f"(it has {sorted(expected)}); a renamed or foreign file?")
        keys = sorted({(m, s) for m, s in found} | {(m, "00") for m in expected if not any(k[0] == m for k in found)})
    else:
        keys = sorted(found)
    if machines is not None:
        wanted = set(machines)
        keys = [k for k in keys if k[0] in wanted]
    if not keys:
        raise EvaluationError(f"{sub}: no anomaly_score_<machine>_section_<NN>_test.csv files found")
    out = []
    for mach, sec in keys:
        score_path = sub / f"anomaly_score_{mach}_section_{sec}_test.csv"
        dec_path = sub / f"decision_result_{mach}_section_{sec}_test.csv"
        if not score_path.exists():
            where = "the ground truth" if gt_root is not None else "the data folder"
            raise EvaluationError(f"missing anomaly score file {score_path} ({where} has machine {mach!r} "
                                  f"section {sec}); the organisers' evaluator skips a system with a missing file")
        if not dec_path.exists():
            raise EvaluationError(f"missing decision file {dec_path} for {score_path.name}; the organisers' "
                                  "evaluator refuses a machine without one")
        section = _load_section(mach, sec, score_path, dec_path, gt_root)
        if gt_root is None and expected is not None:
            want, got = expected.get(mach, set()), set(section.names)
            if want != got:
                missing, extra = sorted(want - got), sorted(got - want)
                raise EvaluationError(f"{score_path}: {len(missing)} test clip(s) of {mach} without a score (e.g. "
                                      f"{missing[:3]}) and {len(extra)} row(s) that are not its test clips (e.g. "
                                      f"{extra[:3]}); submit exactly one row per test clip")
        elif gt_root is None:
            _check_dev_complete(score_path, sec, section.names)
        out.append(section)
    return out


def _load_section(mach: str, sec: str, score_path: Path, dec_path: Path, gt_root: Path | None) -> SectionData:
    """Align scores, decisions and labels of one section by clip name."""
    scores = read_scores(score_path)
    decs = read_decisions(dec_path)
    for name, (_, row) in decs.items():
        if name not in scores:
            raise EvaluationError(f"{dec_path} row {row}: clip {name!r} has a decision but no score in {score_path}")
    for name, (_, row) in scores.items():
        if name not in decs:
            raise EvaluationError(f"{score_path} row {row}: clip {name!r} has a score but no decision in {dec_path}")
    labels: dict[str, tuple[int, int]] = {}
    keymap: dict[str, str] = {}  # submitted name -> name used for sorting (eval name when mapped)
    if gt_root is None:
        for name, (_, row) in scores.items():
            lab = _label_from_name(name)
            if lab is None:
                raise EvaluationError(f"{score_path} row {row}: clip {name!r} carries no label (eval-style name); "
                                      "pass --ground-truth DIR with the organisers' ground-truth folders")
            labels[name] = lab
            keymap[name] = name
    else:
        fname = f"ground_truth_{mach}_section_{sec}_test.csv"
        gt_data_p = gt_root / "ground_truth_data" / fname
        gt_dom_p = gt_root / "ground_truth_domain" / fname
        gt_attr_p = gt_root / "ground_truth_attributes" / fname
        if not gt_dom_p.exists():
            raise EvaluationError(f"ground-truth domain file missing: {gt_dom_p}")
        gt_data, gt_dom = _read_gt(gt_data_p), _read_gt(gt_dom_p)
        attr = {f"{v}.wav": k for k, v in _read_gt(gt_attr_p).items()} if gt_attr_p.exists() else {}
        for name, (_, row) in scores.items():
            key = attr.get(name, name)
            if key not in gt_data:
                raise EvaluationError(f"{score_path} row {row}: clip {name!r} is not in the ground truth "
                                      f"{gt_data_p} (extra clip?)")
            if key in keymap.values():
                raise EvaluationError(f"{score_path} row {row}: clip {name!r} maps to {key!r} like another row")
            keymap[name] = key
            try:
                labels[name] = (int(float(gt_data[key])), int(float(gt_dom[key])))
            except KeyError:
                raise EvaluationError(f"{gt_dom_p}: clip {key!r} has no domain entry") from None
        mapped = set(keymap.values())
        missing = [k for k in sorted(gt_data) if k not in mapped]
        if missing:
            inv_attr = {v: k for k, v in attr.items()}
            shown = ", ".join(repr(inv_attr.get(k, k)) for k in missing[:5])
            raise EvaluationError(f"{score_path}: {len(missing)} clip(s) of the ground truth {gt_data_p} have no "
                                  f"score, e.g. {shown}; submit one row per test clip")
    order = sorted(scores, key=lambda n: keymap[n])
    return SectionData(
        machine=mach, section=sec, names=[keymap[n] for n in order],
        y_true=np.array([labels[n][0] for n in order], dtype=int),
        domain=np.array([labels[n][1] for n in order], dtype=int),
        scores=np.array([scores[n][0] for n in order], dtype=float),
        decisions=np.array([decs[n][0] for n in order], dtype=int),
        score_file=str(score_path), decision_file=str(dec_path))


# ----------------------------------------------------------------------------------------------------------------
# the evaluation result
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """Everything the organisers' evaluator reports for one system, plus our own jackknife (labelled)."""
    system: str
    sections: list[SectionData]
    table: pd.DataFrame                      # one row per machine/section, columns machine, section + RESULT_COLUMNS
    machine_summaries: dict[str, pd.DataFrame]  # machine -> 4 rows x SUMMARY_COLUMNS
    overall_summary: pd.DataFrame            # 4 "... over all machine types, sections, and domains" rows
    official_score: float
    official_score_csv: dict[str, float]     # official_score.csv (arithmetic mean = 14 AUCs only)
    paper_csv: dict[str, dict[str, float]]   # teams_official_score_paper.csv (TOTAL a-mean = 21 numbers)
    evaluator_ci: dict[str, float] | None = None   # the evaluator's "CI95" (leave-one-out, pooled clips)
    jackknife_ours: dict[str, float] | None = None  # OURS: textbook jackknife interval of the official score
    notes: list[str] = field(default_factory=list)

    @property
    def per_machine(self) -> pd.DataFrame:
        """Per machine/section table indexed by machine, with the organisers' column names."""
        return self.table.set_index("machine")

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the organisers' result table for this system (their <system>_result.csv), atomically."""
        return write_result_csv(self, path)


def evaluate_sections(sections: list[SectionData], system: str = "system",
                      ci: bool = True, jackknife_ours: bool = False) -> EvaluationResult:
    """Compute the evaluator's numbers from aligned sections (see :func:`evaluate_submission`)."""
    rows = []
    for sd in sections:
        if len(np.unique(sd.y_true)) < 2:
            raise EvaluationError(f"{sd.score_file}: the section has only "
                                  f"{'anomalous' if sd.y_true.all() else 'normal'} clips; AUC is undefined")
        for dom, dname in ((0, "source"), (1, "target")):
            if not np.any((sd.domain == dom) & (sd.y_true == 0)):
                raise EvaluationError(f"{sd.score_file}: no {dname}-domain normal clips; AUC ({dname}) is undefined")
        r = section_metrics(sd.y_true, sd.scores, sd.domain, sd.decisions)
        rows.append({"machine": sd.machine, "section": sd.section, **r})
    table = pd.DataFrame(rows, columns=["machine", "section"] + RESULT_COLUMNS)
    machine_order = list(dict.fromkeys(table["machine"]))
    msum = {m: summary_rows(table[table["machine"] == m]) for m in machine_order}
    overall = summary_rows(table)
    overall.index = OVERALL_SUMMARY_ROWS
    # per-machine means over sections, as official_score.csv / the paper csv hold them
    osc: dict[str, float] = {}
    perf = _performance(table)
    n = len(table)
    score = official_score(table["AUC (source)"], table["AUC (target)"], table["pAUC"])
    osc["official score"] = score
    osc["arithmetic mean"] = float(np.mean(perf, axis=1)[0])
    osc["harmonic mean (source)"] = float(scipy.stats.hmean(np.maximum(perf[:, :n], EPS), axis=1)[0])
    osc["harmonic mean (target)"] = float(scipy.stats.hmean(np.maximum(perf[:, n:], EPS), axis=1)[0])
    for m in machine_order:
        sub = table[table["machine"] == m]
        for dom in ("source", "target"):
            osc[f"{m} AUC ({dom})"] = float(np.mean(sub[f"AUC ({dom})"].tolist()))
    allp = np.array([perf[0].tolist() + perf[1, :n].tolist()], dtype=float)
    paper: dict[str, dict[str, float]] = {
        "AUC (source)": {"h-mean": osc["harmonic mean (source)"], "a-mean": float(np.mean(perf[:, :n], axis=1)[0])},
        "AUC (target)": {"h-mean": osc["harmonic mean (target)"], "a-mean": float(np.mean(perf[:, n:], axis=1)[0])},
        "pAUC (source, target)": {"h-mean": float(scipy.stats.hmean(np.maximum(perf, EPS), axis=1)[1]),
                                  "a-mean": float(np.mean(perf, axis=1)[1])},
        "TOTAL score": {"h-mean": score, "a-mean": float(np.mean(allp))},
    }
    for m in machine_order:
        sub = table[table["machine"] == m]
        paper["AUC (source)"][m] = float(np.mean(sub["AUC (source)"].tolist()))
        paper["AUC (target)"][m] = float(np.mean(sub["AUC (target)"].tolist()))
        paper["pAUC (source, target)"][m] = float(np.mean(sub["pAUC"].tolist()))
    res = EvaluationResult(system=system, sections=sections, table=table, machine_summaries=msum,
                           overall_summary=overall, official_score=score, official_score_csv=osc, paper_csv=paper)
    if ci:
        y_all = np.concatenate([sd.y_true for sd in sections])
        s_all = np.concatenate([sd.scores for sd in sections])
        res.evaluator_ci = evaluator_jackknife(y_all, s_all)
    if jackknife_ours:
        res.jackknife_ours = official_score_jackknife(sections)
    res.notes.append("'arithmetic mean' (official_score.csv) averages the AUCs only; 'TOTAL score a-mean' averages "
                     "AUCs and pAUCs; 'official score ci95' is the evaluator's pooled leave-one-out spread, not a CI "
                     "of the official score (see jackknife_ours for ours).")
    return res


def evaluate_submission(sub_dir: str | os.PathLike, ground_truth: str | os.PathLike | None = None, *,
                        machines: Iterable[str] | None = None, ci: bool = True, jackknife_ours: bool = False,
                        data: str | os.PathLike | None = None) -> EvaluationResult:
    """Evaluate one system folder as the organisers' evaluator does.

    Dev-style names (section_00_source_test_anomaly_0001_x.wav) carry their labels; eval-style names
    (section_00_0001.wav) need ``ground_truth``: the folder holding ground_truth_data/, ground_truth_domain/ and
    ground_truth_attributes/.  With ground truth, its machines are required (as the evaluator requires them).
    ``ci`` computes the evaluator's "CI95"; ``jackknife_ours`` our textbook interval of the official score.
    ``data``: the data folder whose test clips a complete submission scores (see ``load_submission``).
    """
    expected = expected_test_clips(data, sub_dir) if data is not None and ground_truth is None else None
    if expected is not None and machines is not None:
        expected = {m: v for m, v in expected.items() if m in set(machines)}
    sections = load_submission(sub_dir, ground_truth, machines, expected)
    return evaluate_sections(sections, system=Path(sub_dir).resolve().name, ci=ci, jackknife_ours=jackknife_ours)


# ----------------------------------------------------------------------------------------------------------------
# writing the organisers' result table
# ----------------------------------------------------------------------------------------------------------------
def _fmt(x: object) -> str:
    """Number as Python writes it (shortest repr), like the evaluator's csv/pandas output."""
    if isinstance(x, str):
        return x
    return repr(float(x))


def result_csv_lines(res: EvaluationResult) -> list[list[str]]:
    """Rows of the evaluator's <system>_result.csv, cell by cell."""
    lines: list[list[str]] = []
    head = ["", "", *SUMMARY_COLUMNS]
    for m, summ in res.machine_summaries.items():
        lines.append([m])
        lines.append(["section", *RESULT_COLUMNS])
        for _, r in res.table[res.table["machine"] == m].iterrows():
            lines.append([str(r["section"]), *(_fmt(r[c]) for c in RESULT_COLUMNS)])
        lines.append(head)
        for name, r in summ.iterrows():
            lines.append([name, "", *(_fmt(v) for v in r.tolist())])
        lines.append([])
    lines.append(head)
    for name, r in res.overall_summary.iterrows():
        lines.append([name, "", *(_fmt(v) for v in r.tolist())])
    lines.append([])
    lines.append(["official score", "", _fmt(res.official_score)])
    if res.evaluator_ci is not None:
        lines.append(["official score ci95", "", _fmt(res.evaluator_ci["official score ci95"])])
    lines.append([])
    return lines


def write_result_csv(res: EvaluationResult, path: str | os.PathLike) -> Path:
    """Write the evaluator's result table (csv module, '\\n' line ends) atomically; returns the path."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(result_csv_lines(res))
    return atomic_write_text(path, buf.getvalue())


def format_summary(res: EvaluationResult) -> str:
    """Short human-readable summary: official score, evaluator CI95, means, and our jackknife interval."""
    out = [f"system {res.system}: official score {res.official_score:.6f}"]
    osc = res.official_score_csv
    out.append(f"  arithmetic mean (14 AUCs, evaluator's official_score.csv) {osc['arithmetic mean']:.6f}; "
               f"TOTAL a-mean (AUCs + pAUCs) {res.paper_csv['TOTAL score']['a-mean']:.6f}")
    if res.evaluator_ci is not None:
        out.append(f"  evaluator 'official score ci95' (pooled leave-one-out, quirk) "
                   f"{res.evaluator_ci['official score ci95']:.3e}")
    if res.jackknife_ours is not None:
        j = res.jackknife_ours
        out.append(f"  ours: textbook jackknife 95% interval of the official score "
                   f"[{j['ci95 low']:.4f}, {j['ci95 high']:.4f}] (±{j['ci95']:.4f})")
    return "\n".join(out)
