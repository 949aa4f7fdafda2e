"""The DCASE 2026 Task 2 data layer: file names, manifests, class labels and clip loading.

Facts used here (see docs/reference.md §1): the organisers' layout
``<root>/<machine>/{train,test}/*.wav`` with ``attributes_00.csv``; labelled names
``section_00_{source|target}_{train|test}_{normal|anomaly}_<NNNN>_<attributes>.wav``;
unlabelled evaluation names ``section_00_<NNNN>.wav`` whose labels ship as separate
ground-truth CSVs; stereo 16 kHz 16-bit audio, channel 0 = near mic, channel 1 = far mic.
Names are parsed by tokens, never by index ranges (ToyCar indices run to 0199, gearboxEmu
has both ``pro_Y`` and ``pro_y``).
"""
from __future__ import annotations

import csv
import difflib
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEV_MACHINES", "ADD_MACHINES", "ALL_MACHINES", "ClipName", "parse_name", "scan", "class_name",
    "class_labels", "load_clip", "NonFiniteAudioError", "MANIFEST_COLUMNS",
]

DEV_MACHINES: tuple[str, ...] = ("ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu")
ADD_MACHINES: tuple[str, ...] = ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander")
ALL_MACHINES: tuple[str, ...] = DEV_MACHINES + ADD_MACHINES

MANIFEST_COLUMNS = ["path", "file_name", "machine", "section", "domain", "split", "label", "index", "attributes", "set"]

_LABELLED = re.compile(
    r"^section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)_(?P<attributes>.+)\.wav$"
)
_EVAL = re.compile(r"^section_(?P<section>\d+)_(?P<index>\d+)\.wav$")
_NO_ATTRIBUTE = "noAttribute"


@dataclass(frozen=True)
class ClipName:
    """One parsed DCASE file name (see `parse_name`)."""

    file_name: str
    section: str
    domain: str | None
    split: str
    label: str
    index: int
    attributes: str
    attribute_pairs: tuple[tuple[str, str], ...]


def _pairs(attributes: str, where: str) -> tuple[tuple[str, str], ...]:
    """Split an attribute tail 'spd_1_grit_60' into (('spd','1'), ('grit','60')); 'noAttribute' -> ()."""
    if attributes in ("", _NO_ATTRIBUTE):
        return ()
    tokens = attributes.split("_")
    if len(tokens) % 2:
        raise ValueError(
            f"attribute tail {attributes!r} of {where} has an odd number of '_'-separated tokens; "
            "DCASE tails are key_value pairs (e.g. 'spd_1_grit_60') or 'noAttribute'. Rename the file."
        )
    return tuple((tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2))


def parse_name(file_name: str) -> ClipName:
    """Parse a DCASE 2026 file name (bare name or path) into its fields; ValueError naming it if it matches none."""
    base = str(file_name).replace("\\", "/").rsplit("/", 1)[-1]
    m = _LABELLED.match(base)
    if m:
        split, label = m["split"], m["label"]
        if split == "train" and label != "normal":
            raise ValueError(f"training file names are always '_normal_': {file_name}. Rename or move the file.")
        return ClipName(
            file_name=base, section=m["section"], domain=m["domain"], split=split, label=label,
            index=int(m["index"]), attributes=m["attributes"], attribute_pairs=_pairs(m["attributes"], base),
        )
    m = _EVAL.match(base)
    if m:
        return ClipName(file_name=base, section=m["section"], domain=None, split="test", label="unknown",
                        index=int(m["index"]), attributes="", attribute_pairs=())
    raise ValueError(
        f"file name matches no DCASE 2026 pattern: {file_name}. Expected "
        "'section_00_<source|target>_<train|test>_<normal|anomaly>_<NNNN>_<attributes>.wav' or "
        "'section_00_<NNNN>.wav'; rename the file or move it out of the data folder."
    )


def class_name(machine: str, section: str | int, domain: str, attributes: str, channel: int | None = None) -> str:
    """The paper's class label '{machine}_sec{NN}_{domain}_{attr}[_ch{c}]'."""
    sec = f"{int(section):02d}" if not isinstance(section, str) else section
    name = f"{machine}_sec{sec}_{domain}_{attributes}"
    return name if channel is None else f"{name}_ch{int(channel)}"


