# %% [markdown]
# # 02 · Extracting embeddings
#
# From fine-tuned backbones to one vector per clip: token features, L2 normalisation and generalised-mean (GeM)
# pooling, written once per model and channel for every machine (paper §2, Figure 1; docs/reference.md §5).

# %% tags=["parameters"]
data_root = 'results/synth/tiny_seed0'  # the organisers' download: dev_data/raw/<machine>/..., eval_data/raw/<machine>/...
synth_preset = 'tiny'               # empty: real data in data_root | tiny | small | dev-size: generate the synthetic benchmark there
synth_seed = 0                      # seed of the synthetic benchmark (fixed across --seeds repeats)
regime = 'dev'                      # dev | devadd: training data (DEV, or DEV + the additional training set)
results_dir = 'results/smoke'       # everything a run writes (docs/design.md layout); figures go to figures_dir
figures_dir = 'results/smoke/figures'  # save_fig writes <id>.png and <id>.pdf here
seed = 0                            # one seed for training, scorers and splits (--seeds N adds 0..N-1)
device = 'cpu'                      # empty: cuda if available, else cpu | cpu | cuda | cuda:1
ensemble = ['beats@107', 'beats@204', 'sslam@100']  # <backbone>@<epoch>; each backbone trains up to its largest epoch
epoch_scale = 0.01                  # multiplies the epochs in `ensemble` (rounded, at least 1); overlays shrink runs with it
epoch_selection = 'fixed'           # fixed (epochs named in `ensemble`, no test labels) | select-on-test-leaky (authors; uses test labels)
sslam_recipe = 'aau'                # aau (authors: no mean removal, /std, no padding) | eat (canonical EAT preprocessing)
channel = 'ch0'                     # scoring embedding from ch0 (near mic) | ch1 | both
pooling = 'gem'                     # L2-normalised tokens, GeM with p 3 | mean | cls
embed_batch_size = 16               # clips per forward pass when extracting

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
data_root = 'results/synth/small_seed0'
synth_preset = 'small'
results_dir = 'results'
figures_dir = 'figures'
epoch_scale = 0.1

# %%
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from asd_lib import artifacts, data, embed, params as P, plots, scorers
from asd_lib.backbones import load_backbone

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime)
man = P.regime_manifest(data.scan(P.ensure_data(data_root, synth_preset, synth_seed)), regime)
models = L.models(ensemble, epoch_scale, epoch_selection)
machines = sorted(man.loc[man["split"] == "test", "machine"].unique())  # scored machines (devadd: extra train only)
print("models:", models, "| machines:", len(machines))


# %% [markdown]
# ## 1. GeM pooling from scratch
#
# A backbone returns one token per 16×16 patch of the filterbank. The authors' scoring embedding normalises every token
# to unit length, clamps it at 1e-6 and takes the generalised mean with p = 3 over tokens,
# $\big(\frac1N\sum_i x_i^3\big)^{1/3}$ per dimension, which leans towards the largest activations (p = 1 is the mean,
# p → ∞ the max).

# %%
# NBVAL_IGNORE_OUTPUT
def gem(tokens, p=3.0, eps=1e-6):
    x = torch.nn.functional.normalize(tokens, dim=-1).clamp(min=eps)
    return x.pow(p).mean(dim=1).pow(1 / p)

enc = load_backbone(L.checkpoint(models[0]), recipe=sslam_recipe if models[0].startswith("sslam") else None).eval()
wave = torch.from_numpy(data.load_clip(man["path"].iloc[0])[:1])
with torch.no_grad():
    tokens = enc.extract_features(wave)
print(f"tokens: {tokens.shape[0]} clip x {tokens.shape[1]} tokens x {tokens.shape[2]} -> embedding:",
      tuple(gem(tokens).shape))
assert torch.allclose(gem(tokens), embed.pool_tokens(tokens, "gem", enc.kind), atol=1e-6)
print("from-scratch GeM equals asd_lib.embed.pool_tokens:", True)

