"""Online deployment: export a fitted online system to one folder, load it back, score one clip at a time.

The paper's online systems (DEV online, DEV+ADD online; paper section 3.3, docs/reference.md §7) give each
recording a score the moment it arrives, independently of every other recording. The batch pipeline computes
those scores for a whole test set at once (notebooks 02 -> 03a-d -> 04); this package bundles what a single clip
needs and reproduces the batch scores one clip at a time:

    export_system(out_dir, params)      results/<regime>/{checkpoints,embeddings,scores} -> one folder
    sys = load_system(out_dir)          checks the manifest (files, hashes, label scheme, versions), loads it
    sys.score_clip("fan/test/x.wav")    -> dict: file, machine, per-scorer calibrated scores, fused, decision,
                                           latency split into load / preprocess / encode / score

The command line around it is ``python -m asd_lib.score`` (one JSON line per clip, a ``--watch`` mode).

Exported folder (every file listed with its sha256 in manifest.json; the folder is built in a temporary
sibling and renamed into place, so a reader never sees half a system):

    manifest.json        format version, versions (asd_lib, torch, sklearn, numpy, ...), label scheme, file hashes,
                         the export-time verification (refit scorers vs the cached raw scores, see below)
    system.json          models (id, kind, fbank recipe, file), channel, pooling, scorers, machines, fusion rule
    params.json          the parameters the system was built with (the merged params/*.yaml values)
    classes.json         the class-label scheme the backbones were fine-tuned on (list of class names)
    calibration.json     z constants (mean, std) per scorer as the system uses them, decision threshold per machine
    backbones/<model>.pt the fine-tuned checkpoints, official format (byte copies of results/<regime>/checkpoints)
    scorers/<model>/<machine>/<scorer>.json, .npz   the fitted scorers incl. the AAU preprocessing, written by
                         ``asd_lib.scorer_io.save_scorer``: class, parameters and scalars in the JSON, arrays (the
                         autoencoder's weights among them) in the npz

How the exported scores stay equal to the batch ones. The embedding of a clip is computed exactly as
``asd_lib.embed.embed_paths`` does (same loader, same ``pool_tokens``, same channel mean); the scorers are the very
ones the scoring stage fitted on the TRAINING embeddings and stored next to its scores (``artifacts.fitted_path``),
copied byte for byte, and the export REFUSES to write a system whose stored scorers do not reproduce the cached raw
test scores. The z constants and the per-machine thresholds come from ``asd_lib.fusion`` (``z_constants`` and
``fuse_online``) over the same calibration scores.

Loading a folder does no unrestricted unpickling: the scorers are read with ``json`` and ``np.load(allow_pickle=False)``
(``asd_lib.scorer_io.load_scorer``), the checkpoints with ``torch.load(weights_only=True)`` (torch's restricted
loader: tensors and plain containers only, no fallback). The manifest hashes detect damage and partial copies; they
are not a signature (whoever can write the folder can rewrite them).

The package, one concern per file:

    common.py    folder format and version, audio limits (sample rate, shortest clip, silence), label-scheme digest
    system.py    the errors, ModelSpec, machine_from_path, OnlineSystem (read and check a clip, embed, score, save)
    load.py      load_system: the manifest checks, then the encoders and scorers
    export.py    export_system and its checks against the batch run, batch_online_scores, fusion_args_from

``import asd_lib.online`` does not import torch; what needs it (loading, exporting or saving a system, embedding a
clip) imports it when called.
"""
from __future__ import annotations

from .common import FORMAT_NAME, FORMAT_VERSION, MIN_SAMPLES, PATCH_FRAMES, SAMPLE_RATE, SILENCE_PEAK  # noqa: F401
from .export import batch_online_scores, export_system, fusion_args_from
from .load import load_system
from .system import ClipError, ExportError, ModelSpec, OnlineSystem, SystemLoadError, machine_from_path

__all__ = [
    "FORMAT_VERSION",
    "MIN_SAMPLES",
    "ClipError",
    "SystemLoadError",
    "ExportError",
    "ModelSpec",
    "OnlineSystem",
    "export_system",
    "load_system",
    "machine_from_path",
    "batch_online_scores",
    "fusion_args_from",
]
