"""Shared pieces of the encoders: error types, the Encoder base class and strict state-dict loading."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .fbank import compute_fbank


class BackboneError(ValueError):
    """Base class of every loading / configuration error raised by asd_lib.backbones."""


class CheckpointFormatError(BackboneError):
    """The file is not one of the supported checkpoint formats (or needs an explicit opt-in to load)."""


class UnsupportedConfigError(BackboneError):
    """The checkpoint's cfg asks for a structure this implementation does not provide."""


class StateDictMismatchError(BackboneError):
    """Missing or unexpected keys, or tensors with the wrong shape."""


class ClipTooLongError(BackboneError):
    """The clip has more time patches than the positional table holds."""


def construct(cls: type, cfg: dict[str, Any], recipe: str | None) -> "Encoder":
    """Build ``cls(cfg, recipe)`` without running the default initialisers (meta device, then empty CPU tensors).

    The caller must fill every tensor: load a state dict or call ``reset_parameters``.
    """
    with torch.device("meta"):
        enc = cls(cfg, recipe=recipe)
    return enc.to_empty(device="cpu")


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``; raise StateDictMismatchError listing missing/unexpected keys or bad shapes."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    bad = [(k, tuple(expected[k].shape), tuple(state[k].shape)) for k in expected
           if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    for k, exp, got in bad:
        problems.append(f"shape mismatch for {k}: expected {exp} (from cfg), got {got}")
    if problems:
        raise StateDictMismatchError(
            f"{source}: the weights do not fit the architecture described by its cfg:\n  " + "\n  ".join(problems)
            + "\nCheck that the cfg belongs to these weights (or fix the overrides you passed).")
    module.load_state_dict({k: v for k, v in state.items()}, strict=True)


class Encoder(nn.Module):
    """Common API of the BEATs and EAT/SSLAM encoders (see the team contract)."""

    kind: str = ""
    recipes: tuple[str, ...] = ()

    def __init__(self, cfg: dict[str, Any], recipe: str) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.recipe = recipe
        # The original checkpoint cfg (full fairseq tree etc.) so save() can write the same format back.
        self.source_cfg: dict[str, Any] | None = None
        self.source_format: str | None = None
        self.extra: dict[str, Any] = {}

    @property
    def recipe(self) -> str:
        """Name of the fbank recipe used by :meth:`preprocess`."""
        return self._recipe

    @recipe.setter
    def recipe(self, value: str) -> None:
        if value not in self.recipes:
            raise ValueError(f"recipe {value!r} is not available for {self.kind}; choose one of {self.recipes}")
        self._recipe = value

    @property
    def embed_dim(self) -> int:
        """Width D of the output tokens."""
        raise NotImplementedError

    @property
    def has_classifier(self) -> bool:
        """True when the checkpoint carried the fine-tuned classifier of the reference code."""
        raise NotImplementedError

    def preprocess(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, T) float32 16 kHz -> normalised fbank (B, frames, 128) with this encoder's recipe."""
        target = int(self.cfg.get("target_length", 1024))
        wave = torch.as_tensor(wave)
        return compute_fbank(wave.to(self._device()), self.recipe, target_length=target)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank (B, frames, 128) -> tokens (B, N, D)."""
        raise NotImplementedError

    def extract_features(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, T) -> tokens (B, N, D) exactly as the reference code computes them (EAT: CLS first)."""
        return self.forward_fbank(self.preprocess(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`extract_features`."""
        return self.extract_features(wave)

    def classify_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Reference classifier output from fbank (B, frames, 128) -> (B, classes)."""
        raise NotImplementedError

    def classify(self, wave: torch.Tensor) -> torch.Tensor:
        """Reference fine-tuned classifier output (BEATs: probabilities, EAT: logits) for wave (B, T) -> (B, C)."""
        if not self.has_classifier:
            raise RuntimeError(f"this {self.kind} encoder has no fine-tuned classifier (load a fine-tuned "
                               "checkpoint to use classify())")
        return self.classify_fbank(self.preprocess(wave))

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with the keys of the official format this encoder saves to."""
        raise NotImplementedError

    def save(self, path: str | Path, format: str | None = None) -> Path:
        """Write this encoder in an official format (BEATs {cfg, model}; EAT fairseq .pt or HF folder)."""
        from .io import save_encoder  # circular: io imports this module

        return save_encoder(self, path, format=format)

    def _device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device
