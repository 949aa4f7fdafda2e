# %% [markdown]
# # 03d · Scoring with local density normalisation (LDN / GWRP)
#
# A nearest-neighbour distance divided by how crowded the neighbourhood of that neighbour is, so that sparse regions
# (the target domain) are not penalised for being sparse (paper §3.1, "GWRP"; Wilkinghoff et al. 2025; docs/reference.md §6).

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
ldn_variant = 'aau-gwrp'            # aau-gwrp (authors: 1 - cos, un-normalised GWRP weights) | reference (Wilkinghoff et al.)
ldn_r = 0.98                        # GWRP decay r
ldn_k = 1                           # neighbours of the reference LDN density (ldn_variant: reference, ldn_density: knn)
ldn_density = 'knn'                 # density of the reference LDN: knn (mean of ldn_k nearest) | gwrp (normalised weights ldn_r^(i-1))

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
# ## 1. The authors' GWRP score, from scratch
#
# For every training embedding $y_j$: sort its distances to the other training embeddings ascending and take the
# weighted sum $\rho_j = \sum_i r^{i-1} d_{(i)}$ (GWRP: global weighted ranking pooling, r = 0.98). The score of a
# test clip is $\min_j d(x, y_j) / \rho_j$. The authors use $d = 1 - \cos$, raw embeddings, and do **not** normalise the
# weights; the reference LDN uses $d = \tfrac12(1 - \cos)$ and normalised weights (`ldn_variant = "reference"`).

# %%
# NBVAL_CHECK_OUTPUT
from sklearn.metrics.pairwise import cosine_distances

def gwrp_ldn(train, test, r):
    d_tt = np.sort(cosine_distances(train, train), axis=1)[:, 1:]   # drop the zero distance to itself
    rho = d_tt @ r ** np.arange(d_tt.shape[1]) + 1e-8
    return (cosine_distances(test, train) / rho).min(axis=1)

mine = gwrp_ldn(tr["emb"].astype(np.float64), te["emb"].astype(np.float64), ldn_r)
lib = scorers.LDNScorer(variant="aau-gwrp", r=ldn_r).fit(tr["emb"]).decision_function(te["emb"])
print("from-scratch GWRP-LDN equals asd_lib.scorers.LDNScorer(variant='aau-gwrp'):", np.allclose(mine, lib, rtol=1e-9))


# %% [markdown]
# ## 2. The reference form, and a caution
#
# The reference LDN normalises the weights (a weighted MEAN of distances) or uses the mean of the K nearest. With only
# 10 target training clips (the real data; 4 in the demo), a larger neighbourhood (K ≥ 10 there, r near 1) reaches into
# the source cluster: the target
# clips' densities are then computed from source clips ("cluster exit") and target scores stop meaning anything.
# Compare the AUC per domain for a few settings on this machine:

# %%
def auc_by_domain(score):
    out = {}
    for dom in ("source", "target"):
        sel = (te["domains"] == dom) | (te["labels"] == 1)
        out[dom] = roc_auc_score(te["labels"][sel], score[sel])
    return out

settings = {"aau-gwrp r=%.2f" % ldn_r: scorers.LDNScorer(variant="aau-gwrp", r=ldn_r),
            "reference K=1": scorers.LDNScorer(variant="reference", density="knn", n_neighbors=1),
            "reference K=%d" % min(10, len(tr["emb"]) - 1): scorers.LDNScorer(variant="reference", n_neighbors=min(10, len(tr["emb"]) - 1)),
            "plain 1-NN": scorers.LDNScorer(variant="reference", density="none")}
print(pd.DataFrame({k: auc_by_domain(v.fit(tr["emb"]).decision_function(te["emb"])) for k, v in settings.items()}).T.round(3))

# %%
params_ldn = scorers.scorer_params_from(dict(ldn_variant=ldn_variant, ldn_r=ldn_r, ldn_k=ldn_k, ldn_density=ldn_density))["ldn"]

# %% [markdown]
# ## Every model and machine, cached
#
# `scorers.score_embeddings` fits one LDN per model and machine on that machine's training embeddings (both domains
# pooled) and writes the test scores plus **calibration** scores: scores of training clips that the scorer did not see
# when it scored them: the authors' held-out split for every scorer (`calibration = "holdout"`: a clone fitted on the
# other clips scores 195 source + 5 target of every 1,000; `"loo"` scores KNN and LDN leave-one-out). Online normalisation and
# decision thresholds use them (`04_normalise_and_fuse`). A quick AUC per machine (all test clips, both domains) shows
# what this scorer alone achieves.

# %%
# by hand with other settings than the system's (an exercise) this writes its own folder, scores/ldn~<what differs>
scores = scorers.exercise_scores(L, models, channel, "ldn",
                                 scorers.stage_settings(preprocess, calibration, seed, params_ldn))
written = scorers.score_embeddings(L.embeddings, scores, models, channel=channel, scorers=("ldn",),
                                   preprocess=preprocess, calibration=calibration, seed=seed, force=True,
                                   scorer_params={"ldn": params_ldn})
print(len(written), "score files under", scores)

# %%
print(scorers.raw_score_aucs(scores, L.embeddings, models, channel, "ldn").round(3))

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/scores/<model>/<channel>/ldn/<machine>.npz` with keys `test` (n_test,), `calib` (n_calib,),
#   `names`, `calib_names`, `calib_kind`.
#
# ## Summary
#
# - LDN divides a nearest-neighbour distance by the local density of that neighbour, which puts sparse and dense
#   regions of the training data on one scale.
# - The paper's "GWRP" is the authors' un-normalised variant; the reference method is one parameter away.
#
# ## Exercises
#
# Exercises 1 and 2 change settings of this stage. Run by hand with them, the notebook writes its scores to a folder
# of their own, named by what differs (`results/<regime>/scores/ldn~r=0.5/`), and prints which; the scores that
# `04_normalise_and_fuse` fuses stay as they are.
#
# 1. Sweep `ldn_r` over 0.5, 0.9, 0.98, 0.999 and watch the target-domain AUC. Where does the cluster exit start?
# 2. Switch to `ldn_variant = "reference"` with `ldn_k = 1`. Does the un-normalised sum matter for the ranking of clips
#    of ONE machine? (Hint: how does rho change when every weight is scaled by the same constant?)
# 3. Use the "difference" form (`norm="difference"`). When would d - rho behave better than d / rho?
