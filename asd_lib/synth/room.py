"""Two microphones in a noisy factory hall: near mic (channel 0) and far mic (channel 1).

Physics (docs/synth_notes.md): the far mic hears the machine delayed (distance / 343 m/s),
attenuated (about 1/r), low-passed by air and distance, and convolved with a room response (early
reflections + an exponential tail with the room's RT60), plus diffuse factory noise that is coherent
between the two mics at low frequency and incoherent at high frequency, with hums, another machine,
and impulsive non-fault events (hits, drops, voices). The near mic is dominated by the direct path
with light sensor noise and a little of the same factory noise.
"""
from __future__ import annotations

import numpy as np

from . import dsp

C_SOUND = 343.0

# Acoustic conditions per domain: ranges drawn per clip. The target domain is another hall/position:
# farther mic, longer reverberation, duller air path, louder and differently coloured noise. Within a domain the
# background changes from recording to recording as a factory's does: its level at the near mic (near_snr), its
# colour (noise_tilt), how loud the other machine and the mains hum are, and how often non-fault events happen;
# the recordist's gain and the near mic's placement (near_eq) change too.
CONDITIONS = {
    "source": dict(dist=(2.0, 3.0), rt60=(0.3, 0.5), air_lp=(5000.0, 7000.0), snr_far=(2.0, 5.0),
                   noise_tilt=(-5.0, -2.5), event_rate=(0.0, 1.0), coh_fc=(250.0, 400.0), near_snr=(16.0, 30.0),
                   hum=50.0, near_eq=(-1.0, 1.0), other_level=(0.0, 0.6), hum_level=(0.1, 0.5)),
    "target": dict(dist=(3.5, 5.0), rt60=(0.6, 0.9), air_lp=(3000.0, 4500.0), snr_far=(-1.0, 2.0),
                   noise_tilt=(-3.0, -1.0), event_rate=(0.0, 1.8), coh_fc=(150.0, 250.0), near_snr=(12.0, 26.0),
                   hum=60.0, near_eq=(-2.5, -0.5), other_level=(0.1, 0.8), hum_level=(0.1, 0.5)),
}
GAIN_DB = 4.0  # the recordist's gain, +- this many dB per clip


def draw_conditions(rng: np.random.Generator, domain: str) -> dict:
    """Draw one clip's acoustic conditions (a dict of floats) for 'source' or 'target'."""
    c = CONDITIONS[domain]
    u = lambda key: float(rng.uniform(*c[key]))  # noqa: E731
    return dict(dist=u("dist"), rt60=u("rt60"), air_lp=u("air_lp"), snr_far=u("snr_far"),
                noise_tilt=u("noise_tilt"), event_rate=u("event_rate"), coh_fc=u("coh_fc"),
                near_snr=u("near_snr"), hum=c["hum"], near_eq=u("near_eq"), other_level=u("other_level"),
                hum_level=u("hum_level"), other_f0=float(rng.uniform(20.0, 45.0)),
                gain_db=float(rng.uniform(-GAIN_DB, GAIN_DB)))


def _rir(rng: np.random.Generator, n: int, sr: int, cond: dict) -> np.ndarray:
    """Room impulse response (n,) for circular convolution: direct path, early reflections, exponential tail."""
    L = min(n, int(cond["rt60"] * sr))
    h = np.zeros(n)
    d = int(round(cond["dist"] / C_SOUND * sr))
    direct = 1.0 / cond["dist"]
    h[d] += direct
    for _ in range(6):  # early reflections (walls, floor, other machines)
        h[min(n - 1, d + int(rng.uniform(0.002, 0.03) * sr))] += direct * rng.uniform(0.2, 0.6) * rng.choice([-1, 1])
    t = np.arange(L) / sr
    tail = rng.standard_normal(L) * np.exp(-6.91 * t / cond["rt60"])  # -60 dB at rt60
    tail *= direct * 0.5 * np.sqrt(cond["dist"] / 2.0) * 0.05
    start = d + int(0.004 * sr)
    m = min(L, n - start)
    if m > 0:
        h[start:start + m] += tail[:m]
    return h


