"""Loading an exported system folder back (``load_system``).

Nothing is trusted before it is checked: the manifest's format version, every file against its sha256, the
label scheme (against the caller's expected classes when given) and the library versions. Scorers are read
from JSON + npz, checkpoints with torch's weights-only loader; no pickle is ever opened.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from asd_lib.fsutil import file_sha256
from asd_lib.online.common import FORMAT_NAME, FORMAT_VERSION, _classes_digest, _versions
from asd_lib.online.system import ModelSpec, OnlineSystem, SystemLoadError
from asd_lib.scorer_io import load_scorer


def _expected_classes(expected: Any, with_channel: bool) -> list[str] | None:
    if expected is None:
        return None
    try:
        import pandas as pd

        if isinstance(expected, pd.DataFrame):
            from asd_lib.data import class_labels

            return class_labels(expected, channels=with_channel)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(expected, (str, Path)):
        obj = json.loads(Path(expected).read_text())
        return list(obj["classes"] if isinstance(obj, dict) else obj)
    return list(expected)


def load_system(system_dir: str | Path, expected_classes: Any = None, device: str = "cpu",
                strict_versions: bool = False) -> OnlineSystem:
    """Load an exported system after checking its manifest; SystemLoadError with every problem found.

    Checks: the folder and manifest.json exist and are of this format version; every listed file is present with
    its sha256; the class-label scheme matches ``expected_classes`` (a list, a classes.json path or a ``scan``
    DataFrame) when given. Version differences (asd_lib, torch, sklearn, numpy) become notes (``system.notes``
    and a warning), or errors with ``strict_versions``. Reads no pickle: scorers with ``load_scorer`` (JSON +
    npz), checkpoints with ``load_backbone`` (``torch.load(weights_only=True)``).
    """
    from asd_lib.backbones import load_backbone

    root = Path(system_dir).expanduser()
    if not root.is_dir():
        raise SystemLoadError(f"system folder not found: {root}. Export one with asd_lib.online.export_system "
                              "(or `python -m asd_lib.score --export ...`)")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise SystemLoadError(f"{root} is not an exported online system: manifest.json is missing. Export it "
                              "again with asd_lib.online.export_system")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as err:
        raise SystemLoadError(f"{mpath} is not valid JSON ({err}); the folder is damaged: export it again") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise SystemLoadError(f"{mpath}: format {manifest.get('format')!r} version "
                              f"{manifest.get('format_version')!r}; this asd_lib reads {FORMAT_NAME!r} version "
                              f"{FORMAT_VERSION}. Export the system again with this version of asd_lib")
    problems = []
    for rel, meta in sorted(manifest.get("files", {}).items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"missing file {rel}")
        elif file_sha256(f) != meta.get("sha256"):
            problems.append(f"hash mismatch for {rel} (changed or damaged since export)")
    for need in ("system.json", "calibration.json", "classes.json", "params.json"):
        if need not in manifest.get("files", {}):
            problems.append(f"the manifest does not list {need}")
    if problems:
        raise SystemLoadError(f"refusing to load {root}: " + "; ".join(problems)
                              + ". Copy the whole folder again or re-export the system")
    system = json.loads((root / "system.json").read_text())
    calib = json.loads((root / "calibration.json").read_text())
    cls = json.loads((root / "classes.json").read_text())
    classes, with_ch = list(cls["classes"]), bool(cls.get("classes_with_channel", True))
    scheme = manifest.get("label_scheme", {})
    if scheme.get("sha256") != _classes_digest(classes):
        raise SystemLoadError(f"{root}: classes.json does not match the label scheme in manifest.json")
    exp = _expected_classes(expected_classes, with_ch)
    if exp is not None and exp != classes:
        only_sys = sorted(set(classes) - set(exp))[:3]
        only_exp = sorted(set(exp) - set(classes))[:3]
        raise SystemLoadError(
            f"refusing to load {root}: it was built with another label scheme ({len(classes)} classes, "
            f"classes_with_channel={with_ch}) than the expected one ({len(exp)} classes). Only in the system: "
            f"{only_sys}; only expected: {only_exp}. Use a system fine-tuned on this data, or re-export")
    notes = []
    now = _versions()
    for k, v in manifest.get("versions", {}).items():
        if k in now and now[k] != v:
            notes.append(f"built with {k} {v}, running {now[k]}")
    if notes:
        msg = f"{root}: version differences: " + "; ".join(notes)
        if strict_versions:
            raise SystemLoadError(msg + " (strict_versions=True)")
        warnings.warn(msg + ". Scores may differ in the last digits", stacklevel=2)
    models = [ModelSpec(**m) for m in system["models"]]
    encoders = {}
    for spec in models:
        enc = load_backbone(root / spec.file, recipe=spec.recipe)
        encoders[spec.id] = enc.to(device).eval()
    scorers = {mc: {spec.id: {s: _load_scorer_of(root, spec.id, mc, s) for s in system["scorers"]}
                    for spec in models} for mc in system["machines"]}
    constants = {}
    for c in calib["z_constants"]:
        key = f"{c['machine']}|{c['model']}|{c['scorer']}" if "machine" in c else c["scorer"]
        constants[key] = (float(c["mean"]), float(c["std"]))
    params = json.loads((root / "params.json").read_text()).get("values", {})
    return OnlineSystem(models=models, encoders=encoders, scorers=scorers, scorer_ids=list(system["scorers"]),
                        constants=constants, thresholds={k: float(v) for k, v in
                                                         calib["decision"]["thresholds"].items()},
                        channel=system["channel"], pooling=system["pooling"], duration=system.get("duration"),
                        normalisation=calib["normalisation"], fusion=system["fusion"],
                        quantile=float(system.get("quantile", 0.9)), classes=classes, classes_with_channel=with_ch,
                        params=params, notes=notes, root=root, device=device)


def _load_scorer_of(root: Path, model: str, machine: str, scorer: str) -> Any:
    """The fitted scorer ``scorers/<model>/<machine>/<scorer>.{json,npz}`` of a system folder."""
    try:
        return load_scorer(root / "scorers" / model / machine / scorer)
    except (OSError, ValueError) as err:
        raise SystemLoadError(f"refusing to load {root}: {err}. Copy the whole folder again or re-export the "
                              "system") from None
