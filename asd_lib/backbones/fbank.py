"""Log-mel filterbank front ends of BEATs and EAT/SSLAM (torchaudio's Kaldi-compatible fbank).

Recipes (facts from docs/reference.md §4 and the test-vector READMEs):

- ``"beats"``: wave * 2**15; Kaldi fbank with 128 bins, 25 ms / 10 ms, Povey window, all other defaults;
  then (x - 15.41663) / (2 * 6.55582). No padding, no mean removal.
- ``"eat"`` (canonical EAT/SSLAM, the authors of EAT's feature extraction): remove the clip mean; fbank with
  htk_compat, Hanning window, no energy, dither 0; zero-pad or crop to ``target_length`` (1024) frames BEFORE
  normalising with (x + 4.268) / (2 * 4.569).
- ``"aau"`` (as found in the DCASE 2026 AAU code): same fbank call on the raw clip, no mean removal, no padding,
  normalised with (x + 4.268) / 4.569 (one std).
"""
from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi

RECIPES = ("beats", "eat", "aau")

BEATS_MEAN, BEATS_STD = 15.41663, 6.55582
EAT_MEAN, EAT_STD = -4.268, 4.569
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128


def num_frames(num_samples: int) -> int:
    """Number of Kaldi frames (25 ms window, 10 ms shift, snip_edges) for a clip of ``num_samples`` at 16 kHz."""
    return 0 if num_samples < 400 else 1 + (num_samples - 400) // 160


def max_samples_for_frames(frames: int) -> int:
    """Longest clip (samples at 16 kHz) that yields at most ``frames`` Kaldi frames."""
    return 400 + 160 * (frames - 1)


def _check_wave(wave: torch.Tensor) -> torch.Tensor:
    """Return ``wave`` as a float32 (B, T) tensor, or raise with a clear message."""
    if not isinstance(wave, torch.Tensor):
        wave = torch.as_tensor(wave)
    if wave.dim() == 1:
        wave = wave[None]
    if wave.dim() != 2:
        raise ValueError(f"expected a waveform batch of shape (B, samples), got shape {tuple(wave.shape)}; "
                         "pass one mono channel per row")
    if wave.shape[1] < 400:
        raise ValueError(f"clip too short for a 25 ms fbank frame: {wave.shape[1]} samples (need >= 400 at 16 kHz)")
    return wave.to(torch.float32)


def beats_fbank(wave: torch.Tensor) -> torch.Tensor:
    """BEATs preprocessing: wave (B, T) float 16 kHz in [-1, 1] -> normalised fbank (B, frames, 128)."""
    wave = _check_wave(wave)
    out = []
    for w in wave:
        fb = kaldi.fbank((w * 2 ** 15)[None], num_mel_bins=NUM_MEL_BINS, sample_frequency=SAMPLE_RATE,
                         frame_length=25, frame_shift=10)
        out.append(fb)
    fb = torch.stack(out)
    return (fb - BEATS_MEAN) / (2 * BEATS_STD)


def _eat_raw_fbank(w: torch.Tensor, remove_mean: bool) -> torch.Tensor:
    """Kaldi fbank of one clip (T,) with EAT's arguments -> (frames, 128), not normalised."""
    if remove_mean:
        w = w - w.mean()
    return kaldi.fbank(w[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                       window_type="hanning", num_mel_bins=NUM_MEL_BINS, dither=0.0, frame_shift=10)


def eat_fbank(wave: torch.Tensor, target_length: int = 1024) -> torch.Tensor:
    """Canonical EAT/SSLAM preprocessing: wave (B, T) -> fbank (B, target_length, 128), pad/crop then normalise."""
    wave = _check_wave(wave)
    out = []
    for w in wave:
        fb = _eat_raw_fbank(w, remove_mean=True)
        n = fb.shape[0]
        if n < target_length:
            fb = torch.nn.functional.pad(fb, (0, 0, 0, target_length - n))
        else:
            fb = fb[:target_length]
        out.append(fb)
    fb = torch.stack(out)
    return (fb - EAT_MEAN) / (2 * EAT_STD)


def aau_fbank(wave: torch.Tensor) -> torch.Tensor:
    """The AAU authors' SSLAM preprocessing: wave (B, T) -> fbank (B, frames, 128), one-std scaling, no padding."""
    wave = _check_wave(wave)
    fb = torch.stack([_eat_raw_fbank(w, remove_mean=False) for w in wave])
    return (fb - EAT_MEAN) / EAT_STD


def compute_fbank(wave: torch.Tensor, recipe: str, target_length: int = 1024) -> torch.Tensor:
    """Dispatch on ``recipe`` ('beats' | 'eat' | 'aau'): wave (B, T) -> normalised fbank (B, frames, 128)."""
    if recipe == "beats":
        return beats_fbank(wave)
    if recipe == "eat":
        return eat_fbank(wave, target_length=target_length)
    if recipe == "aau":
        return aau_fbank(wave)
    raise ValueError(f"unknown fbank recipe {recipe!r}; choose one of {RECIPES}")
