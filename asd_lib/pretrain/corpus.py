"""A synthetic, unlabelled, broad pre-training corpus: the kit's stand-in for AudioSet.

What follows the real corpora. BEATs and EAT/SSLAM are pre-trained self-supervised on AudioSet:
clips used without their labels, of many kinds of sound (machines, impacts, tones, noise textures,
speech, music), often several sounds at once (polyphonic), through uncontrolled rooms, microphones and
recording levels. This corpus keeps those properties: no labels are needed for training, six broad
kinds of sound, about 30 % of the clips are mixtures of two kinds, every clip goes through a randomly
drawn room and one of its two microphones, and its peak level is random.

What is our own choice. Everything is synthesised from the kit's own primitives (``asd_lib.synth``:
``dsp``, ``machines``, ``room``); the kinds and their shares (about 40 % machines, the rest equally
over five other kinds), every parameter range, and the mono 16 kHz format are ours. Machines are the
12 benchmark machines, always healthy (``fault=None``: pre-training never sees faults or anomaly
labels), with attribute values, speeds and domains drawn well beyond the benchmark's ``VOCAB`` and
acoustic conditions wider than ``room.CONDITIONS``.

Seeding. Clip ``index`` of corpus ``seed`` draws everything from
``np.random.default_rng([0x50524554, seed, index])``: 3 elements led by a fixed tag ("PRET" in
ASCII). The benchmark's clip keys have 6 elements ``(seed, machine, split, domain, label, index)``
and its plan keys end with 7777, so the corpus is a seed stream of its own, and a clip depends only
on (seed, index): the output is byte-identical whatever the number of worker processes.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial

import numpy as np

from ..progress import bar
from ..synth import dsp, room
from ..synth.machines import _PRODUCTS, MACHINE_FN

SAMPLE_RATE = 16000
KINDS: tuple[str, ...] = ("machine", "impacts", "tonal", "texture", "speech", "music")
_SHARE = np.array([0.40, 0.12, 0.12, 0.12, 0.12, 0.12])
_TAG = 0x50524554  # "PRET": the corpus's own seed stream, apart from the benchmark's
P_MIX = 0.3
# Room conditions: the keys of room.draw_conditions, ranges wider than both benchmark domains.
_ROOM = dict(dist=(0.3, 8.0), rt60=(0.1, 1.5), air_lp=(2000.0, 7900.0), snr_far=(-5.0, 20.0),
             noise_tilt=(-7.0, 1.0), event_rate=(0.0, 3.0), coh_fc=(80.0, 800.0), near_snr=(6.0, 45.0),
             near_eq=(-4.0, 4.0), other_level=(0.0, 1.2), hum_level=(0.0, 1.0), other_f0=(15.0, 60.0),
             gain_db=(-6.0, 6.0))
_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10),
           (0, 2, 4, 6, 8, 10), (0, 1, 4, 5, 7, 8, 10))  # major, minor, two pentatonics, whole tone, phrygian-dominant


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw in [lo, hi]."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit(x: np.ndarray) -> np.ndarray:
    """x scaled to unit RMS (zeros stay zeros)."""
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _attrs(rng: np.random.Generator, machine: str) -> dict:
    """Attribute values beyond the benchmark vocabulary, each one valid for the machine's parser."""
    u = lambda a, b: f"{rng.uniform(a, b):.2f}"  # noqa: E731
    if machine in ("ToyCar", "ToyCarEmu"):  # toycar: letter A-D (model), digit (body), any speed
        return {"car": str(rng.choice(list("ABCD"))) + str(rng.integers(1, 10)), "spd": u(0.5, 7.0)}
    if machine == "ToyDrone":  # drone: letter A-C (model), digit '1' -> 2 blades, else 3
        return {"car": str(rng.choice(list("ABC"))) + str(rng.integers(1, 10)), "spd": u(0.5, 5.0)}
    if machine == "fan":
        return {"spd": u(0.5, 4.5)}
    if machine == "gearboxEmu":  # any product the gearbox knows, either case
        p = str(rng.choice(sorted(_PRODUCTS)))
        return {"pro": p.lower() if rng.uniform() < 0.3 else p}
    if machine == "BlowerDustCollector":
        return {"nzl": str(rng.integers(1, 4)), "pow": u(0.5, 4.5)}
    if machine == "Sander":
        return {"spd": u(0.5, 7.0), "grit": str(rng.choice([40, 60, 80, 100, 120, 180, 240, 320, 400]))}
    return {}


