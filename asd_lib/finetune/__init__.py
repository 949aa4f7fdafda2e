"""ArcFace fine-tuning of the backbones on machine/section/domain/attribute(/channel) classes.

Introduced in notebook ``01_finetune_arcface`` (paper §2.1-2.2, docs/reference.md §5). One entry point, ``finetune``,
runs on one process or under ``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on CUDA):

    python -m asd_lib.finetune --data DIR --backbone beats-tiny --out results/dev --epochs 2
    torchrun --nproc_per_node 2 -m asd_lib.finetune --data DIR --backbone beats-tiny --out results/dev ...

Outputs (docs/design.md, "Stages shared between systems"), under ``out_dir`` = ``results/<regime>``:

    fbank/<recipe>/<machine>_train_d<dur>s_ch<chs>.npy (+ .json)    cached fbank, computed once per regime + recipe
    checkpoints/<backbone_id>/epoch_XXX.pt                          official checkpoint format (encoder.save)
    checkpoints/<backbone_id>/epoch_XXX.head.pt                     the head (weight, classes) of that epoch (+ the
                                                                    channel embedding of a joint-channel run)
    checkpoints/<backbone_id>/last.pt                               full training state for resume
    checkpoints/<backbone_id>/log.csv, config.json                  per-epoch log; every switch of the run

Epochs are numbered from 1 (``epoch_001.pt`` is the state after the first epoch); ``epoch_000.pt`` is the
untouched pre-trained encoder, written for a frozen run or when 0 is in ``keep_epochs``.

Choices worth knowing:

- Each training clip gives one sample per channel in ``train_channels``; with ``classes_with_channel`` the class
  name carries ``_ch{c}`` (90 classes on dev), otherwise not (45 classes, both channels still used as samples).
- ``channel_input='joint'`` (the kit's experiment, not the paper's or the authors'; BEATs only): one sample per clip
  holding both channels, whose patch tokens share one sequence with a learned channel embedding
  (``asd_lib.backbones.joint``), on the 45 channel-free classes. The time shift and the noise of a sample are the
  same draws for both channels (one roll, one fbank-noise array, one waveform-noise decision, SNR and realisation),
  so the time alignment between the microphones is kept.
- Clips are cropped or zero-padded to ``duration`` seconds from their start (deterministic, so cacheable).
- Waveform noise: ``noise_std`` (fixed std) or ``noise_snr_db=(lo, hi)`` (the authors' form: SNR drawn per sample,
  applied with probability ``noise_prob``).
- Time shift is a circular roll of the fbank frames (the same as rolling the waveform up to the 25 ms window at
  the seam), so it works on cached features. Gaussian noise on the *waveform* (``noise_std``) changes the fbank
  of every sample in every epoch and so disables the fbank cache; ``fbank_noise_std`` adds the noise to the
  normalised fbank instead and keeps the cache. Both are drawn per sample from (seed, epoch, sample index), so
  they do not depend on the batch, the process count or a resume.
- ``select-on-test-leaky`` scores each saved epoch on the labelled test clips and keeps the best: that is the
  authors' selection and it uses test labels (a leak); the default ``fixed`` keeps the epochs named in params.

One file per part; this package re-exports their public names (``finetune.finetune``, ``finetune.ArcFaceHead``):

- ``train.py``: ``finetune``, the run itself (model, optimiser, schedule, epochs, resume, checkpoints).
- ``config.py``: ``FinetuneConfig`` (every setting, written to config.json) and ``run_settings``.
- ``heads.py``: ``ArcFaceHead``, ``SoftmaxHead``, ``build_head``, ``load_head`` and ``Classifier`` (encoder + pooling
  + head).
- ``trainable.py``: the trainable sets (``trainable_names``, ``apply_trainable``) and the training-time switches
  (``SWITCH_FIELDS``, ``switch_overrides``) applied when the encoder is loaded.
- ``features.py``: the training samples, their waveforms, the fbank cache (``cache_fbank``) and the waveform noise
  (``add_wave_noise``).
- ``checkpoints.py``: the checkpoint folder's hashes, log, pruning, leaky selection and the RNG resume state.
- ``distributed.py``: the torchrun process group and its collectives.
- ``system.py``: ``system_runs``, a system's runs from its parameters (notebook 01 and ``asd-finetune --system``).
- ``cli.py`` and ``__main__.py``: the ``asd-finetune`` command (``python -m asd_lib.finetune``).
"""
from __future__ import annotations

from .cli import main  # also the target of console scripts installed before the split
from .config import FinetuneConfig, run_settings
from .features import CHANNEL_INPUTS, add_wave_noise, add_wave_noise_channels, cache_fbank
from .heads import ArcFaceHead, Classifier, SoftmaxHead, build_head, load_head
from .system import system_runs
from .train import finetune
from .trainable import (SWITCH_FIELDS, TRAINABLE_SETS, apply_trainable, switch_overrides, switch_report,
                        trainable_names)

__all__ = [
    "ArcFaceHead",
    "SoftmaxHead",
    "Classifier",
    "build_head",
    "FinetuneConfig",
    "TRAINABLE_SETS",
    "CHANNEL_INPUTS",
    "SWITCH_FIELDS",
    "trainable_names",
    "apply_trainable",
    "switch_overrides",
    "switch_report",
    "cache_fbank",
    "add_wave_noise",
    "add_wave_noise_channels",
    "finetune",
    "load_head",
    "run_settings",
    "system_runs",
    "main",
]
