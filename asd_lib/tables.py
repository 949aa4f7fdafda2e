"""The paper's Table 1 (four systems) and Table 2 (two baselines), rebuilt from the kit's results.

Each table keeps the paper's layout (one row per machine, then the overall mean and the score) and shows three
blocks side by side for every system: the kit's numbers with the OFFICIAL DCASE metric (AUC per domain against
all anomalies; the official score is the harmonic mean of 21 numbers), the kit's numbers with the PAPER-STYLE
metric (AUC per domain with that domain's anomalies only; Omega = harmonic mean of 14 numbers, docs/reference.md §2), and
the paper's own printed numbers, labelled "paper". With several seeds a cell reads ``mean ± sd`` and
:func:`spread_notes` says which differences between systems are smaller than their seed spread.
Introduced in ``notebooks/05_results_tables.ipynb``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from asd_lib.artifacts import params_file, seed_repeats, submission_dir
from asd_lib.data import DEV_MACHINES
from asd_lib.fsutil import atomic_write_text

MACHINES: tuple[str, ...] = ("ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu")
SYSTEM_LABELS: dict[str, str] = {"dev_online": "DEV Online", "dev_offline": "DEV Offline",
                                 "devadd_online": "DEV+ADD Online", "devadd_offline": "DEV+ADD Offline"}
BASELINE_LABELS: dict[str, str] = {"MAHALA": "Mahalanobis", "MSE": "MSE"}  # run_baseline folder names
BLOCKS: tuple[str, ...] = ("official", "paper-style", "paper")
MEAN_ROW, SCORE_ROW = "Overall mean", "Score"

# The paper's Table 1 (percent): machine -> system -> (AUC, pAUC); then overall mean and Omega (paper-style).
# gearboxEmu DEV+ADD offline pAUC is printed as "58.138" in the paper; kept as printed.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "ToyCar": {"dev_online": (78.28, 56.00), "dev_offline": (80.38, 63.21),
               "devadd_online": (78.02, 53.84), "devadd_offline": (77.55, 57.18)},
    "ToyCarEmu": {"dev_online": (81.32, 55.47), "dev_offline": (80.91, 71.13),
                  "devadd_online": (75.60, 55.37), "devadd_offline": (75.51, 57.50)},
    "bearingEmu": {"dev_online": (62.86, 59.21), "dev_offline": (64.63, 57.84),
                   "devadd_online": (64.38, 57.37), "devadd_offline": (64.62, 53.82)},
    "fan": {"dev_online": (62.72, 53.16), "dev_offline": (67.34, 52.53),
            "devadd_online": (62.64, 55.95), "devadd_offline": (72.25, 55.92)},
    "gearboxEmu": {"dev_online": (76.32, 68.53), "dev_offline": (79.66, 68.34),
                   "devadd_online": (74.02, 57.58), "devadd_offline": (75.86, 58.138)},
    "sliderEmu": {"dev_online": (73.62, 57.16), "dev_offline": (70.91, 55.45),
                  "devadd_online": (68.44, 54.74), "devadd_offline": (66.33, 53.58)},
    "valveEmu": {"dev_online": (91.98, 82.42), "dev_offline": (89.61, 81.45),
                 "devadd_online": (91.08, 77.68), "devadd_offline": (89.94, 77.00)},
}
PAPER_TABLE1_SUMMARY: dict[str, tuple[float, float, float]] = {  # system -> (mean AUC, mean pAUC, Omega)
    "dev_online": (75.30, 61.71, 66.58), "dev_offline": (76.21, 64.28, 68.60),
    "devadd_online": (73.45, 58.93, 64.49), "devadd_offline": (74.58, 59.02, 65.11),
}
# The paper's Table 2 (fractions): machine -> baseline -> (AUC, pAUC); its Mean and Omega rows as printed.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "ToyCar": {"MAHALA": (0.6523, 0.5825), "MSE": (0.5675, 0.5403)},
    "ToyCarEmu": {"MAHALA": (0.6806, 0.5347), "MSE": (0.6541, 0.5589)},
    "bearingEmu": {"MAHALA": (0.6410, 0.6042), "MSE": (0.6095, 0.5985)},
    "fan": {"MAHALA": (0.5255, 0.5229), "MSE": (0.5420, 0.5333)},
    "gearboxEmu": {"MAHALA": (0.6361, 0.5397), "MSE": (0.5901, 0.5294)},
    "sliderEmu": {"MAHALA": (0.5777, 0.5036), "MSE": (0.5615, 0.5038)},
    "valveEmu": {"MAHALA": (0.5655, 0.5020), "MSE": (0.6826, 0.5508)},
}
PAPER_TABLE2_SUMMARY: dict[str, tuple[float, float, float]] = {
    "MAHALA": (0.6112, 0.5414, 0.5752), "MSE": (0.6153, 0.5450, 0.5791),
}

EPS = np.finfo(float).eps


# ----------------------------------------------------------------------------------------------------------
# from evaluation results to a tidy frame


def tidy_from_result(res, system: str, seed: int = 0) -> pd.DataFrame:
    """Tidy rows (system, seed, block, row, metric, value) of one evaluated system, fractions in [0, 1].

    ``res`` is an ``asd_lib.metrics.EvaluationResult``. Rows: each machine, "Overall mean", "Score".
    Block "official": AUC = mean of the official AUC(source), AUC(target); Score = the official score.
    Block "paper-style": AUC = mean of the domain-only AUCs; Score = Omega over 14 numbers.
    """
    from asd_lib import metrics  # sklearn, scipy: only the functions that evaluate need it

    paper = metrics.paper_style_scores(res)
    table = res.table.groupby("machine", sort=False).mean(numeric_only=True)
    rows = []
    for machine, r in table.iterrows():
        auc_off = float(np.mean([r["AUC (source)"], r["AUC (target)"]]))
        ps = paper["per_machine"][machine]
        rows += [(system, seed, "official", machine, "AUC", auc_off),
                 (system, seed, "official", machine, "pAUC", float(r["pAUC"])),
                 (system, seed, "paper-style", machine, "AUC", float(ps["section_AUC_mean"])),
                 (system, seed, "paper-style", machine, "pAUC", float(ps["pAUC"]))]
    df = pd.DataFrame(rows, columns=["system", "seed", "block", "row", "metric", "value"])
    means = df.groupby(["block", "metric"], sort=False)["value"].mean()
    for (block, metric), v in means.items():
        rows.append((system, seed, block, MEAN_ROW, metric, float(v)))
    rows.append((system, seed, "official", SCORE_ROW, "AUC", float(res.official_score)))
    rows.append((system, seed, "paper-style", SCORE_ROW, "AUC", float(paper["omega_hmean14"])))
    return pd.DataFrame(rows, columns=["system", "seed", "block", "row", "metric", "value"])


def find_submissions(results_dir: str | os.PathLike, names: Iterable[str],
                     sub: str = "submission") -> list[tuple[str, int, Path]]:
    """(name, seed repeat, folder) for ``<results_dir>/<name>/<sub>`` and ``<results_dir>/seed<k>/<name>/<sub>``."""
    return [(n, k, submission_dir(r, n, sub)) for k, r in seed_repeats(results_dir) for n in names
            if submission_dir(r, n, sub).is_dir()]


def collect(results_dir: str | os.PathLike, names: Iterable[str] = tuple(SYSTEM_LABELS),
            machines: Sequence[str] = MACHINES, sub: str = "submission",
            ground_truth: str | os.PathLike | None = None) -> pd.DataFrame:
    """Evaluate every submission found for ``names`` (all seed repeats) and stack the tidy rows."""
    from asd_lib import metrics  # sklearn, scipy: only the functions that evaluate need it

    frames = []
    for name, seed, folder in find_submissions(results_dir, names, sub):
        res = metrics.evaluate_submission(folder, ground_truth, machines=machines, ci=False)
        frames.append(tidy_from_result(res, name, seed))
    if not frames:
        return pd.DataFrame(columns=["system", "seed", "block", "row", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------------
# paper numbers as tidy rows


def paper_rows(which: str = "table1") -> pd.DataFrame:
    """The paper's printed numbers as tidy rows (block "paper"), fractions in [0, 1]."""
    if which == "table1":
        per, summary, scale = PAPER_TABLE1, PAPER_TABLE1_SUMMARY, 100.0
    elif which == "table2":
        per, summary, scale = PAPER_TABLE2, PAPER_TABLE2_SUMMARY, 1.0
    else:
        raise ValueError(f"which must be 'table1' or 'table2', got {which!r}")
    rows = []
    for machine, by_sys in per.items():
        for system, (auc, pauc) in by_sys.items():
            rows += [(system, 0, "paper", machine, "AUC", auc / scale), (system, 0, "paper", machine, "pAUC", pauc / scale)]
    for system, (auc, pauc, omega) in summary.items():
        rows += [(system, 0, "paper", MEAN_ROW, "AUC", auc / scale), (system, 0, "paper", MEAN_ROW, "pAUC", pauc / scale),
                 (system, 0, "paper", SCORE_ROW, "AUC", omega / scale)]
    return pd.DataFrame(rows, columns=["system", "seed", "block", "row", "metric", "value"])


