"""Parity of asd_lib.metrics with the organisers' evaluator (tests/data/metrics) and its bad-input errors."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd_lib import metrics as M
from asd_lib.evaluate import main as evaluate_main


@pytest.fixture(scope="module")
def mdir(tv_dir) -> Path:
    return tv_dir / "metrics"


@pytest.fixture(scope="module")
def expected(mdir) -> dict:
    return json.loads((mdir / "expected.json").read_text())


@pytest.fixture(scope="module")
def result(mdir):
    return M.evaluate_submission(mdir / "submission", jackknife_ours=True)


def _check_parity(res, expected):
    for _, row in res.table.iterrows():
        e = expected["per_machine"][row["machine"]]
        for c in M.RESULT_COLUMNS:
            assert abs(row[c] - e[c]) <= 1e-12, (row["machine"], c)
    for m, summ in res.machine_summaries.items():
        for rn in M.MACHINE_SUMMARY_ROWS:
            for c in M.SUMMARY_COLUMNS:
                assert abs(summ.loc[rn, c] - expected["per_machine"][m]["machine " + rn][c]) <= 1e-12
    es = expected["evaluator_summary"]
    for rn in M.OVERALL_SUMMARY_ROWS:
        for c in M.SUMMARY_COLUMNS:
            assert res.overall_summary.loc[rn, c] == pytest.approx(es[rn][c], rel=1e-12, abs=0)
    assert res.official_score == pytest.approx(es["official score"], rel=1e-12, abs=0)
    for k, v in expected["evaluator_official_score_csv"].items():
        assert res.official_score_csv[k] == pytest.approx(v, rel=1e-12, abs=0), k
    for metric, d in expected["evaluator_official_score_paper_csv"].items():
        for k, v in d.items():
            assert res.paper_csv[metric][k] == pytest.approx(v, rel=1e-12, abs=0), (metric, k)


def test_parity_dev_names(result, expected):
    _check_parity(result, expected)
    assert result.official_score == pytest.approx(0.6086774777498876, rel=1e-12)
    # the evaluator's quirks: "arithmetic mean" = 14 AUCs only, TOTAL a-mean = all 21 numbers
    aucs = result.table[["AUC (source)", "AUC (target)"]].to_numpy().ravel()
    assert result.official_score_csv["arithmetic mean"] == pytest.approx(aucs.mean(), rel=1e-12)
    assert result.paper_csv["TOTAL score"]["a-mean"] != pytest.approx(aucs.mean(), rel=1e-6)


def test_parity_with_ground_truth(mdir, expected):
    res = M.evaluate_submission(mdir / "submission", mdir, ci=False)
    _check_parity(res, expected)
    assert res.sections[0].names[0].startswith("section_00_0")  # eval-style names from the attribute map


def test_evaluator_ci95_parity(result, expected):
    j = expected["evaluator_summary"]["jackknife"]
    ci = result.evaluator_ci
    for k in ("auc_ci95", "pauc_ci95", "auc_jack", "pauc_jack"):
        assert ci[k] == pytest.approx(j[k], rel=1e-9), k
    assert ci["official score ci95"] == pytest.approx(expected["evaluator_summary"]["official score ci95"], rel=1e-9)


def test_textbook_jackknife_is_ours_and_wider(result):
    j = result.jackknife_ours
    assert j["official score"] == result.official_score
    assert j["ci95 low"] < result.official_score < j["ci95 high"]
    # the evaluator's figure is ~(n-1) times narrower than a textbook interval
    assert j["ci95"] > 100 * result.evaluator_ci["official score ci95"]
    assert 0.005 < j["ci95"] < 0.1


def test_fast_leave_one_out_matches_sklearn():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(40, int), np.ones(25, int)]
    s = np.round(rng.normal(size=65) + 0.8 * y, 1)  # ties
    fast = M.evaluator_jackknife(y, s, fast=True)
    slow = M.evaluator_jackknife(y, s, fast=False)
    for k in fast:
        assert fast[k] == pytest.approx(slow[k], rel=1e-9), k


def test_aau_style_parity(result, expected):
    p = M.paper_style_scores(result)
    a = expected["aau_style_NOT_OFFICIAL"]
    for m, d in a["per_machine"].items():
        for k, v in d.items():
            assert abs(p["per_machine"][m][k] - v) <= 1e-12, (m, k)
    for k in ("omega_hmean14", "mean_auc", "mean_pauc"):
        assert abs(p[k] - a[k]) <= 1e-12
    assert "NOT" in p["label"] and p["omega_hmean14"] != pytest.approx(result.official_score, rel=1e-6)


def _cells(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_result_csv_as_evaluator_writes_it(result, mdir, tmp_path):
    out = result.to_csv(tmp_path / "system1_result.csv")
    got, want = _cells(out), _cells(mdir / "evaluator_output" / "system1_result.csv")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            try:
                fb = float(b)
            except ValueError:
                assert a == b
                continue
            assert float(a) == pytest.approx(fb, rel=1e-9, abs=1e-12)
    # every line except the CI95 one (rel 1e-13 from our fast leave-one-out) is byte-identical
    lines_g = out.read_text().splitlines()
    lines_w = (mdir / "evaluator_output" / "system1_result.csv").read_text().splitlines()
    assert [a for a, b in zip(lines_g, lines_w) if a != b and not a.startswith("official score ci95")] == []


def _copy_sub(mdir: Path, dst: Path) -> Path:
    shutil.copytree(mdir / "submission", dst)
    return dst


def test_shuffled_rows_give_same_numbers(mdir, tmp_path, result):
    sub = _copy_sub(mdir, tmp_path / "sub")
    rng = np.random.default_rng(0)
    for f in sub.iterdir():
        lines = f.read_text().splitlines()
        f.write_text("\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n")
    res = M.evaluate_submission(sub, ci=False)
    assert res.official_score == result.official_score
    assert res.table.equals(result.table)


def test_robust_to_ties_constant_inverted_extreme():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    d = np.tile(np.r_[np.zeros(50, int), np.ones(50, int)], 2)
    s = rng.normal(size=200) + y
    dec = (s > 0.5).astype(int)
    base = M.section_metrics(y, s, d, dec)
    keep = (d == 0) | (y == 1)
    assert base["AUC (source)"] == roc_auc_score(y[keep], s[keep])
    inv = M.section_metrics(y, -s, d, dec)
    assert inv["AUC (all)"] == pytest.approx(1 - base["AUC (all)"], abs=1e-12)
    const = M.section_metrics(y, np.zeros(200), d, np.zeros(200, int))
    assert const["AUC (source)"] == 0.5 and const["pAUC"] == 0.5
    assert const["precision (source)"] == 0.0 and const["F1 score (target)"] == 0.0  # nothing flagged
    ext = M.section_metrics(y, s * 1e300, d, dec)
    assert ext == base
    withinf = s.copy()
    withinf[np.argmax(s)] = np.inf
    assert M.section_metrics(y, withinf, d, dec)["AUC (all)"] == base["AUC (all)"]
    tied = np.round(s)
    assert M.section_metrics(y, tied, d, dec)["pAUC"] == roc_auc_score(y, tied, max_fpr=0.1)


def test_official_score_eps_floor():
    assert M.official_score([0.0], [0.5], [0.5]) == pytest.approx(3 / (1 / M.EPS + 4), rel=1e-12)


# ---------------------------------------------------------------- bad input: errors name the file and the row
def _expect_error(sub, match, gt=None):
    with pytest.raises(M.EvaluationError, match=match) as ei:
        M.evaluate_submission(sub, gt, ci=False)
    return str(ei.value)


def test_missing_decision_file(mdir, tmp_path):
    sub = _copy_sub(mdir, tmp_path / "sub")
    (sub / "decision_result_fan_section_00_test.csv").unlink()
    msg = _expect_error(sub, "missing decision file")
    assert "decision_result_fan_section_00_test.csv" in msg


def test_missing_and_extra_clips(mdir, tmp_path):
    sub = _copy_sub(mdir, tmp_path / "a")
    f = sub / "anomaly_score_fan_section_00_test.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:-1]) + "\n")
    msg = _expect_error(sub, "no score")
    assert "decision_result_fan_section_00_test.csv row 200" in msg
    sub = _copy_sub(mdir, tmp_path / "b")
    f = sub / "anomaly_score_fan_section_00_test.csv"
    f.write_text(f.read_text() + "section_00_source_test_normal_0999_x.wav,0.5\n")
    msg = _expect_error(sub, "no decision")
    assert "anomaly_score_fan_section_00_test.csv row 201" in msg
    # against the ground truth: a clip missing from both files
    sub = _copy_sub(mdir, tmp_path / "c")
    for kind in ("anomaly_score", "decision_result"):
        f = sub / f"{kind}_valveEmu_section_00_test.csv"
        f.write_text("\n".join(f.read_text().splitlines()[1:]) + "\n")
    msg = _expect_error(sub, "have no score", gt=mdir)
    assert "anomaly_score_valveEmu_section_00_test.csv" in msg


def test_nan_and_non_numeric_scores(mdir, tmp_path):
    for bad, match in (("nan", "NaN"), ("abc", "not a number")):
        sub = _copy_sub(mdir, tmp_path / bad)
        f = sub / "anomaly_score_ToyCar_section_00_test.csv"
        lines = f.read_text().splitlines()
        lines[4] = lines[4].split(",")[0] + "," + bad
        f.write_text("\n".join(lines) + "\n")
        msg = _expect_error(sub, match)
        assert "anomaly_score_ToyCar_section_00_test.csv row 5" in msg


def test_machine_absent_from_ground_truth(mdir, tmp_path):
    sub = _copy_sub(mdir, tmp_path / "sub")
    for kind in ("anomaly_score", "decision_result"):
        shutil.copy(sub / f"{kind}_fan_section_00_test.csv", sub / f"{kind}_pump_section_00_test.csv")
    msg = _expect_error(sub, "absent from the ground truth", gt=mdir)
    assert "anomaly_score_pump_section_00_test.csv" in msg


def test_eval_names_need_ground_truth(tmp_path):
    from asd_lib.submission import write_submission
    write_submission(tmp_path, "fan", ["section_00_0000.wav", "section_00_0001.wav"], [0.1, 0.2], [0, 1])
    msg = _expect_error(tmp_path, "ground-truth")
    assert "row 1" in msg


def test_cli(mdir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert evaluate_main([str(mdir / "submission"), "--ground-truth", str(mdir), "--out", str(out), "--no-ci",
                          "--paper-style"]) == 0
    text = capsys.readouterr().out
    assert "0.608677" in text and "NOT official" in text
    assert out.read_text().splitlines()[0] == "ToyCar"
    assert evaluate_main([str(tmp_path / "nowhere")]) == 2


def test_dev_numbering_rule_holds_for_every_real_machine_and_catches_gaps():
    names = (Path(__file__).parent / "data" / "dcase2026_file_names" / "dev_test.txt").read_text().split()
    by_machine: dict[str, list[str]] = {}
    for line in names:
        machine, _, name = line.split("/")
        by_machine.setdefault(machine, []).append(name)
    assert len(by_machine) == 7
    for machine, clips in by_machine.items():  # ToyCar numbers 0000-0199 across groups, fan 0000-0049 per group
        M._check_dev_complete(Path(machine), "00", clips)
        with pytest.raises(M.EvaluationError, match="complete dev test set"):
            M._check_dev_complete(Path(machine), "00", clips[1:])  # a missing row
        with pytest.raises(M.EvaluationError, match="complete dev test set"):
            M._check_dev_complete(Path(machine), "00", clips[1:] + clips[2:3])  # one clip twice, one missing
    assert M._label_from_name("xsection_00_source_test_normal_0000_a.wav") is None  # names are matched whole


def test_incomplete_dev_submissions_are_refused_without_ground_truth(mdir, tmp_path):
    sub = _copy_sub(mdir, tmp_path / "a")
    for kind in ("anomaly_score", "decision_result"):  # the same row gone from both files
        f = sub / f"{kind}_fan_section_00_test.csv"
        f.write_text("\n".join(f.read_text().splitlines()[1:]) + "\n")
    _expect_error(sub, "complete dev test set")
    # with the data folder: exactly each machine's test clips, and no foreign machine
    data = tmp_path / "data"
    for line in (Path(__file__).parent / "data" / "dcase2026_file_names" / "dev_test.txt").read_text().split():
        machine = line.split("/")[0]
        if (mdir / "submission" / f"anomaly_score_{machine}_section_00_test.csv").exists():
            (data / machine / "test").mkdir(parents=True, exist_ok=True)
            (data / machine / "test" / line.split("/")[-1]).touch()
            (data / machine / "train").mkdir(exist_ok=True)
    for machine in {p.parent.parent.name for p in data.rglob("*.wav")}:
        (data / machine / "train" / "section_00_source_train_normal_0000_noAttribute.wav").touch()
    full = M.evaluate_submission(_copy_sub(mdir, tmp_path / "b"), ci=False, data=data)
    assert full.official_score == pytest.approx(M.evaluate_submission(mdir / "submission", ci=False).official_score)
    with pytest.raises(M.EvaluationError, match="without a score"):
        M.evaluate_submission(sub, ci=False, data=data)
    renamed = _copy_sub(mdir, tmp_path / "c")
    for kind in ("anomaly_score", "decision_result"):
        (renamed / f"{kind}_fan_section_00_test.csv").rename(renamed / f"{kind}_fann_section_00_test.csv")
    with pytest.raises(M.EvaluationError, match="does not have"):
        M.evaluate_submission(renamed, ci=False, data=data)
