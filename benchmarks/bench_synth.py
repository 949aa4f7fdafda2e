"""Benchmark of the synthetic data: generation time of a preset, and how hard it is for fixed features.

Difficulty check: deliberately simple detectors on channel 0 (near mic) and channel 1 (far mic), scored with the
official DCASE metric (docs/reference.md §2: AUC(source) and AUC(target) with all anomalies as
positives, pAUC over all clips with sklearn's roc_auc_score(max_fpr=0.1), and the harmonic mean of the three):
- "euclid64": log-mel mean + std over time (64 mels, n_fft 1024, hop 512), standardised on the training clips,
  score = Euclidean distance to the nearest training clip;
- "cosine128": the same statistics on 128 mels, not standardised, cosine distance to the nearest training clip.
With ``--baseline-epochs E`` it also trains the organisers' autoencoder baseline (asd_lib.baseline) for E epochs
on the 7 dev machines and reports its MAHALA and MSE official scores beside the detectors, with the epoch at
which its validation loss got within 2 % of its best (how many epochs converge). ``--seeds N`` repeats everything
on synthetic seeds seed..seed+N-1 and prints mean +- sd.

Usage: python benchmarks/bench_synth.py [--out DIR] [--preset small] [--seed 0] [--seeds 1] [--jobs 2]
                                        [--baseline-epochs 0]
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
from asd_lib.metrics import official_score  # noqa: E402
from asd_lib.synth import generate  # noqa: E402


def logmel_stats(paths: list[str], channel: int, n_mels: int = 64) -> np.ndarray:
    """(N, 2 * n_mels) mean and std over time of log-mel spectrograms of one channel."""
    import torch
    import torchaudio

    torch.set_num_threads(1)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=512, n_mels=n_mels, power=2.0)
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


def _nn_scores(ftr: np.ndarray, fte: np.ndarray, form: str) -> np.ndarray:
    """Distance of each test vector to its nearest training vector: 'euclid64' (standardised) or 'cosine128'."""
    if form == "euclid64":
        mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
        return NearestNeighbors(n_neighbors=1).fit((ftr - mu) / sd).kneighbors((fte - mu) / sd)[0][:, 0]
    return NearestNeighbors(n_neighbors=1, metric="cosine").fit(ftr).kneighbors(fte)[0][:, 0]


def difficulty(root: Path, channels: tuple[int, ...] = (0, 1), forms: tuple[str, ...] = ("euclid64",)) -> pd.DataFrame:
    """Per machine, channel and detector form: official score and its parts."""
    man = scan(root, ground_truth=root / "ground_truth")
    rows = []
    for machine, g in man.groupby("machine", sort=False):
        tr, te = g[g.split == "train"], g[g.split == "test"]
        y = (te.label == "anomaly").to_numpy().astype(int)
        dom = te.domain.to_numpy()
        for ch in channels:
            for form in forms:
                bins = 64 if form == "euclid64" else 128
                ftr, fte = logmel_stats(tr.path.tolist(), ch, bins), logmel_stats(te.path.tolist(), ch, bins)
                rows.append(dict(machine=machine, channel=f"ch{ch}", form=form,
                                 **official(y, dom, _nn_scores(ftr, fte, form))))
    return pd.DataFrame(rows)


def dev_score(df: pd.DataFrame) -> float:
    """Official score over the 7 dev machines (21 numbers) of one detector's rows."""
    dev = df[df.machine.isin(DEV_MACHINES)]
    return official_score(dev.auc_s, dev.auc_t, dev.pauc)


def baseline_scores(root: Path, epochs: int, seed: int) -> dict:
    """The organisers' baseline on the dev machines: official MAHALA / MSE scores, domain AUCs, convergence epoch."""
    from asd_lib import baseline

    work = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
    try:
        info = baseline.run_baseline(root, list(DEV_MACHINES), work, epochs=epochs, seed=seed)
        _, res = baseline.evaluate_baseline(work)
        out = {}
        for name, r in res.items():
            t = r.table
            out[f"baseline_{name}"] = r.official_score
            out[f"baseline_{name}_auc_s"] = float(t["AUC (source)"].mean())
            out[f"baseline_{name}_auc_t"] = float(t["AUC (target)"].mean())
            per_machine = t.groupby("machine")[["AUC (source)", "AUC (target)"]].mean().mean(axis=1)
            out[f"baseline_{name}_worst_machine_auc"] = float(per_machine.min())
        # convergence: the first epoch whose validation loss is within 2 % of the machine's best, worst machine
        val = [np.array([h["val_loss"] for h in m["history"]]) for m in info["machines"].values()]
        out["baseline_converged_epoch"] = max(int(np.argmax(v <= 1.02 * v.min())) + 1 for v in val)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Time the generation, run the difficulty check (and the baseline), print per machine and over seeds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="keep the data here, one folder per seed (default: temporary)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="repeat on seeds seed..seed+N-1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baseline-epochs", type=int, default=0, help="also train the organisers' baseline (0: no)")
    a = ap.parse_args()
    base = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    cpu = lambda: sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime  # noqa: E731
                      for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    summary = []
    try:
        for seed in range(a.seed, a.seed + a.seeds):
            out = base / f"{a.preset}_seed{seed}"
            t0, c0 = time.perf_counter(), cpu()
            generate(out, a.preset, seed, jobs=a.jobs)
            gen_s, gen_cpu = time.perf_counter() - t0, cpu() - c0
            print(f"generation of preset {a.preset!r} (seed {seed}, {a.jobs} worker processes): {gen_s:.1f} s wall, "
                  f"{gen_cpu:.1f} CPU s; load average at the end {os.getloadavg()[0]:.1f}")
            df = difficulty(out, forms=("euclid64", "cosine128"))
            row = {"seed": seed}
            for (ch, form), d in df.groupby(["channel", "form"]):
                row[f"{form}_{ch}"] = dev_score(d)
                dev = d[d.machine.isin(DEV_MACHINES)]
                row[f"{form}_{ch}_auc_s"], row[f"{form}_{ch}_auc_t"] = dev.auc_s.mean(), dev.auc_t.mean()
            if seed == a.seed:
                wide = df[df.form == "euclid64"].pivot(index="machine", columns="channel",
                                                       values=["score", "auc_s", "auc_t", "pauc"])
                wide.columns = [f"{x}_{y}" for x, y in wide.columns]
                print("euclid64 per machine:\n" + wide.loc[list(df.machine.unique())].round(3).to_string())
            if a.baseline_epochs:
                row.update(baseline_scores(out, a.baseline_epochs, seed))
            summary.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        table = pd.DataFrame(summary).set_index("seed")
        print(f"\nofficial score on the 7 dev machines ({a.preset}, {a.seeds} seed(s)): mean, sd")
        print(pd.DataFrame({"mean": table.mean(), "sd": table.std(ddof=1) if len(table) > 1 else np.nan})
              .round(3).to_string())
    finally:
        if a.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
