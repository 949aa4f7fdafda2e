"""The pre-training loop: corpus -> fbank batches -> objective -> official-format checkpoint + manifest.

Introduced in notebook ``00b_pretrain``. ``python -m asd_lib.pretrain --encoder beats`` (or ``sslam``) writes
``checkpoints/beats_kit.pt`` (unilm BEATs format) or ``checkpoints/sslam_kit.pt`` (fairseq EAT/SSLAM pre-training
format) and records the run in ``checkpoints/manifest.json``. The state is saved every ``save_every`` steps under
``work_dir``; a run that is stopped continues from there when started again with the same arguments. Each step
draws its batch and its masks from generators seeded by (seed, step), so a resumed run is the same run, and a run
is deterministic on CPU for a fixed thread count.

torch, transformers, the encoder modules (``asd_lib.backbones``, ``.beats``, ``.sslam``) and the corpus generator
(which brings pandas) are imported inside the functions that use them, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from asd_lib import logs
from asd_lib.fsutil import atomic_torch_save, atomic_write_text, file_sha256
from asd_lib.progress import bar as progress_bar

ENCODERS = {"beats": ("beats-tiny", "beats", "beats_kit.pt"), "sslam": ("sslam-tiny", "eat", "sslam_kit.pt")}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines a pre-training run (a resumed run must match it)."""

    encoder: str = "beats"       # beats | sslam
    shape: str = ""              # named configuration (empty: beats-tiny / sslam-tiny)
    corpus_clips: int = 6000     # clips in the synthetic corpus
    seconds: float = 2.0         # clip length (s)
    steps: int = 3000            # optimiser steps
    batch_size: int = 32         # clips per step (SSLAM doubles them with mixtures, then clones them)
    lr: float = 5e-4             # peak learning rate (BEATs and EAT papers: 5e-4)
    warmup: float = 0.1          # fraction of the steps with a linear warm-up, then cosine decay
    weight_decay: float = 0.05   # EAT
    grad_clip: float = 4.0       # EAT
    seed: int = 0                # one seed for the corpus, the weights, the batches and the masks


def _fbank(enc: Any, wave: "torch.Tensor") -> "torch.Tensor":
    """The encoder family's pre-training front end: BEATs' recipe; EAT's canonical one without padding."""
    from asd_lib.backbones.fbank import beats_fbank, eat_fbank, num_frames

    if enc.kind == "beats":
        return beats_fbank(wave)
    return eat_fbank(wave, target_length=num_frames(wave.shape[1]))


