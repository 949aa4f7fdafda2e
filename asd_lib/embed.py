"""Embedding extraction: pooled encoder tokens per clip, cached per model, channel and machine.

Introduced in notebook ``02_extract_embeddings`` (docs/reference.md §5). Writes

    <out_root>/<model_id>/<channel>/<machine>_{train,test}.npz   keys emb (N, D) float32, names, labels, domains

where ``out_root`` is ``results/<regime>/embeddings`` and ``model_id`` is ``<backbone>@<epoch>`` (e.g. ``beats@3``).
The files themselves (their path, writing, reading with checks, the machines present) belong to
``asd_lib.artifacts``; ``load_embeddings`` and ``embedding_path`` stay importable from here.

Pooling over the tokens (B, N, D) of one channel:
- ``mean``: mean over all tokens (for EAT/SSLAM this includes the CLS token, as the authors' code does);
- ``gem``: the authors' scoring embedding: tokens L2-normalised, clamped to >= 1e-6, then generalised mean with
  p = 3 over tokens, ``(mean_n t_n^3)^(1/3)``;
- ``cls``: the CLS token (EAT/SSLAM only; BEATs has none).

Channels: ``ch0`` (near mic, the authors' choice), ``ch1`` (far mic), or ``both`` = the mean of the two channels'
pooled embeddings. The mean keeps the dimension D, so every scorer and the fusion see the same shapes whichever
channel is used, and it weighs both microphones equally (concatenation would double D and let scorers with
distance-based neighbourhoods be dominated by whichever channel varies more). ``joint`` (the kit's experiment, for a
checkpoint fine-tuned with ``channel_input='joint'``): both channels in one token sequence
(``asd_lib.backbones.joint``), the 2N tokens pooled together into one D-dimensional embedding; the channel
embedding is read from the ``epoch_XXX.head.pt`` next to the checkpoint.

torch, pandas and the modules that bring them (``asd_lib.backbones``, ``asd_lib.data``) are imported inside the
functions that use them: reading embeddings from here needs neither.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from asd_lib.artifacts import (embedded_machines, embedding_path, embedding_settings, embedding_source,  # noqa: F401
                               embeddings_current, load_embeddings, save_embeddings)
from asd_lib.fsutil import file_sha256
from asd_lib.progress import bar
from asd_lib.provenance import clips_digest

__all__ = ["POOLINGS", "CHANNELS", "pool_tokens", "gem_pool", "embed_paths", "extract_embeddings",
           "load_embeddings", "embedding_path"]

POOLINGS = ("mean", "gem", "cls")
CHANNELS = ("ch0", "ch1", "both", "joint")
SAMPLE_RATE = 16000
_LABELS = {"normal": 0, "anomaly": 1}


def gem_pool(tokens, p: float = 3.0, eps: float = 1e-6):
    """Authors' GeM: tokens (B, N, D) L2-normalised over D, clamped >= eps, (mean_N x^p)^(1/p) -> (B, D)."""
    import torch.nn.functional as F

    x = F.normalize(tokens.float(), dim=-1).clamp(min=eps)
    return x.pow(p).mean(dim=1).pow(1.0 / p)


def pool_tokens(tokens, pooling: str = "gem", kind: str | None = None):
    """Pool encoder tokens (B, N, D) to (B, D) with 'mean', 'gem' or 'cls' (EAT/SSLAM only)."""
    if pooling == "mean":
        return tokens.float().mean(dim=1)
    if pooling == "gem":
        return gem_pool(tokens)
    if pooling == "cls":
        if kind != "eat":
            raise ValueError(f"pooling='cls' needs an EAT/SSLAM encoder (CLS token first); this one is {kind!r}. "
                             "Use 'mean' or 'gem' for BEATs")
        return tokens[:, 0].float()
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _channels(channel: str) -> tuple[int, ...]:
    if channel == "ch0":
        return (0,)
    if channel == "ch1":
        return (1,)
    if channel in ("both", "joint"):
        return (0, 1)
    raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")


