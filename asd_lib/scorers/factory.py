"""The kit's scorers by id: ``make_scorer`` (the authors' defaults, optionally behind ``AAUPreprocess``) and
``scorer_params_from`` (per-scorer arguments from the flat params of ``params/base.yaml``)."""
from __future__ import annotations

from typing import Any, Mapping

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from asd_lib.scorers.autoencoder import AEScorer
from asd_lib.scorers.gmm import GMMScorer
from asd_lib.scorers.knn import KNNScorer
from asd_lib.scorers.ldn import LDNScorer
from asd_lib.scorers.preprocess import AAUPreprocess

SCORER_IDS = ("knn", "gmm", "ae", "ldn")
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
