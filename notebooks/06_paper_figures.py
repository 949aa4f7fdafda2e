# %% [markdown]
# # 06 · The paper's figures, from the kit's own results
#
# Figure 1 (the pipeline) drawn from the system's parameters, then what the paper only describes: score distributions,
# ROC curves, the embedding space, each scorer against the fusion, and online against offline (paper §3, §5).

# %% tags=["parameters"]
system = 'dev_offline'              # dev_online | dev_offline | devadd_online | devadd_offline (set by the system file)
regime = 'dev'                      # dev | devadd: training data (DEV, or DEV + the additional training set)
results_dir = 'results/smoke'       # everything a run writes (docs/design.md layout); figures go to figures_dir
figures_dir = 'results/smoke/figures'  # save_fig writes <id>.png and <id>.pdf here
seed = 0                            # one seed for training, scorers and splits (--seeds N adds 0..N-1)
ensemble = ['beats@107', 'beats@204', 'sslam@100']  # <backbone>@<epoch>; each backbone trains up to its largest epoch
epoch_scale = 0.01                  # multiplies the epochs in `ensemble` (rounded, at least 1); overlays shrink runs with it
epoch_selection = 'fixed'           # fixed (epochs named in `ensemble`, no test labels) | select-on-test-leaky (authors; uses test labels)
channel = 'ch0'                     # scoring embedding from ch0 (near mic) | ch1 | both
fusion_mode = 'offline'             # offline (rank / n) | online (z-score with held-out calibration constants)
scorers = ['knn', 'gmm', 'ae', 'ldn']  # scorers fused (online drops gmm)

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
results_dir = 'results'
figures_dir = 'figures'
epoch_scale = 0.1

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from asd_lib import artifacts, data, fusion, plots, run, submission, tables

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime, system)
models = L.models(ensemble, epoch_scale, epoch_selection)
print(system, models, "| figures ->", plots.figures_dir())

# %% [markdown]
# ## 1. The pipeline (the paper's Figure 1)
#
# Drawn from this system's parameters (its ensemble, its scorers, its normalisation) and the runner's stage list, so
# the figure cannot drift from the code.

# %%
stages = [n.split("_")[0] for n, scope in run.NOTEBOOKS if scope in ("regime", "system")]
norm = "rank / n" if fusion_mode == "offline" else "z (calibrated)"
fig = plots.pipeline_figure(models, scorers, norm, stages)
plots.save_fig("fig1_pipeline");

# %% [markdown]
# ## 2. Fused scores: normal vs anomalous, per machine and domain

# %%
rows = []
for machine in submission.submitted_machines(L.submission):
    names, fused, _ = submission.read_submission(L.submission, machine)
    for name, score in zip(names, fused):
        c = data.parse_name(name)
        rows.append({"machine": machine, "domain": c.domain, "label": c.label, "score": score})
scores = pd.DataFrame(rows)
print(scores.groupby(["label", "domain"]).size().to_string() if len(scores) else "no submission yet: run 04 first")

# %%
fig = plots.score_distributions(scores)
plots.save_fig("score_distributions");

# %% [markdown]
# ## 3. ROC curves
#
# Each panel uses one domain's normal clips as negatives and ALL anomalous clips as positives, as the official AUC does;
# the grey band is the FPR range of the pAUC (≤ 0.1).

# %%
fig = plots.roc_curves(scores)
plots.save_fig("roc_curves");

# %% [markdown]
# ## 4. The embedding space: classes and domains
#
# One machine's training and test embeddings from the first model of the ensemble, projected with PCA. Colour = the
# attribute string (the class without machine and domain); triangles = target domain; anomalous test clips are their
# own colour. Fine-tuning should make the classes compact and push anomalies away from them.

# %%
machine = "gearboxEmu"
emb, cls, dom = [], [], []
for split in ("train", "test"):
    z = artifacts.load_embeddings(L.embeddings, models[0], channel, machine, split)
    emb.append(z["emb"])
    cls += ["anomaly" if lab == 1 else data.parse_name(n).attributes for n, lab in zip(z["names"], z["labels"])]
    dom += [str(d) for d in z["domains"]]
fig = plots.embedding_map(np.concatenate(emb), cls, dom, title=f"{machine}, {models[0]}: class (colour), target (triangle)")
plots.save_fig("embeddings_classes_domains");

# %% [markdown]
# ## 5. Each scorer alone against the fusion
#
# Every scorer alone (rank-normalised, mean over the models) and the three pooling rules, scored with the official
# metric on this regime's raw scores.

# %%
variants = {f"{s} alone": ([s], "min") for s in ["knn", "gmm", "ae", "ldn"]}
variants.update({f"fused ({pool})": (["knn", "gmm", "ae", "ldn"], pool) for pool in ("min", "mean", "max")})
rows = []
for name, (sc, pool) in variants.items():
    fused = fusion.fuse_offline(L.scores, models, sc, channel, fusion=pool)
    folder = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    r = tables.evaluate_fused(fused, L.ablations("fusion", folder))
    rows.append({"variant": name, **r})
by_scorer = pd.DataFrame(rows).set_index("variant")
print(by_scorer.round(3).to_string())

# %%
long = by_scorer[["official score", "paper-style Ω"]].reset_index().melt("variant", var_name="score")
fig = plots.bars(long, "variant", "value", "score", title=f"{regime}: each scorer alone vs fused (offline ranks)")
plots.save_fig("ablation_scorers_vs_fused");

# %% [markdown]
# ## 6. Online against offline
#
# Per machine official AUC (mean of source and target) of every system found under `results_dir`.

# %%
tidy = tables.collect(results_dir)
if len(tidy):
    per = tidy[(tidy.block == "official") & (tidy.metric == "AUC") & tidy.row.isin(tables.MACHINES)]
    per = per.groupby(["system", "row"], as_index=False)["value"].mean()
    per["system"] = per["system"].map(tables.SYSTEM_LABELS)
    fig = plots.bars(per.rename(columns={"row": "machine", "value": "AUC"}), "machine", "AUC", "system",
                     title="official AUC per machine: online vs offline, DEV vs DEV+ADD")
    plots.save_fig("online_vs_offline");

# %% [markdown]
# ## Artifacts written
#
# `figures/` (smoke runs: `results/smoke/figures/`): `fig1_pipeline`, `score_distributions`, `roc_curves`,
# `embeddings_classes_domains`, `ablation_scorers_vs_fused`, `online_vs_offline` (PNG and PDF), and the submissions of
# each variant under `results/<regime>/ablations/fusion/`. The near-vs-far channel figure comes from `08_ablations`.
#
# ## Summary
#
# - Every figure is regenerated from `results/` by this notebook; none is drawn by hand.
# - The fused score separates normal from anomalous clips unevenly across machines and domains: the ROC curves show
#   where the pAUC (low false-positive rates) is lost.
#
# ## Exercises
#
# 1. Redraw the embedding map for the last model of the ensemble (an SSLAM model). Do its classes look more compact?
# 2. Which machine has the largest gap between source and target ROC curves? Relate it to `00_data_and_labels`.
# 3. In section 5, is min-pooling the best rule on this benchmark? Is it on every machine?
