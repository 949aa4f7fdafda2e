"""SSLAM on EAT: an EMA teacher, inverse-block-masked student clones, the utterance-frame objective, and mixtures.

Introduced in notebook ``00b_pretrain``. What follows the papers and the released SSLAM code (EAT: Chen et al.,
2024, arXiv 2401.03497; SSLAM: Alex et al., ICLR 2025, github.com/ta012/SSLAM, Stage 2):

- the teacher is an exponential moving average of the whole student (patch embedding included), with the decay
  annealed linearly from a start to an end value;
- the teacher sees the whole clip; its frame targets are the average over all blocks of each block's patch
  outputs, each instance-normalised over the patches, then layer-normalised (no affine);
- the student sees only 20 % of the patches (mask ratio 0.8), chosen by inverse block masking (the kept patches
  come in blocks), with several masked clones per clip that share the teacher's targets;
- a light 2-D CNN decoder (conv 3x3 + LayerNorm + GELU, grouped, residual, then a linear layer) fills in the
  masked patches from the student's visible outputs (masked positions enter as noise of std 0.01) and regresses
  the frame targets at the masked positions; the loss is the squared error summed over dimensions / sqrt(D);
- utterance loss: the student's CLS output regresses the patch mean of the teacher's last block (weight 1); we
  average the raw outputs, then layer-normalise (the frame targets' instance norm first would make it constant);
- SSLAM: the batch is doubled with mixtures. A clip is mixed with the previous clip of the batch as the
  element-wise maximum of their normalised log-mel spectrograms, except in two stretches of time where the
  partner is left out; a mixed clip reuses its original's masks. Source retention: in the mixed stretches the
  student's decoder output on the mixture also regresses the average of the two sources' teacher targets
  (weight 2), beside the usual target of the teacher on the mixture itself;
- Adam(W) with betas (0.9, 0.95), weight decay 0.05, gradient clipping at 4, warm-up + cosine (train.py).

Scaled down or our choice: width, depth and the number of clones (4, EAT uses 16 and SSLAM 8); the decoder has
4 layers of the encoder's width in groups of 48 channels (EAT: 6 layers of 768 in 16 groups of 48); block size 2
patches on our 12 x 8 patch grid (EAT: 5 on 64 x 8); the unmixed stretches are each 1/4 of the clip (SSLAM: 240
of 1,024 frames); the EMA decay runs from 0.996 to 0.9998 over the whole run (EAT: 0.9998 to 0.99999 over
100,000 steps; our runs are about 20 times shorter, so the teacher's time constant is scaled by the same factor);
the source's teacher target comes from the whole partner clip (SSLAM runs the teacher on its mixed stretch only).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from asd_lib.backbones import EATEncoder

MASK_RATIO = 0.8          # EAT
CLONES = 4                # ours (EAT 16, SSLAM stage 2: 8)
BLOCK = 2                 # ours (EAT: 5 on a 64 x 8 grid)
MIX_WEIGHT = 2.0          # SSLAM: weight of the source-retention patch loss
CLS_WEIGHT = 1.0          # EAT: utterance loss weight
EMA_START, EMA_END = 0.996, 0.9998


class Decoder2d(nn.Module):
    """EAT's light CNN decoder on the patch grid: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, freq_patches: int, layers: int = 4) -> None:
        super().__init__()
        self.freq = freq_patches
        groups = max(1, dim // 48)
        self.convs = nn.ModuleList([nn.Conv2d(dim, dim, 3, padding=1, groups=groups) for _ in range(layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim, elementwise_affine=False) for _ in range(layers)])
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = x.reshape(b, n // self.freq, self.freq, d)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            y = F.gelu(norm(conv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
            h = y if i == 0 else h + y
        return self.proj(h.reshape(b, n, d))


def inverse_block_keep(rows: int, t: int, f: int, mask_ratio: float, block: int, gen: torch.Generator) -> torch.Tensor:
    """Visible token indices (rows, K) on a (t, f) patch grid, kept in blocks of block x block (inverse masking)."""
    k = max(1, int(round(t * f * (1.0 - mask_ratio))))
    n_centres = math.ceil(k / block ** 2) + 1
    seeds = torch.zeros(rows, t * f)
    seeds.scatter_(1, torch.rand(rows, t * f, generator=gen).argsort(1)[:, :n_centres], 1.0)
    grid = F.pad(seeds.reshape(rows, 1, t, f), (0, block - 1, 0, block - 1))
    blocks = F.max_pool2d(grid, block, stride=1).reshape(rows, t * f)     # union of the blocks
    score = blocks + 0.5 * torch.rand(rows, t * f, generator=gen)         # blocks first, random fill / trim
    return score.topk(k, dim=1).indices.sort(dim=1).values


def mix_stretches(batch: int, t: int, gen: torch.Generator, frac: float = 0.25) -> torch.Tensor:
    """(B, t) bool: True where a clip is mixed with its partner; two unmixed stretches of ``frac`` * t rows each."""
    r = max(1, int(round(frac * t)))
    mixed = torch.ones(batch, t, dtype=torch.bool)
    for i in range(batch):
        a = int(torch.randint(0, t - 2 * r + 1, (1,), generator=gen))
        c = int(torch.randint(a + r, t - r + 1, (1,), generator=gen))
        mixed[i, a:a + r] = False
        mixed[i, c:c + r] = False
    return mixed


def frame_targets(layers: list[torch.Tensor], n_extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher block outputs -> frame targets (B, N, D) and the utterance target (B, D).

    Frames: the mean over blocks of each block's patch outputs instance-normalised over the patches, then layer
    norm. Utterance: the layer-normed patch mean of the last block's raw output. (Instance-normalising first, as
    the frame targets are, would make every patch mean zero and the utterance target a constant.)
    """
    d = layers[0].shape[-1:]
    normed = [F.instance_norm(y[:, n_extra:].transpose(1, 2)).transpose(1, 2) for y in layers]
    frames = F.layer_norm(torch.stack(normed).mean(0), d)
    return frames, F.layer_norm(layers[-1][:, n_extra:].mean(1), d)


def _sq_err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the last dimension / sqrt(D), averaged over everything else."""
    return ((pred - target) ** 2).sum(-1).mean() / math.sqrt(pred.shape[-1])


class SSLAMPretrainer(nn.Module):
    """EAT student + EMA teacher + CNN decoder; ``loss(fbank)`` is SSLAM's stage-2 objective (EAT's when mix=False)."""

    def __init__(self, encoder: EATEncoder, clones: int = CLONES, mix: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.teacher = copy.deepcopy(encoder).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.decoder = Decoder2d(encoder.embed_dim, encoder.freq_patches)
        self.clones, self.mix = clones, mix

    def train(self, mode: bool = True) -> "SSLAMPretrainer":
        super().train(mode)
        self.teacher.eval()  # the teacher never drops out
        return self

    @torch.no_grad()
    def teacher_update(self, step: int, total: int) -> None:
        """EMA step with the decay annealed linearly from EMA_START to EMA_END over ``total`` steps."""
        tau = EMA_START + (EMA_END - EMA_START) * min(1.0, step / max(1, total))
        for pt, ps in zip(self.teacher.parameters(), self.encoder.parameters()):
            pt.mul_(tau).add_(ps.detach(), alpha=1.0 - tau)

    def loss(self, fbank: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on a batch of normalised fbank (B, frames, 128)."""
        b = fbank.shape[0]
        p, fq = int(self.encoder.cfg["patch_size"]), self.encoder.freq_patches
        t = fbank.shape[1] // p
        fbank = fbank[:, : t * p]
        mixed_rows = None
        if self.mix:
            mixed_rows = mix_stretches(b, t, gen).to(fbank.device)                    # (B, t)
            partner = fbank.roll(1, dims=0)
            frame_mixed = mixed_rows.repeat_interleave(p, dim=1)[..., None]           # (B, frames, 1)
            fbank = torch.cat([fbank, torch.where(frame_mixed, torch.maximum(fbank, partner), fbank)])
        n_extra = int(self.encoder.cfg["num_extra_tokens"])
        with torch.no_grad():
            frames, cls_t = frame_targets(self.teacher.forward_tokens(self.teacher.patch_tokens(fbank), True), n_extra)
        m = self.clones
        keep = inverse_block_keep(b * m, t, fq, MASK_RATIO, BLOCK, gen).to(fbank.device)
        if self.mix:
            keep = torch.cat([keep, keep])                                             # mixtures reuse the masks
        tokens = self.encoder.patch_tokens(fbank).repeat_interleave(m, dim=0)          # (B2*M, N, D)
        rows, n, d = tokens.shape
        out = self.encoder.forward_tokens(tokens.gather(1, keep[..., None].expand(-1, -1, d)))
        full = torch.randn(rows, n, d, device=fbank.device) * 0.01
        pred = self.decoder(full.scatter(1, keep[..., None].expand(-1, -1, d), out[:, n_extra:]))
        masked = torch.ones(rows, n, dtype=torch.bool, device=fbank.device).scatter(1, keep, False)
        target = frames.repeat_interleave(m, dim=0)
        frame_loss = _sq_err(pred[masked], target[masked])
        cls_loss = _sq_err(out[:, 0], cls_t.repeat_interleave(m, dim=0))
        loss = frame_loss + CLS_WEIGHT * cls_loss
        stats = {"frame": frame_loss.item(), "cls": cls_loss.item()}
        if self.mix:
            own = frames[:b]
            tok_mixed = mixed_rows.repeat_interleave(fq, dim=1)[..., None]             # (B, N, 1)
            srl = torch.where(tok_mixed, 0.5 * (own + own.roll(1, dims=0)), own).repeat_interleave(m, dim=0)
            half = masked[b * m:]
            mix_loss = _sq_err(pred[b * m:][half], srl[half])
            loss = loss + MIX_WEIGHT * mix_loss
            stats["mix"] = mix_loss.item()
        stats["loss"] = loss.item()
        return loss, stats
