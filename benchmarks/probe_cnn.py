"""Can any learned representation solve the synthetic benchmark? A from-scratch log-mel CNN, outside the method.

The classic DCASE recipe, not the paper's: a 4-block 2-D CNN on 128-bin log-mel spectrograms (2 s, both channels
as samples), an ArcFace head (s 30, m 0.2) on the kit's 90 training classes (machine, section, domain, attributes,
channel), AdamW 1e-3, random 1.5-s crops; then, per machine, the cosine distance of each channel-0 test clip to its
nearest training clip, scored with the official metric. It prints per-machine source AUC, target AUC and pAUC, and
the official score over the dev machines, at a few epochs.

    python benchmarks/probe_cnn.py --data results/synth/small_seed0 --epochs 15 --threads 2

Measured with the command above (`small` seed 0 as it was then, with 4 target training clips per machine, 2
threads, 5.5 min): training accuracy 0.73 at epoch 5 and 0.89 at epoch 15; official score 0.486 and 0.471; mean
source AUC 0.75 and 0.78, mean target AUC 0.36 and 0.33. A well-trained classifier separates source anomalies but not
the target domain: see the README ("The demo does not yet tell the paper's story").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd_lib import data, params as P  # noqa: E402
from asd_lib.metrics import official_score  # noqa: E402

SECONDS, SR = 2.0, 16000


def logmel(paths, channel: int):
    """(N, 128, frames) log-mel power in dB of the first 2 s of one channel (zero-padded when shorter)."""
    import torch
    import torch.nn.functional as F
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=256, n_mels=128, power=2.0)
    n = int(SECONDS * SR)
    out = []
    for p in paths:
        x = torch.from_numpy(data.load_clip(p, channels=(channel,))).float()[:, :n]
        out.append(10 * torch.log10(mel(F.pad(x, (0, n - x.shape[1])))[0] + 1e-10))
    return torch.stack(out)


def build(n_classes: int):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [1, 32, 64, 128, 128]
            self.blocks = nn.ModuleList(nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, padding=1), nn.BatchNorm2d(widths[i + 1]), nn.ReLU(),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1), nn.BatchNorm2d(widths[i + 1]), nn.ReLU(),
                nn.MaxPool2d(2)) for i in range(4))
            self.fc = nn.Linear(128, 128)
            self.weight = nn.Parameter(torch.randn(n_classes, 128) * 0.01)

        def embed(self, x):
            x = x[:, None]
            for block in self.blocks:
                x = block(x)
            return self.fc(x.mean((2, 3)))

        def loss(self, x, y, s: float = 30.0, m: float = 0.2):
            cos = F.normalize(self.embed(x)) @ F.normalize(self.weight).T
            theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
            logits = torch.where(F.one_hot(y, cos.shape[1]).bool(), torch.cos(theta + m), cos) * s
            return F.cross_entropy(logits, y), (cos.argmax(1) == y).float().mean()

    return Net()


def main() -> None:
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="results/synth/small_seed0")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--report", type=int, nargs="*", default=[5], help="also score at these epochs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    man = P.regime_manifest(data.scan(args.data), "dev")
    train = man[man["split"] == "train"].sort_values(["machine", "file_name"]).reset_index(drop=True)
    classes = data.class_labels(train, channels=True)
    index = {c: i for i, c in enumerate(classes)}
    X = torch.cat([logmel(train["path"], ch) for ch in (0, 1)])
    Y = torch.tensor([index[data.class_name(r.machine, r.section, r.domain, r.attributes, channel=ch)]
                      for ch in (0, 1) for r in train.itertuples()])
    mu, sd = X.mean(), X.std()
    X = (X - mu) / sd
    net = build(len(classes))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    crop = int(X.shape[2] * 0.75)
    t0 = time.perf_counter()

    def score(tag: str) -> None:
        net.eval()
        parts = {"s": [], "t": [], "p": []}
        with torch.no_grad():
            for machine, g in man.groupby("machine"):
                tr, te = g[g["split"] == "train"], g[g["split"] == "test"]
                a = F.normalize(net.embed((logmel(tr["path"], 0) - mu) / sd))
                b = F.normalize(net.embed((logmel(te["path"], 0) - mu) / sd))
                s = (1 - b @ a.T).min(1).values.numpy()
                y = (te["label"] == "anomaly").to_numpy().astype(int)
                dom = te["domain"].to_numpy()
                src, tgt = (dom == "source") | (y == 1), (dom == "target") | (y == 1)
                r = (roc_auc_score(y[src], s[src]), roc_auc_score(y[tgt], s[tgt]), roc_auc_score(y, s, max_fpr=0.1))
                for k, v in zip("stp", r):
                    parts[k].append(v)
                print(f"  {machine:12s} source AUC {r[0]:.2f}  target AUC {r[1]:.2f}  pAUC {r[2]:.2f}")
        print(f"{tag}: official score {official_score(parts['s'], parts['t'], parts['p']):.4f}; mean source AUC "
              f"{np.mean(parts['s']):.2f}, mean target AUC {np.mean(parts['t']):.2f}", flush=True)
        net.train()

    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(X))
        tot_loss = tot_acc = 0.0
        for i in range(0, len(X), 32):
            idx = perm[i:i + 32]
            start = int(rng.integers(0, X.shape[2] - crop))
            loss, acc = net.loss(X[idx][:, :, start:start + crop], Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(idx)
            tot_acc += acc.item() * len(idx)
        print(f"epoch {epoch}: loss {tot_loss / len(X):.3f}, training accuracy {tot_acc / len(X):.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        if epoch in args.report or epoch == args.epochs:
            score(f"epoch {epoch}")


if __name__ == "__main__":
    main()
