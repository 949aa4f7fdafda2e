"""BEATs encoder (our own implementation from the architecture facts in docs/reference.md §4).

Facts used (from the BEATs paper and the structure of the official unilm checkpoints; no code copied):

- patch conv 1 -> ``embed_dim`` (k = s = ``input_patch_size``, no bias) over the (frames, 128) fbank, tokens
  ordered time-major (t * F + f); LayerNorm; Linear to ``encoder_embed_dim`` when the widths differ.
- positional conv: weight-normalised grouped Conv1d (kernel ``conv_pos``, padding kernel // 2, groups
  ``conv_pos_groups``; w = g * v / ||v|| with the norm over dims (0, 1) per tap), the last output step dropped for
  an even kernel, GELU; added to x, then LayerNorm (post-LN model).
- T5-style bidirectional relative-position buckets over the flattened token index (``num_buckets``,
  ``max_distance``), one table shared by all layers, gated per query and head by a GRU-style gate computed from the
  unscaled per-head query: (a, b) = sigmoid(sum over 4 of grep_linear(q) viewed (2, 4));
  gate = a * (b * grep_a - 1) + 2.
- attention logits q.k / sqrt(head_dim) + gate * bias; post-LN layers with deep-norm residual scale
  alpha = (2 * layers) ** 0.25: x = LN1(alpha * x + attn(x)); x = LN2(alpha * x + fc2(gelu(fc1(x)))). No final norm.
- fine-tuned files: probs = sigmoid(mean over tokens of predictor(x)).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with the gated bias as a float mask,
except when training on the CPU with large score tensors (long clips, big batches): there ``GatedBiasAttention``
(below) takes the gate and the ungated bias apart and works on one head of one clip at a time, so that the (L, L)
scores stay in cache from the logits to the dropout.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from .base import Encoder, StateDictMismatchError, UnsupportedConfigError

# Field defaults of the official BEATsConfig (a cfg missing a field gets these, as the reference does).
BEATS_DEFAULTS: dict[str, Any] = {
    "input_patch_size": -1, "embed_dim": 512, "conv_bias": False, "encoder_layers": 12,
    "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
    "activation_fn": "gelu", "layer_wise_gradient_decay_ratio": 1.0, "layer_norm_first": False,
    "deep_norm": False, "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0, "dropout_input": 0.0, "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280, "gru_rel_pos": False,
    "finetuned_model": False, "predictor_dropout": 0.1, "predictor_class": 527,
}


def validate_beats_cfg(cfg: dict[str, Any], source: str = "cfg") -> dict[str, Any]:
    """Fill defaults and refuse structures this implementation does not provide; returns the full cfg."""
    full = dict(BEATS_DEFAULTS)
    full.update(cfg)
    refuse = []
    if full["layer_norm_first"]:
        refuse.append("layer_norm_first=True (pre-LN layers; only the post-LN BEATs of the released checkpoints "
                      "is implemented)")
    if not full["relative_position_embedding"]:
        refuse.append("relative_position_embedding=False (every released iter3/iter3+ checkpoint uses the "
                      "relative bias)")
    if not full["gru_rel_pos"]:
        refuse.append("gru_rel_pos=False (only the gated relative bias is implemented)")
    if full["conv_bias"]:
        refuse.append("conv_bias=True (the patch conv of the released checkpoints has no bias)")
    if not full["deep_norm"]:
        refuse.append("deep_norm=False (only the deep-norm residual scaling is implemented)")
    if full["activation_fn"] != "gelu":
        refuse.append(f"activation_fn={full['activation_fn']!r} (only 'gelu' is implemented)")
    if int(full["input_patch_size"]) <= 0:
        refuse.append(f"input_patch_size={full['input_patch_size']} (must be a positive patch size, e.g. 16)")
    d, h = int(full["encoder_embed_dim"]), int(full["encoder_attention_heads"])
    if h <= 0 or d % h:
        refuse.append(f"encoder_embed_dim={d} is not divisible by encoder_attention_heads={h}")
    if int(full["conv_pos_groups"]) <= 0 or d % int(full["conv_pos_groups"]):
        refuse.append(f"encoder_embed_dim={d} is not divisible by conv_pos_groups={full['conv_pos_groups']}")
    if int(full["num_buckets"]) < 4 or int(full["max_distance"]) <= int(full["num_buckets"]) // 4:
        refuse.append(f"num_buckets={full['num_buckets']}, max_distance={full['max_distance']} do not define "
                      "T5-style log buckets (need max_distance > num_buckets / 4)")
    if refuse:
        raise UnsupportedConfigError(
            f"{source}: this BEATs cfg asks for a structure asd_lib does not implement:\n  - " + "\n  - ".join(refuse)
            + "\nUse a checkpoint with the released BEATs structure (iter3 / iter3+), or override the field.")
    return full


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 bidirectional bucket index of (key - query) for every (query, key) pair -> (L, L) int64."""
    pos = torch.arange(length, dtype=torch.long)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    dist = rel.abs()
    max_exact = half // 2
    # log-spaced buckets beyond max_exact (float32 arithmetic, as the reference evaluates it)
    large = max_exact + (torch.log(dist.clamp(min=1).float() / max_exact)
                         / math.log(max_distance / max_exact) * (half - max_exact)).to(torch.long)
    large = large.clamp(max=half - 1)
    return buckets + torch.where(dist < max_exact, dist, large)


