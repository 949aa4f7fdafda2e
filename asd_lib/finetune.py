"""ArcFace fine-tuning of the backbones on machine/section/domain/attribute(/channel) classes.

Introduced in notebook ``01_finetune_arcface`` (paper §2.1-2.2, docs/reference.md §5). One entry point, ``finetune``,
runs on one process or under ``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on CUDA):

    python -m asd_lib.finetune --data DIR --backbone beats-tiny --out results/dev --epochs 2
    torchrun --nproc_per_node 2 -m asd_lib.finetune --data DIR --backbone beats-tiny --out results/dev ...

Outputs (docs/design.md, "Stages shared between systems"), under ``out_dir`` = ``results/<regime>``:

    fbank/<recipe>/<machine>_train_d<dur>s_ch<chs>.npy (+ .json)    cached fbank, computed once per regime + recipe
    checkpoints/<backbone_id>/epoch_XXX.pt                          official checkpoint format (encoder.save)
    checkpoints/<backbone_id>/epoch_XXX.head.pt                     the head (weight, classes) of that epoch (+ the
                                                                    channel embedding of a joint-channel run)
    checkpoints/<backbone_id>/last.pt                               full training state for resume
    checkpoints/<backbone_id>/log.csv, config.json                  per-epoch log; every switch of the run

Epochs are numbered from 1 (``epoch_001.pt`` is the state after the first epoch); ``epoch_000.pt`` is the
untouched pre-trained encoder, written for a frozen run or when 0 is in ``keep_epochs``.

Choices worth knowing:

- Each training clip gives one sample per channel in ``train_channels``; with ``classes_with_channel`` the class
  name carries ``_ch{c}`` (90 classes on dev), otherwise not (45 classes, both channels still used as samples).
- ``channel_input='joint'`` (the kit's experiment, not the paper's or the authors'; BEATs only): one sample per clip
  holding both channels, whose patch tokens share one sequence with a learned channel embedding
  (``asd_lib.backbones.joint``), on the 45 channel-free classes. The time shift and the noise of a sample are the
  same draws for both channels (one roll, one fbank-noise array, one waveform-noise decision, SNR and realisation),
  so the time alignment between the microphones is kept.
- Clips are cropped or zero-padded to ``duration`` seconds from their start (deterministic, so cacheable).
- Waveform noise: ``noise_std`` (fixed std) or ``noise_snr_db=(lo, hi)`` (the authors' form: SNR drawn per sample,
  applied with probability ``noise_prob``).
- Time shift is a circular roll of the fbank frames (the same as rolling the waveform up to the 25 ms window at
  the seam), so it works on cached features. Gaussian noise on the *waveform* (``noise_std``) changes the fbank
  of every sample in every epoch and so disables the fbank cache; ``fbank_noise_std`` adds the noise to the
  normalised fbank instead and keeps the cache. Both are drawn per sample from (seed, epoch, sample index), so
  they do not depend on the batch, the process count or a resume.
- ``select-on-test-leaky`` scores each saved epoch on the labelled test clips and keeps the best: that is the
  authors' selection and it uses test labels (a leak); the default ``fixed`` keeps the epochs named in params.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from asd_lib import logs
from asd_lib import params as P
from asd_lib.artifacts import LEAKY_SELECTION, checkpoint_dir, checkpoint_epochs, checkpoint_file, head_file, layout
from asd_lib.embed import POOLINGS, pool_tokens
from asd_lib.fsutil import atomic_torch_save, atomic_write_text, file_sha256, folder_lock
from asd_lib.progress import bar as progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "ArcFaceHead",
    "SoftmaxHead",
    "FinetuneConfig",
    "TRAINABLE_SETS",
    "CHANNEL_INPUTS",
    "trainable_names",
    "apply_trainable",
    "switch_overrides",
    "cache_fbank",
    "finetune",
    "load_head",
    "main",
]

TRAINABLE_SETS = ("aau", "aau-beats", "top_k", "frozen", "all")
CHANNEL_INPUTS = ("separate", "joint")
DEFAULT_TOP_K = {"beats": 4, "eat": 10}
SAMPLE_RATE = 16000
FIXED_PARAMETERS = frozenset({"fixed_positional_encoder.positions"})
_LAYER_RE = re.compile(r"^(encoder\.layers|blocks)\.(\d+)\.")


class _InjectedCrash(RuntimeError):
    """Raised by the test hook ``_crash_after_step`` to simulate a run killed mid-epoch."""


# --------------------------------------------------------------------------------------------- heads


class ArcFaceHead(nn.Module):
    """Additive angular margin head (Deng et al., ArcFace): logits s*cos(theta + m) for the target class.

    ``weight`` is (classes, D). Below cos(pi - m) (theta + m > pi) the target logit falls back to
    s*(cos(theta) - m*sin(pi - m)), the form of the insightface reference, which keeps it monotonic in theta.
    """

    def __init__(self, dim: int, n_classes: int, s: float = 64.0, m: float = 0.2) -> None:
        super().__init__()
        self.s, self.m = float(s), float(m)
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine between embeddings (B, D) and class weights: (B, classes)."""
        return F.linear(F.normalize(emb, dim=-1), F.normalize(self.weight, dim=-1)).clamp(-1.0, 1.0)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (B, classes) with the margin on the target class, cosines (B, classes))."""
        cos = self.cosine(emb)
        if labels is None:
            return self.s * cos, cos
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-12))
        phi = cos * self.cos_m - sin * self.sin_m  # cos(theta + m)
        phi = torch.where(cos > self.th, phi, cos - self.mm)
        one_hot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        logits = self.s * (one_hot * phi + (1.0 - one_hot) * cos)
        return logits, cos


class SoftmaxHead(nn.Module):
    """Plain linear softmax classifier (the ArcFace-vs-softmax ablation); weight (classes, D)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, n_classes)

    @property
    def weight(self) -> torch.Tensor:
        """The (classes, D) weight, as ArcFaceHead names it."""
        return self.fc.weight

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (B, classes), logits) - no margin, labels unused."""
        logits = self.fc(emb)
        return logits, logits


def build_head(kind: str, dim: int, n_classes: int, s: float = 64.0, m: float = 0.2) -> nn.Module:
    """Build the classification head by name: 'arcface' or 'softmax'."""
    if kind == "arcface":
        return ArcFaceHead(dim, n_classes, s=s, m=m)
    if kind == "softmax":
        return SoftmaxHead(dim, n_classes)
    raise ValueError(f"head must be 'arcface' or 'softmax', got {kind!r}")


def load_head(path: str | Path) -> tuple[nn.Module, list[str]]:
    """Load a head saved next to a checkpoint (``epoch_XXX.head.pt``): returns (head module, class names)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    head = build_head(blob["kind"], blob["dim"], len(blob["classes"]), **blob.get("kwargs", {}))
    head.load_state_dict(blob["state"])
    return head, list(blob["classes"])


# ------------------------------------------------------------------------------------ trainable sets


def _layer_indices(names: Sequence[str]) -> list[int]:
    return sorted({int(mt.group(2)) for n in names if (mt := _LAYER_RE.match(n))})


def _encoder_kind(encoder: nn.Module) -> str:
    kind = getattr(encoder, "kind", None)
    if kind in ("beats", "eat"):
        return kind
    names = [n for n, _ in encoder.named_parameters()]
    return "eat" if any(n.startswith("blocks.") for n in names) else "beats"


