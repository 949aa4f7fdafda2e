"""Tests of asd_lib.scorers: parity with tests/data/ldn (MERL LDN + the authors' scorers), edge cases,
calibration, batched autoencoders, sklearn compatibility and the score cache."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from asd_lib import scorers as S
from asd_lib.scorers.ae_network import reconstruction_mse
from asd_lib.scorers import AAUPreprocess, AEScorer, GMMScorer, KNNScorer, LDNScorer

GROUPS = ("g0_separated", "g1_target_near_source")
TOL = dict(rtol=1e-9, atol=1e-12)  # README tolerance for MERL/AAU distances and densities


@pytest.fixture(scope="module")
def ldn(tv_dir):
    with np.load(tv_dir / "ldn" / "ldn_vectors.npz") as z:
        return {k: z[k] for k in z.files}


def _merl_args(name):
    """'merl__K16__ratio' -> LDNScorer kwargs."""
    _, dens, norm = name.split("__")
    if dens.startswith("K"):
        return dict(density="knn", n_neighbors=int(dens[1:]), norm=norm)
    return dict(density="gwrp", r=float(dens[1:]), norm=norm)


# ----------------------------------------------------------------------------------------------------------------
# parity with every stored output
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_merl_ldn_parity(ldn, group):
    g = lambda k: ldn[f"{group}__{k}"]  # noqa: E731
    Xtr, Xte = g("X_train"), g("X_test")
    np.testing.assert_allclose(LDNScorer(density="none").fit(Xtr).decision_function(Xte), g("merl__nn1_plain"), **TOL)
    keys = [k.split("__", 1)[1] for k in ldn if k.startswith(f"{group}__merl__") and not k.endswith("nn1_plain")]
    assert len(keys) == 12
    for key in keys:
        if key.endswith("__density"):
            est = LDNScorer(**_merl_args(key.replace("density", "ratio"))).fit(Xtr)
            np.testing.assert_allclose(est.density_, g(key), **TOL, err_msg=key)
        else:
            est = LDNScorer(**_merl_args(key)).fit(Xtr)
            np.testing.assert_allclose(est.decision_function(Xte), g(key), **TOL, err_msg=key)


@pytest.mark.parametrize("group", GROUPS)
def test_aau_gwrp_knn_preprocess_gmm_parity(ldn, group):
    g = lambda k: ldn[f"{group}__{k}"]  # noqa: E731
    Xtr, Xte = g("X_train"), g("X_test")
    est = LDNScorer(variant="aau-gwrp", r=0.98).fit(Xtr)
    np.testing.assert_allclose(est.density_, g("aau__gwrp_denominators"), **TOL)
    np.testing.assert_allclose(est.decision_function(Xte), g("aau__gwrp_r0.98"), **TOL)
    # the two GWRP forms differ by the weight sum ~ 50 (and the 1e-8): same ranking
    ratio = LDNScorer(density="gwrp", r=0.98).fit(Xtr).decision_function(Xte) / g("aau__gwrp_r0.98")
    assert np.all(np.abs(ratio - 50.0) < 1e-6)
    np.testing.assert_allclose(KNNScorer().fit(Xtr).decision_function(Xte), g("aau__knn6_raw"), **TOL)
    pre = AAUPreprocess().fit(Xtr)
    np.testing.assert_allclose(pre.transform(Xtr), g("aau__pp_train"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pre.transform(Xte), g("aau__pp_test"), rtol=0, atol=1e-12)
    pipe = make_pipeline(AAUPreprocess(), KNNScorer()).fit(Xtr)
    np.testing.assert_allclose(pipe.decision_function(Xte), g("aau__knn6_pp"), **TOL)
    np.testing.assert_allclose(GMMScorer(random_state=42).fit(g("aau__pp_train")).decision_function(g("aau__pp_test")),
                               g("aau__gmm6diag_pp"), rtol=1e-6)
    np.testing.assert_allclose(GMMScorer(n_components=1, random_state=42).fit(Xtr).decision_function(Xte),
                               g("aau__gmm1diag_raw"), rtol=1e-6)


def test_aau_autoencoder_informative_parity(ldn):
    """The AE files came from torch 2.13; our recipe matches torch's own modules bit for bit in the installed torch
    (next test), so the remaining gap is the torch version: compare ranks and a loose relative tolerance, as the
    README suggests. Both groups train as one stacked (batched) model, which is also what score_embeddings does."""
    res = S.train_autoencoders([ldn[f"{g}__aau__pp_train"] for g in GROUPS], seeds=42)
    for g, r in zip(GROUPS, res):
        got = reconstruction_mse(r["params"], ldn[f"{g}__aau__pp_test"], "cpu")
        assert r["n_epochs"] <= 50
        assert spearmanr(got, ldn[f"{g}__aau__ae_pp"])[0] > 0.999
        np.testing.assert_allclose(got, ldn[f"{g}__aau__ae_pp"], rtol=5e-2)


def _reference_ae_scores(Xtr, Xte, epochs, seed):
    """The authors' recipe written with torch's own modules (nn.Linear, spectral_norm, DataLoader, AdamW)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        D = Xtr.shape[1]
        H, sn = max(D // 2, 64), nn.utils.spectral_norm
        net = nn.Sequential(sn(nn.Linear(D, H)), nn.LeakyReLU(0.1), sn(nn.Linear(H, 32)),
                            sn(nn.Linear(32, H)), nn.LeakyReLU(0.1), nn.Linear(H, D))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
        t = torch.as_tensor(Xtr, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(TensorDataset(t, t), batch_size=64, shuffle=True, generator=gen)
        net.train()
        for _ in range(epochs):
            for bx, _ in loader:
                opt.zero_grad()
                nn.MSELoss()(net(bx), bx).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            te = torch.as_tensor(Xte, dtype=torch.float32)
            return ((te - net(te)) ** 2).mean(dim=1).numpy()


def test_autoencoder_matches_torch_modules_bit_for_bit(ldn):
    Xtr = ldn["g1_target_near_source__aau__pp_train"][:300]
    Xte = ldn["g1_target_near_source__aau__pp_test"]
    ref = _reference_ae_scores(Xtr, Xte, epochs=2, seed=7)
    ours = AEScorer(max_epochs=2, seed=7).fit(Xtr).decision_function(Xte)
    np.testing.assert_array_equal(ours.astype(np.float32), ref)


def test_batched_autoencoders_match_one_by_one():
    """Stacked training == separate training (same seeds, per-model early stopping), up to float32 kernel noise."""
    rng = np.random.default_rng(0)
    data = [rng.random((150, 16)) for _ in range(3)] + [rng.random((90, 16))]
    kw = dict(max_epochs=25, patience=2, min_delta=1e-4)
    single = [S.train_autoencoders([x], seeds=s, **kw)[0] for x, s in zip(data, [1, 2, 3, 4])]
    batch = S.train_autoencoders(data, seeds=[1, 2, 3, 4], **kw)
    epochs = [r["n_epochs"] for r in single]
    assert epochs == [r["n_epochs"] for r in batch]
    assert len(set(epochs)) > 1  # the models stopped at different epochs: frozen models stayed frozen
    for a, b, x in zip(single, batch, data):
        sa, sb = reconstruction_mse(a["params"], x, "cpu"), reconstruction_mse(b["params"], x, "cpu")
        np.testing.assert_allclose(sb, sa, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# edge cases: copies of training clips, ties, truncated GWRP
# ----------------------------------------------------------------------------------------------------------------
def _brute_merl(Xtr, Xte, K=None, r=None, norm="ratio"):
    """MERL semantics with a FULL sort (independent of the chunked / truncated code)."""
    D_ref = 0.5 * (1 - Xtr @ Xtr.T)
    srt = np.sort(D_ref, axis=0)[1:]  # drop the smallest (self) of every column
    if K is not None:
        rho = srt[:K].mean(axis=0)
    else:
        w = r ** np.arange(len(srt))
        rho = (w / w.sum()) @ srt
    D = 0.5 * (1 - Xte @ Xtr.T)
    return (D / rho if norm == "ratio" else D - rho).min(axis=1), rho


@pytest.mark.parametrize("kw", [dict(K=1), dict(K=5, norm="difference"), dict(r=0.9), dict(r=0.98, norm="difference")])
def test_test_clips_identical_to_training_clips(ldn, kw):
    Xtr = ldn["g1_target_near_source__X_train"][:400]
    Xte = np.concatenate([Xtr[:20], Xtr[390:], ldn["g1_target_near_source__X_test"][:20]])  # copies + others
    want, rho = _brute_merl(Xtr, Xte, **kw)
    args = dict(density="knn", n_neighbors=kw["K"]) if "K" in kw else dict(density="gwrp", r=kw["r"])
    est = LDNScorer(**args, norm=kw.get("norm", "ratio")).fit(Xtr)
    got = est.decision_function(Xte)
    np.testing.assert_allclose(est.density_, rho, **TOL)
    np.testing.assert_allclose(got, want, **TOL)
    if kw.get("norm", "ratio") == "ratio":
        assert np.all(np.abs(got[:30]) < 1e-12)  # distance 0 (up to rounding, possibly -1e-16) to their copy
    # KNN: a copy's k-th distance is the (k-1)-th distance of the training clip to the others
    knn = KNNScorer(n_neighbors=3).fit(Xtr)
    loo = knn.loo_decision_function()
    np.testing.assert_allclose(knn.decision_function(Xtr[:20]),
                               KNNScorer(n_neighbors=2).fit(Xtr).loo_decision_function()[:20], **TOL)
    assert np.all(loo >= knn.decision_function(Xtr) - 1e-12)


def test_ties_and_duplicates_are_handled():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((30, 8))
    Xtr = np.concatenate([base, base[:5]])  # five exact duplicates in the training set
    Xte = np.concatenate([base[:5], rng.standard_normal((5, 8))])
    # KNN with ties: the k-th distance does not depend on tie order; duplicates give distance 0 at k=2
    np.testing.assert_allclose(KNNScorer(n_neighbors=2).fit(Xtr).decision_function(Xte[:5]), 0.0, atol=1e-12)
    loo = KNNScorer(n_neighbors=1).fit(Xtr).loo_decision_function()
    np.testing.assert_allclose(loo[:5], 0.0, atol=1e-12)  # each duplicate's nearest OTHER clip is its twin
    # LDN K=1: the twin makes rho ~ 0; the ratio is guarded (warning) instead of dividing by ~0
    with pytest.warns(UserWarning, match="densit"):
        est = LDNScorer(density="knn", n_neighbors=1).fit(Xtr)
    assert np.all(np.isfinite(est.decision_function(Xte)))
    assert np.all(np.isfinite(LDNScorer(variant="aau-gwrp").fit(Xtr).decision_function(Xte)))


def test_truncated_gwrp_error_bound():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2200, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert S.gwrp_truncation(0.98, len(X) - 1, tail_tol=1e-12)[0] == 1368  # the weights beyond ~1.4k are < 1e-12
    M, eps = S.gwrp_truncation(0.98, len(X) - 1)  # default tail_tol 1e-14
    assert M == 1596 and eps < 1e-14
    assert S.gwrp_truncation(0.98, 999) == (999, 0.0)
    est = LDNScorer(density="gwrp", r=0.98).fit(X)
    assert est.n_used_neighbours_ == M < len(X) - 1
    _, rho = _brute_merl(X, X[:3], r=0.98)
    assert np.max(np.abs(est.density_ - rho)) <= eps * 1.0 + 1e-15  # |error| <= eps * d_max, d_max <= 1
    aau = LDNScorer(variant="aau-gwrp", r=0.98).fit(X)
    D = 1 - X @ X.T
    srt = np.sort(D, axis=1)[:, 1:]
    full = srt @ (0.98 ** np.arange(srt.shape[1])) + 1e-8
    assert np.max(np.abs(aau.density_ - full) / full) < 1e-11


# ----------------------------------------------------------------------------------------------------------------
# KNN banks, leave-one-out, calibration
# ----------------------------------------------------------------------------------------------------------------
def _cos(A, B):
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    return 1 - A @ B.T


def test_knn_domain_banks_mean_pooling_and_loo():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 5))
    dom = np.array(["source"] * 50 + ["target"] * 10)
    Xte = rng.standard_normal((7, 5))
    est = KNNScorer(n_neighbors=3, pooling="mean", domain_banks=True).fit(X, domains=dom)
    D = _cos(Xte, X)
    want = np.minimum(np.sort(D[:, :50], 1)[:, :3].mean(1), np.sort(D[:, 50:], 1)[:, :3].mean(1))
    np.testing.assert_allclose(est.decision_function(Xte), want, **TOL)
    Dtr = _cos(X, X)
    np.fill_diagonal(Dtr, np.inf)
    want_loo = np.minimum(np.sort(Dtr[:, :50], 1)[:, :3].mean(1), np.sort(Dtr[:, 50:], 1)[:, :3].mean(1))
    np.testing.assert_allclose(est.loo_decision_function(), want_loo, **TOL)
    with pytest.raises(ValueError, match="domains"):
        KNNScorer(domain_banks=True).fit(X)


def test_ldn_loo_excludes_self():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((80, 4))
    est = LDNScorer(density="knn", n_neighbors=2).fit(X)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = 0.5 * (1 - Xn @ Xn.T) / est.density_
    np.fill_diagonal(D, np.inf)
    np.testing.assert_allclose(est.loo_decision_function(), D.min(1), **TOL)


def test_calibration_scores_methods_and_split_sizes():
    rng = np.random.default_rng(7)
    dom = np.array(["source"] * 990 + ["target"] * 10)
    fit, held = S.holdout_split(dom, seed=0)
    assert (dom[held] == "source").sum() == 195 and (dom[held] == "target").sum() == 5
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == 1000
    small = np.array(["source"] * 99 + ["target"] * 3)
    _, h2 = S.holdout_split(small, seed=0)
    assert (small[h2] == "source").sum() == 20 and (small[h2] == "target").sum() == 2  # scaled, >= 1 kept
    names = np.array([f"c{i:03d}" for i in range(102)])
    perm = rng.permutation(102)
    _, ha = S.holdout_split(small, seed=1, names=names)
    _, hb = S.holdout_split(small[perm], seed=1, names=names[perm])
    assert set(names[ha]) == set(names[perm][hb])  # depends on the names, not their order
    X = rng.standard_normal((102, 6))
    s, idx = S.calibration_scores(make_pipeline(AAUPreprocess(), KNNScorer()), X, small, method="loo")
    assert len(s) == 102 and np.array_equal(idx, np.arange(102))
    with pytest.raises(ValueError, match="no leave-one-out form"):
        S.calibration_scores(GMMScorer(n_components=2), X, small, method="loo")
    s2, idx2 = S.calibration_scores(GMMScorer(n_components=2), X, small, seed=0)
    assert len(s2) == 22 and np.array_equal(idx2, h2)
    # the held-out model never saw the clips it scores: its calibration scores are not optimistic
    fitted_all = GMMScorer(n_components=2).fit(X).decision_function(X[idx2])
    assert np.mean(s2) > np.mean(fitted_all)


# ----------------------------------------------------------------------------------------------------------------
# sklearn compatibility
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", [KNNScorer(n_neighbors=3, pooling="mean"), GMMScorer(n_components=2),
                                 AEScorer(max_epochs=2, hidden=8, bottleneck=4), LDNScorer(density="gwrp", r=0.9),
                                 LDNScorer(variant="aau-gwrp"), AAUPreprocess(n_quantiles=20)])
