"""The 12 synthetic DCASE 2026 machines: attribute vocabularies and the physics of their sound.

Each machine is a function ``(rng, n, sr, attrs, domain, fault, sev) -> dry (n,)``: the machine as a
near microphone would hear it, before the room. ``attrs`` are the clip's attribute pairs (dict),
``fault`` is None for a normal clip or one of ``FAULTS[machine]``, ``sev`` in (0, 1] its severity.
Physics follows docs/synth_notes.md (rotation harmonics, bearing defect frequencies, gear mesh and
sidebands, blade-pass tones, stroke mechanics, valve transients). Levels are absolute (not normalised
per clip), so faults that change loudness stay visible.
"""
from __future__ import annotations

import numpy as np

from . import dsp
from .dsp import TWO_PI


def _grid(*parts: tuple[str, list[str]], tail: str = "") -> list[str]:
    """All attribute tails 'k1_v1_k2_v2...' of a cartesian grid, plus a fixed tail."""
    out = [""]
    for key, vals in parts:
        out = [f"{o}_{key}_{v}" if o else f"{key}_{v}" for o in out for v in vals]
    return [o + tail for o in out]


_MIC = "_mic_2_mic_1"
# Attribute vocabularies of the real 2026 file names (train.txt / dev_test.txt), per domain.
# 'test_target' differs from 'target' only where the real test names do (gearboxEmu's 'pro_y').
VOCAB: dict[str, dict[str, list[str]]] = {
    "ToyCar": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "ToyCarEmu": {"source": _grid(("car", ["B1", "B2", "C1", "C2", "D1", "D2"]), ("spd", ["2", "3", "5"]), tail=_MIC),
                  "target": _grid(("car", ["A1", "A2"]), ("spd", ["1", "4"]), tail=_MIC)},
    "bearingEmu": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "fan": {"source": ["spd_1", "spd_2", "spd_3"], "target": ["spd_1", "spd_2", "spd_3"]},
    "gearboxEmu": {"source": ["pro_A", "pro_B", "pro_C", "pro_D", "pro_E", "pro_F"],
                   "target": ["pro_X", "pro_Y", "pro_Z"], "test_target": ["pro_X", "pro_Y", "pro_Z", "pro_y"]},
    "sliderEmu": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "valveEmu": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "ToyDrone": {"source": _grid(("car", ["A1", "A2", "B1", "B2"]), ("spd", ["1", "2"]), tail=_MIC),
                 "target": _grid(("car", ["C1", "C2"]), ("spd", ["3"]), tail=_MIC)},
    "ToothBrush": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "SewingMachine": {"source": ["noAttribute"], "target": ["noAttribute"]},
    "BlowerDustCollector": {"source": _grid(("nzl", ["1", "2"]), ("pow", ["1", "3"])),
                            "target": _grid(("nzl", ["1", "2"]), ("pow", ["2"]))},
    "Sander": {"source": _grid(("spd", ["2", "4"]), ("grit", ["60", "120", "240"])),
               "target": _grid(("spd", ["1", "3", "5"]), ("grit", ["60", "120", "240"]))},
}

FAULTS: dict[str, list[str]] = {
    "ToyCar": ["bent_shaft", "gear_damage", "tyre_damage"],
    "ToyCarEmu": ["bent_shaft", "gear_damage", "tyre_damage"],
    "bearingEmu": ["outer_race", "inner_race", "flaking"],
    "fan": ["wing_damage", "imbalance", "clogging", "voltage"],
    "gearboxEmu": ["broken_tooth", "wear", "overload"],
    "sliderEmu": ["rail_damage", "loose_belt", "no_grease"],
    "valveEmu": ["contamination", "pattern"],
    "ToyDrone": ["prop_damage", "bent_prop", "motor_damage"],
    "ToothBrush": ["worn_head", "motor_irregular"],
    "SewingMachine": ["stitch_rhythm", "needle_fault", "thread_fault"],
    "BlowerDustCollector": ["clogging", "leak", "impeller_damage"],
    "Sander": ["pad_damage", "bearing_wear"],
}

# Overall fault strength per machine (tuned with benchmarks/bench_synth.py so that a simple detector
# lands between chance and perfect, differently per machine).
FAULT_GAIN: dict[str, float] = {m: 1.0 for m in FAULTS}