def trainable_names(encoder: nn.Module, trainable: str = "aau", top_k: int | None = None) -> list[str]:
    """Parameter names (as ``encoder.named_parameters()`` gives them) that the trainable set ``trainable`` trains.

    Sets: 'top_k' = the top k transformer layers (k defaults to BEATs 4, SSLAM/EAT 10; all layers if fewer);
    'aau-beats' = the authors' BEATs set: top 4 layers + patch LayerNorm (``layer_norm.*``) +
    ``post_extract_proj.*`` + the relative position bias table that all layers share (stored in layer 0, trained
    through the top layer in the authors' code); 'aau' = 'aau-beats' for BEATs and 'top_k' (10) for EAT/SSLAM;
    'frozen' = nothing; 'all' = every parameter except EAT's fixed sin-cos positional table.
    """
    if trainable not in TRAINABLE_SETS:
        raise ValueError(f"trainable must be one of {TRAINABLE_SETS}, got {trainable!r}")
    kind = _encoder_kind(encoder)
    names = [n for n, _ in encoder.named_parameters()]
    if trainable == "aau":
        trainable = "aau-beats" if kind == "beats" else "top_k"
    if trainable == "frozen":
        return []
    if trainable == "all":  # every parameter except EAT's fixed sin-cos table (frozen by design)
        return [n for n in names if n not in FIXED_PARAMETERS]
    if trainable == "aau-beats" and kind != "beats":
        raise ValueError("trainable='aau-beats' is the authors' BEATs set; for an EAT/SSLAM encoder use "
                         "'top_k' (the authors train the top 10 blocks) or 'aau'")
    k = top_k if top_k is not None else DEFAULT_TOP_K[kind]
    if trainable == "aau-beats" and top_k is None:
        k = 4
    layers = _layer_indices(names)
    if not layers:
        raise ValueError("no transformer layers found among the encoder's parameter names "
                         "(expected 'encoder.layers.{i}.*' or 'blocks.{i}.*'); see CONTRACT parameter names")
    top = set(layers[-k:]) if k > 0 else set()
    chosen = [n for n in names if (mt := _LAYER_RE.match(n)) and int(mt.group(2)) in top]
    if trainable == "aau-beats":
        chosen += [n for n in names if n.startswith(("layer_norm.", "post_extract_proj."))]
        chosen += [n for n in names if "relative_attention_bias" in n]
    keep = set(chosen)
    return [n for n in names if n in keep]


def apply_trainable(encoder: nn.Module, trainable: str = "aau", top_k: int | None = None) -> list[str]:
    """Set ``requires_grad`` on the encoder's parameters for the trainable set; return the trained names."""
    chosen = set(trainable_names(encoder, trainable, top_k))
    for n, p in encoder.named_parameters():
        p.requires_grad_(n in chosen)
    return sorted(chosen)


# ------------------------------------------------------------------------- training-time cfg switches


# Checkpoint cfg fields behind each training-time switch. "layerdrop" covers the whole-layer skipping family:
# BEATs ``encoder_layerdrop``, EAT ``layerdrop`` and its stochastic depth (``*_drop_path_rate``).
SWITCH_FIELDS: dict[str, dict[str, dict[str, float]]] = {
    "beats": {
        "dropout": {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0},
        "layerdrop": {"encoder_layerdrop": 0.0},
        "grad_decay": {"layer_wise_gradient_decay_ratio": 1.0},
    },
    "eat": {
        "dropout": {"encoder_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
                    "post_mlp_drop": 0.0, "dropout_input": 0.0, "prenet_dropout": 0.0},
        "layerdrop": {"layerdrop": 0.0, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0},
        "grad_decay": {},
    },
}


def switch_overrides(encoder: nn.Module, *, dropout: bool, layerdrop: bool, grad_decay: bool) -> dict[str, float]:
    """cfg overrides that turn off the switches asked off (only fields whose cfg value is not already neutral)."""
    kind = _encoder_kind(encoder)
    cfg = dict(getattr(encoder, "cfg", {}) or {})
    wanted: dict[str, float] = {}
    for name, on in (("dropout", dropout), ("layerdrop", layerdrop), ("grad_decay", grad_decay)):
        if not on:
            wanted.update(SWITCH_FIELDS[kind][name])
    return {k: v for k, v in wanted.items() if k in cfg and float(cfg[k]) != v}


def switch_report(encoder: nn.Module, *, dropout: bool, layerdrop: bool, grad_decay: bool) -> dict[str, Any]:
    """What the switches are and which cfg values are in effect (for the log and config.json)."""
    kind = _encoder_kind(encoder)
    cfg = dict(getattr(encoder, "cfg", {}) or {})
    fields = [k for group in SWITCH_FIELDS[kind].values() for k in group]
    return {"dropout": dropout, "layerdrop": layerdrop, "grad_decay": grad_decay,
            "in_effect": {k: cfg[k] for k in fields if k in cfg}}


# ----------------------------------------------------------------------------------------- config


@dataclasses.dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (written to config.json; a resume must match it)."""

    backbone: str = "beats-tiny"
    backbone_id: str | None = None
    recipe: str | None = None
    classes_with_channel: bool = True
    train_channels: tuple[int, ...] = (0, 1)
    channel_input: str = "separate"
    machines: tuple[str, ...] | None = None
    trainable: str = "aau"
    top_k: int | None = None
    head: str = "arcface"
    arcface_s: float = 64.0
    arcface_m: float = 0.2
    train_pooling: str = "mean"
    epochs: int = 1
    batch_size: int = 64
    accum: int = 1
    lr_backbone: float = 6.45e-5
    lr_head: float = 4.57e-3
    weight_decay: float = 5.1e-4
    warmup_epochs: float = 5.0
    grad_clip: float = 1.0
    duration: float = 10.0
    time_shift: float = 0.0
    noise_std: float = 0.0
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 1.0
    fbank_noise_std: float = 0.0
    dropout: bool = True
    layerdrop: bool = True
    grad_decay: bool = True
    amp: bool = True
    cache_fbank: bool = True
    seed: int = 0
    save_every: int = 1
    keep_epochs: tuple[int, ...] = ()
    save_every_steps: int = 0
    epoch_selection: str = "fixed"

    def training_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (compared on resume)."""
        d = dataclasses.asdict(self)
        for k in _NOT_TRAINING:
            d.pop(k)
        return json.loads(json.dumps(d))


# FinetuneConfig fields that do not change the weights of the epochs a run saves
_NOT_TRAINING = ("save_every", "keep_epochs", "save_every_steps", "epoch_selection", "cache_fbank", "epochs")