# ----------------------------------------------------------------------------------------------------------
# aggregation and layout


def aggregate(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample sd and count over seed repeats: columns system, block, row, metric, mean, sd, n."""
    if tidy.empty:
        return pd.DataFrame(columns=["system", "block", "row", "metric", "mean", "sd", "n"])
    g = tidy.groupby(["system", "block", "row", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", sd=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), n="count")
    return out.reset_index()


def _cell(mean: float, sd: float, n: int, scale: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    text = f"{mean * scale:.{digits}f}"
    if n > 1 and not math.isnan(sd):
        text += f" ± {sd * scale:.{digits}f}"
    return text


def layout(agg: pd.DataFrame, labels: Mapping[str, str], scale: float = 100.0, digits: int = 2,
           machines: Sequence[str] = MACHINES, blocks: Sequence[str] = BLOCKS) -> pd.DataFrame:
    """The paper's layout: rows = machines + overall mean + score, columns = (system, block, AUC|pAUC), text cells.

    The "Score" row holds the official score (official block), Omega (paper-style block) or the paper's Omega,
    written under AUC; its pAUC cell is empty, as in the paper.
    """
    rows = [*machines, MEAN_ROW, SCORE_ROW]
    cols = pd.MultiIndex.from_tuples([(labels[s], b, m) for s in labels for b in blocks for m in ("AUC", "pAUC")],
                                     names=["system", "block", "metric"])
    out = pd.DataFrame("", index=pd.Index(rows, name="machine"), columns=cols)
    for r in agg.itertuples(index=False):
        if r.system in labels and r.row in rows:
            out.loc[r.row, (labels[r.system], r.block, r.metric)] = _cell(r.mean, r.sd, int(r.n), scale, digits)
    return out


def with_paper(tidy: pd.DataFrame, which: str = "table1") -> pd.DataFrame:
    """The kit's tidy rows plus the paper's printed numbers (block "paper")."""
    return pd.concat([tidy, paper_rows(which)], ignore_index=True)


def system_labels(results_dir: str | os.PathLike) -> dict[str, str]:
    """The systems' table labels, with a visible LEAKY mark for a run whose epochs were chosen on test labels
    (``epoch_selection: select-on-test-leaky`` in its ``results/<system>/params.json``)."""
    out = dict(SYSTEM_LABELS)
    for system in out:
        path = params_file(results_dir, system)
        if path.is_file() and json.loads(path.read_text())["values"].get("epoch_selection", "fixed") != "fixed":
            out[system] += " (LEAKY: epochs chosen on test labels)"
    return out


def table1(tidy: pd.DataFrame, with_paper: bool = True, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Table 1 (four systems, percent) in the paper's layout from :func:`collect`'s tidy rows; ``labels`` from
    :func:`system_labels` mark leaky runs."""
    frames = [tidy, paper_rows("table1")] if with_paper else [tidy]
    return layout(aggregate(pd.concat(frames, ignore_index=True)), labels or SYSTEM_LABELS, 100.0, 2)


EVAL_SYSTEMS = ("devadd_online", "devadd_offline")  # the systems that score the evaluation set


def table1_eval(tidy: pd.DataFrame, machines: Sequence[str]) -> pd.DataFrame:
    """Table 1's evaluation-set block: the DEV+ADD systems on the additional machines' test clips (percent). The
    paper reports no evaluation-set numbers, so there is no paper column."""
    labels = {s: SYSTEM_LABELS[s] for s in EVAL_SYSTEMS}
    return layout(aggregate(tidy), labels, 100.0, 2, machines=machines, blocks=("official", "paper-style"))


def table2(tidy: pd.DataFrame, with_paper: bool = True) -> pd.DataFrame:
    """Table 2 (the organisers' baselines) from :func:`collect`'s tidy rows, in percent like Table 1 (the paper
    prints fractions; the CSV keeps fractions for both tables)."""
    frames = [tidy, paper_rows("table2")] if with_paper else [tidy]
    return layout(aggregate(pd.concat(frames, ignore_index=True)), BASELINE_LABELS, 100.0, 2)


# ----------------------------------------------------------------------------------------------------------
# spread between seeds

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("dev_online", "dev_offline"), ("devadd_online", "devadd_offline"),
                                             ("dev_offline", "devadd_offline"), ("dev_online", "devadd_online"))