def _machine(rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, dict]:
    """A healthy benchmark machine with far-ranging attributes, domain and playback speed (0.8-1.25x)."""
    name = str(rng.choice(sorted(MACHINE_FN)))
    attrs = _attrs(rng, name) if rng.uniform() < 0.85 else {}  # sometimes the machine's own defaults
    domain, rate = str(rng.choice(["source", "target"])), _logu(rng, 0.8, 1.25)
    x = MACHINE_FN[name](rng, int(np.ceil(n * rate)) + 2, sr, attrs, domain, None, 0.0)
    return dsp.lerp(x, np.arange(n) * rate), dict(machine=name, attributes=attrs, domain=domain, fault=None)


def _impacts(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """1-3 trains of impacts (periodic or Poisson), each ringing 1-3 random modes."""
    x, dur = np.zeros(n), n / sr
    for _ in range(rng.integers(1, 4)):
        t = dsp.periodic_times(rng, dur, _logu(rng, 0.5, 15.0), rng.uniform(0, 0.2)) if rng.uniform() < 0.5 \
            else dsp.poisson_times(rng, dur, _logu(rng, 1.0, 30.0))
        amps = rng.lognormal(0.0, 0.5, t.size) * _logu(rng, 0.2, 1.0)
        for _ in range(rng.integers(1, 4)):
            x += dsp.ring(n, sr, t, amps * rng.uniform(0.2, 1.0), _logu(rng, 80.0, 6000.0),
                          _logu(rng, 0.002, 0.12), rng, rng.uniform(0.0, 0.1))
    return x


def _tonal(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """1-3 harmonic tones with slow pitch glides, vibrato, random harmonic amplitudes and level curves."""
    x, t = np.zeros(n), np.arange(n) / sr
    for _ in range(rng.integers(1, 4)):
        f = _logu(rng, 50.0, 2000.0) * np.exp(rng.uniform(0, 0.4) * dsp.slow_curve(rng, n, rng.integers(2, 5)))
        f *= 1 + rng.uniform(0, 0.03) * np.sin(dsp.TWO_PI * rng.uniform(3, 8) * t + rng.uniform(0, 6.3))
        nh = int(np.clip(7500.0 / f.max(), 1, 24))
        amps = rng.uniform(0, 1, nh) * np.arange(1, nh + 1) ** -rng.uniform(0.3, 2.0)
        env = np.exp(rng.uniform(0, 1) * dsp.slow_curve(rng, n, rng.integers(2, 6)))
        x += rng.uniform(0.3, 1.0) * env * dsp.harmonics(rng, np.cumsum(f) / sr + rng.uniform(), amps)
    return x


def _texture(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """1-2 noise textures: coloured noise, band noise with slow AM, or rain/crackle-like sparse clicks."""
    x = np.zeros(n)
    for form in rng.choice(3, rng.integers(1, 3), replace=False):
        if form == 0:
            slope = rng.uniform(-9.0, 3.0) / 6.02  # dB/octave
            y = dsp.noise(rng, n, sr, lambda f: (f / 1000.0) ** slope * dsp.bandpass_mag(f, 20.0, 7800.0, 1.0))
        elif form == 1:
            lo = _logu(rng, 50.0, 4000.0)
            hi = min(7800.0, lo * rng.uniform(1.3, 4.0))
            y = dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, lo, hi, rng.uniform(1.0, 4.0)))
            y *= np.exp(rng.uniform(0, 1.5) * dsp.slow_curve(rng, n, n / sr * rng.uniform(0.5, 8.0) + 2))
        else:
            t = dsp.poisson_times(rng, n / sr, _logu(rng, 20.0, 1500.0))
            y = dsp.ring(n, sr, t, rng.lognormal(0, 0.7, t.size) * rng.choice([-1, 1], t.size),
                         _logu(rng, 1000.0, 7000.0), _logu(rng, 3e-4, 3e-3), rng, 0.2)
        x += rng.uniform(0.3, 1.0) * _unit(y)
    return x


def _frame_filter(x: np.ndarray, sr: int, gains) -> np.ndarray:
    """Time-varying filter: 50 % overlap-add of Hann frames (512), frame spectra times gains(frame_t, f)."""
    hop, n = 256, x.size
    nf = n // hop + 2
    idx = np.arange(nf)[:, None] * hop + np.arange(2 * hop)[None, :]
    pad = np.concatenate([np.zeros(hop), x, np.zeros(nf * hop + hop - n)])
    spec = np.fft.rfft(pad[idx] * np.hanning(2 * hop + 1)[:-1], axis=1)
    y = np.fft.irfft(spec * gains(np.arange(nf) * hop / sr, dsp.freqs(2 * hop, sr)), 2 * hop)
    return np.bincount(idx.ravel(), y.ravel(), pad.size)[hop:hop + n]


def _speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Speech-like: glottal harmonic buzz (80-300 Hz) through moving formants, syllable envelope, pauses."""
    dur, t = n / sr, np.arange(n) / sr
    f0 = _logu(rng, 80.0, 300.0) * np.exp(0.12 * dsp.slow_curve(rng, n, dur * 3 + 2) - 0.1 * t / dur)
    nh = int(np.clip(7000.0 / f0.max(), 2, 60))
    ph = np.cumsum(f0 * (1 + 0.01 * rng.standard_normal(n))) / sr
    buzz = dsp.harmonics(rng, ph, np.arange(1, nh + 1) ** -rng.uniform(0.8, 1.5))
    rate = rng.uniform(3.0, 7.0)
    syl = dsp.periodic_times(rng, dur, rate, 0.15)
    syl = syl[rng.uniform(size=syl.size) > 0.2]  # dropped syllables: short pauses
    env, hiss = np.zeros(n), np.zeros(n)
    for s in syl:
        L = rng.uniform(0.5, 0.85) / rate
        u = (t - s) / L
        env += np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0)
        if rng.uniform() < 0.5:  # consonant: a short noise burst at the syllable onset
            hiss += np.exp(-np.abs(t - s) / rng.uniform(0.01, 0.03)) * rng.uniform(0.3, 1.0)
    if rng.uniform() < 0.5:  # a phrase pause
        a = rng.uniform(0, dur)
        env[(t > a) & (t < a + rng.uniform(0.15, 0.5))] = 0.0
    hiss *= env > 0
    centres = np.sort(np.concatenate([[0.0], syl + 0.3 / rate]))
    targets = [rng.uniform(lo, hi, centres.size) for lo, hi in ((300, 900), (800, 2500), (2300, 3400))]

    def formants(tf: np.ndarray, f: np.ndarray) -> np.ndarray:
        out = 0.02 * np.ones((tf.size, f.size))
        for k, tg in enumerate(targets):
            out += (1.0, 0.6, 0.3)[k] * dsp.peak_mag(f[None, :], np.interp(tf, centres, tg)[:, None], 6.0)
        return out

    voiced = _frame_filter(buzz * env, sr, formants)
    frics = dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, rng.uniform(2000, 4000), 7500.0))
    return _unit(voiced) + rng.uniform(0.1, 0.5) * frics * np.minimum(hiss, 1.0)


def _music(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Music-like: notes of a random scale and tuning, note durations, attack/decay envelopes, 1-2 voices."""
    x, t = np.zeros(n), np.arange(n) / sr
    scale, root, beat = _SCALES[rng.integers(len(_SCALES))], rng.uniform(45.0, 76.0), rng.uniform(0.1, 0.4)
    for v in range(1 + int(rng.uniform() < 0.4)):
        durs = beat * rng.choice([0.5, 1.0, 1.0, 2.0, 4.0], int(n / sr / beat * 2) + 4)
        on = np.cumsum(np.concatenate([[-rng.uniform(0, beat)], durs[:-1]]))
        deg = np.clip(np.cumsum(rng.integers(-2, 3, on.size)), -len(scale), 2 * len(scale))
        midi = root - 12 * v + 12 * np.floor_divide(deg, len(scale)) + np.take(scale, np.mod(deg, len(scale)))
        k = np.searchsorted(on, t, side="right") - 1
        f = 440.0 * 2.0 ** ((midi[k] - 69.0) / 12.0)
        tau = t - on[k]
        att, dec = _logu(rng, 0.002, 0.05), _logu(rng, 0.08, 1.5)
        env = np.minimum(tau / att, 1.0) * np.exp(-tau / dec) * np.clip((durs[k] - tau) / 0.01, 0, 1)
        nh = int(np.clip(7500.0 / f.max(), 1, 16))
        amps = rng.uniform(0, 1, nh) * np.arange(1, nh + 1) ** -rng.uniform(0.5, 2.0)
        x += (1.0 if v == 0 else rng.uniform(0.3, 0.8)) * env * dsp.harmonics(rng, np.cumsum(f) / sr, amps)
    return x


_MAKERS = dict(impacts=_impacts, tonal=_tonal, texture=_texture, speech=_speech, music=_music)


def corpus_clip(seed: int, index: int, seconds: float = 2.0) -> tuple[np.ndarray, dict]:
    """One corpus clip: float32 mono (n,) in [-1, 1] and its info (kind(s), machine if any, mixed, channel 0|1)."""
    rng = np.random.default_rng([_TAG, int(seed), int(index)])
    n = int(round(seconds * SAMPLE_RATE))
    kinds = [KINDS[rng.choice(len(KINDS), p=_SHARE)]]
    if rng.uniform() < P_MIX:
        p = np.where(np.array(KINDS) == kinds[0], 0.0, _SHARE)
        kinds.append(KINDS[rng.choice(len(KINDS), p=p / p.sum())])
    dry, info = np.zeros(n), dict(machine=None, attributes={}, domain=None, fault=None)
    for j, kind in enumerate(kinds):
        x, facts = _machine(rng, n, SAMPLE_RATE) if kind == "machine" else (_MAKERS[kind](rng, n, SAMPLE_RATE), {})
        dry += _unit(x) * (dsp.db(rng.uniform(-12.0, 0.0)) if j else 1.0)  # second source -12..0 dB
        info.update(facts)
    cond = {k: float(rng.uniform(*r)) for k, r in _ROOM.items()} | {"hum": float(rng.choice([50.0, 60.0]))}
    channel = int(rng.integers(2))
    y = room.render(rng, _unit(dry), SAMPLE_RATE, cond)[channel]
    level_db = float(rng.uniform(-20.0, -1.0))
    y = np.nan_to_num(y * (dsp.db(level_db) / max(float(np.abs(y).max()), 1e-12)))
    info.update(kind=kinds[0], kinds=kinds, mixed=len(kinds) > 1, channel=channel, peak_dbfs=round(level_db, 2),
                rt60=round(cond["rt60"], 3), dist_m=round(cond["dist"], 3), seed=int(seed), index=int(index))
    return np.clip(y, -1.0, 1.0).astype(np.float32), info


def generate_corpus(n_clips: int, seconds: float = 2.0, seed: int = 0, jobs: int = 1,
                    progress: bool = False) -> tuple[np.ndarray, list[dict]]:
    """(n_clips, n) float32 array and the info dicts; byte-identical for a seed whatever `jobs`."""
    audio = np.zeros((n_clips, int(round(seconds * SAMPLE_RATE))), np.float32)
    infos: list[dict] = []
    make = partial(corpus_clip, seed, seconds=seconds)
    ctx = mp.get_context("spawn")  # as asd_lib.synth does: the same on every platform
    with ProcessPoolExecutor(jobs, mp_context=ctx) if jobs > 1 else nullcontext() as ex:
        clips = ex.map(make, range(n_clips), chunksize=max(1, min(32, n_clips // (4 * jobs)))) if ex \
            else map(make, range(n_clips))
        clips = bar(clips, total=n_clips, desc="pre-training corpus", unit="clip", enabled_=progress)
        for i, (x, info) in enumerate(clips):
            audio[i] = x
            infos.append(info)
    return audio, infos