def class_labels(manifest: pd.DataFrame, channels: bool = True) -> list[str]:
    """Sorted class names built from the TRAIN rows of a manifest (x2 with '_ch0'/'_ch1' when channels)."""
    train = manifest[manifest["split"] == "train"]
    if train.empty:
        raise ValueError("the manifest has no training rows; class labels are built from training clips only")
    base = {class_name(r.machine, r.section, r.domain, r.attributes) for r in train.itertuples(index=False)}
    if not channels:
        return sorted(base)
    return sorted(f"{b}_ch{c}" for b in base for c in (0, 1))


# --------------------------------------------------------------------------------------------- scanning
def _suggest(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean X?' for close matches, else ''."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _read_attributes_csv(path: Path) -> dict[str, str]:
    """Map file name -> attribute string ('k_v_k_v' or '') from an organisers' attributes_00.csv."""
    out: dict[str, str] = {}
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read attribute file {path}: {err}. Re-download or regenerate it.") from err
    if not rows or rows[0][:1] != ["file_name"]:
        raise ValueError(f"{path} does not start with the header 'file_name,d1p,d1v,...'; is it an attributes_00.csv?")
    for row in rows[1:]:
        if not row:
            continue
        vals = [v for v in row[1:] if v != ""]
        out[row[0].replace("\\", "/").rsplit("/", 1)[-1]] = "_".join(vals)
    return out


def _read_gt(folder: Path, kind: str, machine: str, section: str) -> dict[str, str]:
    """Read one organisers' ground-truth CSV ('<eval name>,<value>', no header) into a dict."""
    path = folder / f"ground_truth_{kind}" / f"ground_truth_{machine}_section_{section}_test.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"ground-truth file missing: {path}. The folder given as ground_truth must hold "
            "ground_truth_data/, ground_truth_domain/ and ground_truth_attributes/ with one CSV per machine."
        )
    with open(path, newline="") as fh:
        return {row[0]: row[1] for row in csv.reader(fh) if row}


def _machine_dirs(raw: Path) -> list[Path]:
    """Machine folders under a folder of machine folders, with a clear error for misspellings and gaps."""
    subdirs = sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not subdirs:
        raise FileNotFoundError(
            f"no machine folders in {raw}. Point scan() at a folder of machine folders (e.g. 'fan/train/...') "
            "or at a folder holding dev_data/raw/ and/or eval_data/raw/ (the organisers' layout), "
            "or generate data with `python -m asd_lib.synth --out DIR`."
        )
    for d in subdirs:
        if d.name not in ALL_MACHINES:
            hint = _suggest(d.name, ALL_MACHINES)
            if hint:
                raise ValueError(f"unknown machine folder {d}.{hint} Rename the folder.")
        if not (d / "train").is_dir():
            has_test = (d / "test").is_dir()
            raise FileNotFoundError(
                f"machine folder without train/: {d}"
                + (" (it has test/ only)" if has_test else "")
                + ". Each machine needs train/ (download the development or additional training set into it)."
                + _suggest(d.name, ALL_MACHINES)
            )
    return subdirs


def _set_of(machine: str, clip: ClipName, raw_kind: str | None) -> str:
    """'dev' | 'add' | 'eval' for one clip, from the download folder kind and the machine."""
    if clip.domain is None:
        return "eval"
    if raw_kind == "dev":
        return "dev"
    if raw_kind == "eval" or machine in ADD_MACHINES:
        return "add"
    return "dev"


