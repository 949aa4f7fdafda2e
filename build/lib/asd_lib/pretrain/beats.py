"""BEATs iteration 1: masked patch prediction against a frozen random-projection tokenizer.

Introduced in notebook ``00b_pretrain``. What follows the BEATs paper (Chen et al., 2022, arXiv 2212.09058,
§3.2.1, §3.3.2, §4.2):

- the tokenizer of the first iteration is a random linear projection and a random codebook, both frozen; a
  16x16 fbank patch gets the index of the nearest code in squared L2 distance;
- the codebook has 1,024 codes of dimension 256;
- 75 % of the patches are masked at random and only the visible ones go through the encoder;
- a Transformer label predictor sees the encoded visible patches with the masked positions filled in, and is
  trained with cross-entropy on the masked positions only.

Our choices, where the paper is silent or the scale differs: the label predictor has one Transformer layer of
the encoder's width with learned positions; the masked positions are a learned mask embedding (the paper
fills them with zeros, which a learned vector includes as a special case); the raw patches are standardised
per dimension with statistics of the first batch before the projection, so that codes are used evenly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asd_lib.backbones import BEATsEncoder

MASK_RATIO = 0.75       # BEATs §3.3.2
CODEBOOK_SIZE = 1024    # BEATs §4.2
CODE_DIM = 256          # BEATs §4.2


def fbank_patches(fbank: torch.Tensor, patch: int = 16) -> torch.Tensor:
    """fbank (B, frames, 128) -> raw patches (B, N, patch*patch) in the encoder's token order (t * F' + f)."""
    b, frames, mel = fbank.shape
    t, f = frames // patch, mel // patch
    x = fbank[:, : t * patch].reshape(b, t, patch, f, patch)
    return x.permute(0, 1, 3, 2, 4).reshape(b, t * f, patch * patch)


class RandomProjectionTokenizer(nn.Module):
    """Frozen random projection + random codebook: patch -> index of the nearest code (BEATs iteration 1)."""

    def __init__(self, patch: int = 16, codebook_size: int = CODEBOOK_SIZE, code_dim: int = CODE_DIM,
                 seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d_in = patch * patch
        self.patch = patch
        self.register_buffer("proj", torch.randn(d_in, code_dim, generator=gen) * math.sqrt(2.0 / (d_in + code_dim)))
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim, generator=gen))
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, fbank: torch.Tensor) -> "RandomProjectionTokenizer":
        """Set the per-dimension patch statistics from one batch of fbank (B, frames, 128)."""
        p = fbank_patches(fbank, self.patch).reshape(-1, self.patch * self.patch)
        self.mean.copy_(p.mean(0))
        self.std.copy_(p.std(0).clamp_min(1e-3))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank (B, frames, 128) -> code indices (B, N) int64."""
        z = ((fbank_patches(fbank, self.patch) - self.mean) / self.std) @ self.proj  # (B, N, code_dim)
        d = (z * z).sum(-1, keepdim=True) - 2.0 * z @ self.codebook.T + (self.codebook ** 2).sum(-1)
        return d.argmin(-1)


class LabelPredictor(nn.Module):
    """Visible encoder outputs + mask embeddings at masked positions -> code logits for every position."""

    def __init__(self, dim: int, heads: int, max_tokens: int, n_codes: int = CODEBOOK_SIZE, layers: int = 1) -> None:
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.zeros(dim))
        self.positions = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_codes)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """visible (B, K, D) at token indices keep (B, K) -> logits (B, n_tokens, n_codes)."""
        b, _, d = visible.shape
        full = self.mask_embedding.expand(b, n_tokens, d).clone()
        full = full.scatter(1, keep[..., None].expand(-1, -1, d), visible)
        return self.head(self.norm(self.blocks(full + self.positions[:n_tokens])))


def random_keep(batch: int, n_tokens: int, mask_ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Indices (B, K) of the visible tokens, K = round(n_tokens * (1 - mask_ratio)), each row sorted."""
    k = max(1, int(round(n_tokens * (1.0 - mask_ratio))))
    order = torch.rand(batch, n_tokens, generator=gen).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


class BEATsPretrainer(nn.Module):
    """BEATs encoder + frozen tokenizer + label predictor; ``loss(fbank)`` is the iteration-1 objective."""

    def __init__(self, encoder: BEATsEncoder, max_tokens: int, seed: int = 0, mask_ratio: float = MASK_RATIO) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = RandomProjectionTokenizer(int(encoder.cfg["input_patch_size"]), seed=seed + 1)
        self.predictor = LabelPredictor(encoder.embed_dim, int(encoder.cfg["encoder_attention_heads"]), max_tokens)
        self.mask_ratio = mask_ratio

    def loss(self, fbank: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the masked patches of fbank (B, frames, 128); also returns masked accuracy."""
        if not bool(self.tokenizer.fitted):
            self.tokenizer.fit(fbank)
        labels = self.tokenizer(fbank)                      # (B, N)
        tokens = self.encoder.patch_tokens(fbank)           # (B, N, D)
        b, n, d = tokens.shape
        keep = random_keep(b, n, self.mask_ratio, gen).to(tokens.device)
        visible = self.encoder.encoder(tokens.gather(1, keep[..., None].expand(-1, -1, d)))
        logits = self.predictor(visible, keep, n)
        masked = torch.ones(b, n, dtype=torch.bool, device=tokens.device).scatter(1, keep, False)
        loss = F.cross_entropy(logits[masked], labels[masked])
        acc = (logits[masked].argmax(-1) == labels[masked]).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    def teacher_update(self, step: int, total: int) -> None:
        """No teacher in BEATs iteration 1."""
