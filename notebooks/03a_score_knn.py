# %% [markdown]
# # 03a · Scoring with k nearest neighbours
#
# The simplest detector on embeddings: how far is a test clip from the training clips? Written from scratch, checked
# against the library, then run for every model and machine (paper §3.1, "KNN", k = 6; docs/reference.md §6).

# %% tags=["parameters"]
regime = 'dev'                      # dev | devadd: training data (DEV, or DEV + the additional training set)
results_dir = 'results/smoke'       # everything a run writes (docs/design.md layout); figures go to figures_dir
figures_dir = 'results/smoke/figures'  # save_fig writes <id>.png and <id>.pdf here
seed = 0                            # one seed for training, scorers and splits (--seeds N adds 0..N-1)
ensemble = ['beats@107', 'beats@204', 'sslam@100']  # <backbone>@<epoch>; each backbone trains up to its largest epoch
epoch_scale = 0.01                  # multiplies the epochs in `ensemble` (rounded, at least 1); overlays shrink runs with it
epoch_selection = 'fixed'           # fixed (epochs named in `ensemble`, no test labels) | select-on-test-leaky (authors; uses test labels)
channel = 'ch0'                     # scoring embedding from ch0 (near mic) | ch1 | both
preprocess = 'aau'                  # aau (quantile transform + thresholding for KNN/GMM/AE) | none (raw embeddings)
calibration = 'holdout'             # online calibration scores: holdout (authors: fit on the rest, score 195 source + 5 target of 1,000) | loo (KNN/LDN leave-one-out; GMM/AE stay held-out)
knn_k = 6                           # KNN neighbours; the score is the distance to the k-th (max pooling)

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
results_dir = 'results'
figures_dir = 'figures'
epoch_scale = 0.1

# %%
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from asd_lib import artifacts, plots, scorers

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime)
models = L.models(ensemble, epoch_scale, epoch_selection)
tr = artifacts.load_embeddings(L.embeddings, models[0], channel, "fan", "train")
te = artifacts.load_embeddings(L.embeddings, models[0], channel, "fan", "test")
print(models, "| fan:", tr["emb"].shape, "train,", te["emb"].shape, "test")

# %% [markdown]
# ## 1. The authors' preprocessing, from scratch
#
# Before KNN, GMM and AE the authors map every embedding dimension through a quantile transform fitted on the training
# clips (values become ranks in [0, 1]), then set values below 0.1 to 0 and squash values above 0.5 with tanh. LDN
# gets the raw embeddings. `preprocess = "none"` switches this off.

# %%
# NBVAL_CHECK_OUTPUT
from sklearn.preprocessing import QuantileTransformer

def aau_preprocess(train, test):
    qt = QuantileTransformer(n_quantiles=min(1000, len(train)), output_distribution="uniform", random_state=0)
    out = [qt.fit_transform(train), qt.transform(test)]
    for x in out:
        x[np.abs(x) < 0.1] = 0.0
        big = np.abs(x) > 0.5
        x[big] = np.tanh(x[big])
    return out

Xtr, Xte = aau_preprocess(tr["emb"].astype(np.float64), te["emb"].astype(np.float64))
lib = scorers.AAUPreprocess().fit(tr["emb"])
print("equal to asd_lib.scorers.AAUPreprocess:", np.allclose(Xte, lib.transform(te["emb"]), atol=1e-9))
if preprocess == "none":
    Xtr, Xte = tr["emb"].astype(np.float64), te["emb"].astype(np.float64)


# %% [markdown]
# ## 2. KNN from scratch
#
# Cosine distance from each test clip to every training clip, sorted; the score is the distance to the k-th nearest
# ("max-pooling over the neighbours", paper §3.1). Higher = more anomalous.

# %%
# NBVAL_CHECK_OUTPUT
def knn_score(train, test, k):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    dist = 1.0 - b @ a.T
    return np.sort(dist, axis=1)[:, k - 1]

k = min(knn_k, len(Xtr))
mine = knn_score(Xtr, Xte, k)
lib = scorers.make_scorer("knn", preprocess=preprocess, seed=seed, n_neighbors=k).fit(tr["emb"]).decision_function(te["emb"])
assert np.allclose(mine, lib, atol=1e-9), np.abs(mine - lib).max()
print("from-scratch KNN equals asd_lib (k=%d):" % k, np.allclose(mine, lib, atol=1e-9))

# %%
print("AUC on fan, first model:", round(roc_auc_score(te["labels"], mine), 3))
params_knn = {"n_neighbors": knn_k}

# %% [markdown]
# ## Every model and machine, cached
#
# `scorers.score_embeddings` fits one KNN per model and machine on that machine's training embeddings (both domains
# pooled) and writes the test scores plus **calibration** scores: scores of training clips that the scorer did not see
# when it scored them: the authors' held-out split for every scorer (`calibration = "holdout"`: a clone fitted on the
# other clips scores 195 source + 5 target of every 1,000; `"loo"` scores KNN and LDN leave-one-out). Online normalisation and
# decision thresholds use them (`04_normalise_and_fuse`). A quick AUC per machine (all test clips, both domains) shows
# what this scorer alone achieves.

# %%
# by hand with other settings than the system's (an exercise) this writes its own folder, scores/knn~<what differs>
scores = scorers.exercise_scores(L, models, channel, "knn",
                                 scorers.stage_settings(preprocess, calibration, seed, params_knn))
written = scorers.score_embeddings(L.embeddings, scores, models, channel=channel, scorers=("knn",),
                                   preprocess=preprocess, calibration=calibration, seed=seed, force=True,
                                   scorer_params={"knn": params_knn})
print(len(written), "score files under", scores)

# %%
print(scorers.raw_score_aucs(scores, L.embeddings, models, channel, "knn").round(3))

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/scores/<model>/<channel>/knn/<machine>.npz` with keys `test` (n_test,), `calib` (n_calib,),
#   `names`, `calib_names`, `calib_kind`.
#
# ## Summary
#
# - KNN is a distance to the training set: no training, one parameter (k), and a strong baseline on good embeddings.
# - The authors' quantile preprocessing is applied before it; LDN (03d) is the same idea with a local normalisation.
#
# ## Exercises
#
# Exercises 2 and 3 change a setting of this stage. Run by hand with it, the notebook writes its scores to a folder of
# their own, named by what differs (`results/<regime>/scores/knn~n_neighbors=1/`), and prints which; the scores that
# `04_normalise_and_fuse` fuses stay as they are.
#
# 1. Replace the k-th distance by the mean of the k nearest (`pooling="mean"` in `KNNScorer`). Which is better here?
# 2. A machine has few target-domain training clips (10 in the real data, 4 in the demo's `small` preset). What
#    happens to target-domain scores when k exceeds their number? Compare `knn_k = 1` and `knn_k = 20`.
# 3. Run with `preprocess = "none"`. Does the quantile transform help KNN on these embeddings?
