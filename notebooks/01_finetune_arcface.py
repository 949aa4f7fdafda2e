# %% [markdown]
# # 01 · Fine-tuning with ArcFace
#
# The auxiliary classification task that shapes the embedding space: ArcFace written from scratch and checked against
# the library, which layers are trained, and the fine-tuning run that writes the checkpoints of the ensemble (paper §2.1,
# §2.2; docs/reference.md §4-5).

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
beats_checkpoint = 'checkpoints/beats_kit.pt'  # official BEATs file (the paper's) | checkpoints/beats_kit.pt (the kit's, pre-trained) | beats-tiny | beats-base (random)
sslam_checkpoint = 'checkpoints/sslam_kit.pt'  # SSLAM pre-trained (HF folder or fairseq .pt) | checkpoints/sslam_kit.pt (the kit's) | sslam-tiny | sslam-base (random)
sslam_recipe = 'aau'                # aau (authors: no mean removal, /std, no padding) | eat (canonical EAT preprocessing)
trainable = 'aau'                   # aau (BEATs: top 4 + patch LayerNorm + projection + shared bias; SSLAM: top 10) | top_k (paper text) | frozen | all
beats_top_k = 4                     # BEATs layers unfrozen (paper §2.1)
sslam_top_k = 10                    # SSLAM blocks unfrozen (paper §2.1)
classes_with_channel = True         # true: class is machine_sec_domain_attr_ch{c} (90 on dev) | false: without channel (45)
train_channels = [0, 1]             # channels used as training samples
head = 'arcface'                    # arcface (paper §2.2) | softmax
arcface_s = 64.0                    # ArcFace scale s
arcface_m = 0.2                     # ArcFace margin m (radians)
train_pooling = 'mean'              # token pooling during training (authors: mean) | gem | cls
batch_size = 16                     # micro-batch (global under torchrun)
accum = 1                           # gradient accumulation: one optimiser step every `accum` micro-batches
lr_backbone = 6.45e-05              # AdamW learning rate of the backbone
lr_head = 0.00457                   # AdamW learning rate of the ArcFace head
weight_decay = 0.00051              # AdamW weight decay
warmup_epochs = 1.0                 # linear warm-up, then cosine decay
grad_clip = 1.0                     # gradient-norm clip
train_seconds = 1.0                 # training clips cropped / zero-padded to this length (s)
time_shift = 0.1                    # circular time shift, fraction of the clip (authors: up to 10 %)
noise_snr_db = [15.0, 35.0]         # Gaussian noise on the training waveform at an SNR drawn from this range in dB (authors: 15-35); it disables the fbank cache
noise_prob = 0.0                    # probability that a training sample gets that noise (authors: 0.3); 0 switches it off
amp = False                         # bf16 autocast where the device supports it (authors: bf16)
epoch_selection = 'fixed'           # fixed (epochs named in `ensemble`, no test labels) | select-on-test-leaky (authors; uses test labels)

# %% tags=["injected-parameters", "nbval-skip"]
# The demo run's values where they differ from the cell above (CI skips this cell; delete it for the quick run)
data_root = 'results/synth/small_seed0'
synth_preset = 'small'
results_dir = 'results'
figures_dir = 'figures'
epoch_scale = 0.1
batch_size = 32

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

from asd_lib import artifacts, data, finetune, params as P, plots
from asd_lib.backbones import load_backbone

ROOT = plots.setup(seed=seed, figures_dir=figures_dir)
L = artifacts.layout(results_dir, regime)
man = P.regime_manifest(data.scan(P.ensure_data(data_root, synth_preset, synth_seed)), regime)
models = P.resolve_ensemble(ensemble, epoch_scale)
plan = P.training_plan(models)
print("ensemble:", models, "-> train", {b: f"{max(e)} epochs, keep {e}" for b, e in plan.items()})


# %% [markdown]
# ## 1. ArcFace from scratch (paper eq. 1)
#
# For an embedding $x$ and class weights $W_j$, $\cos\theta_j = \hat x \cdot \hat W_j$. ArcFace adds the margin $m$
# to the angle of the TRUE class only and scales every logit by $s$: the true class must win by an angle $m$, which
# packs each class into a tighter cone. When $\theta + m$ would pass $\pi$ the standard implementation falls back to
# $\cos\theta - m\sin(\pi - m)$ so the logit keeps falling as the angle grows.

# %%
# NBVAL_CHECK_OUTPUT
def arcface_logits(emb, W, labels, s, m):
    cos = F.normalize(emb, dim=1) @ F.normalize(W, dim=1).T
    theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    target = torch.where(theta + m < math.pi, torch.cos(theta + m), cos - m * math.sin(math.pi - m))
    one_hot = F.one_hot(labels, W.shape[0]).bool()
    return s * torch.where(one_hot, target, cos)

