"""``GMMScorer`` (notebook 03b): negative log-likelihood under a diagonal Gaussian mixture."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from asd_lib.scorers.checks import check_2d, check_dim


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
        X = check_2d(X, "GMMScorer.fit")
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
        X = check_2d(X, "GMMScorer.decision_function")
        check_dim(self, X)
        return -self.gmm_.score_samples(X)
