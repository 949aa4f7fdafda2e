"""Speed of the full-size encoders (beats-base, sslam-base; random weights, real shapes) on 10 s clips.

Prints, per encoder: clips/s of the encoder forward (fbank cached, as fine-tuning and embedding do) and of the
whole wave -> tokens path, the FLOPs of one encoder forward (torch.utils.flop_counter plus an analytic count),
the achieved GFLOP/s as a fraction of this machine's fp32 matrix-multiply rate (2048^3, same thread count,
measured in the same run), and the peak resident memory. Also prints the CPU model and SIMD flags.
On CUDA (``--device cuda``) the same runs in bf16 autocast.

Run: ``python benchmarks/bench_backbones.py [--batch 8] [--seconds 10] [--threads 2] [--reps 3]``
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from asd_lib.backbones import load_backbone
from benchutil import cpu_info, flop_counter, matmul_rate, sync


def analytic_flops(enc, tokens: int, batch: int) -> float:
    """Multiply-add FLOPs (x2) of one encoder forward: patch conv, projections, attention, MLP, pos conv."""
    c = enc.cfg
    if enc.kind == "beats":
        d, f, L = c["encoder_embed_dim"], c["encoder_ffn_embed_dim"], c["encoder_layers"]
        e, p = c["embed_dim"], c["input_patch_size"]
        fl = 2 * tokens * p * p * e + (2 * tokens * e * d if e != d else 0)
        fl += 2 * tokens * d * (d // c["conv_pos_groups"]) * c["conv_pos"]
        hd = d // c["encoder_attention_heads"]
        per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 4 * tokens * tokens * d
        per_layer += 2 * tokens * c["encoder_attention_heads"] * hd * 8  # grep_linear
    else:
        d, L = c["embed_dim"], c["depth"]
        f = int(d * c["mlp_ratio"])
        p = c["patch_size"]
        fl = 2 * (tokens - 1) * p * p * d
        per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 4 * tokens * tokens * d
    return batch * (fl + L * per_layer)


def counted_flops(enc, fbank: torch.Tensor) -> float:
    """FLOPs of one forward_fbank counted by torch.utils.flop_counter (matmul, conv and SDPA kernels)."""
    counter = flop_counter()
    with counter:
        enc.forward_fbank(fbank)
    return float(counter.get_total_flops())


def peak_rss_reset() -> bool:
    """Reset the process's peak-RSS counter (Linux /proc/self/clear_refs); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM)."""
    try:
        m = re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024 if m else float("nan")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(name: str, args, mm_rate: float) -> dict:
    """Time one named encoder; returns the figures it prints."""
    device = args.device
    enc = load_backbone(name).to(device)
    samples = int(args.seconds * 16000)
    gen = torch.Generator().manual_seed(0)
    wave = (0.05 * torch.randn(args.batch, samples, generator=gen)).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    with torch.inference_mode(), amp:
        t0 = time.perf_counter()
        fbank = enc.preprocess(wave)
        t_fbank = time.perf_counter() - t0
        tokens = enc.forward_fbank(fbank[:1]).shape[1]
        flops_counted = counted_flops(enc, fbank)
        flops = analytic_flops(enc, tokens, args.batch)
        gc.collect()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        reset_ok = peak_rss_reset()
        enc.forward_fbank(fbank)  # warm-up
        times = []
        for _ in range(args.reps):
            sync(device)
            t0 = time.perf_counter()
            enc.forward_fbank(fbank)
            sync(device)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    mem = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else peak_rss_mb()
    res = {
        "encoder": name, "tokens": tokens, "enc_s": t, "enc_best_s": min(times),
        "clips_per_s": args.batch / t, "clips_per_s_with_fbank": args.batch / (t + t_fbank),
        "gflop": flops_counted / 1e9, "gflop_analytic": flops / 1e9, "gflops": flops_counted / t / 1e9,
        "fraction": flops_counted / t / 1e9 / mm_rate,
        "fraction_best": flops_counted / min(times) / 1e9 / mm_rate,
        "peak_mem_mib": mem, "peak_is_process": not reset_ok, "fbank_s": t_fbank,
    }
    del enc, fbank, wave
    gc.collect()
    return res


def main() -> None:
    """Parse arguments, measure the matmul rate and both encoders, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default="beats-base,sslam-base")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    print(f"CPU: {cpu_info()}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load avg {os.getloadavg()[0]:.1f}")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    mm = matmul_rate(args.device, dtype)
    print(f"matmul 2048^3 {str(dtype).replace('torch.', '')}: {mm:.1f} GFLOP/s")
    rows = [bench(m, args, mm) for m in args.models.split(",")]
    mm_after = matmul_rate(args.device, dtype)
    print(f"matmul 2048^3 again after the encoders: {mm_after:.1f} GFLOP/s (machine-load check)")
    ref = max(mm, mm_after)
    for r in rows:  # fractions against the better of the two matmul measurements (the conservative choice)
        r["fraction"] *= mm / ref
        r["fraction_best"] *= mm / ref
    print(f"reference matmul rate (max of the two): {ref:.1f} GFLOP/s")
    print(f"\nbatch {args.batch} x {args.seconds:g} s clips, encoder forward (fbank cached), median of {args.reps}")
    hdr = ("encoder", "tokens", "GFLOP/batch", "(analytic)", "s/batch", "clips/s", "clips/s+fbank", "GFLOP/s",
           "of matmul", "best", "peak MiB")
    print("  ".join(f"{h:>12}" for h in hdr))
    for r in rows:
        vals = (r["encoder"], r["tokens"], f"{r['gflop']:.1f}", f"{r['gflop_analytic']:.1f}", f"{r['enc_s']:.2f}",
                f"{r['clips_per_s']:.2f}", f"{r['clips_per_s_with_fbank']:.2f}", f"{r['gflops']:.1f}",
                f"{100 * r['fraction']:.0f} %", f"{100 * r['fraction_best']:.0f} %",
                f"{r['peak_mem_mib']:.0f}" + ("*" if r["peak_is_process"] else ""))
        print("  ".join(f"{v:>12}" for v in vals))
    print("(GFLOP/batch: torch.utils.flop_counter incl. the CPU SDPA kernel; analytic: our own count. "
          "fractions: achieved GFLOP/s over the reference matmul rate; best = fastest repetition)")
    print("(peak MiB: resident high-water mark during the timed forwards, model included; "
          "* = whole-process peak; on CUDA max allocated)")


if __name__ == "__main__":
    main()