def test_sklearn_clone_get_set_params(est):
    X = np.random.default_rng(8).standard_normal((40, 6))
    params = est.get_params()
    c = clone(est)
    assert c.get_params() == params and c is not est
    c.fit(X)
    assert c.get_params() == params  # fit does not touch the constructor parameters
    assert not any(k.endswith("_") for k in vars(clone(c)))  # a clone of a fitted one carries no fitted state
    out = c.transform(X) if isinstance(c, AAUPreprocess) else c.decision_function(X[:5])
    assert np.all(np.isfinite(out))
    c2 = clone(est).set_params(**params)
    assert c2.get_params() == params


def test_pipeline_routes_domains_and_errors_are_clear():
    rng = np.random.default_rng(9)
    X, dom = rng.standard_normal((30, 4)), np.array([0] * 25 + [1] * 5)
    pipe = make_pipeline(AAUPreprocess(n_quantiles=10), KNNScorer(n_neighbors=2, domain_banks=True))
    pipe.fit(X, knnscorer__domains=dom)
    assert pipe[-1].bank_keys_ == ["source", "target"]
    with pytest.raises(ValueError, match="8-d"):
        KNNScorer().fit(X).decision_function(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="pooling"):
        KNNScorer(pooling="median").fit(X)
    with pytest.raises(ValueError, match="variant"):
        LDNScorer(variant="nope").fit(X)


