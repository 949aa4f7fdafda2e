"""What a fine-tuning run keeps in its checkpoint folder besides the checkpoints: the sha256 of every epoch file, the
per-epoch log, the pruning of epochs (and the authors' leaky selection on test scores), and the RNG part of the
resume state ``last.pt``."""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from asd_lib.artifacts import LEAKY_SELECTION, checkpoint_epochs, checkpoint_file, head_file
from asd_lib.embed import embed_paths
from asd_lib.finetune.config import FinetuneConfig
from asd_lib.fsutil import atomic_write_text, file_sha256


HASHES = "hashes.json"  # sha256 of every epoch checkpoint as written, checked whenever a run reuses them


def record_hashes(ckpt_dir: Path, files: Sequence[Path]) -> None:
    """Add the sha256 of ``files`` to the folder's hash list, and drop the entries of files that are gone."""
    path = ckpt_dir / HASHES
    known = json.loads(path.read_text()) if path.is_file() else {}
    known = {name: h for name, h in known.items() if (ckpt_dir / name).is_file()}
    known.update({f.name: file_sha256(f) for f in files})
    atomic_write_text(path, json.dumps(known, indent=1, sort_keys=True))


def check_kept(ckpt_dir: Path, epochs: Sequence[int], last: Path) -> None:
    """Every checkpoint a run was asked to keep exists and has the hash it was written with, or a clear error."""
    known = json.loads((ckpt_dir / HASHES).read_text()) if (ckpt_dir / HASHES).is_file() else {}
    for e in sorted(set(epochs)):
        for f in (checkpoint_file(ckpt_dir, e), head_file(ckpt_dir, e)):
            if not f.is_file():
                raise ValueError(f"{f.name} is missing, and {last.name} has already trained past epoch {e}: it can "
                                 f"only come back from a new run. Retrain with resume=False (asd-finetune "
                                 f"--no-resume; asd-run --only 01 --force), or delete {ckpt_dir}")
            if f.name in known and file_sha256(f) != known[f.name]:
                raise ValueError(f"{f} does not have the hash it was written with (truncated or replaced); retrain "
                                 f"with resume=False (asd-finetune --no-resume; asd-run --only 01 --force), or delete "
                                 f"{ckpt_dir}")


def write_log(path: Path, rows: list[dict]) -> None:
    cols = ["epoch", "loss", "accuracy", "lr_backbone", "lr_head", "seconds"]
    if any("leaky_test_score" in r for r in rows):
        cols.append("leaky_test_score")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def prune_checkpoints(ckpt_dir: Path, keep: Sequence[int], latest: int, leaky: dict[int, float]) -> None:
    """Delete the epoch checkpoints that are neither kept, the latest, nor (leaky selection) among the best scored
    on the test labels, as many as ``keep`` names; the ranking goes to ``selected_on_test_LEAKY.json``."""
    keep_set = set(int(k) for k in keep) | {latest}
    scored = {e: s for e, s in leaky.items() if s == s}
    if scored:
        ranked = sorted(scored, key=lambda e: (-scored[e], e))[:max(1, len(set(keep)))]
        keep_set |= set(ranked)
        atomic_write_text(ckpt_dir / LEAKY_SELECTION,
                          json.dumps({"epoch": ranked[0], "epochs": ranked, "score": scored[ranked[0]],
                                      "scores": scored,
                                      "warning": "chosen with test labels (the authors' selection): a leak"}))
    for epoch, files in checkpoint_epochs(ckpt_dir, heads=True).items():
        if epoch not in keep_set:
            for p in files:
                p.unlink()
    record_hashes(ckpt_dir, [])  # forget the pruned files


def leaky_test_score(man, encoder: nn.Module, cfg: FinetuneConfig, dev: torch.device) -> float:
    """Official-style harmonic mean of AUC(source), AUC(target), pAUC per machine, KNN (k=6, cosine) on GeM ch0
    embeddings (joint embeddings for a joint-channel run) of the labelled TEST clips. Uses test labels: only for
    'select-on-test-leaky'."""
    from scipy.stats import hmean  # scipy and sklearn: only for this opt-in selection
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    was_training = encoder.training
    encoder.eval()
    values = []
    machines = cfg.machines or sorted(man["machine"].unique())
    for m in machines:
        tr = man[(man["machine"] == m) & (man["split"] == "train")]
        te = man[(man["machine"] == m) & (man["split"] == "test") & man["label"].isin(["normal", "anomaly"])]
        if te.empty or te["label"].nunique() < 2:
            continue
        kw = dict(device=dev, progress=False, inference_mode=False)  # the encoder keeps training afterwards
        channel = "joint" if cfg.channel_input == "joint" else "ch0"
        e_tr = embed_paths(encoder, tr["path"].tolist(), channel, "gem", cfg.duration, **kw)
        e_te = embed_paths(encoder, te["path"].tolist(), channel, "gem", cfg.duration, **kw)
        nn_ = NearestNeighbors(n_neighbors=min(6, len(e_tr)), metric="cosine").fit(e_tr)
        score = nn_.kneighbors(e_te)[0][:, -1]
        y = (te["label"] == "anomaly").to_numpy()
        dom = te["domain"].to_numpy()
        for d in ("source", "target"):
            sel = y | (dom == d)
            if (~y[sel]).any():
                values.append(roc_auc_score(y[sel], score[sel]))
        values.append(roc_auc_score(y, score, max_fpr=0.1))
    if was_training:
        encoder.train()
    return float(hmean(np.maximum(values, np.finfo(float).eps))) if values else float("nan")


def rng_state() -> dict[str, Any]:
    """Every RNG's state in types that ``torch.load(weights_only=True)`` reads back (no numpy objects)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def read_state(path: Path) -> dict[str, Any]:
    """A ``last.pt`` resume state, read without unpickling objects; one clear line when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or written by an older kit with numpy objects
        raise ValueError(f"{path} cannot be read as a resume state ({type(err).__name__}); delete it (the run then "
                         "starts over) or pass resume=False") from err


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
