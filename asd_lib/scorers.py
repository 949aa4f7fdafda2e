"""Anomaly scorers on clip embeddings, their calibration scores, and the per-regime score cache.

Introduced in notebooks 03a-03d (KNN, GMM, autoencoder, LDN). Every scorer is a scikit-learn estimator:
``fit(X)`` on one machine's training embeddings, ``decision_function(X)`` where HIGHER = MORE ANOMALOUS
(note: the opposite of sklearn's outlier-detector sign convention). Facts (formulas, constants) follow
docs/reference.md §6: the paper's authors' code (AAU) and the LDN reference (Wilkinghoff et al., MERL code).

- ``KNNScorer``: cosine distance to the k-th (or mean of k) nearest training embeddings, one bank or one per domain.
- ``GMMScorer``: negative log-likelihood under a diagonal Gaussian mixture.
- ``AEScorer``: the authors' spectral-norm autoencoder, reconstruction MSE; ``train_autoencoders`` trains many at
  once as one batched model (same maths, stacked weights and torch.bmm).
- ``LDNScorer``: local-density-normalised nearest-neighbour distance (reference K-NN / GWRP density, ratio or
  difference) and the authors' un-normalised GWRP (``variant='aau-gwrp'``).
- ``AAUPreprocess``: the authors' quantile transform + thresholding, a transformer for ``make_pipeline``.
- ``calibration_scores``: scores of TRAINING clips that were not used to fit the scorer that scored them (the
  authors' held-out split, 195 source + 5 target of 1,000, for every scorer; leave-one-out for KNN and LDN as an
  option), for online normalisation and thresholds.
- ``score_embeddings``: reads the embedding cache and writes ``scores/<model>/<channel>/<scorer>/<machine>.npz``
  (the files' paths, writer and reader: ``asd_lib.artifacts``; ``score_path`` and ``fitted_path`` stay here too).

GWRP truncation (error bound). A GWRP density sums r^(i-1) d_(i) over ALL other training points, nearest first.
We keep only the first M neighbours, with M the smallest integer such that the dropped weight fraction
eps = (r^M - r^N) / (1 - r^N) (N = n_train - 1 neighbours) is below ``tail_tol`` (1e-14 by default, i.e. well
below the 1e-12 asked for, so that parity at atol 1e-12 keeps a margin: M = 1596 for r = 0.98, 306 for r = 0.9;
with tail_tol = 1e-12, M = 1368 and 263; M = N, i.e. exact, whenever N is smaller). Every dropped distance lies in
[d_(M+1), d_max] with d_max <= 1 for 0.5(1 - cos) and <= 2 for 1 - cos, so the truncated density is LOW by at most
eps * d_max(row) in absolute terms for the normalised form, and by at most d_max * sum_{i>=M} r^i
<= d_max * r^M / (1 - r) (which is eps * total weight) for the authors' un-normalised form. Relative to the
density itself the error is at most eps * d_max / rho; this never needs a full sort of all pairs: each row of the
(chunked) distance matrix is partially sorted with ``np.argpartition``-style selection of M + 1 entries.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import QuantileTransformer
from sklearn.preprocessing import normalize as sk_normalize
from sklearn.utils.validation import check_is_fitted

from asd_lib import progress
from asd_lib.artifacts import (embedded_machines, fitted_path, load_embeddings, load_scores,  # noqa: F401
                               save_scores, score_path, scored_machines)

__all__ = [
    "AAUPreprocess",
    "KNNScorer",
    "GMMScorer",
    "AEScorer",
    "LDNScorer",
    "train_autoencoders",
    "fit_iterations",
    "gwrp_truncation",
    "holdout_split",
    "calibration_scores",
    "scorer_params_from",
    "make_scorer",
    "score_embeddings",
    "score_path",
    "SCORER_IDS",
    "HOLDOUT_FRACTIONS",
]

log = logging.getLogger(__name__)

SCORER_IDS = ("knn", "gmm", "ae", "ldn")
# The authors held out 195 of 990 source and 5 of 10 target training clips (docs/reference.md §7).
HOLDOUT_FRACTIONS = (195 / 990, 5 / 10)
# Fraction held out when training clips carry no domain.
HOLDOUT_FRACTION_NO_DOMAIN = 200 / 1000


# --------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------
def _check_2d(X: Any, what: str, dtype=np.float64) -> np.ndarray:
    """Return X as a finite 2-D array of `dtype`, or raise a ValueError naming `what`."""
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (n_clips, dim), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{what}: got 0 rows; every machine needs at least one clip")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what}: contains NaN or inf values; check the embeddings that produced it")
    return X


def _check_dim(est: BaseEstimator, X: np.ndarray) -> None:
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"{type(est).__name__}: fitted on {est.n_features_in_}-d embeddings, got {X.shape[1]}-d ones"
        )


def _domain_array(domains: Any, n: int, what: str) -> np.ndarray | None:
    """Domains as a str array ('source'/'target'/''), ints 0/1 mapped to source/target; None stays None."""
    if domains is None:
        return None
    d = np.asarray(domains)
    if d.shape != (n,):
        raise ValueError(f"{what}: domains has shape {d.shape}, expected ({n},) like the embeddings")
    if d.dtype.kind in "iub":
        d = np.where(d.astype(int) == 1, "target", "source")
    return d.astype(str)


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(X.dtype).tiny)


def _half_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """0.5 * (1 - A B^T) for unit rows (the LDN reference distance; may be -1e-16 for identical rows)."""
    return 0.5 * (1.0 - A @ B.T)


def _cosine_unit(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """sklearn's cosine_distances for rows already normalised by sklearn.preprocessing.normalize (same arithmetic:
    1 - A B^T, clipped to [0, 2]), without re-normalising the reference bank for every chunk."""
    S = A @ B.T
    S *= -1
    S += 1
    np.clip(S, 0, 2, out=S)
    return S


def _sorted_smallest(
    A: np.ndarray, B: np.ndarray, m: int, dist, chunk: int, drop_first: bool = False
) -> np.ndarray:
    """(len(A), m) ascending m smallest distances of each row of A to the rows of B, chunked, no full sort.

    With ``drop_first`` the smallest entry of each row (the point itself when A is B) is dropped first, as both
    references do (MERL drops row 0 of the sorted column; AAU drops column 0 of kneighbors).
    """
    k = m + 1 if drop_first else m
    k = min(k, B.shape[0])
    out = np.empty((A.shape[0], k - (1 if drop_first else 0)))
    for s in range(0, A.shape[0], chunk):
        D = dist(A[s : s + chunk], B)
        if k < D.shape[1]:
            D = np.partition(D, k - 1, axis=1)[:, :k]
        D.sort(axis=1)
        out[s : s + chunk] = D[:, 1:] if drop_first else D
    return out


def gwrp_truncation(r: float, n_neighbours: int, tail_tol: float = 1e-14) -> tuple[int, float]:
    """(M, eps): how many nearest neighbours a GWRP sum keeps, and the weight fraction it drops (< tail_tol)."""
    if not 0.0 < r < 1.0:
        raise ValueError(f"GWRP decay r must lie in (0, 1), got {r}")
    N = int(n_neighbours)
    if N <= 0:
        return 0, 0.0
    total = 1.0 - r**N  # (sum of all N weights) * (1 - r)
    M = math.ceil(math.log(tail_tol * total) / math.log(r)) if tail_tol > 0 else N
    M = max(1, min(N, M))
    eps = (r**M - r**N) / total
    return M, eps


# --------------------------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------------------------
class AAUPreprocess(TransformerMixin, BaseEstimator):
    """The authors' input transform: uniform QuantileTransformer fitted on train, then |x|<low -> 0, |x|>high -> tanh(x).

    Note that the second rule is not monotone (0.51 -> 0.47); it is reproduced as the authors ran it.
    """

    def __init__(self, n_quantiles: int = 1000, subsample: int = 10_000, low: float = 0.1, high: float = 0.5,
                 random_state: int | None = 0):
        self.n_quantiles = n_quantiles
        self.subsample = subsample
        self.low = low
        self.high = high
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the quantile table on training embeddings X (n, D), as sklearn's QuantileTransformer does.

        Same numbers as sklearn (np.nanpercentile 'linear' on each column, then a running max), computed in one
        vectorised sort instead of 1000-kth partitions per column (about 20x faster at 1000 x 768). When n exceeds
        ``subsample``, sklearn itself fits (it draws a random subsample).
        """
        X = _check_2d(X, "AAUPreprocess.fit")
        n = X.shape[0]
        nq = min(int(self.n_quantiles), n)
        if self.subsample is not None and n > self.subsample:
            qt = QuantileTransformer(n_quantiles=nq, output_distribution="uniform", subsample=self.subsample,
                                     random_state=self.random_state).fit(X)
            self.references_, self.quantiles_ = qt.references_, qt.quantiles_
        else:
            refs = np.linspace(0, 1, nq, endpoint=True)
            virtual = (refs * 100 / 100) * (n - 1)
            lo = np.clip(np.floor(virtual).astype(int), 0, n - 1)
            hi = np.minimum(lo + 1, n - 1)
            t = (virtual - lo)[:, None]
            Xs = np.sort(X, axis=0)
            a, b = Xs[lo], Xs[hi]
            diff = b - a
            q = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's _lerp
            self.references_, self.quantiles_ = refs, np.maximum.accumulate(q, axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """(n, D) -> (n, D): uniform quantile transform (sklearn's two-sided interpolation), then thresholds."""
        check_is_fitted(self, "quantiles_")
        X = _check_2d(X, "AAUPreprocess.transform")
        _check_dim(self, X)
        Z = np.empty_like(X)
        refs, rrev = self.references_, -self.references_[::-1]
        for j in range(X.shape[1]):
            x, q = X[:, j], self.quantiles_[:, j]
            z = 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], rrev))
            z[x == q[-1]] = 1.0
            z[x == q[0]] = 0.0
            Z[:, j] = z
        Z[np.abs(Z) < self.low] = 0.0
        big = np.abs(Z) > self.high
        Z[big] = np.tanh(Z[big])
        return Z


