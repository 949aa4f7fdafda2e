"""Is the gap between the demo's system and the log-mel detector in the features or in the scorer?

Two kinds of clip vectors on the dev machines (channel 0): log-mel mean + std over time (the 128 bins of the BEATs
filterbank; no learning) and the demo's learned embeddings (``results/<regime>/embeddings/<model>/ch0``, written by
``make demo``). Each is scored by the same nearest-neighbour family with its parts swapped one at a time:
the paper's KNN (the authors' quantile preprocessing, cosine, k = 6), the difficulty check of
``benchmarks/bench_synth.py`` (standardised, Euclidean, k = 1), and the combinations between; last, the paper's whole
offline scoring stage (its four scorers, rank normalisation, minimum) on each vector kind alone. It prints, per vector
kind and scorer, the official score with the mean source AUC, target AUC and pAUC over the machines.

    python benchmarks/probe_scorers.py --data results/synth/small_seed0 --embeddings results/dev/embeddings \
        --models beats@20 sslam@10

Measured after ``make demo`` (small seed 0, 10 target training clips per machine): with the paper's scorer,
log-mel statistics score 0.485 and the learned embeddings 0.495 (beats@20) and 0.500 (sslam@10); with the difficulty
check's scorer 0.601, 0.536 and 0.534; with the paper's whole offline stage 0.517, 0.519 and 0.532. See the README
("The demo does not yet tell the paper's story").

The official target AUC ranks the target-domain normal clips against ALL anomalies, the source domain's included, so
the probe also takes it apart: "within source" (source normals vs source anomalies), "within target" (target normals
vs target anomalies) and "target normal vs source anomaly". Measured after ``make demo`` (small seed 0, per machine
then averaged), standardised Euclidean 1-NN: log-mel 0.679 / 0.636 / 0.454, beats@20 0.616 / 0.558 / 0.325,
sslam@10 0.657 / 0.555 / 0.293. The learned embeddings put the target normals well above the source anomalies, and
within each domain they separate less than log-mel.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd_lib import embed, params, scorers  # noqa: E402
from asd_lib.data import DEV_MACHINES, load_clip, scan  # noqa: E402
from asd_lib.metrics import official_score  # noqa: E402


def knn(prep: str, metric: str, k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A scorer: fit the preprocessing and the bank on the training vectors, score the test vectors."""
    from sklearn.preprocessing import StandardScaler

    def score(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if prep != "none":
            pre = scorers.AAUPreprocess() if prep == "aau" else StandardScaler()
            pre.fit(train)
            train, test = pre.transform(train), pre.transform(test)
        return scorers.KNNScorer(n_neighbors=k, metric=metric).fit(train).decision_function(test)
    return score


@functools.cache
def demo_scorer_params() -> dict[str, dict]:
    """Per-scorer arguments of the demo's DEV offline system (params/demo.yaml over its system files)."""
    return scorers.scorer_params_from(params.load("dev_offline", [params.PARAMS_DIR / "demo.yaml"]))


def paper_stage(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The paper's offline scoring stage on one machine: KNN, GMM, AE and LDN with the demo's settings, each
    rank-normalised over the test clips, then the minimum (one model)."""
    from asd_lib.fusion import OFFLINE_DEFAULT_SCORERS, fuse, rank_normalise

    ranks = {}
    for sid in OFFLINE_DEFAULT_SCORERS:
        sp = demo_scorer_params()[sid]
        est = scorers.make_scorer(sid, preprocess="none" if scorers.takes_raw_embeddings(sid, sp) else "aau", **sp)
        ranks[sid] = [rank_normalise(est.fit(train).decision_function(test))]
    return fuse(ranks, "min")[1]


SCORERS = {
    "quantile (AAU), cosine, k 6 (the paper's KNN)": knn("aau", "cosine", 6),
    "standardised, Euclidean, k 1 (bench_synth)": knn("standard", "euclidean", 1),
    "standardised, Euclidean, k 6": knn("standard", "euclidean", 6),
    "standardised, cosine, k 6": knn("standard", "cosine", 6),
    "quantile (AAU), Euclidean, k 6": knn("aau", "euclidean", 6),
    "none, cosine, k 6": knn("none", "cosine", 6),
    "the paper's offline stage (KNN, GMM, AE, LDN; rank; min)": paper_stage,
}


def logmel_vectors(data_root: str) -> Callable[[str], tuple]:
    """Per machine: (train, test, labels, domains) of log-mel mean + std (BEATs filterbank, channel 0)."""
    import torch

    from asd_lib.backbones.fbank import beats_fbank

    man = scan(data_root)

    def stats(path: str) -> np.ndarray:
        fb = beats_fbank(torch.from_numpy(load_clip(path, channels=(0,))))[0]
        return torch.cat([fb.mean(0), fb.std(0)]).numpy().astype(np.float64)

    def get(machine: str) -> tuple:
        rows = man[man["machine"] == machine].sort_values("file_name")
        tr, te = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
        return (np.stack([stats(p) for p in tr["path"]]), np.stack([stats(p) for p in te["path"]]),
                (te["label"] == "anomaly").to_numpy().astype(int), te["domain"].to_numpy())
    return get


def embedding_vectors(root: str, model: str) -> Callable[[str], tuple]:
    """Per machine: (train, test, labels, domains) of a model's cached channel-0 embeddings."""
    def get(machine: str) -> tuple:
        tr, te = (embed.load_embeddings(root, model, "ch0", machine, s) for s in ("train", "test"))
        return tr["emb"].astype(np.float64), te["emb"].astype(np.float64), te["labels"], te["domains"]
    return get


def pair_auc(z: np.ndarray, normal: np.ndarray, anomalous: np.ndarray) -> float:
    """AUC of the scores of the clips ``anomalous`` against those of the clips ``normal`` (boolean masks)."""
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(np.r_[np.zeros(normal.sum()), np.ones(anomalous.sum())], np.r_[z[normal], z[anomalous]])


def report(name: str, get: Callable[[str], tuple]) -> None:
    """Per scorer: the official score, its three means, and the target AUC taken apart (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    res = {s: [[] for _ in range(6)] for s in SCORERS}
    for machine in DEV_MACHINES:
        train, test, y, dom = get(machine)
        src, tgt = (dom == "source") | (y == 1), (dom == "target") | (y == 1)
        s_n, s_a, t_n, t_a = ((dom == d) & (y == lab) for d in ("source", "target") for lab in (0, 1))
        for s, score in SCORERS.items():
            z = score(train, test)
            for out, value in zip(res[s], (roc_auc_score(y[src], z[src]), roc_auc_score(y[tgt], z[tgt]),
                                           roc_auc_score(y, z, max_fpr=0.1), pair_auc(z, s_n, s_a),
                                           pair_auc(z, t_n, t_a), pair_auc(z, t_n, s_a))):
                out.append(value)
    for s, (a, b, c, ss, tt, ts) in res.items():
        print(f"{name:12s} {s:56s} official {official_score(a, b, c):.3f}   source {np.mean(a):.3f}   "
              f"target {np.mean(b):.3f}   pAUC {np.mean(c):.3f}   |  within source {np.mean(ss):.3f}   "
              f"within target {np.mean(tt):.3f}   target normal vs source anomaly {np.mean(ts):.3f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="results/synth/small_seed0")
    ap.add_argument("--embeddings", default="results/dev/embeddings")
    ap.add_argument("--models", nargs="*", default=["beats@20", "sslam@10"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    report("log-mel", logmel_vectors(args.data))
    for model in args.models:
        report(model, embedding_vectors(args.embeddings, model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