def spread_notes(tidy: pd.DataFrame, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                 labels: Mapping[str, str] = SYSTEM_LABELS) -> pd.DataFrame:
    """For each pair of systems and each score (official, paper-style): the difference of seed means, the
    combined spread sqrt(sd_a^2 + sd_b^2), and whether the difference is smaller than that spread."""
    agg = aggregate(tidy[tidy["block"] != "paper"])
    score = agg[(agg["row"] == SCORE_ROW)].set_index(["system", "block"])
    rows = []
    for a, b in pairs:
        for block in ("official", "paper-style"):
            if (a, block) not in score.index or (b, block) not in score.index:
                continue
            ra, rb = score.loc[(a, block)], score.loc[(b, block)]
            diff = float(rb["mean"] - ra["mean"])
            spread = float(math.sqrt(np.nan_to_num(ra["sd"]) ** 2 + np.nan_to_num(rb["sd"]) ** 2))
            n = int(min(ra["n"], rb["n"]))
            rows.append({"comparison": f"{labels.get(b, b)} − {labels.get(a, a)}", "score": block,
                         "difference": diff, "spread": spread if n > 1 else float("nan"), "seeds": n,
                         "within spread": bool(n > 1 and abs(diff) < spread)})
    return pd.DataFrame(rows, columns=["comparison", "score", "difference", "spread", "seeds", "within spread"])