torch.manual_seed(seed)
head_lib = finetune.ArcFaceHead(dim=8, n_classes=5, s=arcface_s, m=arcface_m)
emb, labels = torch.randn(16, 8), torch.randint(0, 5, (16,))
mine, (lib, _) = arcface_logits(emb, head_lib.weight.detach(), labels, arcface_s, arcface_m), head_lib(emb, labels)
assert torch.allclose(mine, lib, atol=1e-3), (mine - lib).abs().max()
print("from-scratch ArcFace logits equal asd_lib.finetune.ArcFaceHead:", torch.allclose(mine, lib, atol=1e-3))

# %%
theta = torch.linspace(0, math.pi, 200)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(theta, torch.cos(theta), label="softmax target: cos θ")
target = torch.where(theta + arcface_m < math.pi, torch.cos(theta + arcface_m),
                     torch.cos(theta) - arcface_m * math.sin(math.pi - arcface_m))
ax.plot(theta, target, label=f"ArcFace target: cos(θ + {arcface_m})")
ax.set_xlabel("θ (rad) between embedding and its class weight"); ax.legend(fontsize=8)
plots.save_fig("arcface_margin");

# %% [markdown]
# ## 2. What is trained
#
# The paper says it unfreezes "the final 4 layers" of BEATs and 10 of SSLAM. The authors' code trains more for BEATs:
# the top 4 layers **plus** the patch LayerNorm, the projection after the patch embedding, and the relative position
# bias that all layers share (stored in layer 0, updated through layer 11). The kit's default `trainable = "aau"` is the
# code; `"top_k"` is the paper's text (`07_paper_vs_code` compares them). The smoke backbones have 3 layers only, so
# "top 4" is all of them there.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for backbone, ckpt in (("beats", beats_checkpoint), ("sslam", sslam_checkpoint)):
    enc = load_backbone(ckpt, recipe=sslam_recipe if backbone == "sslam" else None)
    total = sum(p.numel() for p in enc.parameters())
    top_k = beats_top_k if backbone == "beats" else sslam_top_k
    for which in ("aau", "top_k", "frozen"):
        names = set(finetune.trainable_names(enc, which, top_k))
        n = sum(p.numel() for k, p in enc.named_parameters() if k in names)
        rows.append({"backbone": backbone, "trainable": which, "tensors": len(names), "parameters": n,
                     "share": round(n / total, 3)})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# ## 2b. The authors' augmentation: noise at 15-35 dB SNR
#
# The authors' training loop adds white Gaussian noise to 30 % of the training clips, at an SNR drawn uniformly from
# 15-35 dB relative to the clip's own power (`noise_snr_db`, `noise_prob`; the paper does not mention it). Below: one
# training clip's BEATs fbank clean and with the strongest noise of that range. The noise fills the quiet high bands
# first. Because every epoch sees different noise, the run cannot reuse cached fbank features: the demo and the smoke
# run switch it off (`noise_prob = 0`) and say what that saves in `params/demo.yaml`.

# %%
import numpy as np

from asd_lib.backbones.fbank import beats_fbank

row = man[man["split"] == "train"].iloc[0]
clean = data.load_clip(row["path"], channels=(0,))[0]
noisy = finetune.add_wave_noise(clean, np.random.default_rng(seed), 0.0, (15.0, 15.0), 1.0)
fb = {name: beats_fbank(torch.from_numpy(w))[0].T.numpy() for name, w in (("clean", clean), ("noisy", noisy))}
lo, hi = np.percentile(fb["clean"], [1, 99])
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True, layout="constrained")
panels = (("clean", fb["clean"], "viridis", (lo, hi)), ("+ noise at 15 dB SNR", fb["noisy"], "viridis", (lo, hi)),
          ("difference (noisy - clean)", fb["noisy"] - fb["clean"], "magma", (0, None)))
