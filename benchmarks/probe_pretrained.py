"""Frozen probes of the shipped pre-trained encoders against random-init encoders of the same shape.

For each synthetic benchmark seed: the class probe (leave-one-out 1-NN accuracy of machine + section + domain +
attribute over the DEV training clips) and the anomaly probe (the kit's KNN scorer on frozen embeddings: official
score over the 7 dev machines, mean source AUC, mean target AUC) of asd_lib.pretrain.probe, for BEATs and SSLAM,
random and pre-trained weights, on channel 0 and channel 1. Prints one row per (seed, encoder, weights, channel)
and the mean over seeds.

Usage: python benchmarks/probe_pretrained.py [--preset small] [--seeds 2] [--data results/synth]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from asd_lib.backbones import load_backbone
from asd_lib.pretrain.probe import frozen_probe, random_like
from asd_lib.synth import generate

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["class 1-NN acc", "KNN official", "KNN source AUC", "KNN target AUC"]


def main() -> None:
    """Run the probes and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--data", default=str(ROOT / "results" / "synth"), help="benchmark folders go here")
    a = ap.parse_args()
    rows = []
    for seed in range(a.seeds):
        root = generate(Path(a.data) / f"{a.preset}_seed{seed}", a.preset, seed)
        for enc, ckpt, recipe in (("BEATs", "beats_kit.pt", None), ("SSLAM", "sslam_kit.pt", "aau")):
            pre = load_backbone(ROOT / "checkpoints" / ckpt, recipe=recipe)
            for weights, model in (("random", random_like(pre, seed=0)), ("pre-trained", pre)):
                for channel in ("ch0", "ch1"):
                    r = frozen_probe(model, root, channel=channel)
                    rows.append({"seed": seed, "encoder": enc, "weights": weights, "channel": channel,
                                 **dict(zip(COLUMNS, (r["class_1nn_accuracy"], r["official_score"], r["auc_source"],
                                                      r["auc_target"])))})
                    print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby(["encoder", "channel", "weights"], sort=False)[COLUMNS]
    print(f"\nmean (sd) over {a.seeds} benchmark seed(s), preset {a.preset}:")
    print(summary.mean().round(3).astype(str).add(" (").add(summary.std().round(3).astype(str)).add(")").to_string())


if __name__ == "__main__":
    main()
