# %% [markdown]
# # 00 · Data and labels
#
# What a DCASE 2026 Task 2 dataset looks like on disk, how a file name carries its labels, how the paper builds its
# 90 classes from machine, domain, attributes and microphone channel, and what the machines sound like on the near and
# the far microphone (paper §1, §2.1; docs/reference.md §1).

# %% tags=["parameters"]
data_root = 'results/synth/tiny_seed0'  # the organisers' download: dev_data/raw/<machine>/..., eval_data/raw/<machine>/...
synth_preset = 'tiny'               # empty: real data in data_root | tiny | small | dev-size: generate the synthetic benchmark there
synth_seed = 0                      # seed of the synthetic benchmark (fixed across --seeds repeats)
regime = 'dev'                      # dev | devadd: training data (DEV, or DEV + the additional training set)
results_dir = 'results/smoke'       # everything a run writes (docs/design.md layout); figures go to figures_dir
figures_dir = 'results/smoke/figures'  # save_fig writes <id>.png and <id>.pdf here
seed = 0                            # one seed for training, scorers and splits (--seeds N adds 0..N-1)

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
data_root = 'results/synth/small_seed0'
synth_preset = 'small'
results_dir = 'results'
figures_dir = 'figures'

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Audio, display
from scipy.signal import spectrogram

from asd_lib import artifacts, data, params as P, plots

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime)

# %% [markdown]
# ## 1. The layout on disk
#
# The organisers ship `dev_data/raw/<machine>/{train,test}/` (7 development machines, labelled test clips) and
# `eval_data/raw/<machine>/{train,test}/` (5 other machines; their training clips are the *additional* training set,
# the "ADD" of DEV+ADD; their test clips are unlabelled). With `synth_preset` set, the kit first generates a synthetic
# benchmark in exactly this layout (`asd_lib.synth`), so everything below runs without the real data.

# %%
# NBVAL_CHECK_OUTPUT
root = P.ensure_data(data_root, synth_preset, synth_seed)
for sub in ("dev_data/raw", "eval_data/raw"):
    print(f"{sub}:", ", ".join(sorted(p.name for p in (root / sub).iterdir() if p.is_dir())))
fan = root / "dev_data" / "raw" / "fan"
print("fan/train:", sorted(p.name for p in (fan / "train").iterdir())[:2], "...")
print("fan/attributes_00.csv header:", (fan / "attributes_00.csv").read_text().splitlines()[0])

# %% [markdown]
# ## 2. A file name carries the labels
#
# `section_00_<domain>_<split>_<label>_<index>_<attributes>.wav`: the domain (source: the condition with plenty of
# training data; target: a shifted condition with 10 training clips), the split, normal/anomaly (test only) and the
# attribute tail, kept as found (`spd_2`, `noAttribute`, `car_B1_spd_2_mic_2_mic_1`). Evaluation-set test names are
# `section_00_<index>.wav`: their labels come in separate ground-truth files.

# %%
# NBVAL_CHECK_OUTPUT
for name in ("fan/test/section_00_target_test_anomaly_0003_spd_2.wav", "section_00_0012.wav"):
    c = data.parse_name(name)
    print(f"{c.file_name}: domain={c.domain} split={c.split} label={c.label} attributes={c.attributes!r}")

# %% [markdown]
# ## 3. The manifest: one row per clip
#
# `data.scan` reads a data root into a table; the regime decides which rows train the models: `dev` = the development
# set only, `devadd` = plus the additional training set, and the evaluation set's unlabelled test clips that a
# DEV+ADD system scores for the organisers (notebook 04).

# %%
# NBVAL_IGNORE_OUTPUT
manifest = data.scan(root)
counts = manifest.groupby(["set", "split", "label"]).size().unstack(fill_value=0)
print(counts)
assert counts.loc[("dev", "test"), "anomaly"] == counts.loc[("dev", "test"), "normal"]  # balanced test sets
man = P.regime_manifest(manifest, regime)
print(f"regime {regime!r}: {len(man)} clips,", man["machine"].nunique(), "machines")

