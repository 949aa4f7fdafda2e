"""The scoring stage (notebooks 03a-03d): ``score_embeddings`` reads the embedding cache and writes
``scores/<model>/<channel>/<scorer>/<machine>.npz`` plus each fitted scorer (the files' paths, writer and reader:
``asd_lib.artifacts``); ``raw_score_aucs`` tabulates one scorer's raw test AUCs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from asd_lib import params as P
from asd_lib import scorer_io  # scorer_io reads this package's classes: bound as a module, used when called
from asd_lib.artifacts import (Layout, embedded_machines, fitted_path, load_embeddings, load_scores, save_scores,
                               score_path, score_settings, scored_machines, scores_dir)
from asd_lib.scorers import autoencoder
from asd_lib.scorers.calibration import fit_iterations, fit_scorer, holdout_split
from asd_lib.scorers.checks import domain_array
from asd_lib.scorers.factory import SCORER_IDS, SCORER_SEED, make_scorer, takes_raw_embeddings
from asd_lib.scorers.preprocess import AAUPreprocess

log = logging.getLogger(__name__)


def _save_fitted(est: BaseEstimator, pre: AAUPreprocess | None, scorer: str, path: Path) -> None:
    """Store the fitted scorer as the online system will run it: behind its preprocessing when it had one."""
    scorer_io.save_scorer(Pipeline([("pre", pre), (scorer, est)]) if pre is not None else est, path)


def stage_settings(preprocess: str, calibration: str, seed: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a scorer's score files depend on besides the embeddings: recorded in them by ``score_embeddings``, and
    compared by notebooks 03a-03d with their own parameters (``exercise_scores``)."""
    return {"preprocess": preprocess, "calibration": calibration, "seed": int(seed), **dict(params)}


def exercise_scores(layout: Layout, models: Sequence[str], channel: str, scorer: str,
                    settings: Mapping[str, Any]) -> Path:
    """The score root a scoring notebook writes: the system's (``layout.scores``), or, when it runs by hand with other
    ``settings`` than the system's scores were made with (an exercise), its own ``scores/<scorer>~<what differs>``
    beside them, so that the fusion (04) keeps reading the system's scores."""
    recorded = score_settings(layout.scores, models[0], channel, scorer)
    folder, _ = P.exercise_folder(scorer, recorded, settings, f"the {scorer} scores that 04 fuses")
    return layout.scores if folder == scorer else scores_dir(layout.regime_dir, folder)


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
    ``ae_batched`` all autoencoders (every model, machine, calibration split and final fit) train together as stacked
    batched models, which gives the same per-model recipe at a fraction of the Python overhead (``train_autoencoders``;
    on the CPU its stacks are sized to the caches).
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
                domain_array(dom, len(Xtr), f"{model}/{channel}/{machine} training embeddings")
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
                settings = stage_settings(preprocess, calibration, seed, sp)
                est = make_scorer(sid, preprocess="none", seed=seed, device=device, **sp)
                v = raw if takes_raw_embeddings(sid, sp) else views
                pre = pre_all if v is views else None
                if sid == "ae" and ae_batched:
                    ae_jobs.append(dict(est=est, views=v, out=out, te_names=te_names, calib_names=tr_names[held],
                                        pre=pre, fitted=fitted_path(score_root, model, channel, sid, machine),
                                        settings=settings))
                    continue
                est = fit_scorer(est, v["train"], dom)
                _save_fitted(est, pre, sid, fitted_path(score_root, model, channel, sid, machine))
                test = est.decision_function(v["test"])
                if calibration == "loo" and hasattr(est, "loo_decision_function"):
                    calib, cnames, kind = est.loo_decision_function(), tr_names, "loo"
                    fits = [est]
                else:
                    held_est = fit_scorer(clone(est), v["fit"], None if dom is None else dom[fit_idx])
                    calib, cnames, kind = held_est.decision_function(v["held"]), tr_names[held], "holdout"
                    fits = [est, held_est]
                its = [fit_iterations(e) for e in fits]
                save_scores(out, test, calib, te_names, cnames, kind, variant=str(sp.get("variant", "")),
                            iterations=its if len(its) == 2 and None not in its else None, settings=settings)
                written.append(out)
    if ae_jobs:
        written += _score_ae_batched(ae_jobs)
    return written


def _score_ae_batched(jobs: list[dict[str, Any]]) -> list[Path]:
    """Train the final and the held-out AEs of all jobs together (stacked), then write their score files."""
    from asd_lib.scorers.ae_network import reconstruction_mse  # torch: only when autoencoders are trained

    ae: autoencoder.AEScorer = jobs[0]["est"]  # all jobs share the AE parameters (one scorer_params entry)
    fits = [x for j in jobs for x in (j["views"]["train"], j["views"]["fit"])]
    res = autoencoder.train_autoencoders(fits, seeds=[j["est"].seed for j in jobs for _ in (0, 1)],
                                         **ae._train_kwargs())
    written = []
    for j, job in enumerate(jobs):
        est = job["est"]._set_fitted(res[2 * j], job["views"]["train"].shape[1])
        _save_fitted(est, job["pre"], "ae", job["fitted"])
        test = reconstruction_mse(res[2 * j]["params"], job["views"]["test"], ae.device)
        calib = reconstruction_mse(res[2 * j + 1]["params"], job["views"]["held"], ae.device)
        save_scores(job["out"], test, calib, job["te_names"], job["calib_names"], "holdout",
                    iterations=[res[2 * j]["n_epochs"], res[2 * j + 1]["n_epochs"]], settings=job["settings"])
        written.append(job["out"])
    return written


def raw_score_aucs(score_root: str | Path, emb_root: str | Path, models: Sequence[str], channel: str,
                   scorer: str) -> pd.DataFrame:
    """AUC of one scorer's raw test scores per machine (rows) and model (columns), all test clips of both domains.
    Machines without labels (the evaluation set of a DEV+ADD regime) are left out."""
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
