"""Tests of asd_lib.fusion: parity with the authors' fusion code (tests/data/fusion), online independence."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from asd_lib import fusion as F

MACHINES = ("fan", "gearboxEmu")
MODELS = ("modelA", "modelB")
RUNS = {  # run -> (scorer order as the authors' run used it, kind)
    "rank_default4": (("knn", "gmm", "gwrp", "ae"), "rank"),
    "zscore_default3": (("gwrp", "knn", "ae"), "z"),
    "zscore_with_gmm4": (("gwrp", "knn", "ae", "gmm"), "z"),
}


@pytest.fixture(scope="module")
def fv(tv_dir):
    d = tv_dir / "fusion"
    with np.load(d / "inputs.npz") as a, np.load(d / "expected.npz") as b:
        return d, {k: a[k] for k in a.files}, {k: b[k] for k in b.files}


def _normalise(kind, scorer, raw):
    if kind == "rank":
        return F.rank_normalise(raw)
    mean, std = F.AAU_Z_CONSTANTS[scorer]
    return F.zscore(raw, mean, std)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=["name", "value"])


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("machine", MACHINES)
def test_parity_pure_functions(fv, run, machine):
    d, inp, exp = fv
    scorers, kind = RUNS[run]
    key = f"{run}__{machine}"
    normed = {}
    for s in scorers:
        normed[s] = []
        for m in MODELS:
            got = _normalise(kind, s, inp[f"{machine}__{m}__{s}__raw"])
            want = exp[f"{key}__{m}__{s}__normalised"]
            if kind == "rank":
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
            normed[s].append(got)
    fused, combined = F.fuse(normed, "min")
    for s in scorers:
        np.testing.assert_allclose(fused[s], exp[f"{key}__fused__{s}"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(combined, exp[f"{key}__combined"], rtol=1e-12, atol=1e-14)
    dec = F.threshold_decision(combined) if kind == "rank" else F.aau_minmax_decision(combined)
    np.testing.assert_array_equal(dec, exp[f"{key}__decision"])
    # the CSV files as the authors wrote them: same order, same values, same decisions
    sc_csv = _read_csv(d / run / f"anomaly_score_{machine}.csv")
    de_csv = _read_csv(d / run / f"decision_result_{machine}.csv")
    np.testing.assert_array_equal(sc_csv["name"].to_numpy(), inp[f"{machine}__names"])
    np.testing.assert_array_equal(de_csv["name"].to_numpy(), inp[f"{machine}__names"])
    np.testing.assert_allclose(sc_csv["value"].to_numpy(), combined, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(de_csv["value"].to_numpy(), dec)


def test_boundary_clip_is_exactly_half(fv):
    """gearboxEmu clip 106 of the rank run fuses to exactly 0.5, so its strict decision is 0."""
    _, inp, exp = fv
    normed = {s: [F.rank_normalise(inp[f"gearboxEmu__{m}__{s}__raw"]) for m in MODELS]
              for s in ("knn", "gmm", "gwrp", "ae")}
    _, combined = F.fuse(normed)
    assert combined[106] == 0.5
    assert F.threshold_decision(combined)[106] == 0


def _stdout_facts(lines):
    """machine -> {'auc_source', 'auc_target', 'pauc', 'selections': {SCORER: n}, 'weights': {SCORER: w}}."""
    facts, machine = {}, None
    for ln in lines:
        if m := re.match(r"Processing machine: (\S+)", ln):
            machine = m.group(1)
            facts[machine] = {"selections": {}, "weights": {}}
        elif m := re.search(r"/ (source|target): AUC=([\d.]+)", ln):
            facts[machine][f"auc_{m.group(1)}"] = float(m.group(2))
        elif m := re.search(r"pAUC=([\d.]+)", ln):
            facts[machine]["pauc"] = float(m.group(1))
        elif m := re.match(r"\s+(\w+): (\d+) samples", ln):
            facts[machine]["selections"][m.group(1)] = int(m.group(2))
        elif m := re.match(r"\s+(\w+)\s+weight: ([+-][\d.]+)", ln):
            facts[machine]["weights"][m.group(1)] = float(m.group(2))
    return facts


@pytest.mark.parametrize("run", sorted(RUNS))
def test_parity_printed_and_summary_metrics(fv, run):
    """stdout.json (AUCs, min-pooling selections, logistic weights) and summary.json metrics from our fusion."""
    d, inp, _ = fv
    scorers, kind = RUNS[run]
    facts = _stdout_facts(json.loads((d / run / "stdout.json").read_text())["stdout"])
    summary = json.loads((d / "summary.json").read_text())["runs"][run]["aau_metrics_NOT_OFFICIAL"]
    assert summary and list(facts) == list(MACHINES)
    for i, machine in enumerate(MACHINES):
        normed = {s: [_normalise(kind, s, inp[f"{machine}__{m}__{s}__raw"]) for m in MODELS] for s in scorers}
        fused, combined = F.fuse(normed)
        y, dom = inp[f"{machine}__label"], inp[f"{machine}__domain"]
        aucs = [roc_auc_score(y[dom == k], combined[dom == k]) for k in (0, 1)]
        pauc = roc_auc_score(y, combined, max_fpr=0.1)
        f = facts[machine]
        assert round(aucs[0], 4) == f["auc_source"] and round(aucs[1], 4) == f["auc_target"]
        assert round(pauc, 4) == f["pauc"]
        assert abs(np.mean(aucs) - summary["machine_aucs"][i]) < 1e-12
        assert abs(pauc - summary["machine_paucs"][i]) < 1e-12
        stacked = np.stack([fused[s] for s in scorers])
        if kind == "z":
            counts = np.bincount(np.argmin(stacked, axis=0), minlength=len(scorers))
            assert {s.upper(): int(c) for s, c in zip(scorers, counts) if c} == f["selections"]
        lr = LogisticRegression(max_iter=1000, random_state=42).fit(stacked.T, y)
        for s, w in zip(scorers, lr.coef_[0]):
            assert abs(w - f["weights"][s.upper()]) <= 6e-5
    from scipy.stats import hmean
    assert abs(hmean(summary["machine_aucs"] + summary["machine_paucs"]) - summary["omega_hmean"]) < 1e-12


# ----------------------------------------------------------------------------------------------------------------
# the score-cache readers on the test vectors
# ----------------------------------------------------------------------------------------------------------------
def _write_layout(root: Path, inp, scorers, shuffle_model: str | None = None, rng=None):
    """Write the test-vector raw scores as a score cache (our scorer id 'ldn' for their 'gwrp')."""
    for machine in MACHINES:
        names = inp[f"{machine}__names"]
        for m in MODELS:
            for s in scorers:
                order = np.arange(len(names))
                if m == shuffle_model:
                    order = rng.permutation(len(names))
                ours = "ldn" if s == "gwrp" else s
                p = root / m / "ch0" / ours / f"{machine}.npz"
                p.parent.mkdir(parents=True, exist_ok=True)
                calib = np.linspace(0.0, 1.0, 10)
                np.savez(p, test=inp[f"{machine}__{m}__{s}__raw"][order], calib=calib, names=names[order],
                         calib_names=np.array([f"train_{i}.wav" for i in range(10)]),
                         variant=np.array("aau-online" if s == "gmm" else ""))  # their online module's GMM


def test_fuse_offline_from_layout_matches_vectors(fv, tmp_path):
    """fuse_offline reads the cache (one model's files in another clip order) and reproduces the rank run."""
    _, inp, exp = fv
    _write_layout(tmp_path, inp, ("knn", "gmm", "gwrp", "ae"), shuffle_model="modelB",
                  rng=np.random.default_rng(0))
    out = F.fuse_offline(tmp_path, MODELS, ("knn", "gmm", "ldn", "ae"))
    assert sorted(out) == list(MACHINES)
    for machine, df in out.items():
        assert list(df.columns) == ["names", "score", "decision"]
        np.testing.assert_array_equal(df["names"].to_numpy(), inp[f"{machine}__names"])
        np.testing.assert_allclose(df["score"], exp[f"rank_default4__{machine}__combined"], atol=1e-15, rtol=0)
        np.testing.assert_array_equal(df["decision"], exp[f"rank_default4__{machine}__decision"])


def test_fuse_online_aau_constants_from_layout(fv, tmp_path):
    _, inp, exp = fv
    _write_layout(tmp_path, inp, ("gwrp", "knn", "ae", "gmm"))
    for run, scorers in (("zscore_default3", ("ldn", "knn", "ae")), ("zscore_with_gmm4", ("ldn", "knn", "ae", "gmm"))):
        out = F.fuse_online(tmp_path, MODELS, scorers, normalisation="aau-constants", decision="aau-minmax")
        for machine, df in out.items():
            np.testing.assert_allclose(df["score"], exp[f"{run}__{machine}__combined"], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(df["decision"], exp[f"{run}__{machine}__decision"])
            assert df.attrs["test_independent"] is False  # the min-max decision looks at all test clips


def test_missing_file_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="score_embeddings"):
        F.fuse_offline(tmp_path, ["m@1"], ("knn",))


# ----------------------------------------------------------------------------------------------------------------
# online independence property
# ----------------------------------------------------------------------------------------------------------------
def _random_cache(root: Path, rng, n_test: int, names: np.ndarray, base: dict | None = None):
    """A random score cache for 2 machines x 2 models x 3 scorers; `base` fixes the scores of named clips."""
    base = {} if base is None else base
    for machine in ("m1", "m2"):
        for model in ("a@1", "b@2"):
            for s in ("knn", "ae", "ldn"):
                key = (machine, model, s)
                if key not in base:
                    calib_names = np.array([f"tr_{i:03d}.wav" for i in range(40)])
                    base[key] = dict(calib=rng.gamma(2.0, 1.0, 40), calib_names=calib_names,
                                     pool={f"clip_{i:03d}.wav": v for i, v in enumerate(rng.gamma(2.0, 1.5, 60))})
                e = base[key]
                p = root / model / "ch0" / s / f"{machine}.npz"
                p.parent.mkdir(parents=True, exist_ok=True)
                np.savez(p, test=np.array([e["pool"][n] for n in names]), calib=e["calib"], names=names,
                         calib_names=e["calib_names"])
    return base


@pytest.mark.parametrize("normalisation", ["pooled", "per-machine", "aau-constants"])
def test_online_score_and_decision_ignore_other_test_clips(tmp_path, normalisation):
    """Online: a clip's score and decision are unchanged when other test clips are added, removed or reordered.
    Offline: the same edits change them (shown on the same data)."""
    rng = np.random.default_rng(1)
    all_names = np.array([f"clip_{i:03d}.wav" for i in range(60)])
    names0 = all_names[:30]
    base = _random_cache(tmp_path / "full", rng, 30, names0)
    ref_on = F.fuse_online(tmp_path / "full", ["a@1", "b@2"], normalisation=normalisation)
    ref_off = F.fuse_offline(tmp_path / "full", ["a@1", "b@2"], ("knn", "ae", "ldn"))
    offline_changed = 0
    for trial in range(8):
        keep = rng.permutation(names0)[: rng.integers(5, 30)]           # remove some, reorder the rest
        extra = rng.choice(all_names[30:], size=rng.integers(0, 20), replace=False)  # add new ones
        names = rng.permutation(np.concatenate([keep, extra]))
        root = tmp_path / f"t{trial}"
        _random_cache(root, rng, len(names), names, base)
        on = F.fuse_online(root, ["a@1", "b@2"], normalisation=normalisation)
        off = F.fuse_offline(root, ["a@1", "b@2"], ("knn", "ae", "ldn"))
        for machine in ("m1", "m2"):
            a = ref_on[machine].set_index("names").loc[keep]
            b = on[machine].set_index("names").loc[keep]
            np.testing.assert_array_equal(a["score"].to_numpy(), b["score"].to_numpy())
            np.testing.assert_array_equal(a["decision"].to_numpy(), b["decision"].to_numpy())
            a_off = ref_off[machine].set_index("names").loc[keep]
            b_off = off[machine].set_index("names").loc[keep]
            offline_changed += int(not np.array_equal(a_off["score"].to_numpy(), b_off["score"].to_numpy()))
    assert offline_changed >= 14  # offline ranks depend on the other test clips (almost) every time
    assert ref_on["m1"].attrs["test_independent"] is True


def test_streaming_depends_on_order_and_is_labelled(tmp_path):
    rng = np.random.default_rng(2)
    names = rng.permutation(np.array([f"clip_{i:03d}.wav" for i in range(30)]))  # stored order != name order
    _random_cache(tmp_path, rng, 30, names)
    a = F.fuse_online(tmp_path, ["a@1", "b@2"], normalisation="streaming", window=10, order="name")["m1"]
    b = F.fuse_online(tmp_path, ["a@1", "b@2"], normalisation="streaming", window=10, order="file")["m1"]
    assert a.attrs["test_independent"] is False and a.attrs["mode"] == "online-streaming"
    s = np.array([1.0, 5.0, 2.0, 8.0])
    z1 = F.streaming_zscore(s, [0.0, 1.0, 2.0], window=3, order=[0, 1, 2, 3])
    z2 = F.streaming_zscore(s, [0.0, 1.0, 2.0], window=3, order=[3, 2, 1, 0])
    assert z1[0] == pytest.approx((1.0 - 1.0) / np.std([0.0, 1.0, 2.0]))
    assert not np.allclose(z1, z2)
    np.testing.assert_array_equal(a["names"], b["names"])
    assert not np.allclose(a["score"], b["score"])  # same clips, another order -> other streaming scores


def test_calibration_threshold_and_pooled_constants():
    calib = {("m1", "a", "knn"): np.array([1.0, 2.0, 3.0]), ("m2", "a", "knn"): np.array([3.0, 5.0, 7.0])}
    pooled = F.z_constants(calib, "pooled")
    assert pooled["knn"][0] == pytest.approx(3.5)
    assert pooled["knn"][1] == pytest.approx((np.std([1, 2, 3]) + np.std([3, 5, 7])) / 2)
    per = F.z_constants(calib, "per-machine")
    assert per[("m2", "a", "knn")] == pytest.approx((5.0, np.std([3, 5, 7])))
    assert F.calibration_threshold(np.arange(11.0), 0.9) == pytest.approx(9.0)
    np.testing.assert_array_equal(F.aau_minmax_decision([0.0, 0.4, 0.6, 1.0]), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="fusion"):
        F.fuse({"knn": [np.zeros(3)]}, "median")


@pytest.mark.parametrize("fusion", ["min", "mean", "max"])
def test_fusion_ablations_order(fusion):
    normed = {"a": [np.array([0.1, 0.9]), np.array([0.3, 0.7])], "b": [np.array([0.5, 0.2]), np.array([0.5, 0.4])]}
    fused, comb = F.fuse(normed, fusion)
    np.testing.assert_allclose(fused["a"], [0.2, 0.8])
    want = {"min": [0.2, 0.3], "mean": [0.35, 0.55], "max": [0.5, 0.8]}[fusion]
    np.testing.assert_allclose(comb, want)