def describe_spread(notes: pd.DataFrame) -> list[str]:
    """One sentence per comparison: the difference, and whether seeds can resolve it."""
    out = []
    for r in notes.to_dict("records"):
        text = f"{r['comparison']} ({r['score']} score): {r['difference']:+.3f}"
        if r["seeds"] > 1:
            verdict = "smaller than" if r["within spread"] else "larger than"
            text += f", {verdict} the seed spread ({r['spread']:.3f}, {r['seeds']} seeds)"
            if r["within spread"]:
                text += ": not a difference this run can resolve"
        else:
            text += " (one seed: no spread measured; run with --seeds 3)"
        out.append(text)
    return out


def claim_checks(long: pd.DataFrame, claims: Sequence[tuple[str, str, str]], score: str = "official score",
                 k: float = 2.0) -> pd.DataFrame:
    """Whether each claim "``better`` scores above ``worse``" holds on per-seed results.

    ``long``: one row per setting and seed (columns 'setting', 'seed' and ``score``); ``claims``: (claim, better
    setting, worse setting). The difference of the seed means counts when it exceeds ``k`` times the combined spread
    sqrt(sd_better^2 + sd_worse^2): 'holds' above it, 'reversed' below minus it, else 'within the seed spread'.
    With one seed there is no spread and the verdict is 'one seed: not resolved'.
    """
    g = long.groupby("setting")[score]
    mean, sd, n = g.mean(), g.std(), g.count()
    rows = []
    for claim, better, worse in claims:
        diff = float(mean[better] - mean[worse])
        seeds = int(min(n[better], n[worse]))
        spread = float(math.sqrt(sd[better] ** 2 + sd[worse] ** 2)) if seeds > 1 else float("nan")
        if seeds < 2:
            verdict = "one seed: not resolved"
        elif diff > k * spread:
            verdict = "holds"
        elif diff < -k * spread:
            verdict = "reversed"
        else:
            verdict = "within the seed spread"
        rows.append({"claim": claim, "better": float(mean[better]), "worse": float(mean[worse]),
                     "difference": diff, "spread": spread, "seeds": seeds, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "better", "worse", "difference", "spread", "seeds", "verdict"])