def test_ae_seeded_and_reproducible():
    X = np.random.default_rng(10).random((70, 12))
    a = AEScorer(max_epochs=3, seed=1).fit(X).decision_function(X)
    b = AEScorer(max_epochs=3, seed=1).fit(X).decision_function(X)
    c = AEScorer(max_epochs=3, seed=2).fit(X).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ----------------------------------------------------------------------------------------------------------------
# storing fitted scorers without pickle (asd_lib.scorer_io)
# ----------------------------------------------------------------------------------------------------------------
# every estimator an exported online system can hold: make_scorer with and without the AAU preprocessing
STORED_KINDS = {
    "knn+aau": ("knn", "aau", {}),
    "knn-domain-banks": ("knn", "none", {"n_neighbors": 3, "pooling": "mean", "domain_banks": True}),
    "gmm+aau": ("gmm", "aau", {"n_components": 2}),
    "gmm-aau-online": ("gmm", "aau", {"variant": "aau-online"}),
    "ae+aau": ("ae", "aau", {"max_epochs": 2, "bottleneck": 4}),
    "ae": ("ae", "none", {"max_epochs": 2, "hidden": 8, "bottleneck": 4}),
    "ldn-aau-gwrp": ("ldn", "aau", {}),
    "ldn-reference-knn": ("ldn", "aau", {"variant": "reference", "density": "knn", "n_neighbors": 2}),
    "ldn-plain-nn": ("ldn", "aau", {"variant": "reference", "density": "none"}),
}