def scan(root: str | Path, ground_truth: str | Path | None = None) -> pd.DataFrame:
    """Manifest of every WAV under `root` (one row per file, columns MANIFEST_COLUMNS).

    `root`: a folder of machine folders, a single machine folder, or a folder holding dev_data/raw/ and/or
    eval_data/raw/. `ground_truth`: a folder with the organisers' ground_truth_{data,domain,attributes}/ CSVs;
    when given, unlabelled evaluation clips get their label, domain and attributes from it.
    """
    root = Path(root).expanduser()
    if not root.exists():
        parent = root.parent
        hint = _suggest(root.name, [p.name for p in parent.iterdir()] if parent.is_dir() else [])
        if not hint:
            hint = _suggest(root.name, ALL_MACHINES)
        raise FileNotFoundError(f"data root does not exist: {root}.{hint} Check the path.")
    if not root.is_dir():
        raise NotADirectoryError(f"data root is not a folder: {root}")
    groups: list[tuple[str | None, list[Path]]] = []
    raws = [(kind, root / f"{kind}_data" / "raw") for kind in ("dev", "eval")]
    if any(r.is_dir() for _, r in raws):
        for kind, r in raws:
            if r.is_dir():
                groups.append((kind, _machine_dirs(r)))
    elif (root / "train").is_dir() or (root / "test").is_dir():
        if not (root / "train").is_dir():
            raise FileNotFoundError(f"machine folder without train/: {root}. Each machine needs train/.")
        groups.append((None, [root]))
    else:
        if not any(root.iterdir()):
            raise FileNotFoundError(
                f"data root is empty: {root}. Download the DCASE 2026 Task 2 data into it, or generate the "
                "synthetic benchmark with `python -m asd_lib.synth --out DIR --preset small`."
            )
        groups.append((None, _machine_dirs(root)))

    gt_root = Path(ground_truth).expanduser() if ground_truth is not None else None
    if gt_root is not None and not gt_root.is_dir():
        raise FileNotFoundError(f"ground-truth folder does not exist: {gt_root}")
    rows: list[dict] = []
    for kind, mdirs in groups:
        for mdir in mdirs:
            machine = mdir.name
            attr_csv = mdir / "attributes_00.csv"
            attrs = _read_attributes_csv(attr_csv) if attr_csv.is_file() else {}
            gt_cache: dict[str, tuple[dict, dict, dict]] = {}
            for split in ("train", "test"):
                sdir = mdir / split
                if not sdir.is_dir():
                    continue
                for wav in sorted(sdir.glob("*.wav")):
                    clip = parse_name(wav.name)
                    if clip.split != split:
                        raise ValueError(f"{wav}: a '{clip.split}' file name inside {split}/; move the file.")
                    domain, label, attributes = clip.domain, clip.label, clip.attributes
                    if clip.domain is None:
                        attributes = attrs.get(wav.name, "")
                        if gt_root is not None:
                            if clip.section not in gt_cache:
                                gt_cache[clip.section] = tuple(
                                    _read_gt(gt_root, k, machine, clip.section) for k in ("data", "domain", "attributes"))
                            g_lab, g_dom, g_att = gt_cache[clip.section]
                            if wav.name not in g_lab or wav.name not in g_dom:
                                raise ValueError(f"{wav.name} of {machine} is missing from the ground truth in {gt_root}")
                            label = "anomaly" if g_lab[wav.name].strip() == "1" else "normal"
                            domain = "target" if g_dom[wav.name].strip() == "1" else "source"
                            if wav.name in g_att:
                                attributes = parse_name(g_att[wav.name].strip() + ".wav").attributes
                    rows.append(dict(path=str(wav.resolve()), file_name=wav.name, machine=machine,
                                     section=clip.section, domain=domain, split=split, label=label,
                                     index=clip.index, attributes=attributes, set=_set_of(machine, clip, kind)))
    if not rows:
        raise FileNotFoundError(f"no .wav files found under {root}; check that train/ and test/ hold the clips.")
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    order = {"dev": 0, "add": 1, "eval": 2}
    df = df.assign(_o=df["set"].map(order), _s=(df["split"] == "test").astype(int))
    df = df.sort_values(["_o", "machine", "_s", "file_name"], kind="stable").drop(columns=["_o", "_s"])
    return df.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ audio
class NonFiniteAudioError(ValueError):
    """A WAV (float format) holds NaN or infinite samples."""


