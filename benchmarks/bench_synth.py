"""Benchmark of the synthetic data: generation time of the `small` preset and a difficulty check.

Difficulty check: a deliberately simple detector (log-mel mean+std over time, 64 mels, n_fft 1024,
hop 512; standardised on training clips; score = Euclidean distance to the nearest training clip)
on channel 0 (near mic) and channel 1 (far mic). Scores are evaluated as the official DCASE metric
(../shared/REFERENCE.md section 2): AUC(source) and AUC(target) with all anomalies as positives,
pAUC over all clips with sklearn's roc_auc_score(max_fpr=0.1), and the harmonic mean of the three.

Usage: python benchmarks/bench_synth.py [--out DIR] [--preset small] [--seed 0] [--jobs 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import hmean  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from asd_lib.data import DEV_MACHINES, load_clip, scan  # noqa: E402
from asd_lib.synth import generate  # noqa: E402


def logmel_stats(paths: list[str], channel: int) -> np.ndarray:
    """(N, 128) mean and std over time of 64-band log-mel spectrograms of one channel."""
    import torch
    import torchaudio

    torch.set_num_threads(1)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=512, n_mels=64, power=2.0)
    out = []
    with torch.no_grad():
        for p in paths:
            x = torch.from_numpy(load_clip(p, channels=(channel,)))
            m = 10 * torch.log10(mel(x)[0] + 1e-10)
            out.append(torch.cat([m.mean(1), m.std(1)]).numpy())
    return np.stack(out)


def official(y: np.ndarray, dom: np.ndarray, s: np.ndarray) -> dict:
    """AUC source/target (all anomalies positive), pAUC (max_fpr 0.1), their harmonic mean."""
    src = (dom == "source") | (y == 1)
    tgt = (dom == "target") | (y == 1)
    r = dict(auc_s=roc_auc_score(y[src], s[src]), auc_t=roc_auc_score(y[tgt], s[tgt]),
             pauc=roc_auc_score(y, s, max_fpr=0.1))
    r["score"] = hmean([max(v, np.finfo(float).eps) for v in r.values()])
    return r


def difficulty(root: Path) -> pd.DataFrame:
    """Per machine and channel official scores of the log-mel + nearest-neighbour detector."""
    man = scan(root, ground_truth=root / "ground_truth")
    rows = []
    for machine, g in man.groupby("machine", sort=False):
        tr, te = g[g.split == "train"], g[g.split == "test"]
        y = (te.label == "anomaly").to_numpy().astype(int)
        dom = te.domain.to_numpy()
        for ch in (0, 1):
            ftr, fte = logmel_stats(tr.path.tolist(), ch), logmel_stats(te.path.tolist(), ch)
            mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
            nn = NearestNeighbors(n_neighbors=1).fit((ftr - mu) / sd)
            s = nn.kneighbors((fte - mu) / sd)[0][:, 0]
            rows.append(dict(machine=machine, channel=f"ch{ch}", **official(y, dom, s)))
    return pd.DataFrame(rows)


def main() -> None:
    """Time the generation, run the difficulty check, print both."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="keep the data here (default: a temporary folder)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    tmp = None
    if a.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        out = tmp / "data"
    else:
        out = Path(a.out)
    try:
        cpu = lambda: sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime  # noqa: E731
                          for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        t0, c0 = time.perf_counter(), cpu()
        generate(out, a.preset, a.seed, jobs=a.jobs, force=True)
        gen_s, gen_cpu = time.perf_counter() - t0, cpu() - c0
        print(f"generation of preset {a.preset!r} (seed {a.seed}, {a.jobs} worker processes): {gen_s:.1f} s wall, "
              f"{gen_cpu:.1f} CPU s (= {gen_cpu / a.jobs:.1f} s wall on {a.jobs} free cores); "
              f"load average at the end {os.getloadavg()[0]:.1f}")
        t0 = time.perf_counter()
        df = difficulty(out)
        print(f"difficulty check (log-mel stats + 1-NN) took {time.perf_counter() - t0:.1f} s")
        wide = df.pivot(index="machine", columns="channel", values=["score", "auc_s", "auc_t", "pauc"])
        wide.columns = [f"{a}_{b}" for a, b in wide.columns]
        order = [m for m in df.machine.unique()]
        print(wide.loc[order].round(3).to_string())
        for ch in ("ch0", "ch1"):
            d = df[df.channel == ch]
            dev = d[d.machine.isin(DEV_MACHINES)]
            hm = lambda x: hmean(np.maximum(x[["auc_s", "auc_t", "pauc"]].to_numpy().ravel(), 1e-12))  # noqa: E731
            print(f"{ch}: official score dev (7 machines, 21 numbers) {hm(dev):.3f}; all 12 machines {hm(d):.3f}; "
                  f"per-machine range {d.score.min():.3f}-{d.score.max():.3f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
