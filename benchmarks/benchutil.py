"""Helpers shared by the benchmark scripts: machine description, matmul rate, FLOP counting, random embeddings.

Imported by ``bench_backbones.py``, ``bench_scoring.py`` and ``report.py`` (run from ``benchmarks/``, which is then
first on ``sys.path``). torch and numpy are imported inside the functions, so a script can set its thread
variables before either library loads.
"""
from __future__ import annotations

import platform
import re
import time
from pathlib import Path
from typing import Any, Sequence


def cpu_info() -> str:
    """CPU model name and the SIMD flags relevant to fp32 GEMM, from /proc/cpuinfo."""
    import torch

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    keep = sorted(f for f in (flags.group(1).split() if flags else [])
                  if f.startswith(("sse4", "avx", "fma", "amx", "f16c")))
    return f"{model.group(1) if model else 'unknown'} | flags: {' '.join(keep)} | torch cpu capability: " \
           f"{torch.backends.cpu.get_cpu_capability()}"


def sync(device: str) -> None:
    """Wait for queued CUDA work (a no-op on CPU, which does not import torch), so that wall-clock timings cover it."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def matmul_rate(device: str, dtype: Any, n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n torch matrix multiply (one warm-up first)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU flash-attention forward (QK^T and PV), which torch's FLOP registry lacks."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU flash-attention backward (scores recomputed, four gradient products)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter():
    """A quiet ``torch.utils.flop_counter.FlopCounterMode`` that also counts the CPU SDPA kernels (fwd + bwd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def fake_embeddings(root: Path, models: Sequence[str], machines: Sequence[str], n_train: int, n_test: int,
                    dim: int, seed: int = 0) -> None:
    """Random embedding cache in the layout ``score_embeddings`` reads: per model and machine, ``n_train`` training
    clips (1 % target domain, at least one) and ``n_test`` test clips of ``dim``-d around a machine centre."""
    import numpy as np

    from asd_lib.artifacts import embedding_path, save_embeddings

    rng = np.random.default_rng(seed)
    n_tgt = max(1, n_train // 100)
    dom = np.array(["source"] * (n_train - n_tgt) + ["target"] * n_tgt)
    tr_names = np.array([f"section_00_{d}_train_normal_{i:04d}_x.wav" for i, d in enumerate(dom)])
    te_names = np.array([f"section_00_source_test_normal_{i:04d}_x.wav" for i in range(n_test)])
    for model in models:
        for m in machines:
            centre = rng.standard_normal(dim)
            save_embeddings(embedding_path(root, model, "ch0", m, "train"),
                            centre + rng.standard_normal((n_train, dim)), tr_names, np.zeros(n_train, int), dom)
            save_embeddings(embedding_path(root, model, "ch0", m, "test"),
                            centre + 1.2 * rng.standard_normal((n_test, dim)), te_names, np.zeros(n_test, int),
                            np.array(["source"] * n_test))
