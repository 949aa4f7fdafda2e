"""DCASE Task 2 submission files in the organisers' format and the per-system folder layout (the decision rules
are in ``asd_lib.fusion``).

Per machine and section two headerless CSVs, one row per test clip (docs/reference.md §2):

    anomaly_score_<machine>_section_<NN>_test.csv     <wav name>,<score>     (higher = more anomalous)
    decision_result_<machine>_section_<NN>_test.csv   <wav name>,<0|1>       (1 = anomalous)

Names are the test file names as distributed: dev-style (``section_00_source_test_normal_0001_spd_1.wav``) or
eval-style (``section_00_0001.wav``, the eval set's unlabelled 6/10/16 s clips); only the basename is written.
The organisers' evaluator takes one folder per system (``teams/<team>/<system>/``, ``--dir_depth=2``); the
challenge asks for one folder per submitted system named ``<Lastname>_<Institute>_task2_<n>``.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from asd_lib.metrics import SCORE_FILE_RE, atomic_write_text, read_decisions, read_scores


def score_file_name(machine: str, section: str | int = "00") -> str:
    """anomaly_score_<machine>_section_<NN>_test.csv"""
    return f"anomaly_score_{machine}_section_{_sec(section)}_test.csv"


def decision_file_name(machine: str, section: str | int = "00") -> str:
    """decision_result_<machine>_section_<NN>_test.csv"""
    return f"decision_result_{machine}_section_{_sec(section)}_test.csv"


def _sec(section: str | int) -> str:
    """Two-digit section id."""
    s = str(section)
    if s.startswith("section_"):
        s = s[len("section_"):]
    if not re.fullmatch(r"\d{1,2}", s):
        raise ValueError(f"section must be a number like '00', got {section!r}")
    return f"{int(s):02d}"


def write_submission(out_dir: str | os.PathLike, machine: str, names: Sequence[str], scores: Sequence[float],
                     decisions: Sequence[int], section: str | int = "00") -> tuple[Path, Path]:
    """Write both CSVs of one machine/section atomically; names (n,) basenames or paths, scores (n,), decisions (n,).

    Scores are written with full precision (Python repr); decisions as 0/1.  Returns (score_path, decision_path).
    """
    names = [os.path.basename(str(n)) for n in names]
    scores_a = np.asarray(scores, dtype=float).reshape(-1)
    dec_a = np.asarray(decisions).reshape(-1)
    if not (len(names) == len(scores_a) == len(dec_a)):
        raise ValueError(f"{machine}: {len(names)} names, {len(scores_a)} scores, {len(dec_a)} decisions; "
                         "need one score and one decision per test clip")
    if len(names) == 0:
        raise ValueError(f"{machine}: no test clips to write")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"{machine}: duplicate clip names {dup}")
    bad = np.flatnonzero(~np.isfinite(scores_a))
    if len(bad):
        raise ValueError(f"{machine}: score of {names[bad[0]]!r} is {scores_a[bad[0]]}; scores must be finite")
    bad = [i for i, d in enumerate(dec_a.tolist()) if d not in (0, 1, True, False)]
    if bad:
        raise ValueError(f"{machine}: decision of {names[bad[0]]!r} is {dec_a[bad[0]]!r}; decisions must be 0 or 1")
    sbuf, dbuf = io.StringIO(), io.StringIO()
    sw, dw = csv.writer(sbuf, lineterminator="\n"), csv.writer(dbuf, lineterminator="\n")
    for n, s, d in zip(names, scores_a.tolist(), dec_a.tolist()):
        sw.writerow([n, repr(float(s))])
        dw.writerow([n, int(d)])
    out = Path(out_dir)
    sp = atomic_write_text(out / score_file_name(machine, section), sbuf.getvalue())
    dp = atomic_write_text(out / decision_file_name(machine, section), dbuf.getvalue())
    return sp, dp


def submitted_machines(out_dir: str | os.PathLike, section: str | int = "00") -> list[str]:
    """The machines that have an anomaly-score file for ``section`` in a submission folder, sorted."""
    return sorted(m["machine"] for p in Path(out_dir).iterdir()
                  if (m := SCORE_FILE_RE.match(p.name)) and m["section"] == _sec(section))


def read_submission(out_dir: str | os.PathLike, machine: str, section: str | int = "00"
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read back one machine's (names, scores (n,), decisions (n,)) in file order."""
    out = Path(out_dir)
    sc = read_scores(out / score_file_name(machine, section))
    de = read_decisions(out / decision_file_name(machine, section))
    names = sorted(sc, key=lambda n: sc[n][1])
    return names, np.array([sc[n][0] for n in names]), np.array([de[n][0] if n in de else -1 for n in names])


def system_label(last_name: str, institute: str, index: int, task: int = 2) -> str:
    """The challenge's system label, e.g. ``Doe_AAU_task2_1`` (letters/digits only in name parts)."""
    clean = [re.sub(r"[^A-Za-z0-9]", "", p) for p in (last_name, institute)]
    if not all(clean) or not 1 <= int(index) <= 4:
        raise ValueError(f"need a last name, an institute and a system index 1-4, got {last_name!r}, "
                         f"{institute!r}, {index!r}")
    return f"{clean[0]}_{clean[1]}_task{task}_{int(index)}"


