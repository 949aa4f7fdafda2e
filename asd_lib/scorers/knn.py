"""``KNNScorer`` (notebook 03a): cosine distance to the k-th (or mean of k) nearest training embeddings, one bank or
one per domain."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from asd_lib.scorers.checks import check_2d, check_dim, domain_array


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
        X = check_2d(X, "KNNScorer.fit")
        if self.pooling not in ("max", "mean"):
            raise ValueError(f"KNNScorer: pooling must be 'max' or 'mean', got {self.pooling!r}")
        if int(self.n_neighbors) < 1:
            raise ValueError(f"KNNScorer: n_neighbors must be >= 1, got {self.n_neighbors}")
        d = domain_array(domains, len(X), "KNNScorer.fit")
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
        X = check_2d(X, "KNNScorer.decision_function")
        check_dim(self, X)
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