def _num(attrs: dict, key: str, default: float) -> float:
    v = attrs.get(key)
    try:
        return float(v) if v is not None else default
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------- machines
def toycar(rng, n, sr, attrs, domain, fault, sev):
    """Toy car on a belt: DC motor harmonics + brush noise, gear mesh with sidebands, wheels rolling."""
    dur = n / sr
    car = attrs.get("car", "B1" if domain == "source" else "A1")
    model, body = "ABCD".index(car[0].upper()), int(car[1])
    spd = _num(attrs, "spd", rng.choice([2, 3, 5]) if domain == "source" else rng.choice([1, 4]))
    f_m = (70.0 + 8.0 * model) * (1.0 + 0.18 * spd) * rng.uniform(0.98, 1.02)  # motor shaft, Hz
    teeth, ratio = 10 + 2 * model, 18.0 + 2 * model
    f_w = f_m / ratio  # wheel rotation
    ph_m = dsp.phase(rng, n, sr, f_m, 0.006, 3.0)
    ph_w = ph_m / ratio
    x = 0.5 * dsp.harmonics(rng, ph_m, [1.0 / k ** 0.8 for k in range(1, 13)])
    brush = dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 2000.0, 6000.0))
    x += 0.25 * brush * (1 + 0.6 * np.sin(TWO_PI * 2 * ph_m))
    mesh_ph = teeth * ph_m
    side = 0.15 + (0.5 * sev if fault == "gear_damage" else 0.0)
    mesh = dsp.harmonics(rng, mesh_ph, [0.5, 0.2, 0.1]) * (1 + side * np.sin(TWO_PI * ph_m / 3.0))
    x += mesh
    body_f = 900.0 if body == 1 else 1300.0
    roll_shape = lambda f: dsp.bandpass_mag(f, 120.0, 1500.0) + 0.5 * dsp.peak_mag(f, body_f, 4.0)  # noqa: E731
    roll = dsp.noise(rng, n, sr, roll_shape)
    x += 0.6 * roll * (1 + 0.2 * np.sin(TWO_PI * ph_w))
    if fault == "bent_shaft":  # wobble at wheel rate: AM of everything + knock each revolution
        x *= 1 + 0.5 * sev * np.sin(TWO_PI * ph_w)
        tk = (np.arange(int(dur * f_w) + 2) - rng.uniform()) / f_w
        x += dsp.ring(n, sr, tk, 1.5 * sev, 700.0, 0.006)
    elif fault == "gear_damage":  # one damaged tooth per gear revolution
        f_g = f_m / 3.0
        tk = dsp.periodic_times(rng, dur, f_g, 0.01)
        x += dsp.ring(n, sr, tk, 1.2 * sev, 2400.0, 0.002, rng, 0.05)
    elif fault == "tyre_damage":  # thump per wheel revolution, low ringing
        tk = dsp.periodic_times(rng, dur, f_w, 0.02)
        x += dsp.ring(n, sr, tk, 3.0 * sev, 160.0, 0.02)
        x += 0.4 * sev * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 200.0, 600.0))
    if domain == "target" and "car" not in attrs:  # ToyCar target: another belt surface
        x += 0.3 * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 1500.0, 3000.0))
    return x


def bearing(rng, n, sr, attrs, domain, fault, sev):
    """Rolling bearing: broadband noise + faint rotation lines; race defects give BPFO/BPFI impulse trains."""
    dur = n / sr
    f_r = rng.uniform(20.0, 30.0) if domain == "source" else rng.uniform(34.0, 39.0)
    res = 3200.0 if domain == "source" else 4300.0  # housing resonance moves with the mounting
    ph = dsp.phase(rng, n, sr, f_r, 0.002)
    x = 0.15 * dsp.harmonics(rng, ph, [1.0, 0.5, 0.2])
    x += dsp.noise(rng, n, sr, lambda f: 0.3 * dsp.bandpass_mag(f, 50.0, 8000.0, 1.0) + dsp.peak_mag(f, res, 3.0))
    nb, dD, phi = 9, 0.25, 0.0
    bpfo = nb / 2 * f_r * (1 - dD * np.cos(phi))
    bpfi = nb / 2 * f_r * (1 + dD * np.cos(phi))
    a = 5.0 * sev
    if fault == "outer_race":
        x += dsp.ring(n, sr, dsp.periodic_times(rng, dur, bpfo, 0.01), a, res * 1.1, 0.002, rng, 0.05)
    elif fault == "inner_race":
        tk = dsp.periodic_times(rng, dur, bpfi, 0.01)
        mod = 0.5 * (1 + np.cos(TWO_PI * f_r * tk + rng.uniform(0, 6.3)))
        x += dsp.ring(n, sr, tk, 1.3 * a * mod, res * 0.9, 0.001, rng, 0.05)
    elif fault == "flaking":
        tk = dsp.periodic_times(rng, dur, bpfo, 0.3)
        x += dsp.ring(n, sr, tk, a * rng.uniform(0.3, 1.0, tk.size), res, 0.0015, rng, 0.1)
        x += 0.3 * sev * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 5000.0, 7500.0))
    return x