# --------------------------------------------------------------------------------------------------------------
# KNN
# --------------------------------------------------------------------------------------------------------------
class KNNScorer(BaseEstimator):
    """k-NN distance scorer (cosine by default): k-th neighbour distance ('max') or mean of k ('mean').

    With ``domain_banks=True`` the training set is split by domain (``fit(X, domains=...)``) and the score is the
    min over the per-domain banks. The authors' setting is k=6, 'max', one pooled bank.
    """

    def __init__(self, n_neighbors: int = 6, pooling: str = "max", metric: str = "cosine",
                 domain_banks: bool = False):
        self.n_neighbors = n_neighbors
        self.pooling = pooling
        self.metric = metric
        self.domain_banks = domain_banks

    def _pool(self, dist: np.ndarray) -> np.ndarray:
        if self.pooling == "max":
            return dist[:, -1]
        if self.pooling == "mean":
            return dist.mean(axis=1)
        raise ValueError(f"KNNScorer: pooling must be 'max' or 'mean', got {self.pooling!r}")

    def fit(self, X, y=None, domains=None):
        """Store the training bank(s). X (n, D); domains (n,) needed only with domain_banks=True."""
        X = _check_2d(X, "KNNScorer.fit")
        if self.pooling not in ("max", "mean"):
            raise ValueError(f"KNNScorer: pooling must be 'max' or 'mean', got {self.pooling!r}")
        if int(self.n_neighbors) < 1:
            raise ValueError(f"KNNScorer: n_neighbors must be >= 1, got {self.n_neighbors}")
        d = _domain_array(domains, len(X), "KNNScorer.fit")
        if self.domain_banks:
            if d is None:
                raise ValueError("KNNScorer(domain_banks=True).fit needs domains=... (one per training clip)")
            keys = sorted(set(d.tolist()))
        else:
            keys = ["all"]
            d = np.full(len(X), "all")
        self.bank_keys_ = keys
        self.bank_index_ = [np.flatnonzero(d == k) for k in keys]
        self.banks_ = [
            NearestNeighbors(n_neighbors=min(int(self.n_neighbors), len(idx)), metric=self.metric,
                             algorithm="brute").fit(X[idx])
            for idx in self.bank_index_
        ]
        self.n_train_ = len(X)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, D) -> (n,) anomaly scores (min over banks of the pooled k-NN distance)."""
        check_is_fitted(self, "banks_")
        X = _check_2d(X, "KNNScorer.decision_function")
        _check_dim(self, X)
        per_bank = [self._pool(nn.kneighbors(X, return_distance=True)[0]) for nn in self.banks_]
        return np.min(per_bank, axis=0)

    def loo_decision_function(self) -> np.ndarray:
        """(n_train,) leave-one-out scores of the training clips: each clip is left out of its own bank."""
        check_is_fitted(self, "banks_")
        out = np.full(self.n_train_, np.inf)
        for b, (idx, nn) in enumerate(zip(self.bank_index_, self.banks_)):
            for c, (idx2, nn2) in enumerate(zip(self.bank_index_, self.banks_)):
                if b == c:
                    k = min(int(self.n_neighbors), len(idx) - 1)
                    if k < 1:
                        continue  # a bank of one clip cannot score itself
                    dist = nn.kneighbors(None, n_neighbors=k)[0]  # sklearn: X=None excludes each point itself
                else:
                    dist = nn2.kneighbors(nn._fit_X, return_distance=True)[0]
                out[idx] = np.minimum(out[idx], self._pool(dist))
        if not np.all(np.isfinite(out)):
            raise ValueError("KNNScorer.loo_decision_function: a training clip has no other clip to compare with")
        return out


# --------------------------------------------------------------------------------------------------------------
# GMM
# --------------------------------------------------------------------------------------------------------------
class GMMScorer(BaseEstimator):
    """Negative log-likelihood under a Gaussian mixture (authors: 6 components, diagonal, random_state 42)."""

    def __init__(self, n_components: int = 6, covariance_type: str = "diag", reg_covar: float = 1e-6,
                 max_iter: int = 100, n_init: int = 1, random_state: int | None = 42):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X, y=None, domains=None):
        """Fit the mixture on training embeddings X (n, D); domains are ignored."""
        X = _check_2d(X, "GMMScorer.fit")
        if X.shape[0] < self.n_components:
            raise ValueError(f"GMMScorer: {X.shape[0]} training clips < n_components={self.n_components}")
        self.gmm_ = GaussianMixture(
            n_components=self.n_components, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
            max_iter=self.max_iter, n_init=self.n_init, random_state=self.random_state,
        ).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, D) -> (n,) negative log-likelihoods."""
        check_is_fitted(self, "gmm_")
        X = _check_2d(X, "GMMScorer.decision_function")
        _check_dim(self, X)
        return -self.gmm_.score_samples(X)