# ----------------------------------------------------------------------------------------------------------
# writing


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown of a layout table. A table with a system level in its columns becomes one block per system
    (a bold heading, then its block/metric columns), so that no table is wider than a screen."""
    if isinstance(table.columns, pd.MultiIndex) and table.columns.nlevels == 3:
        parts = []
        for system in dict.fromkeys(table.columns.get_level_values(0)):
            parts.append(f"*{system}*\n\n" + _markdown_block(table[system]))
        return "\n".join(parts)
    return _markdown_block(table)


_MD_NAMES = {"paper": "the paper's (real data)"}  # the paper's printed numbers, never measured by the kit


def _markdown_block(table: pd.DataFrame) -> str:
    cols = [" / ".join(_MD_NAMES.get(str(x), str(x)) for x in c) if isinstance(c, tuple) else str(c)
            for c in table.columns]
    head = [table.index.name or ""] + cols
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """LaTeX (booktabs) of a layout table with multi-level column headers."""
    t = table.copy()
    t = t.rename(columns=lambda c: c.replace("±", "$\\pm$") if isinstance(c, str) else c)
    t = t.map(lambda v: v.replace("±", "$\\pm$") if isinstance(v, str) else v)
    return t.to_latex(multicolumn=True, multicolumn_format="c", caption=caption or None, label=label or None,
                      escape=False, column_format="l" + "r" * t.shape[1])




def write(table: pd.DataFrame, tidy: pd.DataFrame, out_dir: str | os.PathLike, stem: str,
          caption: str = "") -> dict[str, Path]:
    """Write ``<stem>.csv`` (tidy numbers: mean, sd, n), ``<stem>.md`` and ``<stem>.tex`` under ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "tex": out / f"{stem}.tex"}
    atomic_write_text(paths["csv"], aggregate(tidy).to_csv(index=False, float_format="%.6f"))
    md = (f"**{caption}**\n\n" if caption else "") + to_markdown(table)
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["tex"], to_latex(table, caption=caption, label=f"tab:{stem}"))
    return paths


# ----------------------------------------------------------------------------------------------------------
# scoring a variant (ablations, paper-vs-code comparisons)


def evaluate_fused(fused: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike,
                   ground_truth: str | os.PathLike | None = None) -> dict[str, float]:
    """Write fused scores ({machine: DataFrame(names, score, decision)}) as a submission in ``out_dir``, evaluate it,
    and return the official score, the paper-style Omega, mean AUCs (official), mean pAUC and mean F1 (fractions).

    Without ``ground_truth`` only the development-set machines count (a DEV+ADD regime also fuses the evaluation
    set, whose names carry no labels)."""
    from asd_lib import metrics, submission  # sklearn, scipy: only the functions that evaluate need them

    out = Path(out_dir)
    if ground_truth is None:
        fused = {m: df for m, df in fused.items() if m in DEV_MACHINES}
    for machine, df in fused.items():
        submission.write_submission(out, machine, df["names"], df["score"], df["decision"])
    res = metrics.evaluate_submission(out, ground_truth, machines=list(fused), ci=False)
    paper = metrics.paper_style_scores(res)
    t = res.table
    return {"official score": float(res.official_score), "paper-style Ω": float(paper["omega_hmean14"]),
            "AUC (source)": float(t["AUC (source)"].mean()), "AUC (target)": float(t["AUC (target)"].mean()),
            "pAUC": float(t["pAUC"].mean()),
            "F1": float(np.mean([t["F1 score (source)"].mean(), t["F1 score (target)"].mean()]))}