def fan(rng, n, sr, attrs, domain, fault, sev):
    """Fan: blade-pass tone and harmonics over speed-dependent turbulence, motor line, slot harmonics."""
    spd = _num(attrs, "spd", 2)
    f_r = (10.0 + 4.0 * spd) * rng.uniform(0.99, 1.01)
    if fault == "voltage":  # over/under voltage: speed off by a few per cent
        f_r *= 1 + rng.choice([-1, 1]) * 0.15 * sev
    if fault == "clogging":
        f_r *= 1 - 0.03 * sev
    blades = 6 if domain == "source" else 7  # target: another fan unit
    ph = dsp.phase(rng, n, sr, f_r, 0.003)
    bpf = dsp.harmonics(rng, blades * ph, [1.0, 0.5, 0.3, 0.15, 0.1])
    if fault == "imbalance":
        bpf *= 1 + 0.9 * sev * np.sin(TWO_PI * ph)
    x = 0.6 * bpf + 0.1 * dsp.harmonics(rng, ph, [1.0, 0.6])
    x += 0.1 * np.sin(TWO_PI * 100.0 * np.arange(n) / sr) + 0.05 * dsp.tone(rng, ph, 24)
    turb = 0.7 * (spd / 2.0) ** 1.5
    x += turb * dsp.noise(rng, n, sr, lambda f: (f / 200.0) ** -0.5 * dsp.bandpass_mag(f, 40.0, 6000.0))
    if fault == "wing_damage":  # broken symmetry: every harmonic of f_r
        x += 0.9 * sev * dsp.harmonics(rng, ph, [1.0 / k ** 0.5 for k in range(1, 25)])
    elif fault == "imbalance":
        x += 1.0 * sev * dsp.tone(rng, ph)
    elif fault == "clogging":
        x += 1.5 * sev * turb * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 1000.0, 4000.0))
    return x


_PRODUCTS = {  # gearbox product -> (shaft Hz, teeth, load)
    "A": (20.0, 23, 0.5), "B": (22.0, 27, 0.6), "C": (25.0, 19, 0.7), "D": (18.0, 31, 0.5), "E": (28.0, 21, 0.8),
    "F": (24.0, 25, 0.6), "X": (32.0, 17, 0.9), "Y": (15.0, 35, 0.4), "Z": (27.0, 29, 1.0),
}


def gearbox(rng, n, sr, attrs, domain, fault, sev):
    """Gearbox: mesh frequency (teeth x shaft) harmonics with +-shaft sidebands; product sets speed/teeth/load."""
    dur = n / sr
    f_s, teeth, load = _PRODUCTS[attrs.get("pro", "A").upper()]
    if fault == "overload":
        load *= 1 + 0.8 * sev
        f_s *= 1 - 0.03 * sev
    ph = dsp.phase(rng, n, sr, f_s * rng.uniform(0.99, 1.01), 0.002)
    side = 0.1 * load + (0.7 * sev if fault in ("broken_tooth", "overload") else 0.0)
    mh = [1.0, 0.45, 0.25, 0.12]
    if fault == "wear":
        mh = [1.0, 0.45 * (1 + 1.2 * sev), 0.25 * (1 + 2 * sev), 0.12 * (1 + 3 * sev)]
    mesh = dsp.harmonics(rng, teeth * ph, mh) * (1 + side * np.sin(TWO_PI * ph) + 0.5 * side * np.sin(2 * TWO_PI * ph))
    x = (0.5 + load) * mesh + 0.2 * dsp.harmonics(rng, ph, [1.0, 0.3])
    x += 0.4 * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 100.0, 5000.0, 1.0))
    if fault == "broken_tooth":
        x += dsp.ring(n, sr, dsp.periodic_times(rng, dur, f_s, 0.003), 4.0 * sev, 2600.0, 0.002, rng, 0.03)
    elif fault == "wear":
        x += 0.3 * sev * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 1500.0, 4000.0)) * (0.5 + 0.5 * np.abs(mesh))
    return x