def _kind(encoder: Any) -> str:
    kind = getattr(encoder, "kind", None)
    if kind in ("beats", "eat"):
        return kind
    return "eat" if any(n.startswith("blocks.") for n, _ in encoder.named_parameters()) else "beats"


def _load_encoder(checkpoint_or_encoder: Any, recipe: str | None, channel: str = "ch0"):
    import torch.nn as nn

    if isinstance(checkpoint_or_encoder, nn.Module):
        return checkpoint_or_encoder
    from asd_lib.backbones import load_backbone, load_joint_encoder

    src = str(checkpoint_or_encoder)
    if not Path(src).exists() and "/" in src:
        raise FileNotFoundError(f"checkpoint not found: {src}; run fine-tuning first (asd_lib.finetune) or pass "
                                "a backbone name")
    if channel == "joint":
        if not Path(src).is_file():
            raise ValueError(f"channel 'joint' needs a checkpoint file fine-tuned with channel_input='joint' (its "
                             f"channel embedding is in the head file next to it), got {src!r}")
        return load_joint_encoder(src, recipe=recipe)
    return load_backbone(src, recipe=recipe)


def _check_joint(encoder: Any, channel: str) -> None:
    """Channel 'joint' and a joint-channel encoder go together; refuse either one without the other."""
    from asd_lib.backbones.joint import JointChannelEncoder

    if (channel == "joint") != isinstance(encoder, JointChannelEncoder):
        raise ValueError(f"channel {channel!r} does not fit a {type(encoder).__name__}: channel 'joint' needs a "
                         "JointChannelEncoder (a checkpoint fine-tuned with channel_input='joint'), and a "
                         "JointChannelEncoder embeds only channel 'joint'")


def _clip_lengths(paths: Sequence[str]) -> list[int]:
    out = []
    for p in paths:
        info = sf.info(p)
        out.append(int(round(info.frames * SAMPLE_RATE / info.samplerate)))
    return out