for ax, (title, img, cmap, (vmin, vmax)) in zip(axes, panels):
    im = ax.imshow(img, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set(title=f"{row['machine']}: {title}", xlabel="frame (10 ms)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, pad=0.01)
axes[0].set_ylabel("mel bin")
plots.save_fig("augmentation_noise");

# %% [markdown]
# ## 3. Fine-tune each backbone of the ensemble
#
# One run per backbone, up to the largest epoch the ensemble uses, keeping the epochs it names (the paper's DEV systems
# use BEATs epochs 107 and 204 of one run). Features are cached once per regime (`results/<regime>/fbank/`). An
# interrupted run resumes from `last.pt`. Run by hand (JupyterLab) with settings other than those of the run
# already there, it trains into its own folder named by what differs (`beats~arcface_m=0.0`), and 02-04 keep reading
# the system's run; under `asd-run` a changed setting retrains in place, and `asd-run --force` starts over. AdamW with two learning rates
# (backbone, head), linear warm-up then cosine decay, gradient clipping: docs/reference.md §5.
#
# **Two microphones, one at a time.** Each training clip gives two samples, one per channel, each with its own class
# (`..._ch0`, `..._ch1`). The encoder sees one mono channel per sample, in the authors' code and here: it never sees
# both channels together. The paper's account of attention learning the time-of-arrival difference between the two
# microphones therefore cannot happen with this input; what the channel classes can teach is how each microphone's
# view sounds on its own (level, colour, reverberation).

# %%
# the runs of this system, from the parameters above: the same mapping as `asd-finetune --system`
runs = finetune.system_runs(P.namespace_values(globals(), "01_finetune_arcface"))
for backbone, run in runs.items():
    home = L.checkpoint_dir(backbone)  # an exercise gets its own folder; 02-04 keep reading `home`
    run["backbone_id"], changed = P.exercise_folder(backbone, finetune.run_settings(home), run, f"the run in {home}")
    if changed and P.under_runner():
        print(f"{backbone}: the system's settings changed ({P.describe_changes(changed)}): training again")
    run["resume"] = not (P.forced() or (changed and P.under_runner()))  # asd-run --force: start over

# %%
folders = {}
for backbone, run in runs.items():
    try:
        folders[backbone] = finetune.finetune(man, out_dir=L.regime_dir, **run)
    except ValueError as exc:  # the run there learned other classes or clips (the data changed): start over
        print(f"{backbone}: {exc}\n-> the data changed since that run: training again from the start")
        folders[backbone] = finetune.finetune(man, out_dir=L.regime_dir, **{**run, "resume": False})
    print(backbone, "->", folders[backbone], [artifacts.checkpoint_file(folders[backbone], e).name
                                              for e in artifacts.checkpoint_epochs(folders[backbone])])

# %% [markdown]
# ## 4. Training curves

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for backbone, folder in folders.items():
    log = pd.read_csv(folder / "log.csv")
    axes[0].plot(log["epoch"], log["loss"], marker="o", ls="-" if len(log) > 2 else "none", label=backbone)
    axes[1].plot(log["epoch"], log["accuracy"], marker="o", ls="-" if len(log) > 2 else "none", label=backbone)
axes[0].set_title("ArcFace loss", fontsize=9); axes[1].set_title("training accuracy", fontsize=9)
for ax in axes:  # whole epochs only: a run of one or two epochs is a point or two, not a curve
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[1].legend(fontsize=8)
plots.save_fig("finetune_curves");

# %% [markdown]
# ## Artifacts written
#
# - `results/<regime>/checkpoints/<backbone>/epoch_XXX.pt`: the encoder in the official checkpoint format (loadable by
#   the BEATs / EAT reference code), `epoch_XXX.head.pt` (the ArcFace head and its class names), `log.csv`,
#   `config.json` (every setting), `last.pt` (resume state).
# - A by-hand run with other settings (an exercise): `results/<regime>/checkpoints/<backbone>~<what differs>/`, the
#   same files.
# - `results/<regime>/fbank/`: cached filterbank features.
# - `figures/arcface_margin`, `figures/finetune_curves`.
#
# ## Summary
#
# - ArcFace is a softmax over scaled cosines with an angular margin on the true class: a handful of lines.
# - What is trainable is a choice with two readings (paper text vs authors' code); the kit defaults to the code.
# - The ensemble's members are epochs of one run per backbone, named in the parameters (no test labels involved).
#
# ## Exercises
#
# 1. Set `arcface_m = 0.0`: the head becomes a normalised softmax with temperature `s`. Re-run section 3 (the run
#    goes to `beats~arcface_m=0.0`, and 02-04 keep reading the paper's run). Predict the effect on the embeddings,
#    then check it in `08_ablations`.
# 2. Plot the ArcFace loss of a random embedding against θ for m = 0, 0.2 and 0.5. Where does the fall-back start?
# 3. With `trainable = "frozen"` no encoder weight changes, but the head still trains (re-run sections 3 and 4; the run
#    goes to its own folder). What does the loss curve show then, and why is that still useful?
# 4. The authors picked epochs 107 and 204 by their score on the test set. Why does that make their reported numbers
#    optimistic? How would you pick epochs without test labels?