def slider(rng, n, sr, attrs, domain, fault, sev):
    """Linear slider: back-and-forth strokes (trapezoid velocity), motor whine, friction, reversal clicks."""
    dur = n / sr
    period = rng.uniform(0.5, 0.6) if domain == "source" else rng.uniform(0.7, 0.8)
    if fault == "loose_belt":
        jit = 0.1 * sev
    else:
        jit = 0.0
    t = np.arange(n) / sr
    cyc = t / period + rng.uniform()
    if jit:
        cyc = cyc + jit * dsp.slow_curve(rng, n, dur / period * 3 + 2) * 0.3
    pos_in = np.mod(cyc, 1.0)  # 0..1 within a stroke cycle (forward then back)
    half = np.mod(pos_in * 2, 1.0)
    v = np.clip(np.minimum(half, 1 - half) * 6.0, 0, 1)  # trapezoid speed profile per half stroke
    f_whine = 350.0 + 500.0 * v
    ph = np.cumsum(f_whine) / sr
    x = 0.8 * v * dsp.harmonics(rng, ph, [1.0, 0.4, 0.25, 0.1])
    fric = 0.3 * (1 + 1.0 * sev if fault == "no_grease" else 1.0)
    x += fric * v * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 1000.0, 5000.0))
    k = np.arange(-1, int(dur / period * 2) + 3)
    rev = (k / 2.0 - (cyc[0] % 1.0) + 0.0) * period
    rev = rev + (jit * period * rng.standard_normal(rev.size) * 0.3 if jit else 0)
    x += dsp.ring(n, sr, rev, 0.8, 1800.0, 0.004, rng, 0.03)
    if fault == "rail_damage":  # scraping at the same place of each forward stroke
        burst = ((pos_in > 0.18) & (pos_in < 0.22)).astype(float)
        x += 0.6 * sev * burst * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 2500.0, 7000.0))
    elif fault == "loose_belt":
        x += dsp.ring(n, sr, rev + 0.01, 0.5 * sev, 300.0, 0.01)
    elif fault == "no_grease":
        x += 0.1 * sev * v * np.sin(TWO_PI * 2200.0 * t)
    return x


def valve(rng, n, sr, attrs, domain, fault, sev):
    """Solenoid valve: open/close clicks ringing the body, flow noise while open; pattern per domain."""
    dur = n / sr
    period = rng.uniform(0.35, 0.45) if domain == "source" else rng.uniform(0.55, 0.65)
    open_frac = 0.4
    if fault == "pattern":
        open_frac *= 1 + rng.choice([-1, 1]) * 0.3 * sev
    t_open = dsp.periodic_times(rng, dur, 1.0 / period, 0.01)
    t_close = t_open + open_frac * period
    t = np.arange(n) / sr
    is_open = np.zeros(n)
    for a, b in zip(t_open, t_close):
        i, j = max(0, int(a * sr)), min(n, int(b * sr))
        if j > i:
            is_open[i:j] = 1.0
    env = np.convolve(is_open, np.ones(160) / 160.0, mode="same")  # 10 ms flow attack/release
    flow_band = (600.0, 4000.0) if domain == "source" else (400.0, 2500.0)
    x = 0.8 * env * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, *flow_band))
    res, dec = 3000.0, 0.002
    if fault == "contamination":  # particles: duller, longer ringing and a leak between events
        res, dec = 3000.0 * (1 - 0.25 * sev), 0.002 * (1 + 1.2 * sev)
        x += 0.15 * sev * (1 - env) * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 3000.0, 7000.0))
    x += dsp.ring(n, sr, t_open, 1.5, res, dec, rng, 0.05) + dsp.ring(n, sr, t_close, 2.5, res * 0.8, dec, rng, 0.05)
    del t
    return x


