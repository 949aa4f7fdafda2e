"""The classification heads of fine-tuning (ArcFace, softmax) and the model they train with the encoder."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from asd_lib.embed import pool_tokens


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


class Classifier(nn.Module):
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