def _events(rng: np.random.Generator, n: int, sr: int, rate: float) -> np.ndarray:
    """Non-fault impulsive factory events: hits/drops (ringing) and short voice-like bursts."""
    dur = n / sr
    t_hit = dsp.poisson_times(rng, dur, rate)
    out = np.zeros(n)
    for tt in t_hit:
        out += dsp.ring(n, sr, np.array([tt]), np.array([rng.uniform(0.5, 2.0)]), rng.uniform(400, 3000),
                        rng.uniform(0.005, 0.04))
    for tt in dsp.poisson_times(rng, dur, rate * 0.4):  # voices: harmonic buzz with a syllable envelope
        L = int(rng.uniform(0.15, 0.4) * sr)
        s = int(tt * sr)
        if s + L > n:
            continue
        t = np.arange(L) / sr
        f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(dsp.TWO_PI * 3 * t))
        ph = np.cumsum(f0) / sr
        v = dsp.harmonics(rng, ph, [1.0, 0.6, 0.5, 0.3, 0.25, 0.15, 0.1, 0.08])
        out[s:s + L] += 0.4 * v * np.sin(np.pi * t / t[-1]) ** 2 * (0.6 + 0.4 * np.sin(dsp.TWO_PI * 5 * t))
    return out


def render(rng: np.random.Generator, dry: np.ndarray, sr: int, cond: dict, level: float = 0.07) -> np.ndarray:
    """(2, n) float64 stereo: near mic and far mic recordings of the dry machine signal (n,)."""
    n = dry.shape[0]
    f = dsp.freqs(n, sr)
    X = np.fft.rfft(dry)
    g = level * dsp.db(cond["gain_db"])
    # near mic: direct path, slight mic colouring (target: another mic/mount)
    near_eq = (f / 1000.0) ** (cond["near_eq"] / 6.02)
    near_eq[f < 1000.0] = 1.0
    near = np.fft.irfft(X * near_eq, n) * g
    # far mic: room response and air absorption (first-order low-pass), circular convolution
    H = np.fft.rfft(_rir(rng, n, sr, cond)) / np.sqrt(1.0 + (f / cond["air_lp"]) ** 2)
    far = np.fft.irfft(X * H, n) * g * 2.0
    # diffuse factory noise: coherent below coh_fc, independent above; pink-ish tilt; hum; another machine
    shape = (f / 100.0) ** (cond["noise_tilt"] / 6.02) * dsp.bandpass_mag(f, 30.0, 7000.0, 1.0)
    gam = np.exp(-((f / cond["coh_fc"]) ** 2))
    W = rng.standard_normal((3, 2 * f.size), dtype=np.float32).view(np.complex64)  # white spectra C, I0, I1
    sg, sn = shape * np.sqrt(gam), shape * np.sqrt(1 - gam)
    nz = [np.fft.irfft(sg * W[0] + sn * Ik, n) for Ik in (W[1], W[2])]
    hum = dsp.harmonics(rng, np.arange(n) * (cond["hum"] / sr), [1.0, 0.5, 0.3])
    other = dsp.harmonics(rng, dsp.phase(rng, n, sr, cond["other_f0"], 0.01), [0.5, 1.0, 0.4, 0.6, 0.2, 0.3])
    ev = _events(rng, n, sr, cond["event_rate"])
    base = [z / (np.sqrt(np.mean(z * z)) + 1e-12) + cond["hum_level"] * hum + cond["other_level"] * other for z in nz]
    far_rms = np.sqrt(np.mean(far * far)) + 1e-12
    noise_far = level * 0.35 / cond["dist"] * 2.0 * dsp.db(-cond["snr_far"])  # absolute, not per-clip normalised
    noise_far = max(noise_far, 0.0)
    ch1 = far + noise_far * (base[1] + 0.8 * ev)
    noise_near = level * dsp.db(-cond["near_snr"])
    ch0 = near + noise_near * (base[0] + 0.3 * ev) + level * 1e-3 * rng.standard_normal(n)
    del far_rms
    out = np.stack([ch0, ch1])
    peak = np.abs(out).max()
    if peak > 0.98:  # a recordist would lower the gain: keep 16-bit files unclipped
        out *= 0.98 / peak
    return out