def drone(rng, n, sr, attrs, domain, fault, sev):
    """Toy drone: four rotors (blade-pass + harmonics, beating), motor electrical whine, downwash noise."""
    car = attrs.get("car", "A1")
    model, blades = "ABC".index(car[0].upper()), 2 if car[1] == "1" else 3
    spd = _num(attrs, "spd", 1)
    f0 = (90.0 + 20.0 * model) * (1 + 0.12 * (spd - 1))
    x = np.zeros(n)
    bad = int(rng.integers(4))
    for r in range(4):
        f_r = f0 * rng.uniform(0.98, 1.02)
        ph = dsp.phase(rng, n, sr, f_r, 0.004, 4.0)
        bp = dsp.harmonics(rng, blades * ph, [1.0, 0.4, 0.2, 0.1])
        wh_j = 0.0
        if r == bad and fault == "bent_prop":
            bp *= 1 + 0.6 * sev * np.sin(TWO_PI * ph)
        if r == bad and fault == "prop_damage":
            bp += 0.5 * sev * dsp.harmonics(rng, ph, [1.0 / k for k in range(1, 16)])
        if r == bad and fault == "motor_damage":
            wh_j = 0.03 * sev
        ph_e = 7 * ph + (wh_j * 7 * np.cumsum(dsp.slow_curve(rng, n, n / sr * 30)) * f_r / sr if wh_j else 0.0)
        x += 0.25 * bp + 0.06 * dsp.harmonics(rng, ph_e, [1.0, 0.3])
        if r == bad and fault == "motor_damage":
            x += 0.25 * sev * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 3000.0, 6000.0)) * (1 + np.sin(TWO_PI * ph))
    x += (0.4 + 0.1 * spd) * dsp.noise(rng, n, sr, lambda f: (f / 300.0) ** -0.7 * dsp.bandpass_mag(f, 80.0, 6000.0))
    return x


def toothbrush(rng, n, sr, attrs, domain, fault, sev):
    """Sonic toothbrush: ~250 Hz oscillation buzz with odd harmonics, brush contact noise modulated by it."""
    f0 = rng.uniform(255.0, 262.0) if domain == "source" else rng.uniform(238.0, 246.0)
    jit = 0.02 * sev if fault == "motor_irregular" else 0.0
    ph = dsp.phase(rng, n, sr, f0, 0.002 + jit, 8.0)
    x = 0.6 * dsp.harmonics(rng, ph, [1.0, 0.2, 0.5, 0.1, 0.3, 0.05, 0.15])
    band = (2000.0, 7000.0) if fault != "worn_head" else (2000.0 * (1 - 0.5 * sev), 7000.0 * (1 - 0.5 * sev))
    contact = dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, *band))
    x += 0.5 * contact * np.abs(np.sin(np.pi * 2 * ph))
    if fault == "motor_irregular":  # brief drop-outs of the drive
        env = 1 - 0.5 * sev * (dsp.slow_curve(rng, n, n / sr * 6) > 1.0)
        x *= env
    return x


def sewing(rng, n, sr, attrs, domain, fault, sev):
    """Sewing machine: needle stroke impacts at the stitch rate, hook rattle, geared motor hum."""
    dur = n / sr
    rate = rng.uniform(9.0, 11.0) if domain == "source" else rng.uniform(12.5, 14.0)
    jit = 0.01 + (0.15 * sev if fault == "stitch_rhythm" else 0.0)
    tn = dsp.periodic_times(rng, dur, rate, jit)
    x = dsp.ring(n, sr, tn, 1.5, 2500.0, 0.003, rng, 0.04)
    x += dsp.ring(n, sr, tn + 0.5 / rate, 0.5, 1200.0, 0.005, rng, 0.05)
    ph = dsp.phase(rng, n, sr, rate * 12.0, 0.004)
    x += 0.3 * dsp.harmonics(rng, ph, [1.0, 0.5, 0.25, 0.1])
    x += 0.15 * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 200.0, 4000.0, 1.0))
    if fault == "needle_fault":
        x += dsp.ring(n, sr, tn + 0.012, 1.2 * sev, 4500.0, 0.002, rng, 0.05)
    elif fault == "thread_fault":
        sel = tn[rng.uniform(size=tn.size) < 0.5]
        for tt in sel:
            i, L = int(tt * sr), int(0.04 * sr)
            if 0 <= i and i + L < n:
                x[i:i + L] += 0.8 * sev * rng.standard_normal(L) * np.hanning(L)
    return x


def blower(rng, n, sr, attrs, domain, fault, sev):
    """Blower / dust collector: impeller blade-pass (power sets speed), nozzle flow noise colour."""
    pw, nz = _num(attrs, "pow", 2), _num(attrs, "nzl", 1)
    f_r = 40.0 + 10.0 * pw
    if fault == "clogging":
        f_r *= 1 + 0.03 * sev
    ph = dsp.phase(rng, n, sr, f_r, 0.003)
    x = 0.5 * dsp.harmonics(rng, 11 * ph, [1.0, 0.3, 0.1]) + 0.15 * np.sin(TWO_PI * 100.0 * np.arange(n) / sr)
    fc = 1200.0 if nz == 1 else 800.0
    flow = dsp.noise(rng, n, sr, lambda f: dsp.peak_mag(f, fc, 0.7) + 0.2 * dsp.bandpass_mag(f, 50, 7000, 1))
    fl = (0.6 + 0.25 * pw) * (1 - 0.5 * sev if fault == "clogging" else 1.0)
    x += fl * flow
    if fault == "clogging":
        x += 0.3 * sev * dsp.tone(rng, dsp.phase(rng, n, sr, 1850.0, 0.002))
    elif fault == "leak":
        x += 0.6 * sev * dsp.noise(rng, n, sr, lambda f: dsp.bandpass_mag(f, 4000.0, 7000.0, 3.0))
    elif fault == "impeller_damage":
        x += 0.4 * sev * dsp.harmonics(rng, ph, [1.0 / k ** 0.5 for k in range(1, 16)])
    return x


