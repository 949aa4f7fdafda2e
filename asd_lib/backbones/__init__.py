"""Pre-trained audio encoders: our own BEATs and EAT/SSLAM modules, their fbank recipes and checkpoint formats.

``load_backbone(path_or_name, recipe=None, **overrides)`` returns an :class:`Encoder` (a ``torch.nn.Module``):

- a name: ``'beats-tiny'``, ``'sslam-tiny'`` (small, random, seeded: the kit's default for CPU runs) or
  ``'beats-base'``, ``'sslam-base'`` (the released shapes with random weights);
- a path: a unilm BEATs ``.pt`` (e.g. ``BEATs_iter3_plus_AS2M.pt``), a fairseq EAT/SSLAM pre-training or
  fine-tuned ``.pt``, or a Hugging Face EAT/SSLAM folder (``config.json`` + ``model.safetensors``). Never downloads.

Encoder API: ``.kind`` ('beats' | 'eat'), ``.embed_dim``, ``.cfg``, ``.recipe``, ``.preprocess(wave)`` -> fbank
(B, frames, 128), ``.extract_features(wave)`` -> tokens (B, N, D) (EAT: CLS first), ``.forward_fbank(fbank)``,
``.classify(wave)`` (fine-tuned files: BEATs probabilities, EAT logits), ``.save(path)`` (official format).
``JointChannelEncoder`` (``joint.py``) wraps a BEATs encoder to read both channels as one sequence.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from .base import (BackboneError, CheckpointFormatError, ClipTooLongError, Encoder, StateDictMismatchError,
                   UnsupportedConfigError, construct)
from .beats import BEATS_DEFAULTS, BEATsEncoder
from .eat import EAT_DEFAULTS, EATEncoder
from .fbank import RECIPES, aau_fbank, beats_fbank, compute_fbank, eat_fbank
from .io import load_checkpoint, save_encoder
from .joint import JointChannelEncoder, load_joint_encoder

log = logging.getLogger(__name__)

_BEATS_BASE: dict[str, Any] = {
    # the structure of BEATs_iter3_plus_AS2M.pt (90 M parameters), with its training-time switches
    "input_patch_size": 16, "embed_dim": 512, "conv_bias": False, "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 0.6, "layer_norm_first": False, "deep_norm": True, "dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.1,
    "conv_pos": 128, "conv_pos_groups": 16, "relative_position_embedding": True, "num_buckets": 320,
    "max_distance": 800, "gru_rel_pos": True, "finetuned_model": False, "predictor_dropout": 0.1,
    "predictor_class": 527,
}
_SSLAM_BASE: dict[str, Any] = {
    # ViT-B EAT/SSLAM; max_length (time patches of the sin-cos table) is read from the stored table when a
    # checkpoint is loaded; 768 here is our choice for random weights (123 s with the 'aau' recipe).
    **EAT_DEFAULTS, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "max_length": 768,
}

#: Named configurations: (kind, cfg). Tiny ones are sized to fine-tune on 2 CPU cores in minutes.
NAMED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "beats-base": ("beats", _BEATS_BASE),
    "beats-tiny": ("beats", {**_BEATS_BASE, "embed_dim": 64, "encoder_layers": 3, "encoder_embed_dim": 96,
                             "encoder_ffn_embed_dim": 192, "encoder_attention_heads": 4}),
    "sslam-base": ("eat", _SSLAM_BASE),
    "sslam-tiny": ("eat", {**_SSLAM_BASE, "embed_dim": 96, "depth": 3, "num_heads": 4, "max_length": 128}),
}


def build_named(name: str, recipe: str | None = None, seed: int = 0, **overrides: Any) -> Encoder:
    """A named configuration with random (seeded) weights; ``overrides`` change cfg fields."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown backbone name {name!r}; choose one of {sorted(NAMED_CONFIGS)} or give a path")
    kind, cfg = NAMED_CONFIGS[name]
    cfg = copy.deepcopy(cfg)
    valid = BEATS_DEFAULTS if kind == "beats" else EAT_DEFAULTS
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise ValueError(f"{name}: unknown cfg field(s) in overrides: {unknown}; valid fields: {sorted(valid)}")
    cfg.update(overrides)
    enc: Encoder = construct(BEATsEncoder if kind == "beats" else EATEncoder, cfg, recipe)
    enc.reset_parameters(seed)  # type: ignore[attr-defined]
    enc.source_format = f"named:{name}"
    log.debug("built %s (random weights, seed %d, recipe %s) cfg=%s", name, seed, enc.recipe,
             json.dumps(enc.cfg, sort_keys=True, default=str))
    return enc


def load_backbone(path_or_name: str | Path, recipe: str | None = None, *, allow_pickle: bool = False,
                  seed: int = 0, **overrides: Any) -> Encoder:
    """Named config or official checkpoint path -> Encoder in eval mode. ``recipe``: 'beats' | 'eat' | 'aau'."""
    if isinstance(path_or_name, str) and path_or_name in NAMED_CONFIGS:
        enc = build_named(path_or_name, recipe=recipe, seed=seed, **overrides)
    else:
        p = Path(path_or_name)
        if not p.exists():
            raise FileNotFoundError(f"{path_or_name}: neither a named backbone ({sorted(NAMED_CONFIGS)}) nor an "
                                    "existing checkpoint file/folder (checkpoints are local paths; nothing is "
                                    "downloaded)")
        enc = load_checkpoint(p, recipe=recipe, allow_pickle=allow_pickle, **overrides)
    return enc.eval()


__all__ = ["load_backbone", "build_named", "construct", "NAMED_CONFIGS", "Encoder", "BEATsEncoder", "EATEncoder",
           "save_encoder", "load_checkpoint", "compute_fbank", "beats_fbank", "eat_fbank", "aau_fbank", "RECIPES",
           "BackboneError", "CheckpointFormatError", "UnsupportedConfigError", "StateDictMismatchError",
           "ClipTooLongError", "JointChannelEncoder", "load_joint_encoder"]
