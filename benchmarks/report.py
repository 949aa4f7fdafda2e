"""Performance report: every heavy stage at full size, its work in FLOPs, time, share of the matmul rate, peak memory.

    python benchmarks/report.py [--threads 2] [--reps 3] [--json OUT] [--only STAGE,...] [--device cpu|cuda]
    python benchmarks/report.py --quick --json /tmp/report.json   # tiny shapes: checks the plumbing in seconds
    make bench                                                    # the full-size report (2 threads)

Stages (full size; ``--quick``: beats-tiny / sslam-tiny, 2 s clips, 8 clips to embed, 2 machines x 50 train x 20 test
x 96-d embeddings; ``--only`` picks stages by name or prefix, e.g. ``--only forward,online``):

- ``fbank``: the BEATs-recipe Kaldi fbank of 8 clips of 10 s (``asd_lib.backbones.compute_fbank``).
- ``forward-{beats,sslam}-b{8,1}``: encoder forward from cached fbank (``enc.forward_fbank``) of ``beats-base`` and
  ``sslam-base`` (random weights, SSLAM with the authors' 'aau' recipe), batch 8 and batch 1, inference mode.
- ``finetune-{beats,sslam}``: one ArcFace fine-tuning step as ``asd_lib.finetune`` takes it (the 'aau' trainable
  set, batch 8 x 10 s from cached fbank, 90 classes, mean pooling, AdamW, gradient clipping; layerdrop off so that
  every step does the same work, dropout on).
- ``embed-{beats,sslam}``: ``asd_lib.embed.embed_paths`` of 200 stereo 10 s WAV files from disk (ch0, GeM, batch 16).
- ``score-{knn,gmm,ae,ldn}``: ``asd_lib.scorers.score_embeddings`` of one scorer at DCASE size: 7 machines x 3
  models x (1,000 training + 200 test) random 768-d embeddings; per (model, machine) the final fit, the test scores,
  the held-out calibration fit and its scores, as the stage runs them (the AEs of all 21 pairs trained together),
  each row with its own AAU preprocessing (KNN, GMM, AE).
- ``scoring-stage``: the same, all four scorers in one ``score_embeddings`` call, as the pipeline's scoring stage
  runs them (one AAU preprocessing per training set, shared by KNN, GMM and AE); the scoring targets use this row.
- ``fusion-offline`` / ``fusion-online``: ``asd_lib.fusion.fuse_offline`` and ``fuse_online`` (pooled z) on the score
  files the score rows wrote.
- ``online-clip``: ``OnlineSystem.score_clip`` of one 10 s stereo WAV, the DEV online system of
  ``bench_online.build_system`` (2 BEATs + 1 SSLAM full size, ch0, KNN + AE + LDN fitted on 1,000 embeddings).

Each stage runs in a fresh subprocess (``--stage NAME``, same threads), so its peak memory is its own. The fp32
``torch.mm`` rate of 2048^3 (``benchutil.matmul_rate``, same threads) is measured at the start and at the end of the
run; the larger of the two is the rate every fraction uses (a busy machine lowers one of them). numpy's float64
matmul rate is printed beside it: the KNN, GMM and LDN arithmetic is float64 numpy, which runs at about half the
fp32 rate, so for those rows a time/floor ratio of about 2 is their own floor. With ``--device cuda`` the torch
stages run on the GPU in bf16 autocast (the AE scorer in fp32, as the library trains it) against the GPU's bf16
matmul rate; the numpy stages stay on the CPU against the CPU rate. Without CUDA it says so and exits with 2.

Columns of the table:

- ``GFLOP``: the stage's work; ``how counted``: ``FlopCounterMode`` = ``torch.utils.flop_counter`` over the torch ops
  (matmul, conv, attention; elementwise ops are not counted), ``analytic`` = the formula printed in the notes under
  the table, ``+`` both (the counter for the torch part, the formula for what it cannot see: FFT, numpy);
- ``time s``: wall seconds; ``timed``: ``best of N`` after one warm-up (the warm-up runs under the FLOP counter),
  or ``once`` for the stages that are long by nature (embedding 200 clips, the scoring rows) after a small warm-up;
  ``median s``: the median of the repetitions;
- ``GFLOP/s``: GFLOP / time; ``of matmul``: that over the matmul rate; ``floor s``: FLOPs / matmul rate, the
  compute floor; ``time/floor``: time over floor (1 / fraction);
- ``peak MB``: the stage process's ``ru_maxrss`` (the interpreter and its libraries included: importing torch alone
  takes about 0.6 GB here); ``GPU MB`` (CUDA only): ``torch.cuda.max_memory_allocated``.

Targets of the performance issue, checked under the table on this run's rows: scoring within 1.5x of its compute
floor and under 90 s; online median <= 2.0 s per 10 s clip at full size; fine-tuning and embedding at >= 75 % of the
matmul rate. The exit status is 0 when every stage ran (whether or not a target is met), 1 when one failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's asd_lib before an installed one

SCORERS = ("knn", "gmm", "ae", "ldn")
SCORE_MODELS = ("beats@107", "beats@204", "sslam@1")  # the DEV systems' two BEATs and one SSLAM
N_CLASSES = 90  # the dev set's ArcFace classes (machine, section, domain, attributes, channel)
TARGETS = {"scoring_floor_ratio": 1.5, "scoring_s": 90.0, "online_median_s": 2.0, "matmul_fraction": 0.75}


@dataclass(frozen=True)
class Sizes:
    """Shapes of one report: full size or ``--quick``."""

    encoders: dict[str, tuple[str, str | None]]
    seconds: float
    batch: int = 8
    embed_clips: int = 200
    embed_batch: int = 16
    machines: int = 7
    n_train: int = 1000
    n_test: int = 200
    dim: int = 768
    online_size: str = "base"
    warm: dict[str, int] = field(default_factory=lambda: {"n_train": 60, "n_test": 20})


FULL = Sizes(encoders={"beats": ("beats-base", None), "sslam": ("sslam-base", "aau")}, seconds=10.0)
QUICK = Sizes(encoders={"beats": ("beats-tiny", None), "sslam": ("sslam-tiny", "aau")}, seconds=2.0,
              embed_clips=8, embed_batch=4, machines=2, n_train=50, n_test=20, dim=96, online_size="tiny")


@dataclass
class Ctx:
    """What a stage needs: the arguments, the sizes and the shared work folder."""

    threads: int
    reps: int
    device: str
    sizes: Sizes
    work: Path

    @property
    def samples(self) -> int:
        """Samples of one clip at 16 kHz."""
        return int(self.sizes.seconds * 16000)

    def machines(self) -> list[str]:
        """Machine names of the random embedding cache."""
        return [f"machine{i}" for i in range(self.sizes.machines)]


# ----------------------------------------------------------------------------------------------- measuring
def torch_ready(ctx: Ctx):
    """torch with the report's thread count; returns the module."""
    import torch

    torch.set_num_threads(ctx.threads)
    return torch


