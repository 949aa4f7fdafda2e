"""Synthetic two-channel DCASE 2026 Task 2 benchmark in the organisers' layout (the kit's embedded default).

``generate(out_dir, preset="tiny", seed=0)`` writes it; ``python -m asd_lib.synth --out DIR --preset small``
does the same from the shell. Physics of the machines: ``asd_lib.synth.machines``; the two-microphone room:
``asd_lib.synth.room``.
"""
from .core import PRESETS, ClipSpec, Preset, generate, main, plan, summary_table, synth_clip
from .machines import FAULTS, VOCAB

__all__ = ["PRESETS", "Preset", "ClipSpec", "generate", "plan", "summary_table", "synth_clip", "main", "FAULTS", "VOCAB"]
