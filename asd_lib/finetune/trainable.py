"""What fine-tuning trains: the trainable sets by parameter name, and the training-time switches (dropout, layer
drop, gradient decay) applied through the encoder's cfg when it is loaded."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn

from asd_lib.backbones import load_backbone

TRAINABLE_SETS = ("aau", "aau-beats", "top_k", "frozen", "all")
DEFAULT_TOP_K = {"beats": 4, "eat": 10}
FIXED_PARAMETERS = frozenset({"fixed_positional_encoder.positions"})
_LAYER_RE = re.compile(r"^(encoder\.layers|blocks)\.(\d+)\.")


def _layer_indices(names: Sequence[str]) -> list[int]:
    return sorted({int(mt.group(2)) for n in names if (mt := _LAYER_RE.match(n))})


def encoder_kind(encoder: nn.Module) -> str:
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
    kind = encoder_kind(encoder)
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
    kind = encoder_kind(encoder)
    cfg = dict(getattr(encoder, "cfg", {}) or {})
    wanted: dict[str, float] = {}
    for name, on in (("dropout", dropout), ("layerdrop", layerdrop), ("grad_decay", grad_decay)):
        if not on:
            wanted.update(SWITCH_FIELDS[kind][name])
    return {k: v for k, v in wanted.items() if k in cfg and float(cfg[k]) != v}


def switch_report(encoder: nn.Module, *, dropout: bool, layerdrop: bool, grad_decay: bool) -> dict[str, Any]:
    """What the switches are and which cfg values are in effect (for the log and config.json)."""
    kind = encoder_kind(encoder)
    cfg = dict(getattr(encoder, "cfg", {}) or {})
    fields = [k for group in SWITCH_FIELDS[kind].values() for k in group]
    return {"dropout": dropout, "layerdrop": layerdrop, "grad_decay": grad_decay,
            "in_effect": {k: cfg[k] for k in fields if k in cfg}}


def load_encoder(backbone: str | Path | nn.Module, recipe: str | None, overrides: dict | None,
                 switches: dict[str, bool] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load the encoder with the training-time switches applied through its cfg; returns (encoder, original cfg
    values of the switched fields) so checkpoints can be saved with the checkpoint's own cfg."""
    switches = switches or {"dropout": True, "layerdrop": True, "grad_decay": True}
    if isinstance(backbone, nn.Module):
        enc = copy.deepcopy(backbone)
        extra = switch_overrides(enc, **switches)
        if extra:
            raise ValueError(f"switching off {sorted(extra)} needs the backbone by name or path (the cfg override "
                             "is applied when the encoder is built); pass e.g. 'beats-tiny' or a checkpoint path")
        return enc, {}
    enc = load_backbone(str(backbone), recipe=recipe, **(overrides or {}))
    extra = switch_overrides(enc, **switches)
    if not extra:
        return enc, {}
    original = {k: enc.cfg[k] for k in extra}
    enc = load_backbone(str(backbone), recipe=recipe, **{**(overrides or {}), **extra})
    return enc, original
