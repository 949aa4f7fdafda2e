"""Tables 1 and 2: layout, official vs paper-style numbers, seeds (mean ± sd), spread notes, files written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hmean

from asd_lib import submission, tables


def _names(n_per_group: int = 5) -> list[str]:
    out = []
    for dom in ("source", "target"):
        for lab in ("normal", "anomaly"):
            out += [f"section_00_{dom}_test_{lab}_{i:04d}_noAttribute.wav" for i in range(n_per_group)]
    return out


def _fake_system(root: Path, system: str, strength: float, seed: int) -> None:
    """A submission whose anomalies score higher by `strength` (plus noise)."""
    rng = np.random.default_rng(seed)
    names = _names()
    for m in tables.MACHINES:
        y = np.array(["anomaly" in n for n in names], float)
        s = strength * y + rng.normal(size=len(names))
        submission.write_submission(root / system / "submission", m, names, s, (s > 0.5).astype(int))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    for k, root in enumerate([tmp_path, tmp_path / "seed1", tmp_path / "seed2"]):
        _fake_system(root, "dev_offline", 2.0, 10 + k)
        _fake_system(root, "dev_online", 1.9, 20 + k)
    return tmp_path


def test_collect_and_table1_layout(results: Path):
    tidy = tables.collect(results)
    assert set(tidy["system"]) == {"dev_offline", "dev_online"} and set(tidy["seed"]) == {0, 1, 2}
    t1 = tables.table1(tidy)
    assert list(t1.index) == [*tables.MACHINES, tables.MEAN_ROW, tables.SCORE_ROW]
    assert ("DEV Offline", "paper", "AUC") in t1.columns and ("DEV Offline", "official", "pAUC") in t1.columns
    assert t1.loc["ToyCar", ("DEV Offline", "paper", "AUC")] == "80.38"   # the paper's printed value
    assert t1.loc[tables.SCORE_ROW, ("DEV Offline", "paper", "AUC")] == "68.60"
    cell = t1.loc["fan", ("DEV Online", "official", "AUC")]
    assert "±" in cell  # three seeds -> mean ± sd
    assert t1.loc["fan", ("DEV+ADD Online", "official", "AUC")] == ""  # not run: empty, paper still shown
    assert t1.loc[tables.SCORE_ROW, ("DEV Offline", "official", "pAUC")] == ""


def test_scores_follow_their_formulas(results: Path):
    tidy = tables.collect(results)
    one = tidy[(tidy.system == "dev_offline") & (tidy.seed == 0)]
    get = lambda block, row, metric: float(one[(one.block == block) & (one.row == row) & (one.metric == metric)].value.iloc[0])
    aucs = [get("paper-style", m, "AUC") for m in tables.MACHINES]
    paucs = [get("paper-style", m, "pAUC") for m in tables.MACHINES]
    assert get("paper-style", tables.SCORE_ROW, "AUC") == pytest.approx(hmean(aucs + paucs))
    assert get("official", tables.MEAN_ROW, "pAUC") == pytest.approx(np.mean(paucs))
    # the official per-domain AUC uses all anomalies, so it differs from the paper-style one in general
    assert get("official", tables.SCORE_ROW, "AUC") != pytest.approx(get("paper-style", tables.SCORE_ROW, "AUC"))


def test_paper_numbers_reproduce_the_printed_omega():
    for sys_id, (_, _, omega) in tables.PAPER_TABLE1_SUMMARY.items():
        vals = [v for m in tables.MACHINES for v in tables.PAPER_TABLE1[m][sys_id]]
        assert hmean(vals) == pytest.approx(omega, abs=0.006), sys_id


def test_spread_notes_flag_small_differences(results: Path):
    tidy = tables.collect(results)
    notes = tables.spread_notes(tidy)
    row = notes[(notes.comparison == "DEV Offline − DEV Online") & (notes.score == "official")].iloc[0]
    assert row.seeds == 3 and row.spread > 0
    assert bool(row["within spread"]) == (abs(row.difference) < row.spread)
    text = tables.describe_spread(notes)
    assert any("seed spread" in t for t in text)


def test_single_seed_says_no_spread(tmp_path: Path):
    _fake_system(tmp_path, "dev_offline", 2.0, 1)
    _fake_system(tmp_path, "dev_online", 1.0, 2)
    notes = tables.spread_notes(tables.collect(tmp_path))
    assert not notes["within spread"].any()
    assert all("one seed" in t for t in tables.describe_spread(notes))


def test_claim_checks_compare_the_gap_with_twice_the_spread():
    long = pd.DataFrame({"setting": ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"],
                         "seed": [0, 1, 2] * 3 + [0],
                         "official score": [0.60, 0.61, 0.62, 0.50, 0.51, 0.52, 0.605, 0.615, 0.625, 0.7]})
    got = tables.claim_checks(long, [("a > b", "a", "b"), ("b > a", "b", "a"), ("c > a", "c", "a"),
                                     ("d > a", "d", "a")]).set_index("claim")
    assert got.loc["a > b", "verdict"] == "holds" and got.loc["a > b", "difference"] == pytest.approx(0.1)
    assert got.loc["a > b", "spread"] == pytest.approx(np.sqrt(2) * 0.01)
    assert got.loc["b > a", "verdict"] == "reversed"
    assert got.loc["c > a", "verdict"] == "within the seed spread"  # 0.005 against 2 x 0.014
    assert got.loc["d > a", "verdict"] == "one seed: not resolved" and got.loc["d > a", "seeds"] == 1


def test_write_csv_markdown_latex(results: Path, tmp_path: Path):
    tidy = tables.collect(results)
    t1 = tables.table1(tidy)
    paths = tables.write(t1, tables.with_paper(tidy, "table1"), tmp_path / "out", "table1", caption="Table 1")
    csv = pd.read_csv(paths["csv"])
    assert {"system", "block", "row", "metric", "mean", "sd", "n"} <= set(csv.columns)
    assert (csv[csv.block == "official"]["n"] == 3).all()
    md = paths["md"].read_text()
    assert md.count("\n|") >= 10 and "*DEV Offline*" in md  # one block per system, each a screen wide
    block = md.split("*DEV Offline*")[1].split("\n\n")[1]
    assert block.splitlines()[0].count("|") == 8 and "the paper's (real data) / AUC" in block
    tex = paths["tex"].read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\multicolumn" in tex


def test_table2_uses_baseline_folders(tmp_path: Path):
    _fake_system(tmp_path, "MAHALA", 0.5, 3)
    _fake_system(tmp_path, "MSE", 0.4, 4)
    t2 = tables.table2(tables.collect(tmp_path, names=tables.BASELINE_LABELS, sub="submission"))
    assert t2.loc["ToyCar", ("Mahalanobis", "paper", "AUC")] == "65.23"  # percent, like Table 1
    assert t2.loc["ToyCar", ("MSE", "official", "AUC")] != ""