class _GradScale(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``scale`` on the way back (BEATs layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


# Train-time attention on the CPU through ``GatedBiasAttention`` or SDPA. By default (ASD_KIT_CHUNKED_ATTENTION unset)
# the chunked function runs when one layer's attention scores (B x H x L x L) reach CHUNKED_MIN_SCORES entries: SDPA's
# math path then streams several tensors of that size through memory, which the chunked function keeps in cache.
# Measured on the 2-core EPYC (32 MB L3), one fine-tuning step, SDPA -> chunked: BEATs-base 10 s x 4 (11.8 M entries)
# 15.2 -> 10.9 s; 10 s x 1 (3.0 M) 1.82 -> 1.80 s; 6 s x 1 (1.0 M) 1.02 -> 1.10 s; the demo's 3-layer BEATs
# 10 s x 8 (7.9 M) 0.48 -> 0.27 s, 4 s x 16 (2.6 M) 0.22 -> 0.16 s, 3 s x 16 (1.3 M) 0.12 -> 0.11 s, 2 s x 32 (1.4 M)
# 0.12 -> 0.15 s, 1 s x 32 (0.3 M, the demo's fine-tuning crops) 0.07 -> 0.08 s. Below the threshold stays SDPA,
# and with it everything the demo and the shipped checkpoints train (1-s and 2-s crops, masked pre-training): the
# chunked function draws its dropout from another random stream than torch's, so it would not repeat them bit for
# bit. ASD_KIT_CHUNKED_ATTENTION=1 forces it on, =0 off (benchmarks/report.py --attention).
CHUNKED_CPU_ATTENTION = {"1": True, "0": False}.get(os.environ.get("ASD_KIT_CHUNKED_ATTENTION", ""))
CHUNKED_MIN_SCORES = 1 << 21  # 2.1 M entries, 8 MB of fp32 scores per layer
# Largest chunk of the CPU training attention, in (L, L) entries: one head of one 10 s clip (496^2 fp32 ~ 1 MB),
# so that a chunk's scores, probabilities and keep-mask stay near the core between the operations that touch them
# (4 heads per chunk measured 1.8x slower per layer on the 2-core EPYC than 1 head).
ATTN_CHUNK_ELEMENTS = 1 << 18


_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _head_pieces(heads: int, length: int, workers: int) -> list[list[tuple[int, int]]]:
    """Per worker, its (h0, h1) head ranges: a contiguous share of the heads cut into chunks of equal size."""
    step = max(1, ATTN_CHUNK_ELEMENTS // (length * length))
    out = []
    for w in range(workers):
        a, b = heads * w // workers, heads * (w + 1) // workers
        k = -(-(b - a) // step)  # chunks in this share
        out.append([(a + (b - a) * j // k, a + (b - a) * (j + 1) // k) for j in range(k)] if b > a else [])
    return out


def _on_workers(job, heads: int, length: int) -> None:
    """Run ``job(pieces)`` on one Python thread per torch thread, each with single-threaded torch operations.

    The chunks are small (about 50 us an operation), and an operation spread over the threads waits for all of them
    at its end: on a shared machine, where one of the threads is often off its core, those waits dominated. Whole
    chunks per thread need no waiting until the last one is done. torch's thread count is set to 1 meanwhile (it is
    process-wide for MKL) and put back afterwards. One thread (torch's own threads) under a dispatch mode such as
    ``FlopCounterMode``, which sees only its own thread's operations, or without the OpenMP backend, where the thread
    count cannot be changed once set.
    """
    before = torch.get_num_threads()
    workers = min(before, heads)
    if workers <= 1 or not _OPENMP or is_in_torch_dispatch_mode():
        job(_head_pieces(heads, length, 1)[0])
        return
    pieces = _head_pieces(heads, length, workers)

    def run(mine):
        torch.set_num_threads(1)  # this thread's OpenMP setting, and MKL's
        with torch.no_grad():  # grad mode is per thread; the job writes into out= tensors
            job(mine)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(run, mine) for mine in pieces]:
                f.result()
    finally:
        torch.set_num_threads(before)


class _KeepMask:
    """Dropout keep-masks from one PCG64 stream, laid out like the (B, H, L, L) probabilities: head (i, j) reads
    the ``slot`` 64-bit draws that start at draw (i * H + j) * slot, so the mask does not depend on the chunking
    or on the number of threads. numpy gives raw bits at about a fifth of the cost of ``bernoulli_`` here."""

    def __init__(self, seed: int, p: float, heads: int, length: int) -> None:
        self.rng, self.pos = np.random.PCG64(seed), 0
        self.heads, self.length = heads, length
        self.slot = (length * length + 1) // 2  # two int32 draws per 64 bits
        # P(int32 bits < threshold) = 1 - p, to 2^-32; a 0-d int32 tensor keeps ``lt`` on torch's vectorised path
        # (a Python int would promote the comparison and fall off it)
        keep = min(round((1.0 - p) * 2 ** 32), 2 ** 32 - 1)
        self.threshold = torch.tensor(keep - 2 ** 31, dtype=torch.int32)

    def fill(self, i: int, h0: int, h1: int, out: torch.Tensor) -> torch.Tensor:
        """Keep-mask of heads h0:h1 of clip i into the bool tensor ``out`` (h1 - h0, L, L)."""
        start = (i * self.heads + h0) * self.slot
        self.rng.advance(start - self.pos)  # a negative step goes back: PCG64 counts modulo its period
        raw = self.rng.random_raw((h1 - h0) * self.slot)
        self.pos = start + raw.size
        bits = torch.from_numpy(raw.view(np.int32).reshape(h1 - h0, -1)[:, :self.length ** 2])
        return torch.lt(bits.view(out.shape), self.threshold, out=out)


class GatedBiasAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(hd) + gate * bias) with dropout on the probabilities, then @ v; chunked for the CPU.

    q, k, v (B, H, L, hd); gate (B, H, L, 1); bias (H, L, L) ungated and shared by the batch; p the dropout rate.
    The unfused math path of SDPA (which torch takes for a mask that needs a gradient, or for dropout) builds and
    re-reads several (B, H, L, L) tensors per layer. Here each chunk (heads of one clip, ``ATTN_CHUNK_ELEMENTS``) is
    computed while in cache; only the probabilities and the keep-mask (bool) are written out, for the backward pass
    (keeping them costs one write and one read; recomputing q k^T instead would cost a fifth more attention GEMMs).
    The chunks are shared out over worker threads (``_on_workers``).
    Dropout keeps an entry with probability 1 - p and scales the kept ones by 1 / (1 - p), as torch's dropout; its
    random bits come from a numpy PCG64 stream seeded from torch's default generator (deterministic for a fixed
    torch seed, though not the stream ``F.dropout`` would draw).
    """

    @staticmethod
    def forward(ctx, q, k, v, gate, bias, p: float):  # type: ignore[override]
        b, h, n, hd = q.shape
        scale, keep = 1.0 / math.sqrt(hd), 1.0 - p
        probs = q.new_empty((b, h, n, n))
        mask = torch.empty((b, h, n, n), dtype=torch.bool, device=q.device) if p > 0 else None
        seed = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64).item()) if p > 0 else 0
        out = q.new_empty((b, h, n, hd))

        def job(pieces):
            draws = _KeepMask(seed, p, h, n) if mask is not None else None
            scores = q.new_empty((max((h1 - h0 for h0, h1 in pieces), default=0), n, n))
            for h0, h1 in pieces:  # heads outer: the chunk's bias stays in cache over the batch
                s = scores[:h1 - h0]
                for i in range(b):
                    torch.mul(gate[i, h0:h1], bias[h0:h1], out=s)
                    # out= rather than baddbmm_: FlopCounterMode counts baddbmm, not its in-place twin
                    torch.baddbmm(s, q[i, h0:h1], k[i, h0:h1].transpose(1, 2), alpha=scale, out=s)
                    pr = torch.softmax(s, -1, out=probs[i, h0:h1])
                    if draws is not None:
                        m = draws.fill(i, h0, h1, mask[i, h0:h1])
                        pr = torch.mul(pr, m.view(torch.uint8), out=s)  # u8, not bool: stays vectorised
                    torch.bmm(pr, v[i, h0:h1], out=out[i, h0:h1])

        _on_workers(job, h, n)
        if p > 0:
            out.mul_(1.0 / keep)  # dropout's scale on the (L, hd) rows rather than the (L, L) probabilities
        ctx.p = p
        ctx.save_for_backward(q, k, v, gate, bias, out, probs, mask)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, gate, bias, out, probs, mask = ctx.saved_tensors
        b, h, n, hd = q.shape
        p, scale = ctx.p, 1.0 / math.sqrt(hd)
        want_gate, want_bias = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        # dS = P * (dP - rowsum(dO * O)), dP the gradient of the probabilities before dropout
        go = grad_out.contiguous() * (1.0 / (1.0 - p)) if p > 0 else grad_out.contiguous()
        row = (grad_out * out).sum(-1, keepdim=True)  # (B, H, L, 1)
        dq, dk, dv = torch.empty_like(out), torch.empty_like(out), torch.empty_like(out)
        dgate = torch.empty_like(gate) if want_gate else None
        dbias = torch.zeros_like(bias) if want_bias else None

        def job(pieces):
            most = max((h1 - h0 for h0, h1 in pieces), default=0)
            work = q.new_empty((2, most, n, n))
            for h0, h1 in pieces:
                kept, ds = work[0, :h1 - h0], work[1, :h1 - h0]
                for i in range(b):
                    pr = probs[i, h0:h1]
                    pk = pr if mask is None else torch.mul(pr, mask[i, h0:h1].view(torch.uint8), out=kept)
                    torch.bmm(pk.transpose(1, 2), go[i, h0:h1], out=dv[i, h0:h1])
                    torch.bmm(go[i, h0:h1], v[i, h0:h1].transpose(1, 2), out=ds)  # dP of kept entries / keep
                    ds.mul_(pk).addcmul_(pr, row[i, h0:h1], value=-1.0)  # dS = P m dP' - P rowsum
                    torch.bmm(ds, k[i, h0:h1], out=dq[i, h0:h1])
                    torch.bmm(ds.transpose(1, 2), q[i, h0:h1], out=dk[i, h0:h1])
                    if dgate is not None:
                        torch.linalg.vecdot(ds, bias[h0:h1], dim=-1, out=dgate[i, h0:h1, :, 0])
                    if dbias is not None:
                        dbias[h0:h1].addcmul_(ds, gate[i, h0:h1])  # summed over the batch while in cache

        _on_workers(job, h, n)
        return dq.mul_(scale), dk.mul_(scale), dv, dgate, dbias, None


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight norm stored as ``weight_g`` (1, 1, K) and ``weight_v`` (C, C/groups, K)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> torch.Tensor:
        """Effective conv weight g * v / ||v||, norm over dims (0, 1) for each kernel tap."""
        if not torch.is_grad_enabled():  # inference: reuse while g and v are unchanged
            key = (self.weight_g._version, self.weight_v._version, self.weight_v.data_ptr(), self.weight_v.device)
            if getattr(self, "_cache_key", None) == key:
                return self._cache
        v = self.weight_v
        norm = torch.linalg.vector_norm(v.reshape(-1, v.shape[-1]), dim=0).view(1, 1, -1)
        w = v * (self.weight_g / norm)
        if not torch.is_grad_enabled():
            self._cache_key, self._cache = key, w
        else:
            self._cache_key = None
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, L) -> (B, C, L + 1 - K % 2)."""
        return F.conv1d(x, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)


class BEATsAttention(nn.Module):
    """Multi-head self-attention with the gated relative-position bias (keys mirror the official ones)."""

    def __init__(self, dim: int, heads: int, num_buckets: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        # Shared: the encoder replaces this by layer 0's module in every layer.
        self.relative_attention_bias = nn.Embedding(num_buckets, heads, _weight=torch.zeros(num_buckets, heads))

    def _fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked [q; k; v] weight (3D, D) and bias (3D,); cached in inference while the parameters are unchanged."""
        params = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                  self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)
        if torch.is_grad_enabled():
            self._qkv_key = None
            return torch.cat(params[:3]), torch.cat(params[3:])
        key = tuple((p._version, p.data_ptr()) for p in params)
        if getattr(self, "_qkv_key", None) != key:
            self._qkv_key, self._qkv = key, (torch.cat(params[:3]), torch.cat(params[3:]))
        return self._qkv

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor, workspace: dict | None = None) -> torch.Tensor:
        """x (B, L, D), pos_bias (H, L, L) ungated -> (B, L, D). ``workspace`` lends a reusable mask buffer."""
        b, n, d = x.shape
        h, hd = self.heads, self.head_dim
        # one GEMM for q, k, v (rows [q; k; v]); q stays unscaled for the gate
        w, bias = self._fused_qkv()
        q, k, v = F.linear(x, w, bias).view(b, n, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd)
        g = torch.sigmoid(self.grep_linear(q).view(b, h, n, 2, 4).sum(-1))  # (B, H, L, 2)
        gate = g[..., :1] * (g[..., 1:] * self.grep_a - 1.0) + 2.0  # (B, H, L, 1)
        gate, pos_bias = gate.to(q.dtype), pos_bias.to(q.dtype)  # SDPA wants the mask in q's dtype (autocast)
        p = self.dropout if self.training else 0.0
        chunked = CHUNKED_CPU_ATTENTION if CHUNKED_CPU_ATTENTION is not None else b * h * n * n >= CHUNKED_MIN_SCORES
        if (chunked and torch.is_grad_enabled() and q.device.type == "cpu" and p < 1.0
                and q.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu")
                and (q.requires_grad or pos_bias.requires_grad)):
            # training on the CPU: SDPA would take its unfused math path (a mask with a gradient, dropout), which
            # streams several (B, H, L, L) tensors through memory; CUDA, bf16 autocast and inference keep SDPA
            out = GatedBiasAttention.apply(q, k, v, gate, pos_bias, p)
            return self.out_proj(out.transpose(1, 2).reshape(b, n, d))
        if torch.is_grad_enabled() or workspace is None:
            mask = gate * pos_bias  # (B, H, L, L) float bias added to the logits
        else:  # inference: one buffer for all layers (fresh 100 MB tensors cost page faults on CPU)
            buf = workspace.get("mask")
            if buf is None or buf.shape != (b, h, n, n) or buf.dtype != q.dtype:
                buf = workspace["mask"] = torch.empty((b, h, n, n), dtype=q.dtype, device=q.device)
            mask = torch.mul(gate, pos_bias, out=buf)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class BEATsLayer(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d, f = int(cfg["encoder_embed_dim"]), int(cfg["encoder_ffn_embed_dim"])
        self.alpha = (2.0 * int(cfg["encoder_layers"])) ** 0.25
        self.self_attn = BEATsAttention(d, int(cfg["encoder_attention_heads"]), int(cfg["num_buckets"]),
                                        float(cfg["attention_dropout"]))
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, f)
        self.fc2 = nn.Linear(f, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.p_drop, self.p_act = float(cfg["dropout"]), float(cfg["activation_dropout"])

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor, workspace: dict | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        a = F.dropout(self.self_attn(x, pos_bias, workspace), self.p_drop, self.training)
        x = self.self_attn_layer_norm(x * self.alpha + a)
        y = F.dropout(F.gelu(self.fc1(x)), self.p_act, self.training)
        y = F.dropout(self.fc2(y), self.p_drop, self.training)
        return self.final_layer_norm(x * self.alpha + y)


class BEATsTransformer(nn.Module):
    """Positional conv + LayerNorm + layers (the official ``encoder.*`` subtree)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d = int(cfg["encoder_embed_dim"])
        self.cfg = cfg
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, int(cfg["conv_pos"]), int(cfg["conv_pos_groups"])))
        self.layer_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList([BEATsLayer(cfg) for _ in range(int(cfg["encoder_layers"]))])
        shared = self.layers[0].self_attn.relative_attention_bias
        for layer in self.layers[1:]:
            layer.self_attn.relative_attention_bias = shared
        self._buckets: dict[int, torch.Tensor] = {}

    @property
    def relative_attention_bias(self) -> nn.Embedding:
        """The one relative-bias table shared by every layer (stored under each layer's key)."""
        return self.layers[0].self_attn.relative_attention_bias

    def position_bias(self, length: int) -> torch.Tensor:
        """Ungated relative bias (H, L, L) for a sequence of ``length`` tokens."""
        idx = self._buckets.get(length)
        if idx is None:
            # built outside inference mode: an inference tensor cached here would break a later training pass
            with torch.inference_mode(False):
                idx = relative_position_buckets(length, int(self.cfg["num_buckets"]), int(self.cfg["max_distance"]))
            self._buckets = {length: idx}  # keep only the latest length
        table = self.relative_attention_bias.weight
        return F.embedding(idx.to(table.device), table).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        conv = self.pos_conv[0](x.transpose(1, 2))
        if int(self.cfg["conv_pos"]) % 2 == 0:
            conv = conv[:, :, :-1]
        x = x + F.gelu(conv).transpose(1, 2)
        x = self.layer_norm(x)
        x = F.dropout(x, float(self.cfg["dropout"]), self.training)
        bias = self.position_bias(x.shape[1])
        ratio = float(self.cfg["layer_wise_gradient_decay_ratio"])
        layerdrop = float(self.cfg["encoder_layerdrop"])
        workspace: dict = {}
        for layer in self.layers:
            if ratio != 1.0 and torch.is_grad_enabled():
                x = _GradScale.apply(x, ratio)
            if self.training and layerdrop > 0 and torch.rand(()) < layerdrop:
                continue  # layerdrop skips the whole layer in train mode (frozen layers too), as the reference
            x = layer(x, bias, workspace)
        return x


class BEATsEncoder(Encoder):
    """BEATs encoder; parameter names mirror the official unilm state-dict keys."""

    kind = "beats"
    recipes = ("beats",)

    def __init__(self, cfg: dict[str, Any], recipe: str | None = None) -> None:
        cfg = validate_beats_cfg(cfg)
        super().__init__(cfg, recipe or "beats")
        p, e, d = int(cfg["input_patch_size"]), int(cfg["embed_dim"]), int(cfg["encoder_embed_dim"])
        self.patch_embedding = nn.Conv2d(1, e, kernel_size=p, stride=p, bias=False)
        self.layer_norm = nn.LayerNorm(e)
        self.post_extract_proj = nn.Linear(e, d) if e != d else None
        self.encoder = BEATsTransformer(cfg)
        self.predictor = nn.Linear(d, int(cfg["predictor_class"])) if cfg["finetuned_model"] else None

    @property
    def embed_dim(self) -> int:
        """Token width (``encoder_embed_dim``)."""
        return int(self.cfg["encoder_embed_dim"])

    @property
    def has_classifier(self) -> bool:
        """True for fine-tuned checkpoints (``finetuned_model`` with a ``predictor``)."""
        return self.predictor is not None

    def reset_parameters(self, seed: int = 0) -> None:
        """Random init of every tensor (seeded) for the named configurations; deep-norm scaled (BEATs paper)."""
        gen = torch.Generator().manual_seed(seed)
        beta = (8.0 * int(self.cfg["encoder_layers"])) ** -0.25
        with torch.no_grad():
            for name, m in self.named_modules():
                if isinstance(m, nn.Linear):
                    bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                    if name.endswith(("v_proj", "out_proj", "fc1", "fc2")):
                        bound *= beta
                    m.weight.uniform_(-bound, bound, generator=gen)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            w = self.patch_embedding.weight
            w.normal_(0.0, math.sqrt(2.0 / w[0].numel()), generator=gen)
            pc = self.encoder.pos_conv[0]
            pc.weight_v.normal_(0.0, math.sqrt(4.0 / (pc.kernel * self.embed_dim)), generator=gen)
            pc.weight_g.copy_(pc.weight_v.norm(dim=(0, 1), keepdim=True))
            pc.bias.zero_()
            self.encoder.relative_attention_bias.weight.normal_(0.0, 1.0, generator=gen)
            for layer in self.encoder.layers:
                layer.self_attn.grep_a.fill_(1.0)

    def tokens_per_clip(self, frames: int) -> int:
        """Number of tokens for a clip of ``frames`` fbank frames."""
        p = int(self.cfg["input_patch_size"])
        return (frames // p) * (128 // p)

    def patch_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (B, frames, 128) -> patch features (B, N, D) before the Transformer (token = t * 8 + f)."""
        if fbank.dim() != 3:
            raise ValueError(f"expected fbank of shape (B, frames, 128), got {tuple(fbank.shape)}")
        p = int(self.cfg["input_patch_size"])
        if fbank.shape[1] < p:
            raise ValueError(f"clip too short: {fbank.shape[1]} fbank frames, need at least {p} for one patch")
        x = self.patch_embedding(fbank[:, None].to(self.patch_embedding.weight.dtype))  # (B, E, T', F')
        x = x.flatten(2).transpose(1, 2)  # (B, T'*F', E), token = t * F' + f
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return F.dropout(x, float(self.cfg["dropout_input"]), self.training)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (B, frames, 128) -> tokens (B, N, D), N = (frames // 16) * 8."""
        return self.encoder(self.patch_tokens(fbank))

    def classify_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Fine-tuned reference output: sigmoid(mean over tokens of predictor(tokens)) -> (B, classes)."""
        if self.predictor is None:
            raise RuntimeError("this BEATs encoder has no predictor (load a fine-tuned checkpoint)")
        x = self.forward_fbank(fbank)
        x = F.dropout(x, float(self.cfg["predictor_dropout"]), self.training)
        return torch.sigmoid(self.predictor(x).mean(dim=1))

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """unilm key layout (the shared relative bias appears under every layer's key)."""
        return {k: v for k, v in self.state_dict().items()}


def check_shared_bias(state: dict[str, torch.Tensor], n_layers: int, source: str) -> None:
    """Raise if the per-layer copies of the shared relative-bias table differ (the reference keeps the last)."""
    keys = [f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in range(n_layers)]
    present = [k for k in keys if k in state]
    if not present:
        return
    ref = state[present[0]]
    bad = [k for k in present[1:] if state[k].shape != ref.shape or not torch.equal(state[k], ref)]
    if bad:
        raise StateDictMismatchError(
            f"{source}: the relative-position bias table is shared by all layers, but these copies differ from "
            f"{present[0]}: {bad}. The reference loader would silently keep the last layer's copy; "
            "make the copies equal (e.g. copy the one you trust into every layer key) and load again.")


__all__ = ["BEATsEncoder", "BEATS_DEFAULTS", "validate_beats_cfg", "relative_position_buckets",
           "check_shared_bias"]
