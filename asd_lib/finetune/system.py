"""A system's fine-tuning runs from its merged parameters (``system_runs``), as notebook 01 and
``asd-finetune --system`` both train them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from asd_lib import params as P
from asd_lib.artifacts import layout
from asd_lib.data import scan
from asd_lib.finetune.train import finetune


def system_runs(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A system's fine-tuning runs from its merged parameters: {backbone: ``finetune`` keyword arguments}, one run
    per backbone of the ensemble, up to its largest epoch, keeping the epochs the ensemble names. Notebook 01 and
    ``asd-finetune --system`` both train exactly these (one mapping, so they cannot drift apart)."""
    plan = P.training_plan(P.resolve_ensemble(params["ensemble"], float(params.get("epoch_scale", 1.0))))
    checkpoints = {"beats": params["beats_checkpoint"], "sslam": params["sslam_checkpoint"]}
    unknown = sorted(set(plan) - set(checkpoints))
    if unknown:
        raise ValueError(f"ensemble names backbone(s) {unknown}; the kit trains 'beats' and 'sslam' (e.g. beats@107)")
    shared = {k: params[k] for k in ("trainable", "classes_with_channel", "head", "arcface_s", "arcface_m",
                                     "train_pooling", "batch_size", "accum", "lr_backbone", "lr_head", "weight_decay",
                                     "warmup_epochs", "grad_clip", "time_shift", "noise_prob", "amp",
                                     "epoch_selection", "seed")}
    shared.update(train_channels=list(params["train_channels"]), duration=float(params["train_seconds"]),
                  noise_snr_db=list(params["noise_snr_db"]), device=params.get("device") or None)
    return {b: {"backbone": checkpoints[b], "backbone_id": b, "epochs": max(epochs), "keep_epochs": list(epochs),
                "recipe": params["sslam_recipe"] if b == "sslam" else None,
                "top_k": params["sslam_top_k" if b == "sslam" else "beats_top_k"], **shared}
            for b, epochs in plan.items()}


def system_values(system: str, overlays: Sequence[str]) -> dict[str, Any]:
    """``--system``: the merged, checked parameters that notebook 01 would be given."""
    prm = P.load(system, overlays)
    P.validate(prm, P.declared_parameters(sorted(P.NOTEBOOK_DIR.glob("*.ipynb"))))
    return P.inject(prm, P.notebook_parameters(P.NOTEBOOK_DIR / "01_finetune_arcface.ipynb"))


def train_system(vals: Mapping[str, Any], resume: bool) -> Path:
    """``--system``: the system's runs as notebook 01 trains them, into results/<regime>/checkpoints/."""
    runs = system_runs(vals)
    lay = layout(P.ROOT / vals["results_dir"], vals["regime"])
    man = P.regime_manifest(scan(P.ensure_data(vals["data_root"], vals["synth_preset"], vals["synth_seed"])),
                            vals["regime"])
    out = Path()
    for backbone, kwargs in runs.items():
        out = finetune(man, out_dir=lay.regime_dir, resume=resume, **kwargs)
    return out
