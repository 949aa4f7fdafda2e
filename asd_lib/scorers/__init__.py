"""Anomaly scorers on clip embeddings, their calibration scores, and the per-regime score cache.

Introduced in notebooks 03a-03d (KNN, GMM, autoencoder, LDN). Every scorer is a scikit-learn estimator:
``fit(X)`` on one machine's training embeddings, ``decision_function(X)`` where HIGHER = MORE ANOMALOUS
(note: the opposite of sklearn's outlier-detector sign convention). Facts (formulas, constants) follow
docs/reference.md §6: the paper's authors' code (AAU) and the LDN reference (Wilkinghoff et al., MERL code).
One file per part; this package re-exports their public names (``scorers.KNNScorer``, ``scorers.score_embeddings``):

- ``knn.py``: ``KNNScorer``, cosine distance to the k-th (or mean of k) nearest training embeddings, one bank or
  one per domain.
- ``gmm.py``: ``GMMScorer``, negative log-likelihood under a diagonal Gaussian mixture.
- ``autoencoder.py``: ``AEScorer``, the authors' spectral-norm autoencoder, reconstruction MSE; ``train_autoencoders``
  trains many at once as one batched model (same maths, stacked weights and torch.bmm). The torch network and its
  training: ``ae_network.py`` (imported only when an autoencoder trains or scores).
- ``ldn.py``: ``LDNScorer``, local-density-normalised nearest-neighbour distance (reference K-NN / GWRP density,
  ratio or difference) and the authors' un-normalised GWRP (``variant='aau-gwrp'``); the GWRP truncation bound.
- ``preprocess.py``: ``AAUPreprocess``, the authors' quantile transform + thresholding, a transformer for
  ``make_pipeline``.
- ``calibration.py``: ``calibration_scores``, scores of TRAINING clips that were not used to fit the scorer that
  scored them (the authors' held-out split, 195 source + 5 target of 1,000, for every scorer; leave-one-out for KNN
  and LDN as an option), for online normalisation and thresholds; ``holdout_split``, ``fit_scorer``,
  ``fit_iterations``.
- ``factory.py``: ``make_scorer`` and ``scorer_params_from``, the kit's scorers by id with the authors' defaults.
- ``stage.py``: ``score_embeddings`` reads the embedding cache and writes
  ``scores/<model>/<channel>/<scorer>/<machine>.npz`` (the files' paths, writer and reader: ``asd_lib.artifacts``;
  ``score_path`` and ``fitted_path`` stay reachable here too); ``raw_score_aucs``.
- ``checks.py``: the input checks they share.
"""
from __future__ import annotations

from asd_lib.artifacts import (embedded_machines, fitted_path, load_embeddings, load_scores,  # noqa: F401
                               save_scores, score_path, scored_machines)

from .autoencoder import AEScorer, models_per_stack, train_autoencoders
from .calibration import (HOLDOUT_FRACTION_NO_DOMAIN, HOLDOUT_FRACTIONS, calibration_scores, final_step,
                          fit_iterations, fit_scorer, holdout_split)
from .factory import GMM_VARIANTS, SCORER_IDS, SCORER_SEED, make_scorer, scorer_params_from, takes_raw_embeddings
from .gmm import GMMScorer
from .knn import KNNScorer
from .ldn import LDNScorer, gwrp_truncation
from .preprocess import AAUPreprocess
from .stage import exercise_scores, raw_score_aucs, score_embeddings, stage_settings

__all__ = [
    "AAUPreprocess",
    "KNNScorer",
    "GMMScorer",
    "AEScorer",
    "LDNScorer",
    "train_autoencoders",
    "models_per_stack",
    "fit_iterations",
    "fit_scorer",
    "final_step",
    "gwrp_truncation",
    "holdout_split",
    "calibration_scores",
    "scorer_params_from",
    "make_scorer",
    "takes_raw_embeddings",
    "score_embeddings",
    "stage_settings",
    "exercise_scores",
    "raw_score_aucs",
    "score_path",
    "fitted_path",
    "SCORER_IDS",
    "SCORER_SEED",
    "GMM_VARIANTS",
    "HOLDOUT_FRACTIONS",
    "HOLDOUT_FRACTION_NO_DOMAIN",
]
