"""The command line of fine-tuning: ``asd-finetune`` = ``python -m asd_lib.finetune`` (also under torchrun)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from asd_lib import logs
from asd_lib import params as P
from asd_lib.finetune.features import CHANNEL_INPUTS, to_manifest
from asd_lib.finetune.system import system_runs, system_values, train_system
from asd_lib.finetune.train import finetune
from asd_lib.finetune.trainable import TRAINABLE_SETS

DESCRIPTION = "ArcFace fine-tuning of the backbones on machine/section/domain/attribute(/channel) classes."


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``asd-finetune --system S [--params YAML ...]`` (a system's runs, as notebook 01 trains them) or
    ``asd-finetune --data DIR --backbone NAME --out results/<regime> ...`` (one run, every switch by hand)."""
    p = argparse.ArgumentParser(prog="python -m asd_lib.finetune", description=DESCRIPTION)
    p.add_argument("--system", choices=P.SYSTEMS, default=None,
                   help="train this system's backbones from its merged parameters (params/base.yaml, "
                        "params/<system>.yaml, --params), exactly as notebook 01 does; the switches below are then "
                        "ignored except --no-resume")
    p.add_argument("--params", nargs="*", default=None, help="with --system: overlays, later ones win")
    p.add_argument("--print-settings", action="store_true",
                   help="with --system: print each backbone's finetune() arguments as JSON and stop")
    p.add_argument("--data", default=None, help="data root (scan layout) holding dev_data/ and/or eval_data/")
    p.add_argument("--sets", default="dev", help="comma-separated manifest sets to train on: dev, add (DEV+ADD)")
    p.add_argument("--backbone", default="beats-tiny",
                   help="checkpoint path (unilm BEATs .pt, fairseq EAT/SSLAM .pt, HF folder) or a named shape")
    p.add_argument("--backbone-id", default=None, help="folder name under <out>/checkpoints/ (default: from backbone)")
    p.add_argument("--recipe", default=None, help="fbank recipe: beats | eat | aau (default: the encoder's own)")
    p.add_argument("--out", default=None, help="results/<regime>")
    p.add_argument("--machines", default=None, help="comma-separated machines (default all)")
    p.add_argument("--no-channel-classes", action="store_true", help="45 channel-free classes instead of 90")
    p.add_argument("--channel-input", default="separate", choices=CHANNEL_INPUTS,
                   help="separate: each channel a mono sample (the authors'); joint: both channels' tokens in one "
                        "sequence with a learned channel embedding (the kit's experiment, BEATs only; needs "
                        "--no-channel-classes)")
    p.add_argument("--trainable", default="aau", choices=TRAINABLE_SETS,
                   help="what is trained: aau (the authors' code), top_k (the paper's text), frozen, all")
    p.add_argument("--top-k", type=int, default=None, help="layers unfrozen (default: 4 for BEATs, 10 for SSLAM)")
    p.add_argument("--head", default="arcface", choices=("arcface", "softmax"), help="auxiliary classifier head")
    p.add_argument("--epochs", type=int, default=1, help="epochs to train")
    p.add_argument("--batch-size", type=int, default=64, help="micro-batch per process")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimiser step")
    p.add_argument("--lr-backbone", type=float, default=6.45e-5, help="AdamW learning rate of the backbone")
    p.add_argument("--lr-head", type=float, default=4.57e-3, help="AdamW learning rate of the head")
    p.add_argument("--weight-decay", type=float, default=5.1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, default=5.0, help="linear warm-up (epochs), then cosine decay")
    p.add_argument("--duration", type=float, default=10.0, help="training clips cropped / zero-padded to this (s)")
    p.add_argument("--time-shift", type=float, default=0.0, help="circular time shift, fraction of the clip")
    p.add_argument("--noise-std", type=float, default=0.0, help="Gaussian noise std on the waveform")
    p.add_argument("--noise-snr-db", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="Gaussian noise at an SNR drawn from [LO, HI] dB (the authors: 15 35)")
    p.add_argument("--noise-prob", type=float, default=1.0, help="probability of adding that noise to a sample")
    p.add_argument("--fbank-noise-std", type=float, default=0.0, help="Gaussian noise std on the fbank features")
    p.add_argument("--no-dropout", action="store_true", help="switch the encoder's dropout off")
    p.add_argument("--no-layerdrop", action="store_true", help="switch the encoder's layer drop off")
    p.add_argument("--no-grad-decay", action="store_true", help="switch BEATs' layer-wise gradient decay off")
    p.add_argument("--no-cache", action="store_true", help="compute fbank every step instead of caching it")
    p.add_argument("--seed", type=int, default=0, help="seed of the head, the order and the augmentation")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--keep-epochs", default="", help="comma-separated epochs to keep")
    p.add_argument("--save-every", type=int, default=1, help="save the resume state every N epochs")
    p.add_argument("--save-every-steps", type=int, default=0, help="also every N optimiser steps (0: never)")
    p.add_argument("--no-resume", action="store_true", help="start over even when a resume state exists")
    p.add_argument("--epoch-selection", default="fixed", choices=("fixed", "select-on-test-leaky"),
                   help="fixed epochs, or the authors' selection on test scores (uses test labels)")
    a = p.parse_args(argv)
    logs.configure()
    if a.system is None and (a.data is None or a.out is None):
        p.error("give --system S, or --data DIR and --out results/<regime>")
    try:
        if a.system is not None:
            vals = system_values(a.system, a.params or [])
            print(json.dumps(system_runs(vals), indent=1) if a.print_settings else train_system(vals, not a.no_resume))
            return 0
        man = to_manifest(a.data)
        sets = [s.strip() for s in a.sets.split(",") if s.strip()]
        man = man[man["set"].isin(sets) | (man["split"] == "test")]
        out = finetune(
            man, a.backbone, a.out, classes_with_channel=not a.no_channel_classes, channel_input=a.channel_input,
            machines=a.machines.split(",") if a.machines else None, trainable=a.trainable, top_k=a.top_k,
            epochs=a.epochs, batch_size=a.batch_size, accum=a.accum, lr_backbone=a.lr_backbone, lr_head=a.lr_head,
            weight_decay=a.weight_decay, warmup_epochs=a.warmup_epochs, duration=a.duration, head=a.head,
            time_shift=a.time_shift, noise_std=a.noise_std, noise_snr_db=a.noise_snr_db, noise_prob=a.noise_prob,
            fbank_noise_std=a.fbank_noise_std,
            dropout=not a.no_dropout, layerdrop=not a.no_layerdrop, grad_decay=not a.no_grad_decay,
            cache_fbank=not a.no_cache, seed=a.seed, device=a.device,
            keep_epochs=[int(e) for e in a.keep_epochs.split(",") if e.strip()], save_every=a.save_every,
            save_every_steps=a.save_every_steps, resume=not a.no_resume, epoch_selection=a.epoch_selection,
            backbone_id=a.backbone_id, recipe=a.recipe)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