def wav_truncation(path: Path) -> tuple[int, int] | None:
    """(declared, present) data bytes when a RIFF/WAVE file holds less audio than its header says, else None.

    libsndfile silently reads what is there, so a download cut short would go unnoticed without this check.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            cid, clen = struct.unpack("<4sI", fh.read(8))
            if cid == b"data":
                present = size - pos - 8
                if 0 < clen < 0xFFFFFFFF and present < clen:
                    return clen, present
                return None
            pos += 8 + clen + (clen & 1)
    return None


def wav_state(path: str | Path) -> str:
    """Whether a file is a finished WAV, judged from its RIFF header against its size.

    'complete'; 'recording' (size fields still 0 or 0xFFFFFFFF, as recorders write them until they close the file);
    'incomplete' (fewer bytes than the header declares: a copy or download still running, or cut short); 'other'
    (not RIFF/WAVE: left to the reader to refuse).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12:
            return "incomplete" if head and b"RIFF".startswith(head[:4]) else "other"
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return "other"
        riff = struct.unpack("<I", head[4:8])[0]
        if riff in (0, 0xFFFFFFFF):
            return "recording"
        if riff + 8 > size:
            return "incomplete"
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            cid, clen = struct.unpack("<4sI", fh.read(8))
            if cid == b"data":
                if clen in (0, 0xFFFFFFFF):
                    return "recording"
                return "complete" if size - pos - 8 >= clen else "incomplete"
            pos += 8 + clen + (clen & 1)
    return "incomplete"


def load_clip(
    path: str | Path,
    channels: Sequence[int] | int | None = (0, 1),
    sample_rate: int = 16000,
    duration: float | None = None,
) -> np.ndarray:
    """Read a WAV as float32 (C, T): pick `channels`, resample to `sample_rate` (with a warning), crop/pad to `duration` s."""
    import soundfile as sf  # heavy: keeps `import asd_lib.data` light

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile errors come in several classes
        raise ValueError(
            f"unreadable or truncated WAV: {path} ({err}). Re-download or regenerate the file."
        ) from err
    trunc = wav_truncation(path)
    if trunc is not None or (info.frames > 0 and data.shape[0] < info.frames):
        what = f"{trunc[1]} of the {trunc[0]} data bytes" if trunc else f"{data.shape[0]} of {info.frames} frames"
        raise ValueError(f"truncated WAV: {path} holds {what} its header announces. "
                         "Re-download or regenerate the file.")
    if data.shape[0] == 0:
        raise ValueError(f"empty or truncated WAV (no audio frames): {path}. Re-download or regenerate the file.")
    n_ch = data.shape[1]
    if channels is None:
        chans = tuple(range(n_ch))
    elif isinstance(channels, (int, np.integer)):
        chans = (int(channels),)
    else:
        chans = tuple(int(c) for c in channels)
    if not chans:
        raise ValueError("channels must name at least one channel, e.g. (0,) or (0, 1)")
    bad = [c for c in chans if c < 0 or c >= n_ch]
    if bad:
        word = "stereo" if max(chans) == 1 else f"{max(chans) + 1}-channel"
        raise ValueError(
            f"expected a {word} file (channel {bad[0]} asked), got {n_ch} channel{'s' if n_ch != 1 else ''}: {path}. "
            "Pass channels=(0,) to read a mono file, or use the two-channel DCASE 2026 data."
        )
    x = np.ascontiguousarray(data[:, list(chans)].T)
    if not np.isfinite(x).all():
        bad_at = int(np.argmax(~np.isfinite(x).all(axis=0)))
        raise NonFiniteAudioError(f"non-finite samples (NaN or inf) in {path}, first at sample {bad_at} "
                                  f"({bad_at / sr:.3f} s). Re-export or regenerate the file; it would train or "
                                  "score as garbage.")
    if sr != sample_rate:
        import torch  # heavy: only to resample
        import torchaudio.functional as AF

        warnings.warn(f"{path}: sample rate {sr} Hz, resampled to {sample_rate} Hz", stacklevel=2)
        x = AF.resample(torch.from_numpy(x), int(sr), int(sample_rate)).numpy().astype(np.float32, copy=False)
    if duration is not None:
        n = int(round(float(duration) * sample_rate))
        if n <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        if x.shape[1] >= n:
            x = x[:, :n]
        else:
            x = np.pad(x, ((0, 0), (0, n - x.shape[1])))
    return np.ascontiguousarray(x, dtype=np.float32)
