"""Did pre-training learn something? Frozen-embedding probes on the benchmark (notebook ``00b_pretrain``).

Two probes of a frozen encoder, each compared with a random-init encoder of the same shape:

- class probe: leave-one-out 1-nearest-neighbour accuracy (cosine) of the machine + section + domain + attribute
  class over the DEV training clips (the classes of the auxiliary task, without channel);
- anomaly probe: the kit's KNN scorer (k = 6, the k-th neighbour's cosine distance) fitted per machine on the
  training clips, scored on the test clips, summarised by the official score (hmean of AUCs and pAUCs) and by the
  mean source and target AUC over the machines. The two AUCs answer different questions: the source AUC asks whether
  the embedding sees the faults where the training clips cover the conditions well (100 clips); the target AUC also
  asks whether ten target clips are enough to place the target domain's normal clips below every anomaly, the
  source domain's included (the official per-domain AUC ranks a domain's normal clips against all anomalies).

Both use the scoring embedding of the systems (channel 0, GeM over L2-normalised tokens) and no fine-tuning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asd_lib.data import DEV_MACHINES, class_name, scan
from asd_lib.embed import embed_paths
from asd_lib.metrics import auc_domain, official_score, pauc
from asd_lib.scorers import KNNScorer


def random_like(encoder: Any, seed: int = 0) -> Any:
    """An encoder of the same class, cfg and recipe with seeded random weights (the probes' baseline)."""
    from asd_lib.backbones import construct  # torch: only this function builds an encoder

    other = construct(type(encoder), encoder.cfg, encoder.recipe)
    other.reset_parameters(seed)
    return other.eval()


def loo_1nn_accuracy(emb: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy with cosine similarity; emb (n, D), labels (n,)."""
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[sim.argmax(1)] == labels))


def frozen_probe(encoder: Any, data_root: str | Path, machines: tuple[str, ...] = DEV_MACHINES,
                 channel: str = "ch0", pooling: str = "gem", progress: bool = False) -> dict[str, Any]:
    """Class probe and anomaly probe of a frozen encoder on a benchmark folder -> dict of numbers."""
    man = scan(data_root)
    man = man[man["machine"].isin(machines)]
    emb = embed_paths(encoder, man["path"].tolist(), channel=channel, pooling=pooling, progress=progress)
    train = (man["split"] == "train").to_numpy()
    cls = np.array([class_name(r.machine, r.section, r.domain, r.attributes) for r in man.itertuples()])
    rows = []
    for m in machines:
        tr, te = train & (man["machine"] == m).to_numpy(), ~train & (man["machine"] == m).to_numpy()
        s = KNNScorer().fit(emb[tr]).decision_function(emb[te])
        y = (man["label"][te] == "anomaly").to_numpy().astype(int)
        d = (man["domain"][te] == "target").to_numpy().astype(int)
        rows.append({"machine": m, "auc_source": auc_domain(y, s, d, 0), "auc_target": auc_domain(y, s, d, 1),
                     "pauc": pauc(y, s)})
    table = pd.DataFrame(rows)
    return {"class_1nn_accuracy": loo_1nn_accuracy(emb[train], cls[train]), "n_classes": len(set(cls[train])),
            "official_score": official_score(table["auc_source"], table["auc_target"], table["pauc"]),
            "auc_source": float(table["auc_source"].mean()), "auc_target": float(table["auc_target"].mean()),
            "per_machine": table}