def build(cfg: PretrainConfig) -> "torch.nn.Module":
    """A fresh pre-trainer (encoder with seeded random weights + the objective's extra modules)."""
    from asd_lib.backbones import build_named

    from .beats import BEATsPretrainer
    from .sslam import SSLAMPretrainer

    name, recipe, _ = ENCODERS[cfg.encoder]
    enc = build_named(cfg.shape or name, recipe=recipe, seed=cfg.seed)
    if cfg.encoder == "beats":
        tokens = (int(cfg.seconds * 100) // 16 + 1) * 8
        return BEATsPretrainer(enc, max_tokens=tokens, seed=cfg.seed)
    return SSLAMPretrainer(enc)


def corpus(cfg: PretrainConfig, work_dir: Path, jobs: int = 1, progress: bool = True) -> np.ndarray:
    """The corpus waveforms (clips, samples) float32, generated once and cached under ``work_dir``."""
    from .corpus import generate_corpus

    code = hashlib.sha256(b"".join(p.read_bytes() for p in [Path(__file__).with_name("corpus.py"),
                                                             *sorted(Path(__file__).parents[1].glob("synth/*.py"))]))
    path = work_dir / f"corpus_seed{cfg.seed}_n{cfg.corpus_clips}_{cfg.seconds:g}s_{code.hexdigest()[:10]}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    waves, _ = generate_corpus(cfg.corpus_clips, cfg.seconds, seed=cfg.seed, jobs=jobs, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, waves.astype(np.float32))
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _git_commit() -> str:
    """The repository's HEAD commit (with '+dirty' when the work tree has changes), or '' outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty else "")


def weights_sha256(module: "torch.nn.Module") -> str:
    """sha256 over the state dict's names and tensor bytes: equal weights give equal hashes (file bytes do not)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pretrain(cfg: PretrainConfig, out_dir: str | Path = "checkpoints", work_dir: str | Path = "results/pretrain",
             threads: int = 2, save_every: int = 200, progress: bool = True, stop_after: int | None = None,
             command: str = "") -> dict[str, Any]:
    """Run (or resume) one pre-training; write the checkpoint and its manifest entry; return that entry.

    ``stop_after``: leave after this many steps of this call (the state is saved), for tests and notebooks.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; choose one of {sorted(ENCODERS)}")
    torch.set_num_threads(threads)
    out_dir, work = Path(out_dir), Path(work_dir) / cfg.encoder
    work.mkdir(parents=True, exist_ok=True)
    waves = corpus(cfg, Path(work_dir), jobs=threads, progress=progress)
    corpus_sha = hashlib.sha256(np.ascontiguousarray(waves).tobytes()).hexdigest()
    torch.manual_seed(cfg.seed)
    model = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup * cfg.steps), cfg.steps)
    state_path, log_path = work / "state.pt", work / "log.csv"
    step, wall, rows = 0, 0.0, []
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st["config"] != asdict(cfg):
            raise RuntimeError(f"{state_path} belongs to another run ({st['config']}); delete {work} to start again")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, wall, rows = st["step"], st["wall"], st["log"]

    def save_state() -> None:
        atomic_torch_save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "step": step, "wall": wall, "log": rows}, state_path)
        write_log(rows, log_path)

    model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = progress_bar(total=cfg.steps, initial=step, desc=f"pretrain {cfg.encoder}", enabled_=progress)
    while step < end:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step, 1])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        torch.manual_seed(int(rng.integers(2 ** 62)))                      # dropout and layer drop
        idx = np.sort(rng.choice(len(waves), cfg.batch_size, replace=False))
        fbank = _fbank(model.encoder, torch.from_numpy(np.ascontiguousarray(waves[idx])))
        loss, stats = model.loss(fbank, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        model.teacher_update(step, cfg.steps)
        wall += time.perf_counter() - t0
        rows.append({"step": step, **{k: round(v, 5) for k, v in stats.items()}, "lr": sched.get_last_lr()[0],
                     "wall_s": round(wall, 2)})
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
        if step % save_every == 0 or step == end:
            save_state()
    bar.close()
    if step < cfg.steps:
        return {"step": step, "log": rows}
    _, _, file_name = ENCODERS[cfg.encoder]
    path = model.encoder.save(out_dir / file_name)
    window = max(1, min(100, step // 10))  # loss averages over the first and the last `window` steps
    head, tail = rows[:window], rows[-window:]
    entry = {"file": file_name, "sha256": file_sha256(path), "weights_sha256": weights_sha256(model.encoder),
             "bytes": path.stat().st_size, "encoder": cfg.encoder,
             "shape": cfg.shape or ENCODERS[cfg.encoder][0], "config": asdict(cfg), "threads": threads,
             "command": command or f"python -m asd_lib.pretrain --encoder {cfg.encoder}",
             "wall_s": round(wall, 1), "steps": step,
             "final_losses": {k: round(float(np.mean([r[k] for r in tail])), 4) for k in tail[-1]
                              if k not in ("step", "lr", "wall_s")},
             "first_losses": {k: round(float(np.mean([r[k] for r in head])), 4) for k in rows[0]
                              if k not in ("step", "lr", "wall_s")},
             "corpus_sha256": corpus_sha, "git_commit": _git_commit(), "torch": torch.__version__}
    write_manifest_entry(out_dir / "manifest.json", entry)
    write_log(rows[::max(1, step // 1000)], out_dir / f"{Path(file_name).stem}_log.csv")
    return entry


def write_log(rows: list[dict[str, Any]], path: Path) -> None:
    """The per-step log rows as CSV (atomically)."""
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(path, buf.getvalue())


def write_manifest_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add or replace ``entry`` (keyed by its file name) in the manifest JSON."""
    manifest = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    manifest["checkpoints"][entry["file"]] = entry
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def verify_manifest(folder: str | Path = "checkpoints") -> dict[str, bool]:
    """File name -> whether its sha256 matches the manifest."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return {name: (folder / name).exists() and file_sha256(folder / name) == e["sha256"]
            for name, e in manifest["checkpoints"].items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m asd_lib.pretrain --encoder beats|sslam [options]``."""
    d = PretrainConfig()
    p = argparse.ArgumentParser(prog="python -m asd_lib.pretrain", description="Self-supervised pre-training of "
                                "the kit's BEATs (iteration 1) or SSLAM encoder on the synthetic corpus.")
    p.add_argument("--encoder", choices=sorted(ENCODERS), required=True, help="which encoder to pre-train")
    p.add_argument("--shape", default=d.shape, help="named configuration (default: beats-tiny / sslam-tiny)")
    p.add_argument("--corpus-clips", type=int, default=d.corpus_clips, help="clips in the synthetic corpus")
    p.add_argument("--seconds", type=float, default=d.seconds, help="clip length in seconds")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the corpus, weights, batches and masks")
    p.add_argument("--threads", type=int, default=2, help="torch threads (results are deterministic per count)")
    p.add_argument("--out", default="checkpoints", help="folder of the checkpoint and manifest.json")
    p.add_argument("--work", default="results/pretrain", help="folder of the corpus cache, state and log")
    a = p.parse_args(argv)
    logs.configure()
    cfg = PretrainConfig(encoder=a.encoder, shape=a.shape, corpus_clips=a.corpus_clips, seconds=a.seconds,
                         steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    command = "python -m asd_lib.pretrain " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        entry = pretrain(cfg, a.out, a.work, threads=a.threads, command=command)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: entry[k] for k in ("file", "sha256", "wall_s", "steps", "final_losses")}, indent=2))
    return 0
