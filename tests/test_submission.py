"""Submission files in the organisers' format, decision rules, and a round trip through the evaluator."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from asd_lib import metrics as M
from asd_lib import submission as S
from asd_lib.fusion import aau_minmax_decision, threshold_decision


def _read(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_round_trip_reproduces_public_official_score(tv_dir, tmp_path):
    src = tv_dir / "metrics" / "submission"
    expected = json.loads((tv_dir / "metrics" / "expected.json").read_text())
    out = S.system_dir(tmp_path / "teams", "Doe_AAU_task2_1", team="doe")
    for f in sorted(src.glob("anomaly_score_*_section_00_test.csv")):
        machine = f.name[len("anomaly_score_"):-len("_section_00_test.csv")]
        rows = _read(f)
        dec = dict(r for r in _read(src / S.decision_file_name(machine)))
        names = ["fan/test/" + r[0] if machine == "fan" else r[0] for r in rows]  # paths are reduced to names
        sp, dp = S.write_submission(out, machine, names, [float(r[1]) for r in rows], [int(dec[r[0]]) for r in rows])
        assert sp.read_text() == f.read_text()  # same names, full-precision repr, no header, '\n' endings
        assert dp.name == S.decision_file_name(machine)
    res = M.evaluate_submission(out, tv_dir / "metrics")
    assert res.official_score == pytest.approx(expected["evaluator_summary"]["official score"], rel=1e-12)
    assert res.system == "Doe_AAU_task2_1"
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temp files


def test_eval_style_names_round_trip(tmp_path):
    gt = tmp_path / "gt"
    names = [f"section_00_{i:04d}.wav" for i in range(8)]
    y = [0, 1, 0, 1, 0, 1, 0, 1]
    dom = [0, 0, 0, 0, 1, 1, 1, 1]
    for sub, vals in (("ground_truth_data", y), ("ground_truth_domain", dom),
                      ("ground_truth_attributes", [f"x{i}" for i in range(8)])):
        (gt / sub).mkdir(parents=True)
        (gt / sub / "ground_truth_ToyDrone_section_00_test.csv").write_text(
            "".join(f"{n},{v}\n" for n, v in zip(names, vals)))
    scores = np.array(y, float) + np.linspace(0, 0.1, 8)
    S.write_submission(tmp_path / "sub", "ToyDrone", names[::-1], scores[::-1],
                       threshold_decision(scores[::-1], 0.5))
    res = M.evaluate_submission(tmp_path / "sub", gt, ci=False)
    assert res.table.loc[0, "AUC (source)"] == 1.0 and res.table.loc[0, "AUC (target)"] == 1.0
    assert res.table.loc[0, "recall (target)"] == 1.0


def test_write_submission_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="one score and one decision"):
        S.write_submission(tmp_path, "fan", ["a.wav", "b.wav"], [0.1], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        S.write_submission(tmp_path, "fan", ["a.wav"], [float("nan")], [0])
    with pytest.raises(ValueError, match="0 or 1"):
        S.write_submission(tmp_path, "fan", ["a.wav"], [0.1], [2])
    with pytest.raises(ValueError, match="duplicate"):
        S.write_submission(tmp_path, "fan", ["a.wav", "a.wav"], [0.1, 0.2], [0, 1])
    assert not list(tmp_path.iterdir())


def test_decision_rules():
    s = np.array([0.0, 1.0, 2.0, 3.0])
    assert threshold_decision(s, 1.5).tolist() == [0, 0, 1, 1]
    assert aau_minmax_decision(s).tolist() == [0, 0, 1, 1]
    assert aau_minmax_decision(s / 4 + 0.1).tolist() == [0, 0, 1, 1]  # scale-free: min-max over these scores


def test_labels_and_layout(tmp_path):
    assert S.system_label("Doe", "A.A.U.", 2) == "Doe_AAU_task2_2"
    assert S.score_file_name("fan", 0) == "anomaly_score_fan_section_00_test.csv"
    p = S.system_dir(tmp_path, "Doe_AAU_task2_1")
    assert p.is_dir() and p.parent == tmp_path
    S.write_submission(p, "fan", ["a.wav", "b.wav"], [0.1, 0.2], [0, 1])
    S.check_submission(p, ["fan"], expected_names={"fan": ["x/a.wav", "b.wav"]})
    with pytest.raises(ValueError, match="missing"):
        S.check_submission(p, ["fan"], expected_names={"fan": ["a.wav", "b.wav", "c.wav"]})


def test_evaluation_set_package_is_complete_and_the_evaluator_reads_it(tiny_data, tmp_path):
    import yaml

    from asd_lib.data import ADD_MACHINES, scan

    ev = scan(tiny_data)
    ev = ev[ev["set"] == "eval"]
    assert sorted(ev["machine"].unique()) == sorted(ADD_MACHINES)
    rng = np.random.default_rng(0)
    for machine, g in ev.groupby("machine"):
        S.write_submission(tmp_path / "csv", machine, g["file_name"], rng.random(len(g)), rng.integers(0, 2, len(g)))
    meta = S.meta_template("", "devadd_offline", {"fusion_mode": "offline", "ensemble": ["beats@2", "sslam@1"]})
    pkg = S.write_package(tmp_path / "csv", tmp_path / "package", "Doe_KitLab", 1, meta)
    assert pkg == tmp_path / "package" / "teams" / "Doe_KitLab" / "Doe_KitLab_task2_1"
    assert len(list(pkg.glob("anomaly_score_*.csv"))) == len(list(pkg.glob("decision_result_*.csv"))) == 5
    written = yaml.safe_load((pkg / "Doe_KitLab_task2_1.meta.yaml").read_text())
    assert written["submission"]["label"] == "Doe_KitLab_task2_1" and written["submission"]["authors"][0]["email"] == "TODO"
    res = M.evaluate_submission(pkg, tiny_data / "ground_truth", ci=False)  # the organisers' labels read it
    assert sorted(res.table["machine"]) == sorted(ADD_MACHINES) and 0 < res.official_score < 1
    (tmp_path / "csv" / "decision_result_Sander_section_00_test.csv").unlink()
    with pytest.raises(ValueError, match="no decision file"):
        S.write_package(tmp_path / "csv", tmp_path / "package", "Doe_KitLab", 1, meta)


def test_submitted_machines_lists_the_score_files_of_a_section(tmp_path):
    from asd_lib.submission import submitted_machines, write_submission

    for machine in ("fan", "ToyCarEmu"):
        write_submission(tmp_path, machine, ["a.wav"], [0.5], [1])
    (tmp_path / "anomaly_score_valve_section_01_test.csv").write_text("a.wav,0.1\n")  # another section
    assert submitted_machines(tmp_path) == ["ToyCarEmu", "fan"]
    assert submitted_machines(tmp_path, 1) == ["valve"]