def _fitted_kind(kind: str):
    """(fitted estimator, new data) for one of STORED_KINDS."""
    sid, pre, params = STORED_KINDS[kind]
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((70, 12)), rng.standard_normal((15, 12))
    dom = np.array(["source"] * 60 + ["target"] * 10)
    return S.fit_scorer(S.make_scorer(sid, preprocess=pre, **params), X, dom), Y


def _assert_same_state(a, b, where="est"):
    """Same type, parameters and fitted attributes (arrays equal in value and dtype), recursively."""
    from sklearn.base import BaseEstimator

    if isinstance(a, BaseEstimator):
        assert type(a) is type(b), where
        _assert_same_state(vars(a), vars(b), where)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("kind", sorted(STORED_KINDS))
def test_stored_scorer_loads_identical(kind, tmp_path):
    """load_scorer(save_scorer(est)) has the same fitted state and gives the same scores bit for bit.

    KNN banks are refitted on load; the brute-force search recomputes the same distance matrix from the same
    arrays, so the k smallest distances (all the score uses) are the same even where ties could swap neighbours.
    """
    from asd_lib.scorer_io import load_scorer, save_scorer

    est, Y = _fitted_kind(kind)
    files = save_scorer(est, tmp_path / "scorer")
    assert [f.name for f in files] == ["scorer.json", "scorer.npz"]
    back = load_scorer(tmp_path / "scorer")
    _assert_same_state(est, back)
    np.testing.assert_array_equal(back.decision_function(Y), est.decision_function(Y))
    final = S.final_step(back)
    if hasattr(final, "loo_decision_function"):
        np.testing.assert_array_equal(final.loo_decision_function(), S.final_step(est).loo_decision_function())


