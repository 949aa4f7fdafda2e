# %% [markdown]
# # 03c · Scoring with an autoencoder
#
# Reconstruction instead of distance: a small autoencoder trained on the machine's training embeddings, score = the
# reconstruction error of a test clip (paper §3.1, "AutoEncoders", bottleneck 32; docs/reference.md §6).

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
ae_bottleneck = 32                  # AE bottleneck (D -> D/2 -> 32 -> D/2 -> D)
ae_epochs = 10                      # AE epochs at most (early stop, patience below)
ae_patience = 5                     # AE early-stopping patience (epochs without improvement)
ae_lr = 0.001                       # AE AdamW learning rate
ae_batch_size = 64                  # AE batch size

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
results_dir = 'results'
figures_dir = 'figures'
epoch_scale = 0.1
ae_epochs = 20

# %%
import numpy as np

from asd_lib import artifacts, plots, scorers

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime)
models = L.models(ensemble, epoch_scale, epoch_selection)
tr = artifacts.load_embeddings(L.embeddings, models[0], channel, "fan", "train")
te = artifacts.load_embeddings(L.embeddings, models[0], channel, "fan", "test")
print(models, "| fan:", tr["emb"].shape, "train,", te["emb"].shape, "test")

# %% [markdown]
# ## 1. The network and its score, from scratch
#
# The authors' network is D → D/2 → 32 → D/2 → D with LeakyReLU(0.1) after the first and third layers and spectral
# normalisation on the first three (each weight matrix divided by its largest singular value, estimated by power
# iteration with vectors `u`, `v`). After training with the library, the forward pass and the per-clip mean squared error
# fit in a few lines of numpy.

# %%
# NBVAL_CHECK_OUTPUT
ae_kw = dict(bottleneck=ae_bottleneck, max_epochs=ae_epochs, patience=ae_patience, lr=ae_lr, batch_size=ae_batch_size)
pipe = scorers.make_scorer("ae", preprocess=preprocess, seed=seed, **ae_kw).fit(tr["emb"])
ae = pipe[-1] if hasattr(pipe, "steps") else pipe
X = pipe[:-1].transform(te["emb"]) if hasattr(pipe, "steps") else te["emb"].astype(np.float64)

def reconstruct(p, x):
    for name in ("enc1", "enc2", "dec1", "dec2"):
        W, b = p[name + ".weight"][0], p[name + ".bias"][0]
        if name != "dec2":
            W = W / (p[name + ".u"][0] @ W @ p[name + ".v"][0])
        x = x @ W.T + b
        x = np.where(x > 0, x, 0.1 * x) if name in ("enc1", "dec1") else x
    return x

mine = ((X - reconstruct(ae.params_, X)) ** 2).mean(axis=1)
print("from-scratch AE score equals asd_lib.scorers.AEScorer:", np.allclose(mine, pipe.decision_function(te["emb"]), rtol=1e-3))

# %%
import matplotlib.pyplot as plt
print("epochs trained (early stopping):", ae.n_epochs_)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.arange(1, len(ae.loss_curve_) + 1), ae.loss_curve_, marker=".")
ax.set_xlabel("epoch"); ax.set_ylabel("training MSE"); ax.set_title("fan, first model", fontsize=9)
plots.save_fig("ae_loss_curve");

# %% [markdown]
# The library trains the autoencoders of all models and machines (and their calibration splits) as one stacked batched
# model (`scorers.train_autoencoders`): the same recipe per autoencoder, a fraction of the Python overhead.

# %%
params_ae = {"bottleneck": ae_bottleneck, "max_epochs": ae_epochs, "patience": ae_patience, "lr": ae_lr,
             "batch_size": ae_batch_size}

# %% [markdown]
# ## Every model and machine, cached
#
# `scorers.score_embeddings` fits one autoencoder per model and machine on that machine's training embeddings (both domains
# pooled) and writes the test scores plus **calibration** scores: scores of training clips that the scorer did not see
# when it scored them: the authors' held-out split for every scorer (`calibration = "holdout"`: a clone fitted on the
# other clips scores 195 source + 5 target of every 1,000; `"loo"` scores KNN and LDN leave-one-out). Online normalisation and
# decision thresholds use them (`04_normalise_and_fuse`). A quick AUC per machine (all test clips, both domains) shows
# what this scorer alone achieves.

# %%
# by hand with other settings than the system's (an exercise) this writes its own folder, scores/ae~<what differs>
scores = scorers.exercise_scores(L, models, channel, "ae",
                                 scorers.stage_settings(preprocess, calibration, seed, params_ae))
written = scorers.score_embeddings(L.embeddings, scores, models, channel=channel, scorers=("ae",),
                                   preprocess=preprocess, calibration=calibration, seed=seed, force=True,
                                   scorer_params={"ae": params_ae})
print(len(written), "score files under", scores)

# %%
print(scorers.raw_score_aucs(scores, L.embeddings, models, channel, "ae").round(3))

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/scores/<model>/<channel>/ae/<machine>.npz` with keys `test` (n_test,), `calib` (n_calib,),
#   `names`, `calib_names`, `calib_kind`.
#
# ## Summary
#
# - An autoencoder learns to reconstruct normal embeddings; a clip it reconstructs badly is unusual.
# - With a few hundred training clips per machine the network is tiny and early stopping ends training quickly.
#
# ## Exercises
#
# Exercise 2 changes a setting of this stage. Run by hand with it, the notebook writes its scores to a folder of their
# own, named by what differs (`results/<regime>/scores/ae~bottleneck=4/`), and prints which; the scores that
# `04_normalise_and_fuse` fuses stay as they are.
#
# 1. Remove the spectral normalisation (edit `reconstruct` and train your own torch version). Does the score get better or worse?
# 2. Set `ae_bottleneck = 4` and `= 128`. Where is the sweet spot on this benchmark?
# 3. Why does the held-out calibration split matter more for the AE than for KNN?
