"""Input checks shared by the scorers: 2-D finite arrays, the fitted dimension, and domain labels."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator


def check_2d(X: Any, what: str, dtype=np.float64) -> np.ndarray:
    """Return X as a finite 2-D array of `dtype`, or raise a ValueError naming `what`."""
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (n_clips, dim), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{what}: got 0 rows; every machine needs at least one clip")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what}: contains NaN or inf values; check the embeddings that produced it")
    return X


def check_dim(est: BaseEstimator, X: np.ndarray) -> None:
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"{type(est).__name__}: fitted on {est.n_features_in_}-d embeddings, got {X.shape[1]}-d ones"
        )


def domain_array(domains: Any, n: int, what: str) -> np.ndarray | None:
    """Domains as a str array ('source'/'target'/''), ints 0/1 mapped to source/target; None stays None."""
    if domains is None:
        return None
    d = np.asarray(domains)
    if d.shape != (n,):
        raise ValueError(f"{what}: domains has shape {d.shape}, expected ({n},) like the embeddings")
    if d.dtype.kind in "iub":
        d = np.where(d.astype(int) == 1, "target", "source")
    return d.astype(str)
