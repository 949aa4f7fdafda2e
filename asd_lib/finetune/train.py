"""The fine-tuning run: ``finetune`` trains a backbone with its head on one process or under torchrun, saves the
epoch checkpoints and the resume state, and resumes from it."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from asd_lib.artifacts import checkpoint_dir, checkpoint_file, head_file
from asd_lib.backbones.joint import JointChannelEncoder
from asd_lib.data import class_labels
from asd_lib.embed import POOLINGS
from asd_lib.finetune.checkpoints import (check_kept, leaky_test_score, prune_checkpoints, read_state, record_hashes,
                                          rng_state, set_rng_state, write_log)
from asd_lib.finetune.config import FinetuneConfig
from asd_lib.finetune.distributed import (all_reduce_sum, barrier, dist_info, end_process_group, gather_objects,
                                          maybe_init_distributed, per_rank_sum)
from asd_lib.finetune.features import (SAMPLE_RATE, add_wave_noise, add_wave_noise_channels, check_channel_input,
                                       load_channels, per_sample_rng, sample_table, to_manifest)
from asd_lib.finetune.features import cache_fbank as cache_fbank_fn  # ``cache_fbank`` is also an argument of finetune
from asd_lib.finetune.heads import Classifier, build_head
from asd_lib.finetune.trainable import apply_trainable, encoder_kind, load_encoder, switch_report
from asd_lib.fsutil import atomic_torch_save, atomic_write_text, folder_lock
from asd_lib.provenance import clips_digest
from asd_lib.progress import bar as progress_bar

log = logging.getLogger(__name__)


class _InjectedCrash(RuntimeError):
    """Raised by the test hook ``_crash_after_step`` to simulate a run killed mid-epoch."""


def _backbone_label(backbone: str | Path | nn.Module) -> str:
    if isinstance(backbone, nn.Module):
        return f"<module {type(backbone).__name__}>"
    return str(backbone)


def _default_backbone_id(backbone: str | Path | nn.Module, encoder: nn.Module) -> str:
    if isinstance(backbone, (str, Path)) and not Path(str(backbone)).exists():
        return str(backbone).split("-")[0]
    return "beats" if encoder_kind(encoder) == "beats" else "sslam"


def _recipe_name(encoder: nn.Module, recipe: str | None) -> str:
    return str(recipe or getattr(encoder, "recipe", None) or encoder_kind(encoder))


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return False


def finetune(manifest: Any, backbone: str | Path | nn.Module = "beats-tiny", out_dir: str | Path = "results/dev",
             *, classes_with_channel: bool = True, train_channels: Sequence[int] = (0, 1),
             channel_input: str = "separate", machines: Sequence[str] | None = None, trainable: str = "aau",
             top_k: int | None = None,
             epochs: int = 1, batch_size: int = 64, accum: int = 1, lr_backbone: float = 6.45e-5,
             lr_head: float = 4.57e-3, weight_decay: float = 5.1e-4, warmup_epochs: float = 5.0,
             grad_clip: float = 1.0, duration: float = 10.0, arcface_s: float = 64.0, arcface_m: float = 0.2,
             head: str = "arcface", train_pooling: str = "mean", time_shift: float = 0.0, noise_std: float = 0.0,
             noise_snr_db: Sequence[float] | None = None, noise_prob: float = 1.0, fbank_noise_std: float = 0.0,
             dropout: bool = True, layerdrop: bool = True, grad_decay: bool = True,
             amp: bool = True, cache_fbank: bool = True, seed: int = 0, device: str | None = None,
             save_every: int = 1, keep_epochs: Sequence[int] = (), save_every_steps: int = 0,
             resume: bool = True, epoch_selection: str = "fixed", backbone_id: str | None = None,
             recipe: str | None = None, backbone_overrides: dict | None = None, ground_truth: Any = None,
             progress: bool = True, verbose: bool = True, _crash_after_step: int | None = None) -> Path:
    """Fine-tune ``backbone`` with an ArcFace (or softmax) head on the manifest's training clips.

    ``manifest``: a ``scan`` DataFrame (or a data root); ``out_dir``: ``results/<regime>``. ``batch_size`` is the
    global micro-batch (split over processes under torchrun); one optimiser step every ``accum`` micro-batches.
    ``warmup_epochs`` may be fractional. Returns the checkpoint folder ``out_dir/checkpoints/<backbone_id>``.
    ``epoch_selection``: 'fixed' (keep ``keep_epochs`` + the latest) or 'select-on-test-leaky' (also keep the
    epoch with the best score on the labelled test clips: uses test labels). ``channel_input``: 'separate' (one
    mono sample per channel, the authors') or 'joint' (BEATs only: one sample per clip whose two channels share
    one token sequence with a learned channel embedding; needs ``classes_with_channel=False`` and
    ``train_channels=(0, 1)``; the channel embedding is trained with the backbone's learning rate).
    """
    from transformers import get_cosine_schedule_with_warmup  # seconds to import: only when a run trains

    if epoch_selection not in ("fixed", "select-on-test-leaky"):
        raise ValueError(f"epoch_selection must be 'fixed' or 'select-on-test-leaky', got {epoch_selection!r}")
    check_channel_input(channel_input, classes_with_channel, train_channels)
    if accum < 1 or batch_size < 1 or epochs < 0:
        raise ValueError(f"need batch_size >= 1, accum >= 1, epochs >= 0 (got {batch_size}, {accum}, {epochs})")
    started_dist = maybe_init_distributed(device)
    rank, world, local_rank = dist_info()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes of this torchrun job")
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    cfg = FinetuneConfig(
        backbone=_backbone_label(backbone), backbone_id=backbone_id, recipe=recipe,
        classes_with_channel=classes_with_channel, train_channels=tuple(int(c) for c in train_channels),
        channel_input=channel_input, machines=tuple(machines) if machines else None, trainable=trainable,
        top_k=top_k, head=head,
        arcface_s=arcface_s, arcface_m=arcface_m, train_pooling=train_pooling, epochs=epochs,
        batch_size=batch_size, accum=accum, lr_backbone=lr_backbone, lr_head=lr_head, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, grad_clip=grad_clip, duration=duration, time_shift=time_shift,
        noise_std=noise_std, noise_snr_db=tuple(noise_snr_db) if noise_snr_db else None, noise_prob=noise_prob,
        fbank_noise_std=fbank_noise_std, dropout=dropout, layerdrop=layerdrop,
        grad_decay=grad_decay, amp=amp, cache_fbank=cache_fbank, seed=seed, save_every=save_every,
        keep_epochs=tuple(int(e) for e in keep_epochs), save_every_steps=save_every_steps,
        epoch_selection=epoch_selection)
    say = log.info if (verbose and rank == 0) else (lambda *a, **k: None)

    # ---- data
    man = to_manifest(manifest, ground_truth)
    train_rows = man[man["split"] == "train"]
    if machines:
        missing = sorted(set(machines) - set(train_rows["machine"]))
        if missing:
            raise ValueError(f"machines {missing} have no training clips in the manifest")
        train_rows = train_rows[train_rows["machine"].isin(list(machines))]
    if train_rows.empty:
        raise ValueError("the manifest has no training rows (split == 'train'); check the data root")
    train_rows = train_rows.sort_values(["machine", "file_name"]).reset_index(drop=True)
    classes = class_labels(train_rows, channels=classes_with_channel)
    clips, samples = sample_table(train_rows, classes, cfg)
    data_id = clips_digest(train_rows)  # a resume needs the same clips

    # ---- model
    torch.manual_seed(seed)
    sw = {"dropout": dropout, "layerdrop": layerdrop, "grad_decay": grad_decay}
    encoder, cfg_original = load_encoder(backbone, recipe, backbone_overrides, sw)
    if train_pooling not in POOLINGS or (train_pooling == "cls" and encoder.kind != "eat"):
        raise ValueError(f"train_pooling {train_pooling!r} does not fit this {encoder.kind} encoder: use 'mean' "
                         "(the authors'), 'gem', or 'cls' with an EAT/SSLAM encoder (BEATs has no CLS token)")
    cfg.backbone_id = backbone_id or _default_backbone_id(backbone, encoder)
    switches = switch_report(encoder, **sw)
    trained = apply_trainable(encoder, trainable, top_k)
    joint = None
    if channel_input == "joint":
        joint = JointChannelEncoder(encoder, seed=seed)
    ckpt_dir = checkpoint_dir(out_dir, cfg.backbone_id)
    lock = folder_lock(ckpt_dir, "fine-tuning run") if rank == 0 else _nullcontext()
    with lock:  # one run per output folder: a second one refuses instead of mixing checkpoints
        recipe_name = _recipe_name(encoder, recipe)
        torch.manual_seed(seed)
        head_kwargs = {"s": arcface_s, "m": arcface_m} if head == "arcface" else {}
        head_mod = build_head(head, int(encoder.embed_dim), len(classes), **head_kwargs)
        model = Classifier(encoder, head_mod, train_pooling, backbone_grad=bool(trained) or joint is not None,
                           joint=joint).to(dev)
        n_trained = sum(p.numel() for n, p in encoder.named_parameters() if n in set(trained))
        say(f"[finetune] {cfg.backbone} -> {ckpt_dir}: {len(classes)} classes, {len(samples)} samples "
            f"({len(clips)} clips x {len(cfg.train_channels)} ch, {channel_input}), trainable={trainable!r}: "
            f"{len(trained)} tensors, {n_trained:,} params; switches dropout={dropout} layerdrop={layerdrop} "
            f"grad_decay={grad_decay} (cfg in effect {switches['in_effect']}); world={world} device={dev}")

        if rank == 0:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        config_blob = {"config": dataclasses.asdict(cfg), "classes": classes,
                       "trained_parameters": trained + (["channel_embedding"] if joint is not None else []),
                       "switches": switches, "recipe": recipe_name, "world_size": world}

        def save_epoch_checkpoint(epoch: int) -> None:
            """Official-format encoder checkpoint + head sidecar of ``epoch`` (rank 0 writes)."""
            if rank != 0:
                return
            final = checkpoint_file(ckpt_dir, epoch)
            tmp = final.with_name(f"._tmp_{final.stem}.{os.getpid()}.pt")  # unique: two runs never share a temp file
            enc_cfg = getattr(model.encoder, "cfg", None)
            in_effect = {k: enc_cfg[k] for k in cfg_original} if enc_cfg is not None else {}
            if enc_cfg is not None:
                enc_cfg.update(cfg_original)  # the file keeps the checkpoint's own training switches
            try:
                model.encoder.save(tmp)
            finally:
                if enc_cfg is not None:
                    enc_cfg.update(in_effect)
            os.replace(tmp, final)
            atomic_torch_save({"kind": head, "dim": int(encoder.embed_dim), "classes": classes,
                                "kwargs": head_kwargs, "state": model.head.state_dict(),
                                **(joint.head_entries() if joint is not None else {})},
                               head_file(ckpt_dir, epoch))
            record_hashes(ckpt_dir, [final, head_file(ckpt_dir, epoch)])

        # ---- frozen without epochs: the pre-trained encoder is the checkpoint
        if epochs == 0:
            if rank == 0:
                save_epoch_checkpoint(0)
                atomic_write_text(ckpt_dir / "config.json", json.dumps(config_blob, indent=1))
                write_log(ckpt_dir / "log.csv", [])
            barrier()
            end_process_group(started_dist)
            return ckpt_dir

        # ---- features
        wave_noise = noise_std > 0 or (bool(noise_snr_db) and noise_prob > 0)
        use_cache = cache_fbank and not wave_noise
        fb_cache = None
        if use_cache:
            cache_dir = Path(out_dir) / "fbank" / recipe_name
            if rank == 0:
                cache_fbank_fn(train_rows, encoder, cache_dir, duration, cfg.train_channels, device=dev,
                               progress=progress)
            barrier()
            fb_cache = cache_fbank_fn(train_rows, encoder, cache_dir, duration, cfg.train_channels, device=dev,
                                      progress=False)
        elif rank == 0 and wave_noise and cache_fbank:
            say("[finetune] noise on the waveform changes every sample's fbank: fbank cache disabled for this run")
        clip_rows = {}
        if fb_cache is not None:
            for m, (_, names) in fb_cache.items():
                pos = {n: i for i, n in enumerate(names)}
                for ci, c in enumerate(clips):
                    if c.machine == m:
                        clip_rows[ci] = pos[c.file_name]
        n_samples_wave = int(round(duration * SAMPLE_RATE))

        def batch_inputs(sample_ids: Sequence[int], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Augmented fbank (B, frames, bins) (joint: (B, 2, frames, bins)) and labels (B,) of these samples."""
            rngs = [per_sample_rng(seed, epoch, s) for s in sample_ids]
            if fb_cache is not None:
                rows = [(ci, pos if joint is None else slice(None)) for ci, pos, _ in samples[list(sample_ids)]]
                fbs = [torch.from_numpy(np.array(fb_cache[clips[ci].machine][0][clip_rows[ci], ch], dtype=np.float32))
                       for ci, ch in rows]
            else:
                if joint is None:
                    waves = np.stack([load_channels(clips[ci].path, (cfg.train_channels[pos],), n_samples_wave)[0]
                                      for ci, pos, _ in samples[list(sample_ids)]])
                else:
                    waves = np.stack([load_channels(clips[ci].path, cfg.train_channels, n_samples_wave)
                                      for ci, _, _ in samples[list(sample_ids)]])
                if wave_noise:
                    noisy = add_wave_noise if joint is None else add_wave_noise_channels
                    waves = np.stack([noisy(w, r, noise_std, noise_snr_db, noise_prob) for w, r in zip(waves, rngs)])
                with torch.no_grad():
                    flat = torch.from_numpy(waves.astype(np.float32)).reshape(-1, waves.shape[-1])
                    fb = encoder.preprocess(flat.to(dev)).float().cpu()
                    fbs = list(fb.reshape(*waves.shape[:-1], *fb.shape[1:]))
            xs = []
            for fb, rng in zip(fbs, rngs):  # frames on axis -2: a joint sample's channels get the same draws
                if time_shift > 0:
                    max_shift = int(time_shift * fb.shape[-2])
                    fb = torch.roll(fb, int(rng.integers(-max_shift, max_shift + 1)), dims=-2)
                if fbank_noise_std > 0:
                    noise = rng.standard_normal(tuple(fb.shape[-2:])).astype(np.float32)
                    fb = fb + fbank_noise_std * torch.from_numpy(noise)
                xs.append(fb)
            labels = torch.as_tensor(samples[list(sample_ids), 2])
            return torch.stack(xs).to(dev), labels.to(dev)

        # ---- optimisation
        sampler = DistributedSampler(range(len(samples)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        rank_batch = batch_size // world
        total = sampler.total_size
        n_micro = math.ceil(total / batch_size)
        steps_per_epoch = math.ceil(n_micro / accum)
        back_params = [p for p in model.encoder.parameters() if p.requires_grad]
        if joint is not None:
            back_params.append(joint.channel_embedding)
        groups = [{"params": list(model.head.parameters()), "lr": lr_head, "weight_decay": weight_decay}]
        if back_params:
            groups.insert(0, {"params": back_params, "lr": lr_backbone, "weight_decay": weight_decay})
        optimizer = torch.optim.AdamW(groups)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(round(warmup_epochs * steps_per_epoch)),
                                                    epochs * steps_per_epoch)
        ddp_model: nn.Module = model
        if world > 1:
            ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                find_unused_parameters=bool(layerdrop and trained))
        use_amp = amp and dev.type == "cuda"

        # ---- resume
        start_epoch, start_micro, global_step = 1, 0, 0
        epoch_sums = [0.0, 0.0, 0.0]  # loss*count, correct, count
        log_rows: list[dict] = []
        leaky: dict[int, float] = {}
        torch.manual_seed(seed + 1000 * rank)
        np.random.seed((seed + 1000 * rank) % 2**32)
        random.seed(seed + 1000 * rank)
        last = ckpt_dir / "last.pt"
        if resume and last.exists():
            st = read_state(last)
            written = {"channel_input": "separate", **st["training"]}  # states from before channel_input existed
            if written != cfg.training_fields() or st["classes"] != classes:
                raise ValueError(f"{last} was written by a run with other settings or classes; pass resume=False "
                                 "(or another out_dir) to start over, or use the settings in its config.json")
            if st.get("data") != data_id:
                raise ValueError(f"{last} was written by a run on other training clips (the files changed since: "
                                 "regenerated or replaced); pass resume=False (or another out_dir) to start over")
            model.encoder.load_state_dict(st["encoder"])
            model.head.load_state_dict(st["head"])
            if joint is not None:
                joint.load_channel_embedding(st["channel_embedding"])
            optimizer.load_state_dict(st["optimizer"])
            if st["scheduler"]["base_lrs"] and epochs != st["epochs"]:
                raise ValueError(f"{last} was written by a run of {st['epochs']} epochs; the cosine schedule depends "
                                 f"on it, so resume with epochs={st['epochs']} or pass resume=False")
            scheduler.load_state_dict(st["scheduler"])
            start_epoch, start_micro, global_step = st["epoch"], st["micro"], st["global_step"]
            log_rows, leaky = st["log"], {int(k): v for k, v in st["leaky"].items()}
            saved = st["per_rank"]  # [(rng state, epoch sums)] of every process of the saving run
            if len(saved) == world:
                rng_st, epoch_sums = saved[rank]
            else:  # another process count: the RNG streams cannot match anyway; keep the sums once
                rng_st, epoch_sums = saved[0][0], (per_rank_sum(saved) if rank == 0 else [0.0, 0.0, 0.0])
                say(f"[finetune] {last} was saved by {len(saved)} process(es), resuming with {world}: the result "
                    "will not be bit-identical to an uninterrupted run")
            set_rng_state(rng_st)
            say(f"[finetune] resumed from {last}: epoch {start_epoch}, micro-batch {start_micro}, step {global_step}")
        elif rank == 0 and (0 in cfg.keep_epochs or trainable == "frozen"):
            save_epoch_checkpoint(0)
        if rank == 0:
            atomic_write_text(ckpt_dir / "config.json", json.dumps(config_blob, indent=1))

        def save_state(epoch: int, micro: int) -> None:
            """Everything a resume needs (weights, optimiser, scheduler, RNG, position) to last.pt."""
            per_rank_state = gather_objects((rng_state(), list(epoch_sums)))
            if rank != 0:
                return
            atomic_torch_save({"training": cfg.training_fields(), "classes": classes, "data": data_id,
                                "epochs": epochs, "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "epoch": epoch, "micro": micro, "global_step": global_step,
                                "log": log_rows, "leaky": leaky, "per_rank": per_rank_state,
                                **({"channel_embedding": joint.channel_embedding.detach().cpu()}
                                   if joint is not None else {})}, last)

        for epoch in range(start_epoch, epochs + 1):
            sampler.set_epoch(epoch)
            mine = list(sampler)
            t0 = time.perf_counter()
            if trained:
                model.train()
            else:
                model.eval()
            micro0 = start_micro if epoch == start_epoch else 0
            if micro0 == 0:
                epoch_sums = [0.0, 0.0, 0.0]
            bar = progress_bar(range(micro0, n_micro), desc=f"epoch {epoch}/{epochs}", enabled_=progress and rank == 0)
            optimizer.zero_grad(set_to_none=True)
            for mi in bar:
                group_start = (mi // accum) * accum
                group_len = min(accum, n_micro - group_start)
                last_in_group = (mi - group_start) == group_len - 1
                ids = mine[mi * rank_batch:(mi + 1) * rank_batch]
                global_count = min(batch_size, total - mi * batch_size)
                x, y = batch_inputs(ids, epoch)
                ctx = ddp_model.no_sync() if (world > 1 and not last_in_group) else _nullcontext()
                with ctx:
                    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        logits, cos = ddp_model(x, y)
                    ce = F.cross_entropy(logits, y, reduction="sum")
                    if not torch.isfinite(ce):  # stop before a non-finite step reaches the weights or a checkpoint
                        names = sorted({clips[int(samples[i][0])].file_name for i in ids})
                        raise FloatingPointError(
                            f"[finetune] the loss is {float(ce.detach())} at epoch {epoch}, micro-batch {mi} "
                            f"(clips: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}); nothing of this "
                            f"epoch was saved. Lower the learning rates, or check those clips")
                    loss = ce * world / global_count / group_len
                    loss.backward()
                epoch_sums[0] += float(ce.detach())
                epoch_sums[1] += float((cos.detach().argmax(1) == y).sum())
                epoch_sums[2] += len(ids)
                if last_in_group:
                    if grad_clip and grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    if progress and rank == 0:
                        bar.set_postfix(loss=f"{float(ce.detach()) / max(len(ids), 1):.3f}")
                    if save_every_steps and global_step % save_every_steps == 0 and mi + 1 < n_micro:
                        save_state(epoch, mi + 1)
                    if _crash_after_step is not None and global_step == _crash_after_step:
                        raise _InjectedCrash(f"test hook: crash after optimiser step {global_step}")
            bar.close()
            loss_sum, correct, count = all_reduce_sum(epoch_sums, dev)
            lrs = scheduler.get_last_lr()
            row = {"epoch": epoch, "loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
                   "lr_backbone": lrs[0] if back_params else 0.0, "lr_head": lrs[-1],
                   "seconds": time.perf_counter() - t0}
            due = (epoch % max(save_every, 1) == 0) or epoch == epochs or epoch in cfg.keep_epochs
            if due and epoch_selection == "select-on-test-leaky":
                leaky[epoch] = (leaky_test_score(man, model.encoder if joint is None else joint, cfg, dev)
                                if rank == 0 else float("nan"))
                row["leaky_test_score"] = leaky[epoch]
            log_rows.append(row)
            say(f"[finetune] epoch {epoch}: loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                f"lr {row['lr_head']:.2e} {row['seconds']:.1f}s")
            if due:
                save_epoch_checkpoint(epoch)
            if rank == 0:
                write_log(ckpt_dir / "log.csv", log_rows)
            epoch_sums = [0.0, 0.0, 0.0]
            start_micro = 0
            save_state(epoch + 1, 0)
            if rank == 0 and due:
                prune_checkpoints(ckpt_dir, cfg.keep_epochs, epoch, leaky)
        if rank == 0:
            check_kept(ckpt_dir, [e for e in cfg.keep_epochs if e <= epochs] + [epochs], last)
        barrier()
        end_process_group(started_dist)
        return ckpt_dir
