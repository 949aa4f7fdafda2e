"""Benchmark of the scoring stage at DCASE dev size, and the growth of KNN / LDN with the training-set size.

    python benchmarks/bench_scoring.py [--threads 2] [--ae-device cpu] [--sizes 1000 5000 20000] [--skip-growth]

Part 1 (target < 90 s on 2 cores): 7 machines x 1000 training (990 source + 10 target) x 200 test clips x 768-d
random embeddings x 3 models (the DEV systems' 2 BEATs + 1 SSLAM), all four scorers with their calibration scores
(written to a temporary score cache by ``score_embeddings``), then offline fusion and online fusion (pooled and
per-machine z). Part 2: fit + score time of KNN (k=6, with and without the leave-one-out calibration) and LDN
(the authors' GWRP r=0.98, and the reference K-NN density) at growing training sizes, 200 test clips.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads (the budget is 2 cores)")
    ap.add_argument("--ae-device", default="cpu", help="device for the autoencoders: cpu or cuda")
    ap.add_argument("--machines", type=int, default=7)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000], help="growth-table training sizes")
    ap.add_argument("--skip-growth", action="store_true")
    ap.add_argument("--skip-dev", action="store_true")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    if not args.skip_dev:
        dev_size(args, np)
    if not args.skip_growth:
        growth(args, np)


def dev_size(args, np) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from asd_lib import fusion as F
    from asd_lib import scorers as S
    from asd_lib.artifacts import load_scores, score_path
    from benchutil import fake_embeddings

    models = ["beats@107", "beats@204", "sslam@1"][: args.models] + [f"m{i}@0" for i in range(3, args.models)]
    machines = [f"machine{i}" for i in range(args.machines)]
    print(f"== DEV size: {len(machines)} machines x {len(models)} models x {args.n_train} train x {args.n_test} test x "
          f"{args.dim}-d, {args.threads} threads, AE on {args.ae_device}")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        emb, sc = Path(tmp) / "emb", Path(tmp) / "scores"
        t = time.perf_counter()
        fake_embeddings(emb, models, machines, args.n_train, args.n_test, args.dim)
        print(f"  (writing random embeddings: {time.perf_counter() - t:.1f} s, not counted)")
        for sid in ("knn", "ldn", "gmm", "ae"):
            t = time.perf_counter()
            S.score_embeddings(emb, sc, models, scorers=(sid,), device=args.ae_device)
            times[f"{sid} (fit + test + calibration)"] = time.perf_counter() - t
            print(f"  {sid:4s} fit + test scores + calibration, {len(models) * len(machines)} fits: "
                  f"{times[f'{sid} (fit + test + calibration)']:.1f} s", flush=True)
        t = time.perf_counter()
        off = F.fuse_offline(sc, models)
        times["offline fusion"] = time.perf_counter() - t
        t = time.perf_counter()
        on = F.fuse_online(sc, models, normalisation="pooled")
        times["online fusion (pooled z)"] = time.perf_counter() - t
        t = time.perf_counter()
        F.fuse_online(sc, models, normalisation="per-machine")
        times["online fusion (per-machine z)"] = time.perf_counter() - t
        assert len(off) == len(on) == len(machines)
        n_cal = len(load_scores(score_path(sc, models[0], "ch0", "ae", machines[0]))["calib"])
    for k in ("offline fusion", "online fusion (pooled z)", "online fusion (per-machine z)"):
        print(f"  {k}: {times[k]:.2f} s")
    total = sum(times.values())
    print(f"  TOTAL {total:.1f} s (target < 90 s on 2 cores); AE held-out calibration clips per machine: {n_cal}")


def growth(args, np) -> None:
    from asd_lib.scorers import KNNScorer, LDNScorer, gwrp_truncation

    rng = np.random.default_rng(1)
    print(f"== growth: fit + score of {args.n_test} test clips, {args.dim}-d, {args.threads} threads")
    print(f"  {'n_train':>7} {'KNN':>8} {'KNN+LOO':>8} {'LDN aau-gwrp':>13} {'LDN ref K=1':>12} {'GWRP M':>7} "
          f"{'tail eps':>9}")
    for n in args.sizes:
        Xtr = rng.standard_normal((n, args.dim)).astype(np.float32).astype(np.float64)
        Xte = rng.standard_normal((args.n_test, args.dim))
        row = []
        t = time.perf_counter()
        knn = KNNScorer().fit(Xtr)
        knn.decision_function(Xte)
        row.append(time.perf_counter() - t)
        t = time.perf_counter()
        knn.loo_decision_function()
        row.append(row[0] + time.perf_counter() - t)
        t = time.perf_counter()
        LDNScorer(variant="aau-gwrp", r=0.98).fit(Xtr).decision_function(Xte)
        row.append(time.perf_counter() - t)
        t = time.perf_counter()
        LDNScorer(density="knn", n_neighbors=1).fit(Xtr).decision_function(Xte)
        row.append(time.perf_counter() - t)
        M, eps = gwrp_truncation(0.98, n - 1)
        print(f"  {n:>7} {row[0]:>7.2f}s {row[1]:>7.2f}s {row[2]:>12.2f}s {row[3]:>11.2f}s {M:>7} {eps:>9.1e}",
              flush=True)


if __name__ == "__main__":
    main()
