"""Synthetic two-channel DCASE 2026 Task 2 benchmark in the organisers' layout (the kit's embedded default).

``generate(out_dir, preset="tiny", seed=0)`` writes it; ``python -m asd_lib.synth --out DIR --preset small``
does the same from the shell. Physics of the machines: ``asd_lib.synth.machines``; the two-microphone room:
``asd_lib.synth.room``.

How hard it is, and why. Fixed spectral statistics must not solve the benchmark: on the real task they land near
the organisers' baseline, which is why systems learn representations. Three physical sources of variation between
normal recordings make that so here; each moved the difficulty check of ``benchmarks/bench_synth.py`` (log-mel
mean + std and a nearest neighbour, channel 0, official score over the 7 dev machines of ``small``, seed 0;
Euclidean on 64 standardised bins / cosine on 128 bins):

| change | Euclidean 64 | cosine 128 |
|---|---|---|
| before (every recording of one setting alike: level sd about 0.9 dB) | 0.744 | 0.691 |
| + operating point per recording (``machines.OPERATING_POINT``: speed +-4 %, load tilt +-1.5 dB/octave, level +-3 dB) | 0.678 | 0.576 |
| + background per recording (``room.CONDITIONS``: noise level, colour, other machine, hum, events; gain +-4 dB) | 0.640 | 0.525 |
| + fault severity log-uniform over 0.1-1 (``core.SEVERITY``; was uniform over 0.1-1: more mild faults) | 0.581 | 0.500 |
| + 10 target training clips per machine in ``small``, the real count (was 4: some target combinations unseen) | 0.606 | 0.528 |

(Log-uniform over 0.05-1 instead gave 0.554 / 0.489, and a baseline source AUC of 0.76, at the bottom of the real
range of 0.76-0.99; 0.1-1 gives 0.79.) The last change raised the organisers' baseline more than the detector
(100 epochs, seed 0: MAHALA 0.517 -> 0.562, MSE 0.550 -> 0.577), so that over three seeds the Euclidean detector
leads the better baseline by 0.048 instead of 0.064. The README has the three-seed table.
"""
from .core import PRESETS, ClipSpec, Preset, generate, main, plan, summary_table, synth_clip
from .machines import FAULTS, VOCAB

__all__ = ["PRESETS", "Preset", "ClipSpec", "generate", "plan", "summary_table", "synth_clip", "main", "FAULTS", "VOCAB"]