def test_stored_ae_weights_held_as_tensors_come_back_as_numpy(tmp_path):
    """Autoencoder weights held as torch tensors are stored as arrays and load as the numpy arrays _ae_mse takes."""
    torch = pytest.importorskip("torch")
    from asd_lib.scorer_io import load_scorer, save_scorer

    est, Y = _fitted_kind("ae")
    want = est.decision_function(Y)
    est.params_ = {k: torch.from_numpy(v) for k, v in est.params_.items()}
    save_scorer(est, tmp_path / "ae")
    back = load_scorer(tmp_path / "ae")
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in back.params_.values())
    np.testing.assert_array_equal(back.decision_function(Y), want)


def test_stored_scorer_refuses_what_it_cannot_read(tmp_path):
    """Unknown class, other format version, missing or object arrays, unstorable estimators: clear errors."""
    import json

    from sklearn.preprocessing import StandardScaler

    from asd_lib.scorer_io import load_scorer, save_scorer

    est, _ = _fitted_kind("knn+aau")
    save_scorer(est, tmp_path / "knn")
    doc = json.loads((tmp_path / "knn.json").read_text())

    def write(obj):
        (tmp_path / "knn.json").write_text(json.dumps(obj))

    write({**doc, "format_version": 99})
    with pytest.raises(ValueError, match=r"knn\.json: format 'asd-kit scorer' version 99"):
        load_scorer(tmp_path / "knn")
    evil = json.loads(json.dumps(doc))
    evil["estimator"]["steps"][1][1]["class"] = "os.system"
    write(evil)
    with pytest.raises(ValueError, match=r"knn\.json: unknown scorer class 'os.system'"):
        load_scorer(tmp_path / "knn")
    write(doc)
    arrays = dict(np.load(tmp_path / "knn.npz"))
    np.savez(tmp_path / "knn.npz", **{k: v for k, v in arrays.items() if k != "pre.quantiles_"})
    with pytest.raises(ValueError, match=r"knn\.json: array 'pre.quantiles_' is missing"):
        load_scorer(tmp_path / "knn")
    np.savez(tmp_path / "knn.npz", **{**arrays, "pre.quantiles_": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match=r"knn\.npz: cannot be read"):
        load_scorer(tmp_path / "knn")
    with pytest.raises(ValueError, match="cannot store a StandardScaler"):
        save_scorer(StandardScaler().fit(np.ones((3, 2))), tmp_path / "other")
    with pytest.raises(ValueError, match="not fitted"):
        save_scorer(KNNScorer(), tmp_path / "other")
    est[-1].bank_keys_ = np.array(["all"])
    with pytest.raises(ValueError, match="only numeric arrays"):
        save_scorer(est, tmp_path / "other")


# ----------------------------------------------------------------------------------------------------------------
# the score cache
# ----------------------------------------------------------------------------------------------------------------
def _fake_embeddings(root, models, machines, rng, n_train=60, n_test=20, dim=16):
    for model in models:
        for m in machines:
            d = root / model / "ch0"
            d.mkdir(parents=True, exist_ok=True)
            dom = np.array(["source"] * (n_train - 6) + ["target"] * 6)
            tr_names = np.array([f"section_00_{x}_train_normal_{i:04d}_a.wav" for i, x in enumerate(dom)])
            te_names = np.array([f"section_00_source_test_normal_{i:04d}_a.wav" for i in range(n_test)])
            np.savez(d / f"{m}_train.npz", emb=rng.standard_normal((n_train, dim)).astype(np.float32),
                     names=tr_names, labels=np.zeros(n_train, int), domains=dom)
            np.savez(d / f"{m}_test.npz", emb=rng.standard_normal((n_test, dim)).astype(np.float32),
                     names=te_names, labels=np.zeros(n_test, int), domains=np.array(["source"] * n_test))


def test_score_embeddings_layout_skip_force_and_batched_ae(tmp_path):
    from asd_lib import fusion as F

    rng = np.random.default_rng(11)
    models, machines = ["beats@1", "sslam@2"], ["fan", "valveEmu"]
    _fake_embeddings(tmp_path / "emb", models, machines, rng)
    params = {"ae": dict(max_epochs=3, hidden=8, bottleneck=4), "gmm": dict(n_components=2)}
    out = S.score_embeddings(tmp_path / "emb", tmp_path / "scores", models, scorer_params=params)
    assert len(out) == 2 * 2 * 4
    p = tmp_path / "scores" / "beats@1" / "ch0" / "ae" / "fan.npz"
    with np.load(p) as z:
        assert {"test", "calib", "names", "calib_names"} <= set(z.files)
        assert z["test"].shape == (20,) and z["calib"].shape == (14,)  # 11 of 54 source + 3 of 6 target (scaled)
        assert str(z["calib_kind"]) == "holdout"
    # the default calibration is the authors' held-out split for every scorer, on the same clips
    held = {}
    for sid in ("knn", "gmm", "ae", "ldn"):
        with np.load(tmp_path / "scores" / "beats@1" / "ch0" / sid / "fan.npz") as z:
            assert str(z["calib_kind"]) == "holdout", sid
            held[sid] = z["calib_names"].tolist()
    assert all(v == held["ae"] for v in held.values()) and len(held["ae"]) == 14
    # GMM and AE files say how long their two fits ran (the performance report counts FLOPs with it)
    for sid, most in (("gmm", 100), ("ae", 3)):
        with np.load(tmp_path / "scores" / "beats@1" / "ch0" / sid / "fan.npz") as z:
            assert z["iterations"].shape == (2,) and 1 <= z["iterations"].min() <= z["iterations"].max() <= most, sid
    with np.load(tmp_path / "scores" / "beats@1" / "ch0" / "knn" / "fan.npz") as z:
        assert "iterations" not in z.files
    loo = S.score_embeddings(tmp_path / "emb", tmp_path / "loo", models[:1], scorers=("knn", "gmm"), calibration="loo",
                             scorer_params=params)
    with np.load(loo[0]) as k, np.load(loo[1]) as g:
        assert k["calib"].shape == (60,) and str(k["calib_kind"]) == "loo"
        assert g["calib"].shape == (14,) and str(g["calib_kind"]) == "holdout"  # GMM has no leave-one-out form
    mtime = p.stat().st_mtime_ns
    assert S.score_embeddings(tmp_path / "emb", tmp_path / "scores", models, scorer_params=params) == []
    assert p.stat().st_mtime_ns == mtime
    # one-by-one AE training gives the same files as the batched run
    again = S.score_embeddings(tmp_path / "emb", tmp_path / "s2", models, scorers=("ae",), ae_batched=False,
                               scorer_params=params, force=True)
    assert len(again) == 4
    with np.load(p) as a, np.load(tmp_path / "s2" / "beats@1" / "ch0" / "ae" / "fan.npz") as b:
        np.testing.assert_allclose(a["test"], b["test"], rtol=1e-4)
        np.testing.assert_allclose(a["calib"], b["calib"], rtol=1e-4)
        np.testing.assert_array_equal(a["iterations"], b["iterations"])
    assert not list((tmp_path / "scores").rglob("*.tmp"))
    # the shared-preprocessing cache gives the same numbers as the estimator API (pipeline + calibration_scores)
    with np.load(tmp_path / "emb" / "sslam@2" / "ch0" / "valveEmu_train.npz") as tr, \
            np.load(tmp_path / "emb" / "sslam@2" / "ch0" / "valveEmu_test.npz") as te:
        Xtr, Xte, dom, names = tr["emb"].astype(float), te["emb"].astype(float), tr["domains"], tr["names"]
    for sid in ("knn", "gmm", "ldn"):
        est = S.make_scorer(sid, seed=0, **params.get(sid, {}))
        cal, idx = S.calibration_scores(est, Xtr, dom, seed=0, names=names)
        with np.load(tmp_path / "scores" / "sslam@2" / "ch0" / sid / "valveEmu.npz") as z:
            np.testing.assert_allclose(z["test"], est.fit(Xtr).decision_function(Xte), rtol=1e-10, err_msg=sid)
            np.testing.assert_allclose(z["calib"], cal, rtol=1e-10, err_msg=sid)
            np.testing.assert_array_equal(z["calib_names"], names[idx])
    # the cache feeds both fusions
    off = F.fuse_offline(tmp_path / "scores", models)
    on = F.fuse_online(tmp_path / "scores", models)
    for res in (off, on):
        assert sorted(res) == machines and list(res["fan"].columns) == ["names", "score", "decision"]
        assert len(res["fan"]) == 20
    with pytest.raises(FileNotFoundError, match="embedding"):
        S.score_embeddings(tmp_path / "nowhere", tmp_path / "s3", models)


def test_run_seed_zero_gives_the_authors_random_state():
    assert S.make_scorer("gmm", preprocess="none", seed=0).random_state == 42  # the authors' GMM and AE: 42
    ae = S.make_scorer("ae", seed=3)
    assert ae.steps[-1][1].seed == 45 and ae.steps[0][1].random_state == 45  # --seeds N offsets from 42


def test_ldn_params_reach_the_reference_gwrp_density():
    sp = S.scorer_params_from({"ldn_variant": "reference", "ldn_density": "gwrp", "ldn_r": 0.9})["ldn"]
    est = S.make_scorer("ldn", **sp)
    assert (est.variant, est.density, est.r) == ("reference", "gwrp", 0.9)
    X = np.random.default_rng(0).standard_normal((40, 8))
    knn = S.make_scorer("ldn", **S.scorer_params_from({"ldn_variant": "reference", "ldn_density": "knn"})["ldn"])
    assert not np.allclose(est.fit(X).decision_function(X[:5] + 0.1), knn.fit(X).decision_function(X[:5] + 0.1))
    assert S.scorer_params_from({})["ldn"] == {"variant": "aau-gwrp", "r": 0.98}  # the authors' default


def test_the_authors_gmm_constants_fit_only_their_online_gmm(tmp_path):
    from asd_lib import fusion as F

    rng = np.random.default_rng(5)
    models = ["beats@1"]
    _fake_embeddings(tmp_path / "emb", models, ["fan", "valveEmu"], rng)
    S.score_embeddings(tmp_path / "emb", tmp_path / "kit", models, scorers=("knn", "gmm"),
                       scorer_params={"gmm": {"n_components": 2}})
    with pytest.raises(ValueError, match="gmm_variant: aau-online"):
        F.fuse_online(tmp_path / "kit", models, ["knn", "gmm"], normalisation="aau-constants")
    online_gmm = S.scorer_params_from({"gmm_variant": "aau-online"})["gmm"]
    S.score_embeddings(tmp_path / "emb", tmp_path / "aau", models, scorers=("knn", "gmm"),
                       scorer_params={"gmm": online_gmm})
    out = F.fuse_online(tmp_path / "aau", models, ["knn", "gmm"], normalisation="aau-constants")
    assert sorted(out) == ["fan", "valveEmu"]
    with np.load(tmp_path / "emb" / "beats@1" / "ch0" / "fan_train.npz") as z, \
            np.load(tmp_path / "aau" / "beats@1" / "ch0" / "gmm" / "fan.npz") as s:
        ref = GMMScorer(n_components=1, random_state=42).fit(z["emb"].astype(float))  # raw embeddings, 1 component
        with np.load(tmp_path / "emb" / "beats@1" / "ch0" / "fan_test.npz") as t:
            np.testing.assert_allclose(s["test"], ref.decision_function(t["emb"].astype(float)), rtol=1e-10)
        assert str(s["variant"]) == "aau-online"


def test_autoencoder_stacks_sized_to_the_cpu_caches():
    """On the CPU the DCASE-size autoencoder (768-d) trains alone, the demo's small ones many to a stack; CUDA stacks
    up to 64 whatever the size."""
    from asd_lib.scorers.ae_network import n_parameters

    big, small = n_parameters(768, None, 32), n_parameters(96, None, 32)
    assert big == 615968  # 768 -> 384 -> 32 -> 384 -> 768, weights and biases
    assert S.models_per_stack(big, "cpu") == 1
    assert 8 <= S.models_per_stack(small, "cpu") <= 32
    assert S.models_per_stack(big, "cuda") == S.models_per_stack(big, "cuda:0") == 64