# %% [markdown]
# ## 2. Every model, every machine
#
# One file per model, channel, machine and split (`emb`, `names`, `labels`, `domains`), recomputed whenever this stage
# runs (the fine-tuned weights may have changed). Scoring uses channel 0, the near microphone, by default; `ch1` and
# `both` are the named alternatives that `08_ablations` compares.

# %%
folders = {}  # model -> the folder this run writes (its own, named by what differs, in an exercise)
for model in models:
    recipe = sslam_recipe if model.startswith("sslam") else None
    folders[model], _ = P.exercise_folder(model, artifacts.embedding_settings(L.embeddings, model, channel),
                                          {"pooling": pooling, "recipe": recipe}, "the embeddings 03-04 read")
    embed.extract_embeddings(man, L.checkpoint(model), L.embeddings, folders[model], channel=channel,
                             pooling=pooling, machines=machines, batch_size=embed_batch_size,
                             device=device or None, recipe=recipe, force=True)
    print(model, "->", L.embedding_dir(folders[model], channel))

# %%
# NBVAL_IGNORE_OUTPUT
z = artifacts.load_embeddings(L.embeddings, folders[models[0]], channel, "fan", "test")
print({k: v.shape for k, v in z.items()}, "| emb dtype:", z["emb"].dtype)
print("labels:", {int(k): int(n) for k, n in zip(*np.unique(z["labels"], return_counts=True))},
      "| domains:", sorted(str(d) for d in set(z["domains"])))
assert len({len(v) for v in z.values()}) == 1 and z["emb"].dtype == np.float32

# %% [markdown]
# ## 3. A first look: do the machines separate, and do anomalies stand out?
#
# Training embeddings of every machine, projected to 2-D (PCA), one colour per machine. `06_paper_figures` draws the
# same per class and domain. Then a first anomaly check: the cosine distance of each test clip to its
# nearest training clip, as an AUC per machine (03a does this properly).

# %%
embs, owner, domains = [], [], []
for m in machines:
    z = artifacts.load_embeddings(L.embeddings, folders[models[-1]], channel, m, "train")
    embs.append(z["emb"]); owner += [m] * len(z["emb"]); domains += list(z["domains"])
fig = plots.embedding_map(np.concatenate(embs), owner, domains, title=f"{models[-1]} {channel}: train clips by machine")
plots.save_fig("embeddings_by_machine");

# %%
# NBVAL_IGNORE_OUTPUT
auc = {}
for m in machines:
    tr, te = (artifacts.load_embeddings(L.embeddings, folders[models[0]], channel, m, s) for s in ("train", "test"))
    if len(set(te["labels"]) - {-1}) == 2:  # machines with ground truth
        knn1 = scorers.KNNScorer(n_neighbors=1).fit(tr["emb"])
        auc[m] = roc_auc_score(te["labels"], knn1.decision_function(te["emb"]))
print(f"{folders[models[0]]} {channel}, 1-NN AUC per machine (0.5 = chance):")
print(pd.Series(auc).round(3).to_string())

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/embeddings/<model>/<channel>/<machine>_{train,test}.npz` with keys `emb` (N, D) float32, `names`,
#   `labels` (0 normal, 1 anomaly, -1 unknown), `domains`.
# - A by-hand run with another pooling or recipe (an exercise): `results/<regime>/embeddings/<model>~<what differs>/`.
# - `figures/embeddings_by_machine`.
#
# ## Summary
#
# - One clip becomes one vector: tokens → unit length → GeM (p = 3).
# - The embedding of each ensemble member is stored once and shared by the online and offline systems.
#
# ## Exercises
#
# 1. Replace GeM by the mean (`pooling = "mean"`) and re-run sections 2 and 3: the embeddings go to their own folder
#    (`<model>~pooling=mean`), and 03-04 keep reading the GeM ones. Compare the 1-NN AUCs with those of the GeM run.
# 2. Why normalise tokens before pooling? Scale one token by 100 and see what GeM does with and without normalising.
# 3. Extract `channel = "both"` (the mean of the two channels' embeddings). Is it closer to ch0 or ch1 in cosine?