def sander(rng, n, sr, attrs, domain, fault, sev):
    """Orbital sander: motor/orbit harmonics, grit-dependent contact noise modulated by the orbit."""
    dur = n / sr
    spd, grit = _num(attrs, "spd", 3), _num(attrs, "grit", 120)
    f_o = 100.0 + 15.0 * spd
    ph = dsp.phase(rng, n, sr, f_o, 0.004)
    x = 0.4 * dsp.harmonics(rng, ph, [1.0, 0.5, 0.3, 0.2, 0.1])
    fc = {60.0: 1500.0, 120.0: 2500.0, 240.0: 4000.0}.get(grit, 2500.0)
    contact = dsp.noise(rng, n, sr, lambda f: dsp.peak_mag(f, fc, 0.8))
    x += (0.9 * 60.0 / grit) ** 0.3 * contact * (1 + 0.3 * np.sin(TWO_PI * ph))
    if grit <= 60:  # coarse grit: crackle
        x += dsp.ring(n, sr, dsp.poisson_times(rng, dur, 80.0), 0.4, 1800.0, 0.001, rng, 0.2)
    if fault == "pad_damage":
        x += dsp.ring(n, sr, dsp.periodic_times(rng, dur, f_o, 0.01), 2.0 * sev, 600.0, 0.003)
    elif fault == "bearing_wear":
        x += dsp.ring(n, sr, dsp.periodic_times(rng, dur, 3.6 * f_o, 0.02), 2.0 * sev, 5200.0, 0.001, rng, 0.05)
    return x


# ------------------------------------------------------------------------------------ operating point
# A machine at one attribute value never runs the same way twice (SYNTH_NOTES; real normal recordings of one
# setting differ in speed, load and level from recording to recording). Per clip: the speed drifts by up to
# +-4 % (supply, load, temperature), which moves every rotation line, impact rate and resonance together; the
# load tilts the balance between the low tonal parts and the high broadband parts by up to +-1.5 dB per octave;
# and the machine's level against the room's noise changes by up to +-3 dB.
OPERATING_POINT = {"speed": 0.04, "tilt_db_per_octave": 1.5, "level_db": 3.0}


def draw_operating_point(rng: np.random.Generator) -> dict:
    """One recording's operating point: speed factor, spectral tilt (dB/octave around 1 kHz), level (dB)."""
    v = OPERATING_POINT
    return dict(speed=1.0 + float(rng.uniform(-v["speed"], v["speed"])),
                tilt=float(rng.uniform(-v["tilt_db_per_octave"], v["tilt_db_per_octave"])),
                level_db=float(rng.uniform(-v["level_db"], v["level_db"])))


def run_machine(machine: str, rng: np.random.Generator, n: int, sr: int, attrs: dict, domain: str,
                fault: str | None, sev: float, op: dict) -> np.ndarray:
    """The dry machine signal (n,) at an operating point: run at op['speed'], tilted and levelled."""
    m = int(np.ceil(n * op["speed"])) + 2
    x = dsp.lerp(MACHINE_FN[machine](rng, m, sr, attrs, domain, fault, sev), np.arange(n) * op["speed"])
    f = np.maximum(dsp.freqs(n, sr), 50.0)
    x = np.fft.irfft(np.fft.rfft(x) * (f / 1000.0) ** (op["tilt"] / 6.02), n)
    return x * dsp.db(op["level_db"])


MACHINE_FN = {
    "ToyCar": toycar, "ToyCarEmu": toycar, "bearingEmu": bearing, "fan": fan, "gearboxEmu": gearbox,
    "sliderEmu": slider, "valveEmu": valve, "ToyDrone": drone, "ToothBrush": toothbrush,
    "SewingMachine": sewing, "BlowerDustCollector": blower, "Sander": sander,
}
