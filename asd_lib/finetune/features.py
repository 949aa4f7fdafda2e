"""The training samples of fine-tuning: the manifest's clips as (clip, channel, class) samples, their waveforms, the
fbank cache, and the waveform noise drawn per sample."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from asd_lib.data import class_name, load_clip, scan
from asd_lib.finetune.config import FinetuneConfig
from asd_lib.fsutil import atomic_write_text
from asd_lib.provenance import clips_digest
from asd_lib.progress import bar as progress_bar

CHANNEL_INPUTS = ("separate", "joint")
SAMPLE_RATE = 16000


def to_manifest(manifest: Any, ground_truth: Any = None):
    if isinstance(manifest, pd.DataFrame):
        return manifest
    return scan(manifest, ground_truth)


def _fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop (from the start) or zero-pad the last axis to n samples."""
    if wave.shape[-1] >= n:
        return wave[..., :n]
    pad = np.zeros(wave.shape[:-1] + (n - wave.shape[-1],), dtype=wave.dtype)
    return np.concatenate([wave, pad], axis=-1)


def load_channels(path: str, channels: Sequence[int], n_samples: int) -> np.ndarray:
    wave = load_clip(path, channels=tuple(channels), sample_rate=SAMPLE_RATE, duration=n_samples / SAMPLE_RATE)
    return _fit_length(np.asarray(wave, dtype=np.float32), n_samples)


def cache_fbank(train_rows, encoder: nn.Module, cache_dir: str | Path, duration: float,
                channels: Sequence[int] = (0, 1), batch_size: int = 16, device: str | torch.device = "cpu",
                progress: bool = True) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Compute (or reuse) fbank features of the training clips, one file per machine.

    Returns {machine: (array (n_clips, len(channels), frames, bins) memory-mapped, file names)}. A cache entry is
    trusted only when its JSON sidecar (written last) names exactly these clips, unchanged since (size and mtime of
    each file: regenerated data under the same names is not reused), duration and channels.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_samples = int(round(duration * SAMPLE_RATE))
    chs = "".join(str(c) for c in channels)
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for machine, rows in train_rows.groupby("machine", sort=True):
        rows = rows.sort_values("file_name")
        names = rows["file_name"].tolist()
        stem = f"{machine}_train_d{duration:g}s_ch{chs}"
        npy, meta = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        want = {"names": names, "files": clips_digest(rows), "duration": duration,
                "channels": list(channels)}
        if meta.exists() and npy.exists():
            try:
                have = json.loads(meta.read_text())
                if {k: have.get(k) for k in want} == want:
                    out[machine] = (np.load(npy, mmap_mode="r"), names)
                    continue
            except (ValueError, OSError):
                pass
        paths = rows["path"].tolist()
        arr = None
        tmp = cache_dir / f".{stem}.npy.tmp{os.getpid()}"
        with torch.inference_mode():
            for i in progress_bar(range(0, len(paths), batch_size), desc=f"fbank {machine}", enabled_=progress):
                waves = np.stack([load_channels(p, channels, n_samples) for p in paths[i:i + batch_size]])
                b, c, t = waves.shape
                fb = encoder.preprocess(torch.from_numpy(waves.reshape(b * c, t)).to(device)).float().cpu()
                fb = fb.reshape(b, c, *fb.shape[1:]).numpy()
                if arr is None:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                    shape=(len(paths),) + fb.shape[1:])
                arr[i:i + b] = fb
        arr.flush()
        del arr
        os.replace(tmp, npy)
        atomic_write_text(meta, json.dumps({**want, "recipe": cache_dir.name}))
        out[machine] = (np.load(npy, mmap_mode="r"), names)
    return out


def sample_table(train_rows, classes: list[str], cfg: FinetuneConfig):
    index = {c: i for i, c in enumerate(classes)}
    clips, samples = [], []
    per_clip = cfg.train_channels if cfg.channel_input == "separate" else (None,)  # joint: one sample, all channels
    for ci, row in enumerate(train_rows.itertuples(index=False)):
        clips.append(row)
        for pos, ch in enumerate(per_clip):
            name = class_name(row.machine, row.section, row.domain, row.attributes,
                              channel=ch if cfg.classes_with_channel else None)
            if name not in index:
                raise ValueError(f"class {name!r} of {row.file_name} is not among the class labels; "
                                 "the manifest's train rows and class_labels disagree")
            samples.append((ci, pos, index[name]))
    return clips, np.asarray(samples, dtype=np.int64).reshape(-1, 3)


def add_wave_noise(wave: np.ndarray, rng: np.random.Generator, std: float, snr_db: Sequence[float] | None,
                   prob: float) -> np.ndarray:
    """Gaussian noise on one waveform (T,): fixed ``std``, or at an SNR drawn uniformly from ``snr_db`` (dB, relative
    to the clip's power), applied with probability ``prob``. Draws come from the sample's own generator."""
    apply = rng.random() < prob
    snr = rng.uniform(*snr_db) if snr_db else None
    noise = rng.standard_normal(wave.shape[-1])
    if not apply:
        return wave
    if snr is not None:
        power = float(np.mean(wave.astype(np.float64) ** 2))
        std = math.sqrt(power / (10.0 ** (snr / 10.0))) if power > 0 else 0.0
    return (wave + std * noise).astype(np.float32)


def add_wave_noise_channels(waves: np.ndarray, rng: np.random.Generator, std: float,
                            snr_db: Sequence[float] | None, prob: float) -> np.ndarray:
    """``add_wave_noise`` on every channel of one sample (C, T) with the same draws: one decision, one SNR, one noise
    realisation (scaled to each channel's power for an SNR). ``rng`` ends as after one channel's draws."""
    state = rng.bit_generator.state
    out = []
    for wave in waves:
        rng.bit_generator.state = state
        out.append(add_wave_noise(wave, rng, std, snr_db, prob))
    return np.stack(out)


def per_sample_rng(seed: int, epoch: int, sample: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(sample), 7])


def check_channel_input(channel_input: str, classes_with_channel: bool, train_channels: Sequence[int]) -> None:
    """Refuse a channel input that does not exist or does not fit the class scheme and the channels."""
    if channel_input not in CHANNEL_INPUTS:
        raise ValueError(f"channel_input must be one of {CHANNEL_INPUTS}, got {channel_input!r}")
    if channel_input != "joint":
        return
    if classes_with_channel:
        raise ValueError("channel_input='joint' trains one sample holding both channels, so a class cannot name a "
                         "channel: pass classes_with_channel=False (asd-finetune --no-channel-classes)")
    if tuple(int(c) for c in train_channels) != (0, 1):
        raise ValueError(f"channel_input='joint' reads both channels in the order (0, 1); got "
                         f"train_channels={tuple(train_channels)}")