# %%
L.regime_dir.mkdir(parents=True, exist_ok=True)
tmp = L.manifest.with_name(".manifest.csv.tmp")
man.assign(path=[str(Path(p).relative_to(root.resolve())) for p in man["path"]]).to_csv(tmp, index=False)
tmp.replace(L.manifest)
print("wrote", L.manifest)

# %% [markdown]
# ## 4. Classes: machine × domain × attributes × channel
#
# The paper fine-tunes its backbones to classify each training clip into
# `{machine}_sec{NN}_{domain}_{attributes}`, and adds `_ch0`/`_ch1` because it feeds each channel as its own sample
# (paper §2.1: "90 unique class labels" = 45 × 2 on the real dev set). The classes come from TRAINING clips only: a test
# clip may carry an attribute value never seen in training (the real gearboxEmu has both `pro_Y` and `pro_y`).
# The paper's example `ToyCarEmu_sec00_source_car.B1_spd_2.ch0` abbreviates the real tail
# `car_B1_spd_2_mic_2_mic_1`; the authors' code uses the full string, and so does the kit. The committed outputs
# come from the `tiny` preset, which keeps 2 target training clips per machine: target attribute combinations
# missing from training give no class, so it counts fewer than 45 / 90 (`small` and `dev-size` have them all).

# %%
# NBVAL_IGNORE_OUTPUT
train = man[man["split"] == "train"]
with_ch, without = data.class_labels(train, channels=True), data.class_labels(train, channels=False)
print(f"{len(without)} classes without the channel, {len(with_ch)} with it")
assert len(with_ch) == 2 * len(without)  # every class on both microphones
print("e.g.", with_ch[0], "|", with_ch[-1])
print(train.groupby("machine")["attributes"].nunique().rename("attribute values per machine").to_string())


# %% [markdown]
# ## 5. Heard: one clip, two microphones
#
# Channel 0 is the near microphone (the direct sound of the machine), channel 1 the far one: later, quieter, low-passed
# by distance, smeared by the room and with more factory noise (SYNTH_NOTES). One second of each:

# %%
def clip(machine, domain, label, split="test"):
    rows = manifest[(manifest.machine == machine) & (manifest.split == split) & (manifest.domain == domain)
                    & (manifest.label == label)]
    row = rows.sort_values("file_name").iloc[0]
    return data.load_clip(row.path), row.file_name

wave, name = clip("fan", "source", "normal")
print(name, wave.shape)
display(Audio(wave[0, :16000], rate=16000), Audio(wave[1, :16000], rate=16000))


# %% [markdown]
# ## 6. Seen: near vs far, source vs target, normal vs anomaly

# %%
def log_spec(x):
    f, t, S = spectrogram(x, fs=16000, nperseg=512, noverlap=256)
    S = S[:256].reshape(128, 2, -1).mean(axis=1)          # 128 bands of 62.5 Hz
    return f[:256:2] / 1000, t, 10 * np.log10(S + 1e-12)

cases = [("source", "normal"), ("target", "normal"), ("source", "anomaly")]
specs = {(i, ch): log_spec(clip("fan", dom, lab)[0][ch]) for i, (dom, lab) in enumerate(cases) for ch in (0, 1)}
top = max(S.max() for _, _, S in specs.values())  # one colour scale for all panels: levels compare across them
fig, axes = plt.subplots(len(cases), 2, figsize=(7.5, 4.8), sharex=True, sharey=True, layout="constrained")
for (i, ch), (f, t, S) in specs.items():
    im = axes[i, ch].imshow(S, origin="lower", aspect="auto", extent=(t[0], t[-1], f[0], f[-1]),
                            vmin=top - 80, vmax=top, interpolation="nearest")
    axes[i, ch].grid(False)
    axes[i, ch].set_title(f"fan, {cases[i][0]} {cases[i][1]}, {'near (ch0)' if ch == 0 else 'far (ch1)'}", fontsize=8)
fig.colorbar(im, ax=axes, label="dB")
axes[-1, 0].set_xlabel("s"); axes[1, 0].set_ylabel("kHz")
plots.save_fig("data_spectrograms");

