"""Every setting of a fine-tuning run (``FinetuneConfig``, written to config.json) and the settings a finished run
recorded (``run_settings``). Imports no torch."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (written to config.json; a resume must match it)."""

    backbone: str = "beats-tiny"
    backbone_id: str | None = None
    recipe: str | None = None
    classes_with_channel: bool = True
    train_channels: tuple[int, ...] = (0, 1)
    channel_input: str = "separate"
    machines: tuple[str, ...] | None = None
    trainable: str = "aau"
    top_k: int | None = None
    head: str = "arcface"
    arcface_s: float = 64.0
    arcface_m: float = 0.2
    train_pooling: str = "mean"
    epochs: int = 1
    batch_size: int = 64
    accum: int = 1
    lr_backbone: float = 6.45e-5
    lr_head: float = 4.57e-3
    weight_decay: float = 5.1e-4
    warmup_epochs: float = 5.0
    grad_clip: float = 1.0
    duration: float = 10.0
    time_shift: float = 0.0
    noise_std: float = 0.0
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 1.0
    fbank_noise_std: float = 0.0
    dropout: bool = True
    layerdrop: bool = True
    grad_decay: bool = True
    amp: bool = True
    cache_fbank: bool = True
    seed: int = 0
    save_every: int = 1
    keep_epochs: tuple[int, ...] = ()
    save_every_steps: int = 0
    epoch_selection: str = "fixed"

    def training_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (compared on resume)."""
        d = dataclasses.asdict(self)
        for k in _NOT_TRAINING:
            d.pop(k)
        return json.loads(json.dumps(d))


# FinetuneConfig fields that do not change the weights of the epochs a run saves
_NOT_TRAINING = ("save_every", "keep_epochs", "save_every_steps", "epoch_selection", "cache_fbank", "epochs")


def run_settings(ckpt_dir: str | Path) -> dict[str, Any]:
    """The weight-changing settings of the run in ``ckpt_dir`` (from its config.json, without the folder's own name),
    or {} when the folder holds no run. Notebook 01 compares them with its parameters (``params.changed_settings``)."""
    try:
        cfg = json.loads((Path(ckpt_dir) / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in cfg.items() if k not in (*_NOT_TRAINING, "backbone_id")}