def recorded_settings(ckpt_dir: str | Path) -> dict[str, Any]:
    """The weight-changing settings of the run in ``ckpt_dir`` (from its config.json, without the folder's own name),
    or {} when the folder holds no run. Notebook 01 compares them with its parameters (``params.changed_settings``)."""
    try:
        cfg = json.loads((Path(ckpt_dir) / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in cfg.items() if k not in (*_NOT_TRAINING, "backbone_id")}


# ------------------------------------------------------------------------------------- small utils


def _rng_state() -> dict[str, Any]:
    """Every RNG's state in types that ``torch.load(weights_only=True)`` reads back (no numpy objects)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _read_state(path: Path) -> dict[str, Any]:
    """A ``last.pt`` resume state, read without unpickling objects; one clear line when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or written by an older kit with numpy objects
        raise ValueError(f"{path} cannot be read as a resume state ({type(err).__name__}); delete it (the run then "
                         "starts over) or pass resume=False") from err


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _dist_info() -> tuple[int, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _maybe_init_distributed(device: str | None) -> bool:
    """Initialise the process group when started by torchrun (WORLD_SIZE > 1); return True if we did."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _load_encoder(backbone: str | Path | nn.Module, recipe: str | None, overrides: dict | None,
                  switches: dict[str, bool] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load the encoder with the training-time switches applied through its cfg; returns (encoder, original cfg
    values of the switched fields) so checkpoints can be saved with the checkpoint's own cfg."""
    import copy

    switches = switches or {"dropout": True, "layerdrop": True, "grad_decay": True}
    if isinstance(backbone, nn.Module):
        enc = copy.deepcopy(backbone)
        extra = switch_overrides(enc, **switches)
        if extra:
            raise ValueError(f"switching off {sorted(extra)} needs the backbone by name or path (the cfg override "
                             "is applied when the encoder is built); pass e.g. 'beats-tiny' or a checkpoint path")
        return enc, {}
    from asd_lib.backbones import load_backbone

    enc = load_backbone(str(backbone), recipe=recipe, **(overrides or {}))
    extra = switch_overrides(enc, **switches)
    if not extra:
        return enc, {}
    original = {k: enc.cfg[k] for k in extra}
    enc = load_backbone(str(backbone), recipe=recipe, **{**(overrides or {}), **extra})
    return enc, original


def _backbone_label(backbone: str | Path | nn.Module) -> str:
    if isinstance(backbone, nn.Module):
        return f"<module {type(backbone).__name__}>"
    return str(backbone)


def _default_backbone_id(backbone: str | Path | nn.Module, encoder: nn.Module) -> str:
    if isinstance(backbone, (str, Path)) and not Path(str(backbone)).exists():
        return str(backbone).split("-")[0]
    return "beats" if _encoder_kind(encoder) == "beats" else "sslam"


def _recipe_name(encoder: nn.Module, recipe: str | None) -> str:
    return str(recipe or getattr(encoder, "recipe", None) or _encoder_kind(encoder))


def _to_manifest(manifest: Any, ground_truth: Any = None):
    import pandas as pd

    if isinstance(manifest, pd.DataFrame):
        return manifest
    from asd_lib.data import scan

    return scan(manifest, ground_truth)


def _fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop (from the start) or zero-pad the last axis to n samples."""
    if wave.shape[-1] >= n:
        return wave[..., :n]
    pad = np.zeros(wave.shape[:-1] + (n - wave.shape[-1],), dtype=wave.dtype)
    return np.concatenate([wave, pad], axis=-1)


def _load_channels(path: str, channels: Sequence[int], n_samples: int) -> np.ndarray:
    from asd_lib.data import load_clip

    wave = load_clip(path, channels=tuple(channels), sample_rate=SAMPLE_RATE, duration=n_samples / SAMPLE_RATE)
    return _fit_length(np.asarray(wave, dtype=np.float32), n_samples)


# ------------------------------------------------------------------------------------- fbank cache


def cache_fbank(train_rows, encoder: nn.Module, cache_dir: str | Path, duration: float,
                channels: Sequence[int] = (0, 1), batch_size: int = 16, device: str | torch.device = "cpu",
                progress: bool = True) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Compute (or reuse) fbank features of the training clips, one file per machine.

    Returns {machine: (array (n_clips, len(channels), frames, bins) memory-mapped, file names)}. A cache entry is
    trusted only when its JSON sidecar (written last) names exactly these clips, duration and channels.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_samples = int(round(duration * SAMPLE_RATE))
    chs = "".join(str(c) for c in channels)
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for machine, rows in train_rows.groupby("machine", sort=True):
        rows = rows.sort_values("file_name")
        names = rows["file_name"].tolist()
        stem = f"{machine}_train_d{duration:g}s_ch{chs}"
        npy, meta = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        want = {"names": names, "duration": duration, "channels": list(channels)}
        if meta.exists() and npy.exists():
            try:
                have = json.loads(meta.read_text())
                if {k: have.get(k) for k in want} == want:
                    out[machine] = (np.load(npy, mmap_mode="r"), names)
                    continue
            except (ValueError, OSError):
                pass
        paths = rows["path"].tolist()
        arr = None
        tmp = cache_dir / f".{stem}.npy.tmp{os.getpid()}"
        with torch.inference_mode():
            for i in progress_bar(range(0, len(paths), batch_size), desc=f"fbank {machine}", enabled_=progress):
                waves = np.stack([_load_channels(p, channels, n_samples) for p in paths[i:i + batch_size]])
                b, c, t = waves.shape
                fb = encoder.preprocess(torch.from_numpy(waves.reshape(b * c, t)).to(device)).float().cpu()
                fb = fb.reshape(b, c, *fb.shape[1:]).numpy()
                if arr is None:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                    shape=(len(paths),) + fb.shape[1:])
                arr[i:i + b] = fb
        arr.flush()
        del arr
        os.replace(tmp, npy)
        atomic_write_text(meta, json.dumps({**want, "recipe": cache_dir.name}))
        out[machine] = (np.load(npy, mmap_mode="r"), names)
    return out


# ------------------------------------------------------------------------------------- the model


class _Classifier(nn.Module):
    """Encoder + token pooling + head; ``forward`` takes fbank (B, frames, bins) and labels.

    With ``joint`` (a ``JointChannelEncoder`` around ``encoder``) the fbank is (B, 2, frames, bins) and the tokens
    come from the joint sequence of both channels."""

    def __init__(self, encoder: nn.Module, head: nn.Module, pooling: str, backbone_grad: bool,
                 joint: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder, self.head, self.joint = encoder, head, joint
        self.pooling, self.backbone_grad = pooling, backbone_grad

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """Pooled training embedding (B, D): ``embed.pool_tokens`` (mean, the authors' GeM, or the EAT CLS token)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_grad):
            tokens = (self.encoder if self.joint is None else self.joint).forward_fbank(fbank)
        return pool_tokens(tokens, self.pooling, self.encoder.kind)

    def forward(self, fbank: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, cosines/logits without margin), computed in float32."""
        emb = self.embed(fbank)
        with torch.autocast(device_type=fbank.device.type, enabled=False):
            return self.head(emb.float(), labels)


# ------------------------------------------------------------------------------------------ finetune


def _sample_table(train_rows, classes: list[str], cfg: FinetuneConfig):
    from asd_lib.data import class_name

    index = {c: i for i, c in enumerate(classes)}
    clips, samples = [], []
    per_clip = cfg.train_channels if cfg.channel_input == "separate" else (None,)  # joint: one sample, all channels
    for ci, row in enumerate(train_rows.itertuples(index=False)):
        clips.append(row)
        for pos, ch in enumerate(per_clip):
            name = class_name(row.machine, row.section, row.domain, row.attributes,
                              channel=ch if cfg.classes_with_channel else None)
            if name not in index:
                raise ValueError(f"class {name!r} of {row.file_name} is not among the class labels; "
                                 "the manifest's train rows and class_labels disagree")
            samples.append((ci, pos, index[name]))
    return clips, np.asarray(samples, dtype=np.int64).reshape(-1, 3)


def add_wave_noise(wave: np.ndarray, rng: np.random.Generator, std: float, snr_db: Sequence[float] | None,
                   prob: float) -> np.ndarray:
    """Gaussian noise on one waveform (T,): fixed ``std``, or at an SNR drawn uniformly from ``snr_db`` (dB, relative
    to the clip's power), applied with probability ``prob``. Draws come from the sample's own generator."""
    apply = rng.random() < prob
    snr = rng.uniform(*snr_db) if snr_db else None
    noise = rng.standard_normal(wave.shape[-1])
    if not apply:
        return wave
    if snr is not None:
        power = float(np.mean(wave.astype(np.float64) ** 2))
        std = math.sqrt(power / (10.0 ** (snr / 10.0))) if power > 0 else 0.0
    return (wave + std * noise).astype(np.float32)


def add_wave_noise_channels(waves: np.ndarray, rng: np.random.Generator, std: float,
                            snr_db: Sequence[float] | None, prob: float) -> np.ndarray:
    """``add_wave_noise`` on every channel of one sample (C, T) with the same draws: one decision, one SNR, one noise
    realisation (scaled to each channel's power for an SNR). ``rng`` ends as after one channel's draws."""
    state = rng.bit_generator.state
    out = []
    for wave in waves:
        rng.bit_generator.state = state
        out.append(add_wave_noise(wave, rng, std, snr_db, prob))
    return np.stack(out)


def _per_sample_rng(seed: int, epoch: int, sample: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(sample), 7])


def _check_channel_input(channel_input: str, classes_with_channel: bool, train_channels: Sequence[int]) -> None:
    """Refuse a channel input that does not exist or does not fit the class scheme and the channels."""
    if channel_input not in CHANNEL_INPUTS:
        raise ValueError(f"channel_input must be one of {CHANNEL_INPUTS}, got {channel_input!r}")
    if channel_input != "joint":
        return
    if classes_with_channel:
        raise ValueError("channel_input='joint' trains one sample holding both channels, so a class cannot name a "
                         "channel: pass classes_with_channel=False (asd-finetune --no-channel-classes)")
    if tuple(int(c) for c in train_channels) != (0, 1):
        raise ValueError(f"channel_input='joint' reads both channels in the order (0, 1); got "
                         f"train_channels={tuple(train_channels)}")


def finetune(manifest: Any, backbone: str | Path | nn.Module = "beats-tiny", out_dir: str | Path = "results/dev",
             *, classes_with_channel: bool = True, train_channels: Sequence[int] = (0, 1),
             channel_input: str = "separate", machines: Sequence[str] | None = None, trainable: str = "aau",
             top_k: int | None = None,
             epochs: int = 1, batch_size: int = 64, accum: int = 1, lr_backbone: float = 6.45e-5,
             lr_head: float = 4.57e-3, weight_decay: float = 5.1e-4, warmup_epochs: float = 5.0,
             grad_clip: float = 1.0, duration: float = 10.0, arcface_s: float = 64.0, arcface_m: float = 0.2,
             head: str = "arcface", train_pooling: str = "mean", time_shift: float = 0.0, noise_std: float = 0.0,
             noise_snr_db: Sequence[float] | None = None, noise_prob: float = 1.0, fbank_noise_std: float = 0.0,
             dropout: bool = True, layerdrop: bool = True, grad_decay: bool = True,
             amp: bool = True, cache_fbank: bool = True, seed: int = 0, device: str | None = None,
             save_every: int = 1, keep_epochs: Sequence[int] = (), save_every_steps: int = 0,
             resume: bool = True, epoch_selection: str = "fixed", backbone_id: str | None = None,
             recipe: str | None = None, backbone_overrides: dict | None = None, ground_truth: Any = None,
             progress: bool = True, verbose: bool = True, _crash_after_step: int | None = None) -> Path:
    """Fine-tune ``backbone`` with an ArcFace (or softmax) head on the manifest's training clips.

    ``manifest``: a ``scan`` DataFrame (or a data root); ``out_dir``: ``results/<regime>``. ``batch_size`` is the
    global micro-batch (split over processes under torchrun); one optimiser step every ``accum`` micro-batches.
    ``warmup_epochs`` may be fractional. Returns the checkpoint folder ``out_dir/checkpoints/<backbone_id>``.
    ``epoch_selection``: 'fixed' (keep ``keep_epochs`` + the latest) or 'select-on-test-leaky' (also keep the
    epoch with the best score on the labelled test clips: uses test labels). ``channel_input``: 'separate' (one
    mono sample per channel, the authors') or 'joint' (BEATs only: one sample per clip whose two channels share
    one token sequence with a learned channel embedding; needs ``classes_with_channel=False`` and
    ``train_channels=(0, 1)``; the channel embedding is trained with the backbone's learning rate).
    """
    from transformers import get_cosine_schedule_with_warmup

    from asd_lib.data import class_labels

    if epoch_selection not in ("fixed", "select-on-test-leaky"):
        raise ValueError(f"epoch_selection must be 'fixed' or 'select-on-test-leaky', got {epoch_selection!r}")
    _check_channel_input(channel_input, classes_with_channel, train_channels)
    if accum < 1 or batch_size < 1 or epochs < 0:
        raise ValueError(f"need batch_size >= 1, accum >= 1, epochs >= 0 (got {batch_size}, {accum}, {epochs})")
    started_dist = _maybe_init_distributed(device)
    rank, world, local_rank = _dist_info()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes of this torchrun job")
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    cfg = FinetuneConfig(
        backbone=_backbone_label(backbone), backbone_id=backbone_id, recipe=recipe,
        classes_with_channel=classes_with_channel, train_channels=tuple(int(c) for c in train_channels),
        channel_input=channel_input, machines=tuple(machines) if machines else None, trainable=trainable,
        top_k=top_k, head=head,
        arcface_s=arcface_s, arcface_m=arcface_m, train_pooling=train_pooling, epochs=epochs,
        batch_size=batch_size, accum=accum, lr_backbone=lr_backbone, lr_head=lr_head, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, grad_clip=grad_clip, duration=duration, time_shift=time_shift,
        noise_std=noise_std, noise_snr_db=tuple(noise_snr_db) if noise_snr_db else None, noise_prob=noise_prob,
        fbank_noise_std=fbank_noise_std, dropout=dropout, layerdrop=layerdrop,
        grad_decay=grad_decay, amp=amp, cache_fbank=cache_fbank, seed=seed, save_every=save_every,
        keep_epochs=tuple(int(e) for e in keep_epochs), save_every_steps=save_every_steps,
        epoch_selection=epoch_selection)
    say = log.info if (verbose and rank == 0) else (lambda *a, **k: None)

    # ---- data
    man = _to_manifest(manifest, ground_truth)
    train_rows = man[man["split"] == "train"]
    if machines:
        missing = sorted(set(machines) - set(train_rows["machine"]))
        if missing:
            raise ValueError(f"machines {missing} have no training clips in the manifest")
        train_rows = train_rows[train_rows["machine"].isin(list(machines))]
    if train_rows.empty:
        raise ValueError("the manifest has no training rows (split == 'train'); check the data root")
    train_rows = train_rows.sort_values(["machine", "file_name"]).reset_index(drop=True)
    classes = class_labels(train_rows, channels=classes_with_channel)
    clips, samples = _sample_table(train_rows, classes, cfg)

    # ---- model
    torch.manual_seed(seed)
    sw = {"dropout": dropout, "layerdrop": layerdrop, "grad_decay": grad_decay}
    encoder, cfg_original = _load_encoder(backbone, recipe, backbone_overrides, sw)
    if train_pooling not in POOLINGS or (train_pooling == "cls" and encoder.kind != "eat"):
        raise ValueError(f"train_pooling {train_pooling!r} does not fit this {encoder.kind} encoder: use 'mean' "
                         "(the authors'), 'gem', or 'cls' with an EAT/SSLAM encoder (BEATs has no CLS token)")
    cfg.backbone_id = backbone_id or _default_backbone_id(backbone, encoder)
    switches = switch_report(encoder, **sw)
    trained = apply_trainable(encoder, trainable, top_k)
    joint = None
    if channel_input == "joint":
        from asd_lib.backbones.joint import JointChannelEncoder

        joint = JointChannelEncoder(encoder, seed=seed)
    ckpt_dir = checkpoint_dir(out_dir, cfg.backbone_id)
    lock = folder_lock(ckpt_dir, "fine-tuning run") if rank == 0 else _nullcontext()
    with lock:  # one run per output folder: a second one refuses instead of mixing checkpoints
        recipe_name = _recipe_name(encoder, recipe)
        torch.manual_seed(seed)
        head_kwargs = {"s": arcface_s, "m": arcface_m} if head == "arcface" else {}
        head_mod = build_head(head, int(encoder.embed_dim), len(classes), **head_kwargs)
        model = _Classifier(encoder, head_mod, train_pooling, backbone_grad=bool(trained) or joint is not None,
                            joint=joint).to(dev)
        n_trained = sum(p.numel() for n, p in encoder.named_parameters() if n in set(trained))
        say(f"[finetune] {cfg.backbone} -> {ckpt_dir}: {len(classes)} classes, {len(samples)} samples "
            f"({len(clips)} clips x {len(cfg.train_channels)} ch, {channel_input}), trainable={trainable!r}: "
            f"{len(trained)} tensors, {n_trained:,} params; switches dropout={dropout} layerdrop={layerdrop} "
            f"grad_decay={grad_decay} (cfg in effect {switches['in_effect']}); world={world} device={dev}")

        if rank == 0:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        _barrier()
        config_blob = {"config": dataclasses.asdict(cfg), "classes": classes,
                       "trained_parameters": trained + (["channel_embedding"] if joint is not None else []),
                       "switches": switches, "recipe": recipe_name, "world_size": world}

        def save_epoch_checkpoint(epoch: int) -> None:
            """Official-format encoder checkpoint + head sidecar of ``epoch`` (rank 0 writes)."""
            if rank != 0:
                return
            final = checkpoint_file(ckpt_dir, epoch)
            tmp = final.with_name(f"._tmp_{final.stem}.{os.getpid()}.pt")  # unique: two runs never share a temp file
            enc_cfg = getattr(model.encoder, "cfg", None)
            in_effect = {k: enc_cfg[k] for k in cfg_original} if enc_cfg is not None else {}
            if enc_cfg is not None:
                enc_cfg.update(cfg_original)  # the file keeps the checkpoint's own training switches
            try:
                model.encoder.save(tmp)
            finally:
                if enc_cfg is not None:
                    enc_cfg.update(in_effect)
            os.replace(tmp, final)
            atomic_torch_save({"kind": head, "dim": int(encoder.embed_dim), "classes": classes,
                                "kwargs": head_kwargs, "state": model.head.state_dict(),
                                **(joint.head_entries() if joint is not None else {})},
                               head_file(ckpt_dir, epoch))
            _record_hashes(ckpt_dir, [final, head_file(ckpt_dir, epoch)])

        # ---- frozen without epochs: the pre-trained encoder is the checkpoint
        if epochs == 0:
            if rank == 0:
                save_epoch_checkpoint(0)
                atomic_write_text(ckpt_dir / "config.json", json.dumps(config_blob, indent=1))
                _write_log(ckpt_dir / "log.csv", [])
            _barrier()
            if started_dist:
                import torch.distributed as dist

                dist.destroy_process_group()
            return ckpt_dir

        # ---- features
        wave_noise = noise_std > 0 or (bool(noise_snr_db) and noise_prob > 0)
        use_cache = cache_fbank and not wave_noise
        fb_cache = None
        if use_cache:
            cache_dir = Path(out_dir) / "fbank" / recipe_name
            if rank == 0:
                cache_fbank_fn(train_rows, encoder, cache_dir, duration, cfg.train_channels, device=dev,
                               progress=progress)
            _barrier()
            fb_cache = cache_fbank_fn(train_rows, encoder, cache_dir, duration, cfg.train_channels, device=dev,
                                      progress=False)
        elif rank == 0 and wave_noise and cache_fbank:
            say("[finetune] noise on the waveform changes every sample's fbank: fbank cache disabled for this run")
        clip_rows = {}
        if fb_cache is not None:
            for m, (_, names) in fb_cache.items():
                pos = {n: i for i, n in enumerate(names)}
                for ci, c in enumerate(clips):
                    if c.machine == m:
                        clip_rows[ci] = pos[c.file_name]
        n_samples_wave = int(round(duration * SAMPLE_RATE))

        def batch_inputs(sample_ids: Sequence[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Augmented fbank (B, frames, bins) (joint: (B, 2, frames, bins)) and labels (B,) of these samples."""
            rngs = [_per_sample_rng(seed, epoch, s) for s in sample_ids]
            if fb_cache is not None:
                rows = [(ci, pos if joint is None else slice(None)) for ci, pos, _ in samples[list(sample_ids)]]
                fbs = [torch.from_numpy(np.array(fb_cache[clips[ci].machine][0][clip_rows[ci], ch], dtype=np.float32))
                       for ci, ch in rows]
            else:
                if joint is None:
                    waves = np.stack([_load_channels(clips[ci].path, (cfg.train_channels[pos],), n_samples_wave)[0]
                                      for ci, pos, _ in samples[list(sample_ids)]])
                else:
                    waves = np.stack([_load_channels(clips[ci].path, cfg.train_channels, n_samples_wave)
                                      for ci, _, _ in samples[list(sample_ids)]])
                if wave_noise:
                    noisy = add_wave_noise if joint is None else add_wave_noise_channels
                    waves = np.stack([noisy(w, r, noise_std, noise_snr_db, noise_prob) for w, r in zip(waves, rngs)])
                with torch.no_grad():
                    flat = torch.from_numpy(waves.astype(np.float32)).reshape(-1, waves.shape[-1])
                    fb = encoder.preprocess(flat.to(dev)).float().cpu()
                    fbs = list(fb.reshape(*waves.shape[:-1], *fb.shape[1:]))
            xs = []
            for fb, rng in zip(fbs, rngs):  # frames on axis -2: a joint sample's channels get the same draws
                if time_shift > 0:
                    max_shift = int(time_shift * fb.shape[-2])
                    fb = torch.roll(fb, int(rng.integers(-max_shift, max_shift + 1)), dims=-2)
                if fbank_noise_std > 0:
                    noise = rng.standard_normal(tuple(fb.shape[-2:])).astype(np.float32)
                    fb = fb + fbank_noise_std * torch.from_numpy(noise)
                xs.append(fb)
            labels = torch.as_tensor(samples[list(sample_ids), 2])
            return torch.stack(xs).to(dev), labels.to(dev)

        # ---- optimisation
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(range(len(samples)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        rank_batch = batch_size // world
        total = sampler.total_size
        n_micro = math.ceil(total / batch_size)
        steps_per_epoch = math.ceil(n_micro / accum)
        back_params = [p for p in model.encoder.parameters() if p.requires_grad]
        if joint is not None:
            back_params.append(joint.channel_embedding)
        groups = [{"params": list(model.head.parameters()), "lr": lr_head, "weight_decay": weight_decay}]
        if back_params:
            groups.insert(0, {"params": back_params, "lr": lr_backbone, "weight_decay": weight_decay})
        optimizer = torch.optim.AdamW(groups)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(round(warmup_epochs * steps_per_epoch)),
                                                    epochs * steps_per_epoch)
        ddp_model: nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                find_unused_parameters=bool(layerdrop and trained))
        use_amp = amp and dev.type == "cuda"

        # ---- resume
        start_epoch, start_micro, global_step = 1, 0, 0
        epoch_sums = [0.0, 0.0, 0.0]  # loss*count, correct, count
        log_rows: list[dict] = []
        leaky: dict[int, float] = {}
        torch.manual_seed(seed + 1000 * rank)
        np.random.seed((seed + 1000 * rank) % 2**32)
        random.seed(seed + 1000 * rank)
        last = ckpt_dir / "last.pt"
        if resume and last.exists():
            st = _read_state(last)
            written = {"channel_input": "separate", **st["training"]}  # states from before channel_input existed
            if written != cfg.training_fields() or st["classes"] != classes:
                raise ValueError(f"{last} was written by a run with other settings or classes; pass resume=False "
                                 "(or another out_dir) to start over, or use the settings in its config.json")
            model.encoder.load_state_dict(st["encoder"])
            model.head.load_state_dict(st["head"])
            if joint is not None:
                joint.load_channel_embedding(st["channel_embedding"])
            optimizer.load_state_dict(st["optimizer"])
            if st["scheduler"]["base_lrs"] and epochs != st["epochs"]:
                raise ValueError(f"{last} was written by a run of {st['epochs']} epochs; the cosine schedule depends "
                                 f"on it, so resume with epochs={st['epochs']} or pass resume=False")
            scheduler.load_state_dict(st["scheduler"])
            start_epoch, start_micro, global_step = st["epoch"], st["micro"], st["global_step"]
            log_rows, leaky = st["log"], {int(k): v for k, v in st["leaky"].items()}
            saved = st["per_rank"]  # [(rng state, epoch sums)] of every process of the saving run
            if len(saved) == world:
                rng_st, epoch_sums = saved[rank]
            else:  # another process count: the RNG streams cannot match anyway; keep the sums once
                rng_st, epoch_sums = saved[0][0], (per_rank_sum(saved) if rank == 0 else [0.0, 0.0, 0.0])
                say(f"[finetune] {last} was saved by {len(saved)} process(es), resuming with {world}: the result "
                    "will not be bit-identical to an uninterrupted run")
            _set_rng_state(rng_st)
            say(f"[finetune] resumed from {last}: epoch {start_epoch}, micro-batch {start_micro}, step {global_step}")
        elif rank == 0 and (0 in cfg.keep_epochs or trainable == "frozen"):
            save_epoch_checkpoint(0)
        if rank == 0:
            atomic_write_text(ckpt_dir / "config.json", json.dumps(config_blob, indent=1))

        def save_state(epoch: int, micro: int) -> None:
            """Everything a resume needs (weights, optimiser, scheduler, RNG, position) to last.pt."""
            per_rank_state = _gather_objects((_rng_state(), list(epoch_sums)))
            if rank != 0:
                return
            atomic_torch_save({"training": cfg.training_fields(), "classes": classes, "epochs": epochs,
                                "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "epoch": epoch, "micro": micro, "global_step": global_step,
                                "log": log_rows, "leaky": leaky, "per_rank": per_rank_state,
                                **({"channel_embedding": joint.channel_embedding.detach().cpu()}
                                   if joint is not None else {})}, last)

        for epoch in range(start_epoch, epochs + 1):
            sampler.set_epoch(epoch)
            mine = list(sampler)
            t0 = time.perf_counter()
            if trained:
                model.train()
            else:
                model.eval()
            micro0 = start_micro if epoch == start_epoch else 0
            if micro0 == 0:
                epoch_sums = [0.0, 0.0, 0.0]
            bar = progress_bar(range(micro0, n_micro), desc=f"epoch {epoch}/{epochs}", enabled_=progress and rank == 0)
            optimizer.zero_grad(set_to_none=True)
            for mi in bar:
                group_start = (mi // accum) * accum
                group_len = min(accum, n_micro - group_start)
                last_in_group = (mi - group_start) == group_len - 1
                ids = mine[mi * rank_batch:(mi + 1) * rank_batch]
                global_count = min(batch_size, total - mi * batch_size)
                x, y = batch_inputs(ids, epoch)
                ctx = ddp_model.no_sync() if (world > 1 and not last_in_group) else _nullcontext()
                with ctx:
                    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        logits, cos = ddp_model(x, y)
                    ce = F.cross_entropy(logits, y, reduction="sum")
                    if not torch.isfinite(ce):  # stop before a non-finite step reaches the weights or a checkpoint
                        names = sorted({clips[int(samples[i][0])].file_name for i in ids})
                        raise FloatingPointError(
                            f"[finetune] the loss is {float(ce.detach())} at epoch {epoch}, micro-batch {mi} "
                            f"(clips: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}); nothing of this "
                            f"epoch was saved. Lower the learning rates, or check those clips")
                    loss = ce * world / global_count / group_len
                    loss.backward()
                epoch_sums[0] += float(ce.detach())
                epoch_sums[1] += float((cos.detach().argmax(1) == y).sum())
                epoch_sums[2] += len(ids)
                if last_in_group:
                    if grad_clip and grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    if progress and rank == 0:
                        bar.set_postfix(loss=f"{float(ce.detach()) / max(len(ids), 1):.3f}")
                    if save_every_steps and global_step % save_every_steps == 0 and mi + 1 < n_micro:
                        save_state(epoch, mi + 1)
                    if _crash_after_step is not None and global_step == _crash_after_step:
                        raise _InjectedCrash(f"test hook: crash after optimiser step {global_step}")
            bar.close()
            loss_sum, correct, count = _all_reduce_sum(epoch_sums, dev)
            lrs = scheduler.get_last_lr()
            row = {"epoch": epoch, "loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
                   "lr_backbone": lrs[0] if back_params else 0.0, "lr_head": lrs[-1],
                   "seconds": time.perf_counter() - t0}
            due = (epoch % max(save_every, 1) == 0) or epoch == epochs or epoch in cfg.keep_epochs
            if due and epoch_selection == "select-on-test-leaky":
                leaky[epoch] = (_leaky_test_score(man, model.encoder if joint is None else joint, cfg, dev)
                                if rank == 0 else float("nan"))
                row["leaky_test_score"] = leaky[epoch]
            log_rows.append(row)
            say(f"[finetune] epoch {epoch}: loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                f"lr {row['lr_head']:.2e} {row['seconds']:.1f}s")
            if due:
                save_epoch_checkpoint(epoch)
            if rank == 0:
                _write_log(ckpt_dir / "log.csv", log_rows)
            epoch_sums = [0.0, 0.0, 0.0]
            start_micro = 0
            save_state(epoch + 1, 0)
            if rank == 0 and due:
                _prune_checkpoints(ckpt_dir, cfg.keep_epochs, epoch, leaky)
        if rank == 0:
            _check_kept(ckpt_dir, [e for e in cfg.keep_epochs if e <= epochs] + [epochs], last)
        _barrier()
        if started_dist:
            import torch.distributed as dist

            dist.destroy_process_group()
        return ckpt_dir


HASHES = "hashes.json"  # sha256 of every epoch checkpoint as written, checked whenever a run reuses them


def _record_hashes(ckpt_dir: Path, files: Sequence[Path]) -> None:
    """Add the sha256 of ``files`` to the folder's hash list, and drop the entries of files that are gone."""
    path = ckpt_dir / HASHES
    known = json.loads(path.read_text()) if path.is_file() else {}
    known = {name: h for name, h in known.items() if (ckpt_dir / name).is_file()}
    known.update({f.name: file_sha256(f) for f in files})
    atomic_write_text(path, json.dumps(known, indent=1, sort_keys=True))


def _check_kept(ckpt_dir: Path, epochs: Sequence[int], last: Path) -> None:
    """Every checkpoint a run was asked to keep exists and has the hash it was written with, or a clear error."""
    known = json.loads((ckpt_dir / HASHES).read_text()) if (ckpt_dir / HASHES).is_file() else {}
    for e in sorted(set(epochs)):
        for f in (checkpoint_file(ckpt_dir, e), head_file(ckpt_dir, e)):
            if not f.is_file():
                raise ValueError(f"{f.name} is missing, and {last.name} has already trained past epoch {e}: it can "
                                 f"only come back from a new run. Retrain with resume=False (asd-finetune "
                                 f"--no-resume; asd-run --only 01 --force), or delete {ckpt_dir}")
            if f.name in known and file_sha256(f) != known[f.name]:
                raise ValueError(f"{f} does not have the hash it was written with (truncated or replaced); retrain "
                                 f"with resume=False (asd-finetune --no-resume; asd-run --only 01 --force), or delete "
                                 f"{ckpt_dir}")


cache_fbank_fn = cache_fbank  # the name ``cache_fbank`` is also a keyword argument of ``finetune``


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return False


def per_rank_sum(saved: list) -> list[float]:
    """Sum the per-process epoch sums [loss, correct, count] saved in a state file."""
    return [float(sum(p[1][i] for p in saved)) for i in range(3)]


def _gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _write_log(path: Path, rows: list[dict]) -> None:
    cols = ["epoch", "loss", "accuracy", "lr_backbone", "lr_head", "seconds"]
    if any("leaky_test_score" in r for r in rows):
        cols.append("leaky_test_score")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def _prune_checkpoints(ckpt_dir: Path, keep: Sequence[int], latest: int, leaky: dict[int, float]) -> None:
    """Delete the epoch checkpoints that are neither kept, the latest, nor (leaky selection) among the best scored
    on the test labels, as many as ``keep`` names; the ranking goes to ``selected_on_test_LEAKY.json``."""
    keep_set = set(int(k) for k in keep) | {latest}
    scored = {e: s for e, s in leaky.items() if s == s}
    if scored:
        ranked = sorted(scored, key=lambda e: (-scored[e], e))[:max(1, len(set(keep)))]
        keep_set |= set(ranked)
        atomic_write_text(ckpt_dir / LEAKY_SELECTION,
                          json.dumps({"epoch": ranked[0], "epochs": ranked, "score": scored[ranked[0]],
                                      "scores": scored,
                                      "warning": "chosen with test labels (the authors' selection): a leak"}))
    for epoch, files in checkpoint_epochs(ckpt_dir, heads=True).items():
        if epoch not in keep_set:
            for p in files:
                p.unlink()
    _record_hashes(ckpt_dir, [])  # forget the pruned files


def _leaky_test_score(man, encoder: nn.Module, cfg: FinetuneConfig, dev: torch.device) -> float:
    """Official-style harmonic mean of AUC(source), AUC(target), pAUC per machine, KNN (k=6, cosine) on GeM ch0
    embeddings (joint embeddings for a joint-channel run) of the labelled TEST clips. Uses test labels: only for
    'select-on-test-leaky'."""
    from scipy.stats import hmean
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    from asd_lib.embed import embed_paths

    was_training = encoder.training
    encoder.eval()
    values = []
    machines = cfg.machines or sorted(man["machine"].unique())
    for m in machines:
        tr = man[(man["machine"] == m) & (man["split"] == "train")]
        te = man[(man["machine"] == m) & (man["split"] == "test") & man["label"].isin(["normal", "anomaly"])]
        if te.empty or te["label"].nunique() < 2:
            continue
        kw = dict(device=dev, progress=False, inference_mode=False)  # the encoder keeps training afterwards
        channel = "joint" if cfg.channel_input == "joint" else "ch0"
        e_tr = embed_paths(encoder, tr["path"].tolist(), channel, "gem", cfg.duration, **kw)
        e_te = embed_paths(encoder, te["path"].tolist(), channel, "gem", cfg.duration, **kw)
        nn_ = NearestNeighbors(n_neighbors=min(6, len(e_tr)), metric="cosine").fit(e_tr)
        score = nn_.kneighbors(e_te)[0][:, -1]
        y = (te["label"] == "anomaly").to_numpy()
        dom = te["domain"].to_numpy()
        for d in ("source", "target"):
            sel = y | (dom == d)
            if (~y[sel]).any():
                values.append(roc_auc_score(y[sel], score[sel]))
        values.append(roc_auc_score(y, score, max_fpr=0.1))
    if was_training:
        encoder.train()
    return float(hmean(np.maximum(values, np.finfo(float).eps))) if values else float("nan")


# ----------------------------------------------------------------------------------------------- CLI


def system_runs(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A system's fine-tuning runs from its merged parameters: {backbone: ``finetune`` keyword arguments}, one run
    per backbone of the ensemble, up to its largest epoch, keeping the epochs the ensemble names. Notebook 01 and
    ``asd-finetune --system`` both train exactly these (one mapping, so they cannot drift apart)."""
    plan = P.training_plan(P.resolve_ensemble(params["ensemble"], float(params.get("epoch_scale", 1.0))))
    checkpoints = {"beats": params["beats_checkpoint"], "sslam": params["sslam_checkpoint"]}
    unknown = sorted(set(plan) - set(checkpoints))
    if unknown:
        raise ValueError(f"ensemble names backbone(s) {unknown}; the kit trains 'beats' and 'sslam' (e.g. beats@107)")
    shared = {k: params[k] for k in ("trainable", "classes_with_channel", "head", "arcface_s", "arcface_m",
                                     "train_pooling", "batch_size", "accum", "lr_backbone", "lr_head", "weight_decay",
                                     "warmup_epochs", "grad_clip", "time_shift", "noise_prob", "amp",
                                     "epoch_selection", "seed")}
    shared.update(train_channels=list(params["train_channels"]), duration=float(params["train_seconds"]),
                  noise_snr_db=list(params["noise_snr_db"]), device=params.get("device") or None)
    return {b: {"backbone": checkpoints[b], "backbone_id": b, "epochs": max(epochs), "keep_epochs": list(epochs),
                "recipe": params["sslam_recipe"] if b == "sslam" else None,
                "top_k": params["sslam_top_k" if b == "sslam" else "beats_top_k"], **shared}
            for b, epochs in plan.items()}


def _system_values(system: str, overlays: Sequence[str]) -> dict[str, Any]:
    """``--system``: the merged, checked parameters that notebook 01 would be given."""
    prm = P.load(system, overlays)
    P.validate(prm, P.declared_parameters(sorted(P.NOTEBOOK_DIR.glob("*.ipynb"))))
    return P.inject(prm, P.notebook_parameters(P.NOTEBOOK_DIR / "01_finetune_arcface.ipynb"))


def _train_system(vals: Mapping[str, Any], resume: bool) -> Path:
    """``--system``: the system's runs as notebook 01 trains them, into results/<regime>/checkpoints/."""
    from asd_lib.data import scan

    runs = system_runs(vals)
    lay = layout(P.ROOT / vals["results_dir"], vals["regime"])
    man = P.regime_manifest(scan(P.ensure_data(vals["data_root"], vals["synth_preset"], vals["synth_seed"])),
                            vals["regime"])
    out = Path()
    for backbone, kwargs in runs.items():
        out = finetune(man, out_dir=lay.regime_dir, resume=resume, **kwargs)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``asd-finetune --system S [--params YAML ...]`` (a system's runs, as notebook 01 trains them) or
    ``asd-finetune --data DIR --backbone NAME --out results/<regime> ...`` (one run, every switch by hand)."""
    p = argparse.ArgumentParser(prog="python -m asd_lib.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--system", choices=P.SYSTEMS, default=None,
                   help="train this system's backbones from its merged parameters (params/base.yaml, "
                        "params/<system>.yaml, --params), exactly as notebook 01 does; the switches below are then "
                        "ignored except --no-resume")
    p.add_argument("--params", nargs="*", default=None, help="with --system: overlays, later ones win")
    p.add_argument("--print-settings", action="store_true",
                   help="with --system: print each backbone's finetune() arguments as JSON and stop")
    p.add_argument("--data", default=None, help="data root (scan layout) holding dev_data/ and/or eval_data/")
    p.add_argument("--sets", default="dev", help="comma-separated manifest sets to train on: dev, add (DEV+ADD)")
    p.add_argument("--backbone", default="beats-tiny",
                   help="checkpoint path (unilm BEATs .pt, fairseq EAT/SSLAM .pt, HF folder) or a named shape")
    p.add_argument("--backbone-id", default=None, help="folder name under <out>/checkpoints/ (default: from backbone)")
    p.add_argument("--recipe", default=None, help="fbank recipe: beats | eat | aau (default: the encoder's own)")
    p.add_argument("--out", default=None, help="results/<regime>")
    p.add_argument("--machines", default=None, help="comma-separated machines (default all)")
    p.add_argument("--no-channel-classes", action="store_true", help="45 channel-free classes instead of 90")
    p.add_argument("--channel-input", default="separate", choices=CHANNEL_INPUTS,
                   help="separate: each channel a mono sample (the authors'); joint: both channels' tokens in one "
                        "sequence with a learned channel embedding (the kit's experiment, BEATs only; needs "
                        "--no-channel-classes)")
    p.add_argument("--trainable", default="aau", choices=TRAINABLE_SETS,
                   help="what is trained: aau (the authors' code), top_k (the paper's text), frozen, all")
    p.add_argument("--top-k", type=int, default=None, help="layers unfrozen (default: 4 for BEATs, 10 for SSLAM)")
    p.add_argument("--head", default="arcface", choices=("arcface", "softmax"), help="auxiliary classifier head")
    p.add_argument("--epochs", type=int, default=1, help="epochs to train")
    p.add_argument("--batch-size", type=int, default=64, help="micro-batch per process")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimiser step")
    p.add_argument("--lr-backbone", type=float, default=6.45e-5, help="AdamW learning rate of the backbone")
    p.add_argument("--lr-head", type=float, default=4.57e-3, help="AdamW learning rate of the head")
    p.add_argument("--weight-decay", type=float, default=5.1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, default=5.0, help="linear warm-up (epochs), then cosine decay")
    p.add_argument("--duration", type=float, default=10.0, help="training clips cropped / zero-padded to this (s)")
    p.add_argument("--time-shift", type=float, default=0.0, help="circular time shift, fraction of the clip")
    p.add_argument("--noise-std", type=float, default=0.0, help="Gaussian noise std on the waveform")
    p.add_argument("--noise-snr-db", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="Gaussian noise at an SNR drawn from [LO, HI] dB (the authors: 15 35)")
    p.add_argument("--noise-prob", type=float, default=1.0, help="probability of adding that noise to a sample")
    p.add_argument("--fbank-noise-std", type=float, default=0.0, help="Gaussian noise std on the fbank features")
    p.add_argument("--no-dropout", action="store_true", help="switch the encoder's dropout off")
    p.add_argument("--no-layerdrop", action="store_true", help="switch the encoder's layer drop off")
    p.add_argument("--no-grad-decay", action="store_true", help="switch BEATs' layer-wise gradient decay off")
    p.add_argument("--no-cache", action="store_true", help="compute fbank every step instead of caching it")
    p.add_argument("--seed", type=int, default=0, help="seed of the head, the order and the augmentation")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--keep-epochs", default="", help="comma-separated epochs to keep")
    p.add_argument("--save-every", type=int, default=1, help="save the resume state every N epochs")
    p.add_argument("--save-every-steps", type=int, default=0, help="also every N optimiser steps (0: never)")
    p.add_argument("--no-resume", action="store_true", help="start over even when a resume state exists")
    p.add_argument("--epoch-selection", default="fixed", choices=("fixed", "select-on-test-leaky"),
                   help="fixed epochs, or the authors' selection on test scores (uses test labels)")
    a = p.parse_args(argv)
    logs.configure()
    if a.system is None and (a.data is None or a.out is None):
        p.error("give --system S, or --data DIR and --out results/<regime>")
    try:
        if a.system is not None:
            vals = _system_values(a.system, a.params or [])
            print(json.dumps(system_runs(vals), indent=1) if a.print_settings else _train_system(vals, not a.no_resume))
            return 0
        man = _to_manifest(a.data)
        sets = [s.strip() for s in a.sets.split(",") if s.strip()]
        man = man[man["set"].isin(sets) | (man["split"] == "test")]
        out = finetune(
            man, a.backbone, a.out, classes_with_channel=not a.no_channel_classes, channel_input=a.channel_input,
            machines=a.machines.split(",") if a.machines else None, trainable=a.trainable, top_k=a.top_k,
            epochs=a.epochs, batch_size=a.batch_size, accum=a.accum, lr_backbone=a.lr_backbone, lr_head=a.lr_head,
            weight_decay=a.weight_decay, warmup_epochs=a.warmup_epochs, duration=a.duration, head=a.head,
            time_shift=a.time_shift, noise_std=a.noise_std, noise_snr_db=a.noise_snr_db, noise_prob=a.noise_prob,
            fbank_noise_std=a.fbank_noise_std,
            dropout=not a.no_dropout, layerdrop=not a.no_layerdrop, grad_decay=not a.no_grad_decay,
            cache_fbank=not a.no_cache, seed=a.seed, device=a.device,
            keep_epochs=[int(e) for e in a.keep_epochs.split(",") if e.strip()], save_every=a.save_every,
            save_every_steps=a.save_every_steps, resume=not a.no_resume, epoch_selection=a.epoch_selection,
            backbone_id=a.backbone_id, recipe=a.recipe)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
