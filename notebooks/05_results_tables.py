# %% [markdown]
# # 05 · Results tables
#
# The paper's Table 1 (the four systems) and Table 2 (the baselines) rebuilt from the kit's submissions, each with the
# official DCASE score and the paper-style score side by side, beside the paper's own numbers (paper §5; docs/reference.md §2, §8).

# %% tags=["parameters"]
results_dir = 'results/smoke'       # everything a run writes (docs/design.md layout); figures go to figures_dir
figures_dir = 'results/smoke/figures'  # save_fig writes <id>.png and <id>.pdf here
seed = 0                            # one seed for training, scorers and splits (--seeds N adds 0..N-1)
data_root = 'results/synth/tiny_seed0'  # the organisers' download: dev_data/raw/<machine>/..., eval_data/raw/<machine>/...
eval_ground_truth = ''              # the organisers' ground-truth folder for the evaluation set; empty: <data_root>/ground_truth when it exists

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
results_dir = 'results'
figures_dir = 'figures'
data_root = 'results/synth/small_seed0'

# %%
from pathlib import Path

import pandas as pd

from asd_lib import artifacts, data, plots, tables

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
out = artifacts.tables_dir(results_dir)

# %% [markdown]
# ## Two metrics, side by side
#
# - **official**: per machine, AUC(source) and AUC(target) each use ALL anomalous clips as positives against that
#   domain's normals; pAUC (FPR ≤ 0.1, McClish-standardised) over all clips; the score is the harmonic mean of 21 numbers.
# - **paper-style** (the authors' code, NOT official): AUC per domain with that domain's anomalies only, their mean per
#   machine, and Ω = harmonic mean of 14 numbers (7 mean AUCs + 7 pAUCs). This formula reproduces every Ω of the
#   paper's Table 1 exactly.
# - **paper**: the numbers printed in the paper, on the real development set with the real checkpoints. The kit's
#   default run is synthetic data with tiny backbones: compare the *pattern*, not the values.
#
# With several seed repeats (`python -m asd_lib.run ... --seeds 3`) a cell reads mean ± sd.

# %%
tidy = tables.collect(results_dir)
if tidy.empty:  # nothing to tabulate: say what makes the inputs instead of writing empty tables over older ones
    raise RuntimeError(f"no system submissions under {results_dir}: run the systems first, e.g. `asd-run --system all "
                       "--params params/demo.yaml` (or notebooks 00-04 with the same results_dir)")
print("systems found:", sorted(tidy["system"].unique()),
      "| seed repeats:", tidy.groupby("system")["seed"].nunique().to_dict())
labels = tables.system_labels(results_dir)  # a leaky run is marked LEAKY
t1 = tables.table1(tidy, labels=labels)
shown = [labels[s] for s in labels if s in set(tidy.get("system", []))]
t1[shown] if shown else t1   # every system is in the written files; here only those that ran

# %%
notes = tables.spread_notes(tidy)
print("\n".join(tables.describe_spread(notes)) or "fewer than two systems: no comparison")

# %%
base = tables.collect(artifacts.baseline_dir(results_dir), names=("MAHALA", "MSE"), sub="")
t2 = tables.table2(base)
t2

# %% [markdown]
# ## Table 1, evaluation-set block
#
# The DEV+ADD systems also score the evaluation set (the five additional machines' test clips; notebook 04, section 6).
# The paper reports no evaluation-set numbers. With the synthetic benchmark's ground truth these are measured like the
# development set; on real data they appear once the organisers publish their labels.

# %%
gt = Path(eval_ground_truth) if eval_ground_truth else Path(data_root) / "ground_truth"
ev = (tables.collect(results_dir, names=tables.EVAL_SYSTEMS, machines=data.ADD_MACHINES, sub="eval_submission",
                     ground_truth=gt) if gt.is_dir() else pd.DataFrame())
t1_eval = tables.table1_eval(ev, data.ADD_MACHINES) if len(ev) else None
print("evaluation-set submissions found:", sorted(ev["system"].unique()) if len(ev) else "none (DEV+ADD systems write them)")
t1_eval

# %%
paths = tables.write(t1, tables.with_paper(tidy, "table1"), out, "table1",
                     caption="Table 1: AUC / pAUC (%) per machine; official and paper-style scores; paper's numbers")
paths.update({"t2_" + k: v for k, v in tables.write(t2, tables.with_paper(base, "table2"), out, "table2",
              caption="Table 2: baselines, AUC / pAUC; official and paper-style scores; paper's numbers").items()})
if t1_eval is not None:
    paths.update({"t1_eval_" + k: v for k, v in tables.write(t1_eval, ev, out, "table1_eval",
                  caption="Table 1, evaluation set: DEV+ADD systems on the 5 additional machines, AUC / pAUC (%); "
                          "no paper numbers exist").items()})
if len(notes):
    notes.to_csv(out / "spread.csv", index=False)
for k, v in paths.items():
    print(k, "->", v)

# %% [markdown]
# ## Artifacts written
#
# - `results/tables/table1.{csv,md,tex}`, `results/tables/table2.{csv,md,tex}` (the CSV holds mean, sd and count per
#   cell, the Markdown and LaTeX the paper's layout), `results/tables/spread.csv` when several systems are present.
#
# ## Summary
#
# - The same submissions give two different "scores": say which formula a number uses.
# - The paper's "+10.69 over the baseline" compares its Ω (paper-style) with the baseline's printed Ω (neither
#   formula); on one formula the gap is different (`07_paper_vs_code`).
#
# ## Exercises
#
# 1. Which system wins on the official score, which on the paper-style score? Can the ranking flip?
# 2. Run `python -m asd_lib.run --system all --params params/demo.yaml --seeds 3`. Which differences between systems
#    survive the seed spread?
# 3. Recompute one machine's official AUC(source) by hand from its submission CSV with `sklearn.metrics.roc_auc_score`.