def embed_paths(encoder: Any, paths: Sequence[str], channel: str = "ch0", pooling: str = "gem",
                duration: float | None = None, batch_size: int = 16, device: Any = None,
                progress: bool = True, desc: str = "embed", inference_mode: bool = True) -> np.ndarray:
    """Embeddings (len(paths), D) float32 of audio files; clips of equal length are batched together.

    ``duration``: crop (from the start) / zero-pad every clip to this many seconds; None keeps each clip whole.
    Runs under ``torch.inference_mode`` (``inference_mode=False``: ``torch.no_grad``, for an encoder that keeps
    training afterwards, since tensors an encoder caches under inference mode cannot enter autograd later) with
    the encoder in eval mode (restored afterwards).
    """
    import torch

    from asd_lib.data import load_clip

    chans = _channels(channel)
    _check_joint(encoder, channel)
    kind = _kind(encoder)
    if pooling == "cls":
        pool_tokens(torch.zeros(1, 1, 1), pooling, kind)  # refuse early for BEATs
    if device is None:
        device = next(encoder.parameters()).device
    device = torch.device(device)
    if len(paths) == 0:
        return np.zeros((0, int(encoder.embed_dim)), dtype=np.float32)
    if duration is not None:
        n_fixed = int(round(duration * SAMPLE_RATE))
        lengths = [n_fixed] * len(paths)
    else:
        lengths = _clip_lengths(paths)
    order = sorted(range(len(paths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    out = np.zeros((len(paths), int(encoder.embed_dim)), dtype=np.float32)
    was_training = encoder.training
    encoder.eval()
    moved = next(encoder.parameters()).device != device
    if moved:
        orig_device = next(encoder.parameters()).device
        encoder.to(device)
    try:
        with (torch.inference_mode() if inference_mode else torch.no_grad()):
            for b in bar(batches, desc=desc, enabled_=progress):
                n = lengths[b[0]]
                waves = []
                for i in b:
                    w = np.asarray(load_clip(paths[i], channels=chans, sample_rate=SAMPLE_RATE,
                                             duration=duration), dtype=np.float32)
                    if w.shape[-1] >= n:
                        w = w[..., :n]
                    else:
                        w = np.concatenate([w, np.zeros(w.shape[:-1] + (n - w.shape[-1],), np.float32)], -1)
                    waves.append(w)
                x = torch.from_numpy(np.stack(waves))  # (B, C, T)
                bsz, c, t = x.shape
                if channel == "joint":  # (B, 2, T) -> (B, 2N, D) tokens, pooled together
                    emb = pool_tokens(encoder.extract_features(x.to(device)), pooling, kind)
                else:
                    tokens = encoder.extract_features(x.reshape(bsz * c, t).to(device))
                    emb = pool_tokens(tokens, pooling, kind).reshape(bsz, c, -1).mean(dim=1)
                out[b] = emb.cpu().numpy()
    finally:
        if moved:
            encoder.to(orig_device)
        encoder.train(was_training)
    return out


def extract_embeddings(manifest: Any, checkpoint_or_encoder: Any, out_root: str | Path, model_id: str,
                       channel: str = "ch0", pooling: str = "gem", duration: float | None = None,
                       machines: Sequence[str] | None = None, force: bool = False, batch_size: int = 16,
                       device: Any = None, recipe: str | None = None, ground_truth: Any = None,
                       progress: bool = True) -> dict[str, dict[str, Path]]:
    """Extract and cache embeddings of every machine's train and test clips; returns {machine: {split: path}}.

    ``manifest``: a ``scan`` DataFrame or data root; ``checkpoint_or_encoder``: an encoder module, a checkpoint
    path (``epoch_XXX.pt``) or a backbone name; ``out_root``: ``results/<regime>/embeddings``. A cached file is
    reused when it holds exactly the manifest's clips (names, and sizes and mtimes of the files) and was made from
    the same checkpoint file with the same pooling and recipe (unless ``force``); files are written atomically. Each
    file records the sha256 of the checkpoint file it came from (``checkpoint_sha256``, empty for an encoder module or
    a backbone name), which the online export checks, and those settings (``settings``, JSON).
    ``channel='joint'`` takes a checkpoint fine-tuned with ``channel_input='joint'`` (or a ``JointChannelEncoder``)
    and writes ``<model_id>/joint/`` files of the same keys and shapes as the other channels.
    """
    import torch

    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    import pandas as pd

    if isinstance(manifest, pd.DataFrame):
        man = manifest
    else:
        from asd_lib.data import scan

        man = scan(manifest, ground_truth)
    if machines is not None:
        unknown = sorted(set(machines) - set(man["machine"]))
        if unknown:
            raise ValueError(f"machines {unknown} are not in the manifest (it has {sorted(set(man['machine']))})")
        man = man[man["machine"].isin(list(machines))]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = None
    source = checkpoint_or_encoder if isinstance(checkpoint_or_encoder, (str, os.PathLike)) else None
    ckpt_sha = file_sha256(source) if source is not None and Path(source).is_file() else ""
    settings = json.dumps({"pooling": pooling, "recipe": recipe}, sort_keys=True)  # what else shapes the vectors
    result: dict[str, dict[str, Path]] = {}
    for machine in sorted(man["machine"].unique()):
        result[machine] = {}
        for split in ("train", "test"):
            rows = man[(man["machine"] == machine) & (man["split"] == split)].sort_values("file_name")
            if rows.empty:
                continue
            path = embedding_path(out_root, model_id, channel, machine, split)
            names = rows["file_name"].tolist()
            clips = clips_digest(rows)
            result[machine][split] = path
            if not force and embeddings_current(path, names, ckpt_sha, settings, clips):
                continue
            if encoder is None:
                encoder = _load_encoder(checkpoint_or_encoder, recipe, channel)
            emb = embed_paths(encoder, rows["path"].tolist(), channel, pooling, duration, batch_size, device,
                              progress, desc=f"{model_id} {channel} {machine} {split}")
            labels = rows["label"].map(_LABELS).fillna(-1).astype(np.int64).to_numpy()
            domains = rows["domain"].fillna("").astype(str).to_numpy()
            save_embeddings(path, emb, names, labels, domains, checkpoint_sha256=ckpt_sha, settings=settings,
                            clips=clips)
    return result
