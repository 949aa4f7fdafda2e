"""Calibration scores: scores of TRAINING clips that were not used to fit the scorer that scored them (the authors'
held-out split, 195 source + 5 target of 1,000, for every scorer; leave-one-out for KNN and LDN as an option), for
online normalisation and thresholds. Also how a scorer or pipeline is fitted with domains (``fit_scorer``) and how
many iterations it ran (``fit_iterations``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

from asd_lib.scorers.autoencoder import AEScorer
from asd_lib.scorers.checks import check_2d, domain_array
from asd_lib.scorers.gmm import GMMScorer

# The authors held out 195 of 990 source and 5 of 10 target training clips (docs/reference.md §7).
HOLDOUT_FRACTIONS = (195 / 990, 5 / 10)
# Fraction held out when training clips carry no domain.
HOLDOUT_FRACTION_NO_DOMAIN = 200 / 1000


def final_step(est: BaseEstimator) -> BaseEstimator:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def fit_iterations(est: BaseEstimator) -> int | None:
    """EM iterations (GMM, the kept initialisation) or epochs (AE) a fitted scorer ran; None for KNN and LDN."""
    final = final_step(est)
    if isinstance(final, GMMScorer):
        return int(final.gmm_.n_iter_)
    if isinstance(final, AEScorer):
        return int(final.n_epochs_)
    return None


def fit_scorer(est: BaseEstimator, X: np.ndarray, domains: np.ndarray | None) -> BaseEstimator:
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
        d = domain_array(domains, len(domains) if n is None else n, "holdout_split")
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
    X = check_2d(X, "calibration_scores")
    d = domain_array(domains, len(X), "calibration_scores")
    final = final_step(scorer)
    if method == "loo":
        if not hasattr(final, "loo_decision_function"):
            raise ValueError(f"calibration_scores: {type(final).__name__} has no leave-one-out form; use 'holdout'")
        if not fitted:
            fit_scorer(scorer, X, d)
        return final.loo_decision_function(), np.arange(len(X))
    if method == "holdout":
        fit_idx, held = holdout_split(d, len(X), seed=seed, names=names)
        est = fit_scorer(clone(scorer), X[fit_idx], None if d is None else d[fit_idx])
        return est.decision_function(X[held]), held
    raise ValueError(f"calibration_scores: method must be 'holdout' or 'loo', got {method!r}")