# --------------------------------------------------------------------------------------------------------------
# Autoencoder (the network and its training: asd_lib.ae, which imports torch)
# --------------------------------------------------------------------------------------------------------------
def train_autoencoders(
    datasets: Sequence[np.ndarray],
    *,
    bottleneck: int = 32,
    hidden: int | None = None,
    max_epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    patience: int = 5,
    min_delta: float = 1e-6,
    seeds: int | Sequence[int] = 42,
    device: str = "cpu",
    max_models_per_batch: int = 64,
) -> list[dict[str, Any]]:
    """Train one authors'-style AE per dataset (each (n_i, D)), stacking same-shaped ones into one batched model
    (``asd_lib.ae.StackedAutoencoder``, at most ``max_models_per_batch`` per stack).

    The recipe and why stacked models stay independent: ``asd_lib.ae``. Returns, per dataset, a dict with 'params'
    (numpy arrays with a leading axis of 1), 'n_epochs' and 'loss_curve'.
    """
    from asd_lib.ae import train_group  # torch: imported when an autoencoder trains, not with asd_lib

    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)] * len(datasets)
    if len(seeds) != len(datasets):
        raise ValueError(f"train_autoencoders: {len(seeds)} seeds for {len(datasets)} datasets")
    arrays = [_check_2d(X, f"train_autoencoders dataset {i}", dtype=np.float32) for i, X in enumerate(datasets)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, X in enumerate(arrays):
        groups.setdefault(X.shape, []).append(i)
    results: list[dict[str, Any] | None] = [None] * len(arrays)
    for (n, D), members in groups.items():
        for s in range(0, len(members), max_models_per_batch):
            idx = members[s : s + max_models_per_batch]
            res = train_group([arrays[i] for i in idx], [int(seeds[i]) for i in idx], bottleneck=bottleneck,
                              hidden=hidden, max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                              weight_decay=weight_decay, patience=patience, min_delta=min_delta, device=device)
            for i, r in zip(idx, res):
                results[i] = r
    return results  # type: ignore[return-value]


class AEScorer(BaseEstimator):
    """The authors' spectral-norm autoencoder; score = per-clip reconstruction MSE (float32 torch, CPU or CUDA)."""

    def __init__(self, bottleneck: int = 32, hidden: int | None = None, max_epochs: int = 50, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 1e-5, patience: int = 5, min_delta: float = 1e-6,
                 seed: int = 42, device: str = "cpu"):
        self.bottleneck = bottleneck
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.min_delta = min_delta
        self.seed = seed
        self.device = device

    def _train_kwargs(self) -> dict[str, Any]:
        return dict(bottleneck=self.bottleneck, hidden=self.hidden, max_epochs=self.max_epochs,
                    batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                    min_delta=self.min_delta, device=self.device)

    def fit(self, X, y=None, domains=None):
        """Train on X (n, D); domains are ignored."""
        X = _check_2d(X, "AEScorer.fit")
        (res,) = train_autoencoders([X], seeds=self.seed, **self._train_kwargs())
        return self._set_fitted(res, X.shape[1])

    def _set_fitted(self, res: Mapping[str, Any], dim: int) -> "AEScorer":
        self.params_ = res["params"]
        self.n_epochs_ = res["n_epochs"]
        self.loss_curve_ = list(res["loss_curve"])
        self.n_features_in_ = dim
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, D) -> (n,) reconstruction MSE."""
        check_is_fitted(self, "params_")
        X = _check_2d(X, "AEScorer.decision_function")
        _check_dim(self, X)
        from asd_lib.ae import reconstruction_mse

        return reconstruction_mse(self.params_, X, self.device)


# --------------------------------------------------------------------------------------------------------------
# LDN
# --------------------------------------------------------------------------------------------------------------
class LDNScorer(BaseEstimator):
    """Local-density-normalised nearest-neighbour score: min_j d(x, y_j) / rho(y_j) (or d - rho).

    ``variant='reference'`` (Wilkinghoff et al., MERL code): unit rows, d = 0.5 (1 - x.y); rho from the ascending
    distances of y_j to the OTHER references: ``density='knn'`` mean of the ``n_neighbors`` nearest, ``'gwrp'``
    normalised weights r^(i-1), ``'none'`` no normalisation (plain 1-NN); ``norm`` 'ratio' or 'difference'.
    ``variant='aau-gwrp'`` (the paper's authors): d = 1 - cos (sklearn), rho = sum_i r^(i-1) d_(i) + 1e-8 with
    weights NOT normalised, ratio only. The GWRP sum is truncated as described in the module docstring.
    ``normalize=False`` skips the L2 normalisation of the reference variant (MERL's code takes the rows as given).
    """

    def __init__(self, variant: str = "reference", density: str = "knn", n_neighbors: int = 1, r: float = 0.98,
                 norm: str = "ratio", normalize: bool = True, tail_tol: float = 1e-14, density_floor: float = 1e-12,
                 chunk_size: int = 512):
        self.normalize = normalize
        self.variant = variant
        self.density = density
        self.n_neighbors = n_neighbors
        self.r = r
        self.norm = norm
        self.tail_tol = tail_tol
        self.density_floor = density_floor
        self.chunk_size = chunk_size

    def _validate(self) -> None:
        if self.variant not in ("reference", "aau-gwrp"):
            raise ValueError(f"LDNScorer: variant must be 'reference' or 'aau-gwrp', got {self.variant!r}")
        if self.norm not in ("ratio", "difference"):
            raise ValueError(f"LDNScorer: norm must be 'ratio' or 'difference', got {self.norm!r}")
        if self.variant == "aau-gwrp" and self.norm != "ratio":
            raise ValueError("LDNScorer: the authors' 'aau-gwrp' variant is a ratio; use norm='ratio'")
        if self.variant == "reference" and self.density not in ("knn", "gwrp", "none"):
            raise ValueError(f"LDNScorer: density must be 'knn', 'gwrp' or 'none', got {self.density!r}")

    def _dist(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.variant == "aau-gwrp":
            return _cosine_unit(A, B)
        return _half_cosine(A, B)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        if self.variant == "aau-gwrp":
            return sk_normalize(X)  # the exact normalisation sklearn's cosine_distances applies inside
        return _l2_normalise(X) if self.normalize else X

    def fit(self, X, y=None, domains=None):
        """Store the references X (n, D) and their local densities rho (n,); domains are ignored (pooled)."""
        self._validate()
        X = _check_2d(X, "LDNScorer.fit")
        refs = self._prepare(X)
        n = len(refs)
        N = n - 1
        self.n_used_neighbours_ = 0
        self.tail_weight_ = 0.0
        if self.variant == "reference" and self.density == "none":
            rho = None
        elif self.variant == "reference" and self.density == "knn":
            K = int(self.n_neighbors)
            if not 1 <= K <= N:
                raise ValueError(f"LDNScorer: n_neighbors={K} needs 1 <= K <= n_train - 1 = {N}")
            d = _sorted_smallest(refs, refs, K, self._dist, self.chunk_size, drop_first=True)
            rho = d.mean(axis=1)
            self.n_used_neighbours_ = K
        else:
            if N < 1:
                raise ValueError("LDNScorer: a GWRP density needs at least 2 training clips")
            M, eps = gwrp_truncation(self.r, N, self.tail_tol)
            d = _sorted_smallest(refs, refs, M, self._dist, self.chunk_size, drop_first=True)
            w = self.r ** np.arange(M)
            if self.variant == "aau-gwrp":
                rho = d @ w + 1e-8
            else:
                rho = d @ (w / (w.sum() / (1.0 - eps)))  # normalised by the FULL weight sum
            self.n_used_neighbours_, self.tail_weight_ = M, eps
        if rho is not None and self.norm == "ratio" and np.any(rho < self.density_floor):
            warnings.warn(f"LDNScorer: {int(np.sum(rho < self.density_floor))} reference densities below "
                          f"{self.density_floor} (duplicate training clips?); floored to avoid division by ~0")
            rho = np.maximum(rho, self.density_floor)
        self.references_ = refs
        self.density_ = rho
        self.n_features_in_ = X.shape[1]
        return self

    def _normalised_min(self, A: np.ndarray, self_offset: int | None = None) -> np.ndarray:
        out = np.empty(len(A))
        for s in range(0, len(A), self.chunk_size):
            D = self._dist(A[s : s + self.chunk_size], self.references_)
            if self.density_ is not None:
                D = D / self.density_ if self.norm == "ratio" else D - self.density_
            if self_offset is not None:
                rows = np.arange(D.shape[0])
                D[rows, s + rows] = np.inf
            out[s : s + self.chunk_size] = D.min(axis=1)
        return out

    def decision_function(self, X) -> np.ndarray:
        """(n, D) -> (n,) LDN scores."""
        check_is_fitted(self, "references_")
        X = _check_2d(X, "LDNScorer.decision_function")
        _check_dim(self, X)
        A = self._prepare(X)
        return self._normalised_min(A)

    def loo_decision_function(self) -> np.ndarray:
        """(n_train,) leave-one-out scores: each reference scored against the others (densities kept as fitted)."""
        check_is_fitted(self, "references_")
        if len(self.references_) < 2:
            raise ValueError("LDNScorer.loo_decision_function: needs at least 2 training clips")
        return self._normalised_min(self.references_, self_offset=0)


# --------------------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------------------
def _final(est: BaseEstimator) -> BaseEstimator:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def fit_iterations(est: BaseEstimator) -> int | None:
    """EM iterations (GMM, the kept initialisation) or epochs (AE) a fitted scorer ran; None for KNN and LDN."""
    final = _final(est)
    if isinstance(final, GMMScorer):
        return int(final.gmm_.n_iter_)
    if isinstance(final, AEScorer):
        return int(final.n_epochs_)
    return None


def _fit(est: BaseEstimator, X: np.ndarray, domains: np.ndarray | None) -> BaseEstimator:
    """Fit an estimator or pipeline, routing domains to the final step."""
    if isinstance(est, Pipeline):
        return est.fit(X, **{f"{est.steps[-1][0]}__domains": domains})
    return est.fit(X, domains=domains)


def holdout_split(domains: Any, n: int | None = None, seed: int = 0, names: Sequence[str] | None = None,
                  fractions: tuple[float, float] = HOLDOUT_FRACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """(fit_index, holdout_index) of the training clips: per domain, round(fraction * n_domain) clips held out.

    The authors' split is 195 of 990 source + 5 of 10 target; other sizes scale with the same fractions, at least
    one clip is held out and one kept per domain that has 2+ clips. Clips without a domain use 20 %. With
    ``names`` the choice depends only on the set of names (not their order), so every model agrees.
    """
    if domains is None:
        if n is None:
            raise ValueError("holdout_split: give domains or n")
        d = np.full(n, "")
    else:
        d = _domain_array(domains, len(domains) if n is None else n, "holdout_split")
    n = len(d)
    order = np.argsort(np.asarray(names, dtype=str), kind="stable") if names is not None else np.arange(n)
    rng = np.random.default_rng(seed)
    hold: list[np.ndarray] = []
    for dom in sorted(set(d.tolist())):
        members = order[d[order] == dom]
        frac = {"source": fractions[0], "target": fractions[1]}.get(dom, HOLDOUT_FRACTION_NO_DOMAIN)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, int(round(frac * len(members)))))
        hold.append(rng.choice(members, size=k, replace=False))
    held = np.sort(np.concatenate(hold)) if hold else np.array([], dtype=int)
    if len(held) == 0:
        raise ValueError(f"holdout_split: cannot hold out clips from {n} training clips; need 2+ in some domain")
    fit = np.setdiff1d(np.arange(n), held)
    return fit, held


def calibration_scores(scorer: BaseEstimator, X, domains=None, *, method: str = "holdout", seed: int = 0,
                       names: Sequence[str] | None = None, fitted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores, train_index): calibration scores of training clips that the scoring model did not see.

    method 'holdout' (the default, the authors' method for every scorer): fit a clone on the clips
    ``holdout_split`` keeps, score the held-out ones. 'loo' (KNN and LDN only, also inside a pipeline): fit on all
    clips, score each clip with itself left out of the neighbour search (the preprocessing, if any, was fitted with
    it); ``fitted=True`` reuses an already fitted scorer. Returns the scores and the row indices of X they belong to.
    """
    X = _check_2d(X, "calibration_scores")
    d = _domain_array(domains, len(X), "calibration_scores")
    final = _final(scorer)
    if method == "loo":
        if not hasattr(final, "loo_decision_function"):
            raise ValueError(f"calibration_scores: {type(final).__name__} has no leave-one-out form; use 'holdout'")
        if not fitted:
            _fit(scorer, X, d)
        return final.loo_decision_function(), np.arange(len(X))
    if method == "holdout":
        fit_idx, held = holdout_split(d, len(X), seed=seed, names=names)
        est = _fit(clone(scorer), X[fit_idx], None if d is None else d[fit_idx])
        return est.decision_function(X[held]), held
    raise ValueError(f"calibration_scores: method must be 'holdout' or 'loo', got {method!r}")


# --------------------------------------------------------------------------------------------------------------
# the score cache
# --------------------------------------------------------------------------------------------------------------
# 'kit': the authors' offline GMM (6 components, diagonal) on the preprocessed embeddings; 'aau-online': their optional
# online GMM (1 component, diagonal) on the raw embeddings, the only GMM their fixed z constants belong to.
GMM_VARIANTS = ("kit", "aau-online")


def takes_raw_embeddings(scorer_id: str, params: Mapping[str, Any]) -> bool:
    """Whether a scorer skips the authors' preprocessing (as they ran it): LDN, and their online GMM."""
    return scorer_id == "ldn" or (scorer_id == "gmm" and params.get("variant") == "aau-online")


SCORER_SEED = 42  # the authors' random_state for their GMM and AE (testvectors/ldn/README): run seed 0 is their run


def make_scorer(scorer_id: str, preprocess: str = "aau", seed: int = 0, device: str = "cpu",
                **params: Any) -> BaseEstimator:
    """The kit's default estimator for a scorer id ('knn', 'gmm', 'ae', 'ldn'), optionally behind AAUPreprocess.

    Defaults follow the authors (docs/design.md, Defaults): KNN k=6 'max', GMM 6 diag, AE as docs/reference.md §6, LDN =
    their un-normalised GWRP (r 0.98) on RAW embeddings (the preprocessing is never applied to LDN, as they did).
    ``seed`` is the run's seed: the random states are ``SCORER_SEED + seed``, so seed 0 gives the authors' 42.
    """
    rs = SCORER_SEED + seed
    params = dict(params)
    if scorer_id == "gmm":
        variant = params.pop("variant", "kit")
        if variant not in GMM_VARIANTS:
            raise ValueError(f"GMM variant must be one of {GMM_VARIANTS}, got {variant!r}")
        if variant == "aau-online":  # the authors' optional online GMM: 1 component, diagonal, raw embeddings
            return GMMScorer(**{"random_state": rs, **params, "n_components": 1, "covariance_type": "diag"})
    if scorer_id == "knn":
        est: BaseEstimator = KNNScorer(**params)
    elif scorer_id == "gmm":
        est = GMMScorer(**{"random_state": rs, **params})
    elif scorer_id == "ae":
        est = AEScorer(**{"seed": rs, "device": device, **params})
    elif scorer_id == "ldn":
        return LDNScorer(**{"variant": "aau-gwrp", "r": 0.98, **params})
    else:
        raise ValueError(f"unknown scorer id {scorer_id!r}; expected one of {SCORER_IDS}")
    if preprocess == "aau":
        return Pipeline([("pre", AAUPreprocess(random_state=rs)), (scorer_id, est)])
    if preprocess in ("none", None):
        return est
    raise ValueError(f"preprocess must be 'aau' or 'none', got {preprocess!r}")


def scorer_params_from(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-scorer estimator arguments (for ``make_scorer`` / ``score_embeddings``) from the flat params of
    ``params/base.yaml`` (knn_k, gmm_components, ae_*, ldn_*); a missing key takes the authors' value."""
    out: dict[str, dict[str, Any]] = {
        "knn": {"n_neighbors": int(params.get("knn_k", 6))},
        "gmm": {"n_components": int(params.get("gmm_components", 6)), "variant": params.get("gmm_variant", "kit")},
        "ae": {"bottleneck": int(params.get("ae_bottleneck", 32)), "max_epochs": int(params.get("ae_epochs", 50)),
               "patience": int(params.get("ae_patience", 5)), "lr": float(params.get("ae_lr", 1e-3)),
               "batch_size": int(params.get("ae_batch_size", 64))},
    }
    variant = params.get("ldn_variant", "aau-gwrp")
    if variant == "aau-gwrp":
        out["ldn"] = {"variant": "aau-gwrp", "r": float(params.get("ldn_r", 0.98))}
    else:
        out["ldn"] = {"variant": variant, "density": params.get("ldn_density", "knn"),
                      "n_neighbors": int(params.get("ldn_k", 1)), "r": float(params.get("ldn_r", 0.98))}
    return out


def _save_fitted(est: BaseEstimator, pre: AAUPreprocess | None, scorer: str, path: Path) -> None:
    """Store the fitted scorer as the online system will run it: behind its preprocessing when it had one."""
    from asd_lib.scorer_io import save_scorer  # scorer_io reads this module's classes

    save_scorer(Pipeline([("pre", pre), (scorer, est)]) if pre is not None else est, path)


def score_embeddings(
    emb_root: str | Path,
    score_root: str | Path,
    models: Sequence[str],
    channel: str = "ch0",
    scorers: Sequence[str] = ("knn", "gmm", "ae", "ldn"),
    preprocess: str = "aau",
    force: bool = False,
    seed: int = 0,
    machines: Sequence[str] | None = None,
    device: str = "cpu",
    ae_batched: bool = True,
    scorer_params: Mapping[str, Mapping[str, Any]] | None = None,
    calibration: str = "holdout",
    verbose: bool = False,
) -> list[Path]:
    """Fit every scorer per (model, machine) and write test + calibration scores; returns the files written.

    Reads ``<emb_root>/<model>/<channel>/<machine>_{train,test}.npz`` (emb, names, labels, domains) and writes
    ``<score_root>/<model>/<channel>/<scorer>/<machine>.npz`` with keys ``test`` (n_test,), ``calib`` (n_calib,),
    ``names`` (test file names), plus ``calib_names`` (training names of the calibration clips) and ``calib_kind``
    ('loo' or 'holdout'), for GMM and AE ``iterations`` (2,): the EM iterations / epochs of the final and of the
    calibration fit (``fit_iterations``); and the scorer fitted on every training clip, behind its preprocessing, at
    ``fitted_path`` (``scorer_io`` files, which the online export copies). ``calibration='holdout'`` (the authors'
    method, the default) scores the clips that ``holdout_split`` holds out with a clone fitted on the rest, for
    every scorer; 'loo' instead scores every training clip with itself left out of the neighbour search, for the
    scorers that have that form (KNN, LDN; GMM and AE stay held-out). Existing files are kept unless ``force``. With
    ``ae_batched`` all autoencoders (every model, machine, calibration split and final fit) train as stacked batched
    models, which gives the same per-model recipe (see ``train_autoencoders``) at a fraction of the Python overhead.
    """
    unknown = set(scorers) - set(SCORER_IDS)
    if unknown:
        raise ValueError(f"score_embeddings: unknown scorers {sorted(unknown)}; choose from {SCORER_IDS}")
    if preprocess not in ("aau", "none", None):
        raise ValueError(f"score_embeddings: preprocess must be 'aau' or 'none', got {preprocess!r}")
    if calibration not in ("holdout", "loo"):
        raise ValueError(f"score_embeddings: calibration must be 'holdout' or 'loo', got {calibration!r}")
    scorer_params = dict(scorer_params or {})
    written: list[Path] = []
    ae_jobs: list[dict[str, Any]] = []
    for model in models:
        for machine in (machines if machines is not None else embedded_machines(emb_root, model, channel)):
            todo = [s for s in scorers if force or not score_path(score_root, model, channel, s, machine).exists()]
            if not todo:
                continue
            tr, te = (load_embeddings(emb_root, model, channel, machine, split) for split in ("train", "test"))
            Xtr = tr["emb"].astype(np.float64)
            Xte = te["emb"].astype(np.float64)
            dom = tr.get("domains")
            dom = None if dom is None or np.all(np.asarray(dom).astype(str) == "") else \
                _domain_array(dom, len(Xtr), f"{model}/{channel}/{machine} training embeddings")
            tr_names = np.asarray(tr["names"]).astype(str)
            te_names = np.asarray(te["names"]).astype(str)
            fit_idx, held = holdout_split(dom, len(Xtr), seed=seed, names=tr_names)
            # the preprocessing is fitted once per training set and shared by KNN, GMM and AE: the same numbers as
            # make_pipeline(AAUPreprocess(), scorer), fitted on all clips (test + LOO) or on the kept split (held-out)
            views: dict[str, np.ndarray] = {}
            if preprocess == "aau" and set(todo) & {"knn", "gmm", "ae"}:
                pre_all = AAUPreprocess(random_state=SCORER_SEED + seed).fit(Xtr)
                pre_fit = AAUPreprocess(random_state=SCORER_SEED + seed).fit(Xtr[fit_idx])
                views = dict(train=pre_all.transform(Xtr), test=pre_all.transform(Xte),
                             fit=pre_fit.transform(Xtr[fit_idx]), held=pre_fit.transform(Xtr[held]))
            else:
                pre_all, views = None, dict(train=Xtr, test=Xte, fit=Xtr[fit_idx], held=Xtr[held])
            raw = dict(train=Xtr, test=Xte, fit=Xtr[fit_idx], held=Xtr[held])
            for sid in todo:
                out = score_path(score_root, model, channel, sid, machine)
                if verbose:
                    log.info("scoring %s/%s/%s/%s", model, channel, sid, machine)
                sp = dict(scorer_params.get(sid, {}))
                est = make_scorer(sid, preprocess="none", seed=seed, device=device, **sp)
                v = raw if takes_raw_embeddings(sid, sp) else views
                pre = pre_all if v is views else None
                if sid == "ae" and ae_batched:
                    ae_jobs.append(dict(est=est, views=v, out=out, te_names=te_names, calib_names=tr_names[held],
                                        pre=pre, fitted=fitted_path(score_root, model, channel, sid, machine)))
                    continue
                est = _fit(est, v["train"], dom)
                _save_fitted(est, pre, sid, fitted_path(score_root, model, channel, sid, machine))
                test = est.decision_function(v["test"])
                if calibration == "loo" and hasattr(est, "loo_decision_function"):
                    calib, cnames, kind = est.loo_decision_function(), tr_names, "loo"
                    fits = [est]
                else:
                    held_est = _fit(clone(est), v["fit"], None if dom is None else dom[fit_idx])
                    calib, cnames, kind = held_est.decision_function(v["held"]), tr_names[held], "holdout"
                    fits = [est, held_est]
                its = [fit_iterations(e) for e in fits]
                save_scores(out, test, calib, te_names, cnames, kind, variant=str(sp.get("variant", "")),
                            iterations=its if len(its) == 2 and None not in its else None)
                written.append(out)
    if ae_jobs:
        written += _score_ae_batched(ae_jobs)
    return written


def _score_ae_batched(jobs: list[dict[str, Any]]) -> list[Path]:
    """Train the final and the held-out AEs of all jobs together (stacked), then write their score files."""
    ae: AEScorer = jobs[0]["est"]  # all jobs share the AE parameters (one scorer_params entry)
    fits = [x for j in jobs for x in (j["views"]["train"], j["views"]["fit"])]
    res = train_autoencoders(fits, seeds=[j["est"].seed for j in jobs for _ in (0, 1)], **ae._train_kwargs())
    written = []
    from asd_lib.ae import reconstruction_mse

    for j, job in enumerate(jobs):
        est = job["est"]._set_fitted(res[2 * j], job["views"]["train"].shape[1])
        _save_fitted(est, job["pre"], "ae", job["fitted"])
        test = reconstruction_mse(res[2 * j]["params"], job["views"]["test"], ae.device)
        calib = reconstruction_mse(res[2 * j + 1]["params"], job["views"]["held"], ae.device)
        save_scores(job["out"], test, calib, job["te_names"], job["calib_names"], "holdout",
                    iterations=[res[2 * j]["n_epochs"], res[2 * j + 1]["n_epochs"]])
        written.append(job["out"])
    return written


def raw_score_aucs(score_root: str | Path, emb_root: str | Path, models: Sequence[str], channel: str,
                   scorer: str) -> "pd.DataFrame":
    """AUC of one scorer's raw test scores per machine (rows) and model (columns), all test clips of both domains.
    Machines without labels (the evaluation set of a DEV+ADD regime) are left out."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    rows = []
    for model in models:
        for machine in scored_machines(score_root, model, channel, scorer):
            y = load_embeddings(emb_root, model, channel, machine, "test")["labels"]
            if (y < 0).any():  # unlabelled clips: the evaluation set
                continue
            test = load_scores(score_path(score_root, model, channel, scorer, machine))["test"]
            rows.append({"model": model, "machine": machine, "AUC": roc_auc_score(y, test)})
    return pd.DataFrame(rows, columns=["model", "machine", "AUC"]).pivot(index="machine", columns="model",
                                                                         values="AUC")
