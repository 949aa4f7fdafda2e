"""EAT / SSLAM encoder (our own implementation from the architecture facts in docs/reference.md §4).

SSLAM (Self-Supervised Learning from Audio Mixtures) has EAT's exact architecture, which is the data2vec-2.0
``data2vec_multi`` image model applied to a (frames, 128) fbank. Facts used:

- patch conv 1 -> D (k = s = ``patch_size``, WITH bias), tokens time-major (t * F + f);
- add a fixed 2-D sin-cos table ``positions`` (1, max_length * F, D): first half of the dims encodes the frequency
  patch index, second half the time patch index, each half [sin | cos] with omega_k = 1 / 10000 ** (k / (D/4));
- prepend ``extra_tokens`` (CLS, no positional term); LayerNorm (``context_encoder.norm``, eps ``norm_eps``);
- post-LN blocks: x = x + proj(attn(x)); r = norm1(x); x = norm2(r + mlp(r)); fused qkv rows [q; k; v] with heads
  contiguous; logits q.k / sqrt(head_dim); exact-erf GELU; no final norm.
- fine-tuned (``mae_image_classification``): logits = head(fc_norm(x[:, 0])) for CLS_TOKEN prediction, or of the
  mean over the non-CLS tokens for MEAN_POOLING.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import ClipTooLongError, Encoder, UnsupportedConfigError
from .fbank import max_samples_for_frames

# Our flat EAT cfg (field names follow the HF EATConfig / fairseq Data2VecMultiConfig where they exist).
EAT_DEFAULTS: dict[str, Any] = {
    "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "qkv_bias": True, "norm_eps": 1e-6,
    "norm_affine": True, "layer_norm_first": False, "patch_size": 16, "in_chans": 1, "mel_bins": 128,
    "max_length": 768, "target_length": 1024, "num_extra_tokens": 1, "prenet_depth": 0,
    "use_alibi_encoder": False, "fixed_positions": True,
    # training-time switches (no effect in eval mode)
    "encoder_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "post_mlp_drop": 0.0,
    "dropout_input": 0.0, "prenet_dropout": 0.0, "layerdrop": 0.0,
    "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
    # fine-tuned classifier (model_variant 'finetune')
    "model_variant": "pretrain", "num_classes": 527, "use_fc_norm": True, "prediction_mode": "CLS_TOKEN",
}
PREDICTION_MODES = ("CLS_TOKEN", "MEAN_POOLING")


def validate_eat_cfg(cfg: dict[str, Any], source: str = "cfg") -> dict[str, Any]:
    """Fill defaults and refuse structures this implementation does not provide; returns the full cfg."""
    full = dict(EAT_DEFAULTS)
    full.update(cfg)
    refuse = []
    if full["layer_norm_first"]:
        refuse.append("layer_norm_first=True (pre-LN blocks with a final norm; EAT/SSLAM are post-LN)")
    if int(full["prenet_depth"]) != 0:
        refuse.append(f"prenet_depth={full['prenet_depth']} (modality-specific prenet blocks)")
    if full["use_alibi_encoder"]:
        refuse.append("use_alibi_encoder=True (ALiBi attention bias)")
    if not full["fixed_positions"]:
        refuse.append("fixed_positions=False (learned / conv positional encoders)")
    if int(full["num_extra_tokens"]) != 1:
        refuse.append(f"num_extra_tokens={full['num_extra_tokens']} (exactly one CLS token is implemented)")
    if int(full["in_chans"]) != 1:
        refuse.append(f"in_chans={full['in_chans']} (one fbank channel)")
    if int(full["mel_bins"]) != 128:
        refuse.append(f"mel_bins={full['mel_bins']} (the fbank recipes give 128 bins)")
    p = int(full["patch_size"])
    if p <= 0 or 128 % p:
        refuse.append(f"patch_size={p} (must divide the 128 mel bins)")
    d, h = int(full["embed_dim"]), int(full["num_heads"])
    if h <= 0 or d % h:
        refuse.append(f"embed_dim={d} is not divisible by num_heads={h}")
    if d % 4:
        refuse.append(f"embed_dim={d} must be a multiple of 4 for the 2-D sin-cos table")
    if full["model_variant"] not in ("pretrain", "finetune"):
        refuse.append(f"model_variant={full['model_variant']!r} (use 'pretrain' or 'finetune')")
    if str(full["prediction_mode"]) not in PREDICTION_MODES:
        refuse.append(f"prediction_mode={full['prediction_mode']!r} (implemented: {PREDICTION_MODES})")
    if refuse:
        raise UnsupportedConfigError(
            f"{source}: this EAT/SSLAM cfg asks for a structure asd_lib does not implement:\n  - "
            + "\n  - ".join(refuse)
            + "\nUse a checkpoint with the released EAT/SSLAM structure, or override the field.")
    return full


def sincos_table(embed_dim: int, time_patches: int, freq_patches: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table (1, time_patches * freq_patches, D): [freq sin|cos, time sin|cos], float64 math."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    t, f = np.meshgrid(np.arange(time_patches, dtype=np.float64), np.arange(freq_patches, dtype=np.float64),
                       indexing="ij")
    parts = []
    for pos in (f.reshape(-1), t.reshape(-1)):
        out = np.outer(pos, omega)
        parts += [np.sin(out), np.cos(out)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()[None]


class _DropPath(nn.Module):
    """Stochastic depth on the residual branch (train mode only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> x with whole samples zeroed with prob. p and the rest scaled by 1 / (1 - p)."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class EATAttention(nn.Module):
    """Fused-qkv self-attention (keys ``qkv``, ``proj``)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.heads, self.attn_drop, self.proj_drop = heads, attn_drop, proj_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return F.dropout(out, self.proj_drop, self.training)


class EATMlp(nn.Module):
    """fc1 -> GELU -> fc2 (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D)."""
        x = F.dropout(F.gelu(self.fc1(x)), self.drop, self.training)
        return F.dropout(self.fc2(x), self.drop, self.training)


class EATBlock(nn.Module):
    """Post-LN block: x = x + attn(x); r = norm1(x); x = norm2(r + mlp(r))."""

    def __init__(self, cfg: dict[str, Any], drop_path: float) -> None:
        super().__init__()
        d = int(cfg["embed_dim"])
        eps, affine = float(cfg["norm_eps"]), bool(cfg["norm_affine"])
        self.norm1 = nn.LayerNorm(d, eps=eps, elementwise_affine=affine)
        self.attn = EATAttention(d, int(cfg["num_heads"]), bool(cfg["qkv_bias"]), float(cfg["attention_dropout"]),
                                 float(cfg["encoder_dropout"]))
        self.norm2 = nn.LayerNorm(d, eps=eps, elementwise_affine=affine)
        self.mlp = EATMlp(d, int(d * float(cfg["mlp_ratio"])), float(cfg["activation_dropout"]))
        self.drop_path = _DropPath(drop_path)
        self.post_mlp_drop = float(cfg["post_mlp_drop"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D)."""
        x = x + self.drop_path(self.attn(x))
        r = x = self.norm1(x)
        x = F.dropout(self.mlp(x), self.post_mlp_drop, self.training)
        return self.norm2(r + self.drop_path(x))


class _PatchConv(nn.Module):
    """Patch conv holder so the key is ``local_encoder.proj.*``."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch, bias=True)


class _FixedPositions(nn.Module):
    """Holder of the frozen sin-cos table so the key is ``fixed_positional_encoder.positions``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.positions = nn.Parameter(table, requires_grad=False)


class _ContextEncoder(nn.Module):
    """Holder of the pre-norm so the key is ``context_encoder.norm.*`` (HF: ``pre_norm``)."""

    def __init__(self, dim: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)


class EATEncoder(Encoder):
    """EAT / SSLAM encoder; parameter names are the official ones without the fairseq/HF wrapper prefixes."""

    kind = "eat"
    recipes = ("eat", "aau")

    def __init__(self, cfg: dict[str, Any], recipe: str | None = None) -> None:
        cfg = validate_eat_cfg(cfg)
        super().__init__(cfg, recipe or "eat")
        d, p, depth = int(cfg["embed_dim"]), int(cfg["patch_size"]), int(cfg["depth"])
        self.freq_patches = int(cfg["mel_bins"]) // p
        self.local_encoder = _PatchConv(d, p)
        self.extra_tokens = nn.Parameter(torch.zeros(1, int(cfg["num_extra_tokens"]), d))
        self.fixed_positional_encoder = _FixedPositions(sincos_table(d, int(cfg["max_length"]), self.freq_patches))
        self.context_encoder = _ContextEncoder(d, float(cfg["norm_eps"]), bool(cfg["norm_affine"]))
        dpr = np.linspace(float(cfg["start_drop_path_rate"]), float(cfg["end_drop_path_rate"]), depth)
        self.blocks = nn.ModuleList([EATBlock(cfg, float(dpr[i])) for i in range(depth)])
        if cfg["model_variant"] == "finetune":
            self.fc_norm = nn.LayerNorm(d, eps=1e-6) if cfg["use_fc_norm"] else None
            self.head = nn.Linear(d, int(cfg["num_classes"]))
        else:
            self.fc_norm, self.head = None, None

    @property
    def embed_dim(self) -> int:
        """Token width D."""
        return int(self.cfg["embed_dim"])

    @property
    def has_classifier(self) -> bool:
        """True for fine-tuned checkpoints (``head`` present)."""
        return self.head is not None

    @property
    def max_time_patches(self) -> int:
        """Time patches the positional table holds."""
        return self.fixed_positional_encoder.positions.shape[1] // self.freq_patches

    def longest_clip_seconds(self) -> float:
        """Longest clip (s at 16 kHz) the un-padded 'aau' recipe supports with this positional table."""
        p = int(self.cfg["patch_size"])
        frames = self.max_time_patches * p + p - 1
        return max_samples_for_frames(frames) / 16000.0

    def reset_parameters(self, seed: int = 0) -> None:
        """Random init of every tensor (seeded) for the named configurations; the sin-cos table is recomputed."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                    m.weight.uniform_(-bound, bound, generator=gen)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm) and m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            w = self.local_encoder.proj.weight
            w.normal_(0.0, math.sqrt(1.0 / w[0].numel()), generator=gen)
            self.local_encoder.proj.bias.zero_()
            self.extra_tokens.normal_(0.0, 0.02, generator=gen)
            self.fixed_positional_encoder.positions.copy_(
                sincos_table(self.embed_dim, int(self.cfg["max_length"]), self.freq_patches))

    def patch_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (B, frames, 128) -> patch embeddings + fixed positions (B, N, D), token = t * 8 + f."""
        if fbank.dim() != 3:
            raise ValueError(f"expected fbank of shape (B, frames, 128), got {tuple(fbank.shape)}")
        p = int(self.cfg["patch_size"])
        if fbank.shape[1] < p:
            raise ValueError(f"clip too short: {fbank.shape[1]} fbank frames, need at least {p} for one patch")
        x = self.local_encoder.proj(fbank[:, None].to(self.extra_tokens.dtype))  # (B, D, T', F')
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), token = t * F' + f
        pos = self.fixed_positional_encoder.positions
        if x.shape[1] > pos.shape[1]:
            if self.recipe == "aau":
                hint = (f"The longest supported clip is {self.longest_clip_seconds():.2f} s at 16 kHz with the "
                        "'aau' recipe; crop the clip, or use recipe='eat' (pads/crops to target_length).")
            else:
                hint = (f"target_length={self.cfg['target_length']} frames does not fit; the longest supported "
                        f"input is {self.max_time_patches * int(self.cfg['patch_size'])} frames "
                        f"({self.longest_clip_seconds():.2f} s of audio with the 'aau' recipe).")
            raise ClipTooLongError(
                f"clip too long for the positional table: {fbank.shape[1]} fbank frames give "
                f"{x.shape[1] // self.freq_patches} time patches, the table holds {self.max_time_patches} "
                f"(max_length). " + hint)
        return x + pos[:, : x.shape[1]]

    def forward_tokens(self, x: torch.Tensor, all_layers: bool = False):
        """Patch tokens (B, N, D) -> (B, 1 + N, D) with CLS first; ``all_layers``: the list of every block's output."""
        x = torch.cat([self.extra_tokens.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.context_encoder.norm(x)
        x = F.dropout(x, float(self.cfg["prenet_dropout"]), self.training)
        x = F.dropout(x, float(self.cfg["dropout_input"]), self.training)
        layerdrop = float(self.cfg["layerdrop"])
        layers = []
        for blk in self.blocks:
            if self.training and layerdrop > 0 and torch.rand(()) < layerdrop:
                layers.append(x)
                continue
            x = blk(x)
            layers.append(x)
        return layers if all_layers else x

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (B, frames, 128) -> tokens (B, 1 + N, D), CLS first, N = (frames // 16) * 8."""
        return self.forward_tokens(self.patch_tokens(fbank))

    def classify_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Fine-tuned reference output: logits (B, classes) = head(fc_norm(CLS)) (or of the token mean)."""
        if self.head is None:
            raise RuntimeError("this EAT/SSLAM encoder has no classifier head (load a fine-tuned checkpoint)")
        x = self.forward_fbank(fbank)
        n_extra = int(self.cfg["num_extra_tokens"])
        x = x[:, 0] if self.cfg["prediction_mode"] == "CLS_TOKEN" else x[:, n_extra:].mean(dim=1)
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        return self.head(x)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Our key names (the io module adds the fairseq / HF prefixes when saving)."""
        return {k: v for k, v in self.state_dict().items()}
