"""The organisers' AE baseline: feature parity, MAHALA/MSE scoring parity, and a run on the tiny preset."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from asd_lib import baseline as B


@pytest.fixture(scope="module")
def bf(tv_dir):
    return tv_dir / "baseline_features"


@pytest.mark.parametrize("name", ["stereo_tones_noise", "stereo_bursts"])
def test_feature_vectors_match_reference(bf, name):
    want = np.load(bf / "expected_vectors.npz")[f"{name}__vectors"]
    got = B.file_to_vectors(bf / f"{name}.wav")
    assert got.shape == want.shape == (309, 640)
    assert np.abs(got.astype(np.float64) - want).max() < 1e-4  # dB
    # channel 1 differs: the baseline reads channel 0 only
    assert np.abs(B.file_to_vectors(bf / f"{name}.wav", channel=1) - want).max() > 1.0


def _stub(x):
    t = torch.as_tensor(x)
    return (0.7 * t + 0.2 * torch.roll(t, shifts=1, dims=1)).numpy()


@pytest.fixture(scope="module")
def mv(bf):
    return dict(np.load(bf / "mahala_vectors.npz"))


def _cov(mv):
    x, t, b = mv["mahala__train_x"], mv["mahala__train_is_target"], mv["mahala__train_batch_index"]
    batches = [(x[b == i], _stub(x[b == i]), t[b == i]) for i in np.unique(b)]
    return batches, B.selective_covariance(batches, block_size=16)


def test_selective_mahalanobis_matches_reference(mv):
    batches, (cs, ct) = _cov(mv)
    np.testing.assert_allclose(cs, mv["mahala__cov_source"], rtol=1e-3, atol=1e-3 * np.abs(cs).max())
    np.testing.assert_allclose(ct, mv["mahala__cov_target"], rtol=1e-3, atol=1e-3 * np.abs(ct).max())
    inv_s, inv_t = B.inverse_covariances(cs, ct)
    np.testing.assert_allclose(inv_s, mv["mahala__inv_cov_source"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(inv_t, mv["mahala__inv_cov_target"], rtol=1e-3, atol=1e-4)
    sc = np.array([B.mahala_score(x, _stub(x), inv_s, inv_t, 16) for x in mv["mahala__test_x"]])
    np.testing.assert_allclose(sc[:, 0], mv["mahala__test_score_mahala"], rtol=1e-3)
    np.testing.assert_allclose(sc[:, 1:], mv["mahala__test_score_mahala_source_target"], rtol=1e-3)
    # the quirk: quadratic form of the mean block, not the mean of per-block distances
    x = mv["mahala__test_x"][0]
    blocks = (_stub(x) - x).reshape(-1, 16).astype(np.float64)
    per_block = np.mean(np.einsum("ij,jk,ik->i", blocks, inv_s, blocks))
    assert per_block > 5 * sc[0, 1]
    # gamma threshold: informative (5-sample MLE), allow a loose tolerance; decisions must agree
    calib = [B.mahala_score(x, r, inv_s, inv_t, 16)[0] for x, r, _ in batches]
    calib.append(B.mahala_score(mv["mahala__valid_x"], _stub(mv["mahala__valid_x"]), inv_s, inv_t, 16)[0])
    thr = B.gamma_threshold(B.gamma_fit(calib), 0.9)
    assert thr == pytest.approx(float(mv["mahala__decision_threshold_gamma_q0.9"]), rel=1e-2)
    assert (sc[:, 0] > thr).astype(int).tolist() == mv["mahala__test_decision"].tolist()


def test_mse_score_matches_reference(mv):
    got = [B.mse_score(x, _stub(x)) for x in mv["mahala__test_x"]]
    np.testing.assert_allclose(got, mv["mahala__test_score_mse"], rtol=1e-3)


def test_autoencoder_architecture():
    net = B.build_autoencoder()
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    bns = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in lin] == [
        (640, 128), (128, 128), (128, 128), (128, 128), (128, 8), (8, 128), (128, 128), (128, 128), (128, 128),
        (128, 640)]
    assert len(bns) == 9 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    assert isinstance(net[-1], torch.nn.Linear)


def test_train_baseline_small_synthetic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 640)).astype(np.float32)
    # every other row target: enough blocks for a well-conditioned 128 x 128 target covariance
    tb = B.train_baseline(x, np.arange(300) % 2 == 0, epochs=1, batch_size=128, seed=0)
    assert len(tb.history) == 1 and tb.cov_source.shape == (128, 128)
    assert set(tb.threshold) == {"MAHALA", "MSE"} and all(np.isfinite(list(tb.threshold.values())))
    s = tb.score_clip(x[:20])
    assert s["MAHALA"] > 0 and s["MSE"] > 0


def test_run_baseline_on_tiny(tiny_data, tmp_path):
    from asd_lib.data import scan
    from asd_lib.metrics import evaluate_submission
    man = scan(tiny_data)
    out = tmp_path / "baseline"
    info = B.run_baseline(man, ["fan", "ToyCar"], out, epochs=2, seed=0)
    for s in B.SCORES:
        assert (out / s / "anomaly_score_fan_section_00_test.csv").exists()
        assert (out / s / "decision_result_ToyCar_section_00_test.csv").exists()
    table, res = B.evaluate_baseline(out)
    assert list(table.index[:2]) == ["ToyCar", "fan"]
    assert ("MAHALA", "AUC") in table.columns and ("MSE", "pAUC") in table.columns
    assert 0 < res["MSE"].official_score <= 1
    assert set(info["machines"]) == {"fan", "ToyCar"}
    # eval-style test names (additional machines) are written as such and evaluated with the ground truth
    add = sorted(man.loc[man["set"] != "dev", "machine"].unique())[:1]
    B.run_baseline(man, add, tmp_path / "eval", epochs=1, score="MSE")
    names = (tmp_path / "eval" / "MSE" / f"anomaly_score_{add[0]}_section_00_test.csv").read_text().split()
    assert names[0].startswith("section_00_0")
    r = evaluate_submission(tmp_path / "eval" / "MSE", tiny_data / "ground_truth", machines=add, ci=False)
    assert 0 < r.official_score <= 1