def system_dir(root: str | os.PathLike, label: str, team: str | None = None) -> Path:
    """Folder for one system's CSVs: ``root/<label>`` (package layout) or ``root/<team>/<label>`` (the evaluator's
    ``teams/<team>/<system>`` layout, ``--dir_depth=2``); created if missing."""
    p = Path(root) / team / label if team else Path(root) / label
    p.mkdir(parents=True, exist_ok=True)
    return p


def check_submission(out_dir: str | os.PathLike, machines: Sequence[str], section: str | int = "00",
                     expected_names: dict[str, Sequence[str]] | None = None) -> None:
    """Raise ValueError naming the file if a machine lacks a file, or (given expected_names) a clip set differs."""
    for m in machines:
        names, s, d = read_submission(out_dir, m, section)
        if (d < 0).any():
            raise ValueError(f"{Path(out_dir) / decision_file_name(m, section)}: clip {names[int(np.argmax(d < 0))]!r} "
                             "has no decision")
        if expected_names is not None:
            want = {os.path.basename(str(n)) for n in expected_names[m]}
            got = set(names)
            if want != got:
                raise ValueError(f"{Path(out_dir) / score_file_name(m, section)}: {len(want - got)} clip(s) missing, "
                                 f"{len(got - want)} extra, e.g. {sorted(want ^ got)[:3]}")


LEAKY_NOTE = ("The epochs of this system's models were chosen with the TEST labels (epoch_selection: "
              "select-on-test-leaky, the authors' selection). Its scores are optimistic, and it is not a valid "
              "challenge submission.\n")


def meta_template(label: str, system: str, params: dict, dev_result=None) -> dict:
    """The organisers' system metadata (``<label>.meta.yaml``) with what the kit knows filled in, and ``TODO`` where
    only the team can answer (authors, affiliation, the technical report). ``dev_result``: the system's
    ``metrics.EvaluationResult`` on the development set, reported under ``results``."""
    todo = "TODO"
    meta: dict = {
        "submission": {
            "label": label,
            "name": f"asd-kit {system}: fine-tuned BEATs + SSLAM ensemble, {params.get('fusion_mode', '?')} fusion",
            "abbreviation": system,
            "authors": [{"lastname": todo, "firstname": todo, "email": todo, "corresponding": True,
                         "affiliation": {"institution": todo, "department": todo, "location": todo}}],
        },
        "system": {
            "description": {
                "input_sampling_rate": "16kHz",
                "input_channels": "two (each channel a training sample; scoring uses "
                                  f"{params.get('channel', 'ch0')})",
                "acoustic_features": "128-bin Kaldi log-mel filterbank, 25 ms window, 10 ms shift",
                "data_augmentation": f"circular time shift up to {params.get('time_shift', 0)} of the clip" + (
                    f"; Gaussian noise at {params.get('noise_snr_db')} dB SNR with probability {params['noise_prob']}"
                    if params.get("noise_prob") else ""),
                "machine_learning_method": ("self-supervised transformers (BEATs, SSLAM) fine-tuned with an ArcFace "
                                            "auxiliary classifier on machine, section, domain, attribute and channel "
                                            "classes; KNN, GMM, autoencoder and local-density-normalised KNN scorers "
                                            f"per backbone; {params.get('fusion_mode', '?')} normalisation, mean "
                                            f"over backbones, {params.get('fusion_pool', 'min')} over scorers"),
                "ensemble": list(params.get("ensemble", [])),
            },
            "pre_trained_models": [params.get("beats_checkpoint", todo), params.get("sslam_checkpoint", todo)],
            "source_code": todo,
        },
        "technical_report": todo,
    }
    if dev_result is not None:
        rows = dev_result.table
        meta["results"] = {"development_dataset": {
            "official_score": round(float(dev_result.official_score), 6),
            "per_machine": {str(r["machine"]): {"auc_source": round(float(r["AUC (source)"]), 6),
                                                "auc_target": round(float(r["AUC (target)"]), 6),
                                                "pauc": round(float(r["pAUC"]), 6)} for _, r in rows.iterrows()}}}
    return meta


def write_package(csv_dir: str | os.PathLike, root: str | os.PathLike, team: str, index: int, meta: dict
                  ) -> Path:
    """The organisers' submission package of one system: ``root/teams/<team>/<label>/`` holding every machine's two
    CSVs from ``csv_dir`` and ``<label>.meta.yaml``, where ``team`` is ``<Lastname>_<Institute>`` and the label is
    ``<Lastname>_<Institute>_task2_<index>``. Every score file needs its decision file and the reverse; the package
    is rebuilt from scratch each time. Returns the system's folder."""
    last, _, institute = team.partition("_")
    label = system_label(last, institute, index)
    src = Path(csv_dir)
    scores = sorted(src.glob("anomaly_score_*_section_*_test.csv"))
    if not scores:
        raise ValueError(f"{src}: no anomaly_score_<machine>_section_<NN>_test.csv files to package")
    for f in scores:
        if not (src / f.name.replace("anomaly_score_", "decision_result_", 1)).is_file():
            raise ValueError(f"{f}: no decision file beside it; every machine needs both CSVs")
    out = Path(root) / "teams" / f"{last}_{institute}" / label
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in scores:
        for name in (f.name, f.name.replace("anomaly_score_", "decision_result_", 1)):
            shutil.copyfile(src / name, out / name)
    meta = {**meta, "submission": {**meta.get("submission", {}), "label": label}}
    atomic_write_text(out / f"{label}.meta.yaml", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    return out
