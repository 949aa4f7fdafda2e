"""Constants and small helpers shared by the writer (``OnlineSystem.save`` in system.py) and the reader
(``load_system`` in load.py) of an exported system: the folder format and its version, the audio a clip must
be (sample rate, shortest length, silence level), the scored channels, the normalisations an export accepts,
the digest of a label scheme and the library versions a manifest records.
"""
from __future__ import annotations

import hashlib
import json
import platform
from typing import Sequence

import numpy as np
import sklearn

import asd_lib

FORMAT_VERSION = 2  # 2: scorers as JSON + npz (version 1 held joblib pickles)
FORMAT_NAME = "asd-kit online system"
SAMPLE_RATE = 16000
PATCH_FRAMES = 16  # both encoders cut the fbank into 16 x 16 patches
#: Shortest clip (samples at 16 kHz) that gives one 16-frame patch: 400 + 15 * 160 = 2800 (0.175 s).
MIN_SAMPLES = 400 + 160 * (PATCH_FRAMES - 1)
#: Peak level below which a clip counts as silent (about -120 dBFS; one 16-bit LSB is 3e-5).
SILENCE_PEAK = 1e-6
_CHANNELS = {"ch0": (0,), "ch1": (1,), "both": (0, 1)}
_ONLINE_NORMALISATIONS = ("pooled", "per-machine", "aau-constants")


def _classes_digest(classes: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import torch

    return {"asd_lib": asd_lib.__version__, "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}