# %% [markdown]
# At this scale the panels look alike. Averaged over time, each panel becomes one spectrum, and the differences show
# band by band: how much the far microphone's air path and room change the machine's spectrum, how much louder or
# differently coloured the target hall is, and what a fault adds or removes. These are single clips, and clips of one
# condition spread too: section 7 averages many.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True, layout="constrained")
freq = specs[(0, 0)][0]
for ch, style in ((0, "-"), (1, "--")):
    axes[0].plot(freq, specs[(0, ch)][2].mean(axis=1), style, lw=1, label="near (ch0)" if ch == 0 else "far (ch1)")
for i, (dom, lab) in enumerate(cases):
    axes[1].plot(freq, specs[(i, 0)][2].mean(axis=1), lw=1, label=f"{dom} {lab}")
axes[0].set_title("fan, source normal: near vs far", fontsize=9)
axes[1].set_title("fan, near mic: source vs target, normal vs anomaly", fontsize=9)
for ax in axes:
    ax.set_xlabel("kHz"); ax.legend(fontsize=7)
axes[0].set_ylabel("mean level (dB)")
plots.save_fig("data_spectra_compared");

# %% [markdown]
# ## 7. The faults, and how far the far microphone hears them
#
# The synthetic benchmark records which fault and severity each anomalous clip has (`clip_info.csv`; the real data does
# not). Mean spectra of normal clips and of each fault show which part of the spectrum a fault moves.

# %%
# NBVAL_IGNORE_OUTPUT
info_path = root / "clip_info.csv"
info = pd.read_csv(info_path) if info_path.exists() else None
if info is not None:
    faults = info[info["label"] == "anomaly"].groupby(["machine", "fault"])["severity"].agg(["count", "mean"])
    print(faults.round(3).to_string())

# %%
if info is not None:
    machine = "bearingEmu"
    rows = info[(info.machine == machine) & (info.split == "test") & (info.domain == "source")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ch, ax in enumerate(axes):
        for fault, g in rows.fillna({"fault": "normal"}).groupby("fault"):
            spectra = [log_spec(data.load_clip(root / p)[ch])[2].mean(axis=1) for p in g["path"]]
            ax.plot(log_spec(np.zeros(512))[0], np.mean(spectra, axis=0), lw=1, label=fault)
        ax.set_title(f"{machine}, mean spectrum, {'near' if ch == 0 else 'far'} mic", fontsize=9)
        ax.set_xlabel("kHz")
    axes[0].set_ylabel("dB"); axes[1].legend(fontsize=7)
    plots.save_fig("data_fault_spectra");

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/manifest.csv`: the clips this regime uses (paths relative to `data_root`).
# - `figures/data_spectrograms.{png,pdf}`, `figures/data_spectra_compared.{png,pdf}`,
#   `figures/data_fault_spectra.{png,pdf}` (smoke runs: under
#   `results/smoke/figures/`).
# - With `synth_preset` set, the synthetic benchmark itself in `data_root` (reused when it exists).
#
# ## Summary
#
# - The file name is the label: domain, split, normal/anomaly and attributes, parsed token by token.
# - The paper's classes are built from training clips only, one per machine, domain, attribute string and channel.
# - The far microphone hears the machine later, quieter and duller, with more room and noise: the two channels are
#   two views of one event, which is what the channel in the class label asks the network to tell apart.
#
# ## Exercises
#
# 1. Set `regime = "devadd"` and re-run sections 3 and 4 (the manifest of section 3 decides which clips
#    section 4 counts). How many classes do the additional machines add?
# 2. Listen to an anomalous `bearingEmu` clip on both channels. Which faults can you still hear on the far microphone?
# 3. Using `clip_info.csv`, find the fault with the lowest mean severity. Predict which machine will be hardest for the
#    detectors, and check your guess in `05_results_tables`.
# 4. Why must classes come from the training clips only? Write a test name whose attribute value is absent from
#    training, and say what would break if classes were built from test names.