def autocast(ctx: Ctx):
    """bf16 autocast on CUDA (as the paper ran), nothing on CPU."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device == "cuda" else nullcontext()


def counted(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of ``fn`` under ``benchutil.flop_counter`` (the call doubles as the warm-up)."""
    from benchutil import flop_counter

    counter = flop_counter()
    with counter:
        fn()
    return float(counter.get_total_flops())


def timed(fn: Callable[[], Any], reps: int, device: str) -> tuple[float, float]:
    """(best, median) wall seconds of ``reps`` calls of ``fn``, each one synchronised."""
    from benchutil import sync

    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def row(stage: str, flops: float, how: str, note: str, time_s: float, timing: str, device: str,
        median_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """One table row (peak memory is added by the stage process)."""
    return {"stage": stage, "flops": float(flops), "how": how, "note": note, "time_s": float(time_s),
            "timing": timing, "median_s": float(time_s if median_s is None else median_s), "device": device, **extra}


# ------------------------------------------------------------------------------------------ analytic counts
def fbank_flops(samples: int, with_mel: bool = True) -> float:
    """Analytic FLOPs of one clip's Kaldi fbank: per 25 ms frame a 512-point real FFT (2.5 N log2 N), |X|^2 and log,
    DC removal, pre-emphasis and window (5 per sample), and the 257 x 128 mel matmul (left out with ``with_mel=False``,
    for counts where FlopCounterMode already sees that ``torch.mm``)."""
    from asd_lib.backbones.fbank import NUM_MEL_BINS, num_frames

    n_fft, window = 512, 400
    bins = n_fft // 2 + 1
    per_frame = 2.5 * n_fft * math.log2(n_fft) + 4 * bins + NUM_MEL_BINS + 5 * window
    if with_mel:
        per_frame += 2 * bins * NUM_MEL_BINS
    return num_frames(samples) * per_frame


def ae_shape(dim: int) -> tuple[int, int]:
    """(parameters, hidden width H) of the scorer autoencoder D -> H -> b -> H -> D with the library's defaults."""
    from asd_lib.scorers import AEScorer
    from asd_lib.scorers.ae_network import hidden_width, n_parameters

    ae = AEScorer()
    return n_parameters(dim, ae.hidden, ae.bottleneck), hidden_width(dim, ae.hidden, ae.bottleneck)


def scorer_flops(sid: str, n: int, t: int, h: int, dim: int, iterations: tuple[int, int] | None) -> float:
    """Analytic FLOPs of ``score_embeddings`` for one (model, machine): final fit on ``n`` clips, ``t`` test scores,
    the held-out fit on ``n - h`` clips and its ``h`` calibration scores (``iterations``: GMM EM iterations or AE
    epochs of those two fits, as the score file records them)."""
    from asd_lib.scorers import GMMScorer, gwrp_truncation, make_scorer

    f = n - h
    if sid == "knn":
        return 2.0 * dim * (t * n + h * f)
    if sid == "ldn":
        r = make_scorer("ldn").r
        weights = n * gwrp_truncation(r, n - 1)[0] + f * gwrp_truncation(r, f - 1)[0]
        return 2.0 * dim * (n * n + t * n + f * f + h * f) + 2.0 * weights
    if sid == "gmm":
        k = GMMScorer().n_components
        return dim * k * (10.0 * (iterations[0] + 1) * n + 10.0 * (iterations[1] + 1) * f + 4.0 * (t + h))
    if sid == "ae":
        p, hidden = ae_shape(dim)
        return (6.0 * p - 2.0 * dim * hidden) * (iterations[0] * n + iterations[1] * f) + 2.0 * p * (t + h)
    raise ValueError(f"unknown scorer {sid!r}")


SCORER_NOTES = {
    "knn": "analytic: 2 D (t n + h f) per (model, machine): the cosine distance matrices of the test clips to the n "
           "training clips and of the h held-out to the f = n - h kept ones; AAU preprocessing not counted",
    "ldn": "analytic: 2 D (n^2 + t n + f^2 + h f) distance matrices (reference densities of the final and the "
           "held-out fit, test and calibration scores) + 2 n M GWRP weights (M = truncation)",
    "gmm": "analytic: D K (10 (I+1) n + 10 (I'+1) f + 4 (t + h)), K = 6 diagonal components: 4 n D K per E-step, "
           "6 n D K per M-step, I / I' EM iterations of the final / held-out fit from the score files; the k-means "
           "initialisation and the AAU preprocessing not counted",
    "ae": "analytic: (6 P - 2 D H) (E n + E' f) training + 2 P (t + h) scoring, P = autoencoder parameters, "
          "6 P per sample for forward + backward less the first layer's input gradient (2 D H), which autograd "
          "skips; E / E' epochs actually run by the final / held-out AE (score files); spectral-norm power "
          "iterations and the AAU preprocessing not counted",
}


# ------------------------------------------------------------------------------------------------- stages
def stage_fbank(ctx: Ctx) -> list[dict[str, Any]]:
    """The BEATs-recipe fbank of a batch of clips."""
    torch = torch_ready(ctx)
    from asd_lib.backbones import compute_fbank

    wave = (0.05 * torch.randn(ctx.sizes.batch, ctx.samples, generator=torch.Generator().manual_seed(0)))
    wave = wave.to(ctx.device)

    def run() -> None:
        compute_fbank(wave, "beats")

    run()
    best, med = timed(run, ctx.reps, ctx.device)
    flops = ctx.sizes.batch * fbank_flops(ctx.samples)
    note = (f"analytic, {ctx.sizes.batch} clips x frames x (2.5 N log2 N rFFT with N = 512 + 2 x 257 x 128 mel "
            "matmul + |X|^2, log, DC removal, pre-emphasis, window)")
    return [row("fbank", flops, "analytic", note, best, f"best of {ctx.reps}", ctx.device, med)]


def stage_forward(ctx: Ctx, key: str, batch: int) -> list[dict[str, Any]]:
    """Encoder forward from cached fbank in inference mode."""
    torch = torch_ready(ctx)
    from asd_lib.backbones import load_backbone
    from bench_backbones import analytic_flops

    name, recipe = ctx.sizes.encoders[key]
    enc = load_backbone(name, recipe=recipe).to(ctx.device).eval()
    wave = 0.05 * torch.randn(batch, ctx.samples, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), autocast(ctx):
        fbank = enc.preprocess(wave.to(ctx.device))
        holder: dict[str, Any] = {}

        def run() -> None:
            holder["tokens"] = enc.forward_fbank(fbank)

        flops = counted(run)
        best, med = timed(run, ctx.reps, ctx.device)
    tokens = int(holder["tokens"].shape[1])
    note = (f"FlopCounterMode over {name}.forward_fbank of {batch} clip(s), {tokens} tokens each (analytic "
            f"cross-check: {analytic_flops(enc, tokens, batch) / 1e9:.1f} GFLOP)")
    return [row(f"forward-{key}-b{batch}", flops, "FlopCounterMode", note, best, f"best of {ctx.reps}", ctx.device,
                med, tokens=tokens)]


def stage_finetune(ctx: Ctx, key: str) -> list[dict[str, Any]]:
    """One fine-tuning step (forward, backward, clipping, AdamW) of the 'aau' trainable set from cached fbank."""
    torch = torch_ready(ctx)
    import torch.nn.functional as F

    from asd_lib.backbones import NAMED_CONFIGS, load_backbone
    from asd_lib.finetune import SWITCH_FIELDS, Classifier, apply_trainable, build_head

    name, recipe = ctx.sizes.encoders[key]
    no_layerdrop = SWITCH_FIELDS[NAMED_CONFIGS[name][0]]["layerdrop"]
    enc = load_backbone(name, recipe=recipe, **no_layerdrop)
    trained = apply_trainable(enc, "aau")
    model = Classifier(enc, build_head("arcface", enc.embed_dim, N_CLASSES), "mean", backbone_grad=True)
    model = model.to(ctx.device).train()
    backbone = [p for p in model.encoder.parameters() if p.requires_grad]
    head = list(model.head.parameters())
    opt = torch.optim.AdamW([{"params": backbone, "lr": 6.45e-5, "weight_decay": 5.1e-4},
                             {"params": head, "lr": 4.57e-3, "weight_decay": 5.1e-4}])
    gen = torch.Generator().manual_seed(0)
    wave = 0.05 * torch.randn(ctx.sizes.batch, ctx.samples, generator=gen)
    with torch.no_grad():
        fbank = enc.preprocess(wave.to(ctx.device))
    labels = torch.randint(0, N_CLASSES, (ctx.sizes.batch,), generator=gen).to(ctx.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(ctx):
            logits, _ = model(fbank, labels)
        F.cross_entropy(logits, labels).backward()
        torch.nn.utils.clip_grad_norm_(backbone + head, 1.0)
        opt.step()

    flops = counted(step)
    best, med = timed(step, ctx.reps, ctx.device)
    n_trained = sum(p.numel() for p in backbone)
    note = (f"FlopCounterMode over one step of {name} ('aau' set: {len(trained)} tensors, {n_trained / 1e6:.1f} M "
            f"parameters; batch {ctx.sizes.batch}): forward + backward matmul/conv/attention; the optimiser and "
            "the clipping are elementwise and not counted")
    return [row(f"finetune-{key}", flops, "FlopCounterMode f+b", note, best, f"best of {ctx.reps}", ctx.device, med,
                trained_parameters=n_trained)]


def clip_paths(ctx: Ctx) -> list[str]:
    """The WAV files the parent wrote under the work folder (machine folder ``fan``)."""
    return sorted(str(p) for p in (ctx.work / "clips" / "fan").glob("*.wav"))


def stage_embed(ctx: Ctx, key: str) -> list[dict[str, Any]]:
    """Embedding extraction of the clips from disk."""
    torch_ready(ctx)
    from asd_lib.backbones import load_backbone
    from asd_lib.embed import embed_paths

    name, recipe = ctx.sizes.encoders[key]
    enc = load_backbone(name, recipe=recipe).to(ctx.device).eval()
    paths = clip_paths(ctx)[: ctx.sizes.embed_clips]
    n, warm = len(paths), 2

    def extract(some: list[str], batch: int) -> None:
        with autocast(ctx):
            embed_paths(enc, some, "ch0", "gem", None, batch_size=batch, device=ctx.device, progress=False)

    per_clip = counted(lambda: extract(paths[:warm], warm)) / warm + fbank_flops(ctx.samples, with_mel=False)
    best, _ = timed(lambda: extract(paths, ctx.sizes.embed_batch), 1, ctx.device)
    note = (f"FlopCounterMode over the warm-up ({warm} clips: encoder + mel matmul) per clip, plus the analytic "
            f"FFT and elementwise fbank work, x {n} clips; loading, pooling not counted")
    return [row(f"embed-{key}", n * per_clip, "FlopCounterMode + analytic", note, best,
                f"once ({n} clips, batch {ctx.sizes.embed_batch})", ctx.device, clips=n)]


def stage_score(ctx: Ctx, sids: tuple[str, ...], name: str, out: str) -> list[dict[str, Any]]:
    """``score_embeddings`` of the scorers ``sids`` in one call on every (model, machine) of the random embedding
    cache, writing under ``ctx.work / out``."""
    from asd_lib.artifacts import load_scores, score_path
    from asd_lib.scorers import score_embeddings

    device = ctx.device if "ae" in sids else "cpu"
    if "ae" in sids:
        torch_ready(ctx)
    score_embeddings(ctx.work / "warm_emb", ctx.work / f"warm_{out}", SCORE_MODELS[:1], scorers=sids, device=device)
    best, _ = timed(lambda: score_embeddings(ctx.work / "emb", ctx.work / out, SCORE_MODELS, scorers=sids,
                                             device=device), 1, device)
    s = ctx.sizes
    flops, iters = 0.0, {sid: [] for sid in sids}
    for model in SCORE_MODELS:
        for machine in ctx.machines():
            for sid in sids:
                z = load_scores(score_path(ctx.work / out, model, "ch0", sid, machine))
                its = tuple(int(i) for i in z["iterations"]) if "iterations" in z else None
                flops += scorer_flops(sid, s.n_train, s.n_test, len(z["calib"]), s.dim, its)
                iters[sid].append(its)
    pairs = len(SCORE_MODELS) * s.machines
    if len(sids) == 1:
        note = SCORER_NOTES[sids[0]]
    else:
        note = (f"the score-* formulas added up; one score_embeddings call of {', '.join(sids)}, as the scoring stage "
                f"runs them: the AAU preprocessing is fitted once per training set and shared by KNN, GMM and AE")
    note += f"; {pairs} (model, machine) pairs of {s.n_train} x {s.n_test} x {s.dim}-d"
    for sid in sids:
        if iters[sid][0] is not None:
            note += f"; {sid} iterations (final, held-out) from {min(iters[sid])} to {max(iters[sid])}"
    # KNN, GMM and LDN run on the CPU whatever --device says: a row with them is measured against the CPU rate
    rate_of = device if set(sids) == {"ae"} else "cpu"
    return [row(name, flops, "analytic", note, best, "once (after a small warm-up)", rate_of, pairs=pairs)]


def stage_fusion(ctx: Ctx, kind: str) -> list[dict[str, Any]]:
    """Offline (rank) or online (pooled z) fusion of the score files the score stages wrote."""
    from asd_lib import fusion as F
    from asd_lib.artifacts import load_scores, score_path

    sc = ctx.work / "scores"
    if kind == "offline":
        scorers = F.OFFLINE_DEFAULT_SCORERS

        def run() -> None:
            F.fuse_offline(sc, SCORE_MODELS)
    else:
        scorers = F.ONLINE_DEFAULT_SCORERS

        def run() -> None:
            F.fuse_online(sc, SCORE_MODELS, normalisation="pooled")

    run()
    best, med = timed(run, ctx.reps, "cpu")
    c = len(load_scores(score_path(sc, SCORE_MODELS[0], "ch0", "knn", "machine0"))["calib"])
    t, s, m = ctx.sizes.n_test, len(scorers), len(SCORE_MODELS)
    if kind == "offline":
        per_machine = s * m * t * (math.log2(t) + 2) + s * t
        how = "rank (t log2 t comparisons + division), mean over models, min over scorers"
    else:
        per_machine = s * m * (2 * t + 5 * c) + 2 * s * (t + c) + c * math.log2(c)
        how = "z of test and calibration scores, their means and stds, mean / min fusion, calibration quantile"
    note = (f"analytic, elementwise operations and comparisons (no matmul): {how}; {ctx.sizes.machines} machines x "
            f"{s} scorers x {m} models, t = {t} test, c = {c} calibration clips; reading the score files not counted")
    return [row(f"fusion-{kind}", ctx.sizes.machines * per_machine, "analytic (elementwise)", note, best,
                f"best of {ctx.reps}", "cpu", med)]


def stage_online(ctx: Ctx) -> list[dict[str, Any]]:
    """``OnlineSystem.score_clip`` of one WAV file at a time (DEV online, in memory)."""
    torch_ready(ctx)
    import warnings

    from bench_online import build_system

    warnings.filterwarnings("ignore", message="n_quantiles")
    s = ctx.sizes
    system = build_system(s.online_size, s.n_train)
    for enc in system.encoders.values():
        enc.to(ctx.device)
    system.device = ctx.device
    paths = clip_paths(ctx)

    def score(i: int) -> None:
        with autocast(ctx):
            system.score_clip(paths[i % len(paths)])

    torch_flops = counted(lambda: score(0))
    score(1)
    clips = iter(range(2, 2 + ctx.reps))
    best, med = timed(lambda: score(next(clips)), ctx.reps, ctx.device)
    recipes = {enc.recipe for enc in system.encoders.values()}
    dims = [spec.embed_dim for spec in system.models]
    numpy_flops = sum(2 * 2 * s.n_train * d for d in dims)  # KNN and LDN: one row against n_train references each
    flops = torch_flops + len(recipes) * fbank_flops(ctx.samples, with_mel=False) + numpy_flops
    note = (f"FlopCounterMode over one score_clip (3 encoders, mel matmuls, AE forward) + analytic FFT and "
            f"elementwise fbank work ({len(recipes)} recipes, ch0) + KNN and LDN distances (2 x 2 n D per model, "
            f"n = {s.n_train}); time per {s.seconds:g} s clip, median over {ctx.reps} clips in 'median s'")
    return [row("online-clip", flops, "FlopCounterMode + analytic", note, best, f"best of {ctx.reps} clips",
                ctx.device, med)]


STAGES: dict[str, Callable[[Ctx], list[dict[str, Any]]]] = {
    "fbank": stage_fbank,
    **{f"forward-{k}-b{b}": (lambda c, k=k, b=b: stage_forward(c, k, b)) for k in ("beats", "sslam") for b in (8, 1)},
    **{f"finetune-{k}": (lambda c, k=k: stage_finetune(c, k)) for k in ("beats", "sslam")},
    **{f"embed-{k}": (lambda c, k=k: stage_embed(c, k)) for k in ("beats", "sslam")},
    **{f"score-{s}": (lambda c, s=s: stage_score(c, (s,), f"score-{s}", "scores")) for s in SCORERS},
    "scoring-stage": lambda c: stage_score(c, SCORERS, "scoring-stage", "scores_stage"),
    "fusion-offline": lambda c: stage_fusion(c, "offline"),
    "fusion-online": lambda c: stage_fusion(c, "online"),
    "online-clip": stage_online,
}


# ------------------------------------------------------------------------------------------- the parent
def select_stages(only: str | None) -> list[str]:
    """Stage names matching the comma-separated names or prefixes of ``--only`` (all by default); the fusion stages
    bring the score stages they read."""
    if not only:
        return list(STAGES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if not any(n.startswith(w) for n in STAGES)]
    if unknown:
        raise SystemExit(f"--only: no stage starts with {unknown}; stages: {', '.join(STAGES)}")
    chosen = {n for n in STAGES if any(n.startswith(w) for w in wanted)}
    if any(n.startswith("fusion") for n in chosen):
        chosen |= {f"score-{s}" for s in SCORERS}
    return [n for n in STAGES if n in chosen]


def prepare(ctx: Ctx, stages: list[str]) -> None:
    """Write what the stages read (not timed): WAV clips, the random embedding caches."""
    from bench_online import write_clips
    from benchutil import fake_embeddings

    s = ctx.sizes
    if any(n.startswith(("embed", "online")) for n in stages):
        write_clips(ctx.work / "clips", max(s.embed_clips, ctx.reps + 2), s.seconds)
    if any(n.startswith("score") for n in stages):
        fake_embeddings(ctx.work / "emb", SCORE_MODELS, ctx.machines(), s.n_train, s.n_test, s.dim)
        fake_embeddings(ctx.work / "warm_emb", SCORE_MODELS[:1], ["machine0"], s.warm["n_train"], s.warm["n_test"],
                        s.dim, seed=1)


def matmul_rates(device: str, reps: int) -> dict[str, float]:
    """GFLOP/s of the 2048^3 torch matmul the fractions use (CPU fp32; on CUDA also the GPU's bf16), best of
    ``reps``, and numpy's float64 one for reference."""
    import numpy as np
    import torch

    from benchutil import matmul_rate

    out = {"cpu": matmul_rate("cpu", torch.float32, reps=reps)}
    if device == "cuda":
        out["cuda"] = matmul_rate("cuda", torch.bfloat16, reps=reps)
    a = np.random.default_rng(0).standard_normal((2048, 2048))
    a @ a
    t0 = time.perf_counter()
    a @ a
    out["numpy_f64"] = 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
    return out


def run_stage(name: str, args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run one stage in a fresh process; its rows, or one row with the error."""
    out = work / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--work", str(work), "--row-out", str(out),
           "--threads", str(args.threads), "--reps", str(args.reps), "--device", args.device]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + (["--quick"] if args.quick else []), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        print(f"  {name}: FAILED (exit {proc.returncode}) after {wall:.1f} s\n{tail}", flush=True)
        return [{"stage": name, "error": tail}]
    rows = json.loads(out.read_text())
    print(f"  {name}: {rows[0]['time_s']:.3g} s timed, {wall:.1f} s with start-up", flush=True)
    return rows


def complete(rows: list[dict[str, Any]], rate: dict[str, float]) -> None:
    """Add GFLOP/s, fraction of the matmul rate, compute floor and time/floor to each row."""
    for r in rows:
        if "error" in r:
            continue
        mm = rate[r["device"]]
        r["gflops"] = r["flops"] / r["time_s"] / 1e9
        r["fraction"] = r["gflops"] / mm
        r["floor_s"] = r["flops"] / mm / 1e9
        r["ratio"] = r["time_s"] / r["floor_s"]


def machine_info(threads: int, device: str) -> dict[str, str]:
    """CPU model, threads, torch version (and GPU)."""
    import torch

    from benchutil import cpu_info

    info = {"cpu": cpu_info(), "threads": str(threads), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min": f"{os.getloadavg()[0]:.2f}", "cpus": str(os.cpu_count())}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _fmt(x: float) -> str:
    """A number in a table cell: 3 significant digits, no exponent for ordinary sizes."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


def print_table(rows: list[dict[str, Any]], device: str) -> None:
    """The report table, then each row's note on how its FLOPs were counted."""
    cols = ["stage", "GFLOP", "how counted", "time s", "timed", "median s", "GFLOP/s", "of matmul", "floor s",
            "time/floor", "peak MB"] + (["GPU MB", "device"] if device == "cuda" else [])
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["stage"], "FAILED"] + [""] * (len(cols) - 2))
            continue
        cells = [r["stage"], _fmt(r["flops"] / 1e9), r["how"], _fmt(r["time_s"]), r["timing"], _fmt(r["median_s"]),
                 _fmt(r["gflops"]), f"{100 * r['fraction']:.1f} %", _fmt(r["floor_s"]), _fmt(r["ratio"]),
                 f"{r['peak_mb']:.0f}"]
        if device == "cuda":
            cells += [f"{r.get('gpu_peak_mb', 0.0):.0f}", r["device"]]
        lines.append(cells)
    widths = [max(len(c), *(len(x[i]) for x in lines)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for x in lines:
        print(" | ".join(c.ljust(w) if i in (0, 2, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths))))
    print("\nhow each row's FLOPs were counted:")
    for r in rows:
        if "error" not in r:
            print(f"  {r['stage']}: {r['note']}")


def check_targets(rows: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    """The issue's targets, checked on this run's rows."""
    by = {r["stage"]: r for r in rows if "error" not in r}
    out = []

    def add(what: str, value: float, limit: float, ok: bool) -> None:
        out.append({"target": what, "value": value, "limit": limit, "met": bool(ok)})

    if "scoring-stage" in by:
        r = by["scoring-stage"]
        add("scoring time / compute floor <= 1.5", r["ratio"], TARGETS["scoring_floor_ratio"],
            r["ratio"] <= TARGETS["scoring_floor_ratio"])
        add("scoring time < 90 s", r["time_s"], TARGETS["scoring_s"], r["time_s"] < TARGETS["scoring_s"])
    if "online-clip" in by:
        r = by["online-clip"]
        add("online median <= 2.0 s per 10 s clip", r["median_s"], TARGETS["online_median_s"],
            r["median_s"] <= TARGETS["online_median_s"])
    for name, r in by.items():
        if name.startswith(("finetune-", "embed-")):
            add(f"{name} >= 75 % of the matmul rate", r["fraction"], TARGETS["matmul_fraction"],
                r["fraction"] >= TARGETS["matmul_fraction"])
    print("\ntargets of the performance issue" + (" (quick shapes: the targets are for the full-size run)" if quick
                                                  else "") + ":")
    for t in out:
        print(f"  {'met   ' if t['met'] else 'MISSED'}  {t['target']}: {_fmt(t['value'])}")
    return out


def parent(args: argparse.Namespace) -> int:
    """Measure the matmul rate, run every stage in its own process, print the report; the exit status."""
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "TQDM_DISABLE": "1", "ASD_KIT_CHUNKED_ATTENTION": {"auto": "", "sdpa": "0", "chunked": "1"}[args.attention]}
    os.environ.update(env)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device on this machine; run without --device for the CPU report",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    stages = select_stages(args.only)
    info = machine_info(args.threads, args.device)
    print(f"CPU: {info['cpu']}\ntorch {info['torch']}, {args.threads} threads, device {args.device}"
          + (f" ({info['gpu']})" if "gpu" in info else "") + f", load average {info['load_average_1min']} on "
          f"{info['cpus']} CPUs" + (", --quick shapes" if args.quick else ""))
    with tempfile.TemporaryDirectory(prefix="asd_report_") as tmp:
        ctx = Ctx(args.threads, args.reps, args.device, QUICK if args.quick else FULL, Path(tmp))
        prepare(ctx, stages)
        start = matmul_rates(args.device, 2 if args.quick else 5)
        print(f"matmul 2048^3 at the start: {', '.join(f'{k} {v:.1f}' for k, v in start.items())} GFLOP/s", flush=True)
        rows = [r for name in stages for r in run_stage(name, args, ctx.work, env)]
        end = matmul_rates(args.device, 2 if args.quick else 5)
    rate = {k: max(start[k], end[k]) for k in start}
    print(f"matmul 2048^3 at the end: {', '.join(f'{k} {v:.1f}' for k, v in end.items())} GFLOP/s; the fractions use "
          f"the larger of the two: {', '.join(f'{k} {v:.1f}' for k, v in rate.items() if k != 'numpy_f64')} GFLOP/s "
          f"(cpu: torch fp32{', cuda: bf16' if args.device == 'cuda' else ''}; numpy_f64 for reference)\n")
    complete(rows, rate)
    print_table(rows, args.device)
    targets = check_targets(rows, args.quick)
    if args.json:
        blob = {"machine": info, "matmul_gflops": {"start": start, "end": end, "used": rate},
                "args": {k: v for k, v in vars(args).items() if k not in ("stage", "row_out", "work")},
                "sizes": asdict(ctx.sizes), "rows": rows, "targets": targets}
        Path(args.json).write_text(json.dumps(blob, indent=1))
        print(f"\nrows written to {args.json}")
    return 1 if any("error" in r for r in rows) else 0


def child(args: argparse.Namespace) -> int:
    """Run one stage in this process and write its rows with this process's peak memory."""
    ctx = Ctx(args.threads, args.reps, args.device, QUICK if args.quick else FULL, Path(args.work))
    rows = STAGES[args.stage](ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch = sys.modules.get("torch")
    for r in rows:
        r["peak_mb"] = peak
        if args.device == "cuda" and torch is not None:
            r["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    Path(args.row_out).write_text(json.dumps(rows))
    return 0


def main() -> int:
    """Parse the arguments; run the whole report, or one stage (``--stage``, used by the report itself)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch / BLAS threads of every stage and the matmul")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of the short stages (best is reported)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: torch stages on the GPU, bf16")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, to check the plumbing")
    ap.add_argument("--json", default=None, help="also write the rows, rates and targets to this JSON file")
    ap.add_argument("--attention", choices=("auto", "sdpa", "chunked"), default="auto",
                    help="BEATs training attention on the CPU: the kit's default (auto: the chunked function for large "
                         "score tensors, asd_lib.backbones.beats), or SDPA / the chunked function forced")
    ap.add_argument("--only", default=None, help="comma-separated stage names or prefixes (e.g. forward,online)")
    ap.add_argument("--stage", default=None, choices=list(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reps < 1 or args.threads < 1:
        ap.error("--reps and --threads must be at least 1")
    return child(args) if args.stage else parent(args)


if __name__ == "__main__":
    sys.exit(main())
