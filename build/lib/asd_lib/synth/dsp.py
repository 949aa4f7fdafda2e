"""Vectorised signal primitives for the synthetic machines and the two-microphone room.

Everything works on float64 numpy arrays of one clip; every random draw comes from the clip's own
``numpy.random.Generator`` so that a clip depends only on (seed, machine, split, index).
"""
from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi


def slow_curve(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """A smooth random curve (n,), zero-mean unit-variance knots linearly interpolated."""
    knots = max(2, int(knots))
    k = rng.standard_normal(knots)
    return lerp(k, np.arange(n) * ((knots - 1.0) / max(n - 1, 1)))


def lerp(table: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of `table` at fractional positions 0 <= pos <= len(table)-1 (uniform grid)."""
    i = np.minimum(pos.astype(np.int64), table.size - 2)
    fr = pos - i
    a = table[i]
    return a + fr * (table[i + 1] - a)


def phase(rng: np.random.Generator, n: int, sr: int, f0: float | np.ndarray, jitter: float = 0.003,
          rate_hz: float = 2.0) -> np.ndarray:
    """Phase in cycles (n,) of a rotation at f0 Hz whose speed wanders by `jitter` (relative) at ~rate_hz."""
    f = f0 * (1.0 + jitter * slow_curve(rng, n, n / sr * rate_hz + 2))
    return np.cumsum(f) / sr + rng.uniform()


def harmonics(rng: np.random.Generator, ph: np.ndarray, amps) -> np.ndarray:
    """Sum_k amps[k-1] * sin(2 pi k ph + random phase) (n,), read from a one-period wavetable.

    The sum is a periodic function of the phase, so one table of it (built by an inverse FFT) and one
    interpolation give any number of harmonics for the cost of one.
    """
    amps = np.asarray(list(amps), float)
    size = 2048
    spec = np.zeros(size // 2 + 1, complex)
    th = rng.uniform(size=amps.size)
    spec[1:amps.size + 1] = amps * np.exp(1j * TWO_PI * th) * (-0.5j * size)
    table = np.fft.irfft(spec, size)
    table = np.append(table, table[0])
    return lerp(table, (ph - np.floor(ph)) * size)


def tone(rng: np.random.Generator, ph: np.ndarray, mult: float = 1.0) -> np.ndarray:
    """sin(2 pi mult ph + random phase) (n,)."""
    return np.sin(TWO_PI * (mult * ph + rng.uniform()))


def freqs(n: int, sr: int) -> np.ndarray:
    """rfft bin frequencies (n//2+1,), with bin 0 set to 1 Hz to keep power laws finite."""
    f = np.fft.rfftfreq(n, 1.0 / sr)
    f[0] = 1.0
    return f


def bandpass_mag(f: np.ndarray, lo: float, hi: float, order: float = 2.0) -> np.ndarray:
    """Smooth Butterworth-like band-pass magnitude on frequencies f."""
    return 1.0 / np.sqrt(1.0 + (lo / f) ** (2 * order)) / np.sqrt(1.0 + (f / hi) ** (2 * order))


def peak_mag(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    """Resonance magnitude (peak 1 at fc, bandwidth fc/q)."""
    return 1.0 / np.sqrt(1.0 + (q * (f / fc - fc / f)) ** 2)


def noise(rng: np.random.Generator, n: int, sr: int, shape) -> np.ndarray:
    """Gaussian noise (n,) with magnitude spectrum shape(f), scaled to unit RMS."""
    f = freqs(n, sr)
    w = rng.standard_normal(2 * f.size, dtype=np.float32).view(np.complex64)  # white spectrum
    x = np.fft.irfft(w * shape(f), n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def ring(n: int, sr: int, times: np.ndarray, amps: np.ndarray, f_res: float, decay_s: float,
         rng: np.random.Generator | None = None, spread: float = 0.0) -> np.ndarray:
    """Impulses at `times` (s) with `amps`, each ringing a damped resonance at f_res (decay time decay_s).

    `spread` jitters the resonance per impulse (relative), as real impacts never ring identically.
    """
    times = np.asarray(times, float)
    amps = np.broadcast_to(np.asarray(amps, float), times.shape)
    keep = (times >= 0) & (times < n / sr)
    times, amps = times[keep], amps[keep]
    out = np.zeros(n)
    if times.size == 0:
        return out
    L = max(8, int(5 * decay_s * sr))
    tt = np.arange(L) / sr
    fr = f_res * (1.0 + spread * rng.standard_normal(times.size)) if (rng is not None and spread) else \
        np.full(times.size, f_res)
    kern = np.exp(-tt / decay_s)[None, :] * np.sin(TWO_PI * fr[:, None] * tt[None, :])
    start = np.round(times * sr).astype(np.int64)
    pos = (start[:, None] + np.arange(L)[None, :]).ravel()
    w = (amps[:, None] * kern).ravel()
    return np.bincount(pos, weights=w, minlength=n + L)[:n]


def periodic_times(rng: np.random.Generator, dur: float, rate_hz: float, jitter: float = 0.0) -> np.ndarray:
    """Event times (s) at rate_hz with a random start and relative timing jitter."""
    period = 1.0 / rate_hz
    k = np.arange(-1, int(dur * rate_hz) + 2)
    t = (k + rng.uniform()) * period
    if jitter:
        t = t + jitter * period * rng.standard_normal(t.size)
    return t


def poisson_times(rng: np.random.Generator, dur: float, rate_hz: float) -> np.ndarray:
    """Sorted uniform event times (s) with a Poisson count of mean rate_hz * dur."""
    return np.sort(rng.uniform(0.0, dur, rng.poisson(rate_hz * dur)))


def db(x: float) -> float:
    """Decibels to amplitude factor."""
    return float(10.0 ** (x / 20.0))
