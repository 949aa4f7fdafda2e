"""Generate the synthetic DCASE 2026 Task 2 benchmark in the organisers' layout.

Layout written (see the team contract):
    DIR/dev_data/raw/<dev machine>/{train,test}/*.wav + attributes_00.csv
    DIR/eval_data/raw/<add machine>/train/*.wav + attributes_00.csv, test/section_00_NNNN.wav
    DIR/ground_truth/ground_truth_{data,domain,attributes}/ground_truth_<machine>_section_00_test.csv
    DIR/summary.json, DIR/clip_info.csv (fault type, severity and acoustic conditions of every clip)
Every clip has its own numpy Generator seeded by (seed, machine, split, domain, label, index), so the
output is byte-identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import ADD_MACHINES, ALL_MACHINES
from .. import progress
from .. import logs
from ..fsutil import replace_dir, temp_dir
from . import room
from .machines import FAULT_GAIN, FAULTS, VOCAB, draw_operating_point, run_machine

SAMPLE_RATE = 16000
_DOMAINS = ("source", "target")
_LABELS = ("normal", "anomaly")


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: durations are the real ones times `scale`."""

    name: str
    scale: float           # clip length factor vs the real data (10 s, 12 s for toy cars; eval 6/10/16 s)
    n_train_source: int    # per machine
    n_train_target: int    # per machine
    n_test_group: int      # per machine and (domain, label) group, dev test and eval test alike


# The real data have 10 target training clips per machine, with every target attribute combination among them
# (tests/data/dcase2026_file_names/train.txt). `small` keeps that count rather than scaling it with the source
# clips: with fewer, some target combinations never occur in training (Sander kept 4 of its 9 with 4 clips), and the
# paper's KNN (k = 6, both domains pooled) must reach into the source clips for every target clip. `tiny` is a smoke
# preset and keeps 2.
PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 0.1, 12, 2, 6),
    "small": Preset("small", 0.2, 100, 10, 30),
    "dev-size": Preset("dev-size", 1.0, 990, 10, 50),
}
EVAL_LENGTHS_S = (6.0, 10.0, 16.0)
# Fault severity is log-uniform over this range: real faults span orders of magnitude, and most are mild (a
# slightly worn tooth is common, a broken one rare), so a detector must also catch the subtle ones.
SEVERITY = (0.1, 1.0)


def _code_version() -> str:
    """Hash of this package's source: a previous output is reused only if the generator is unchanged."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to synthesise and name one clip."""

    machine: str
    rel_path: str         # relative to DIR
    file_name: str
    split: str
    domain: str
    label: str
    index: int            # index in the dev-style name
    attributes: str
    n_samples: int
    key: tuple            # seed sequence entropy of the clip's Generator
    eval_name: str = ""   # 'section_00_NNNN.wav' for eval-style test clips


def dev_length_s(machine: str) -> float:
    """Real dev clip length: 12 s for the toy cars, 10 s otherwise."""
    return 12.0 if machine in ("ToyCar", "ToyCarEmu") else 10.0


def _kept_target(machine: str, preset: Preset, plan_rng: np.random.Generator) -> list[str]:
    """The target attribute combinations present in training (all when there are enough clips)."""
    vocab = VOCAB[machine]["target"]
    if preset.n_train_target >= len(vocab):
        return list(vocab)
    idx = np.sort(plan_rng.permutation(len(vocab))[: preset.n_train_target])
    return [vocab[i] for i in idx]


def plan_machine(machine: str, preset: Preset, seed: int) -> tuple[list[ClipSpec], dict]:
    """All clip specs of one machine and its plan facts (kept target combos, lengths)."""
    mi = ALL_MACHINES.index(machine)
    prng = np.random.default_rng([seed, mi, 7777])
    is_add = machine in ADD_MACHINES
    base = f"{'eval' if is_add else 'dev'}_data/raw/{machine}"
    n_dev = int(round(dev_length_s(machine) * preset.scale * SAMPLE_RATE))
    kept = _kept_target(machine, preset, prng)
    specs: list[ClipSpec] = []
    # training clips: source combos balanced (shuffled order), target combos cycled over the kept ones
    for d, (n, vocab) in enumerate(((preset.n_train_source, VOCAB[machine]["source"]), (preset.n_train_target, kept))):
        order = prng.permutation(np.arange(n) % len(vocab))
        for i in range(n):
            attr = vocab[order[i]]
            name = f"section_00_{_DOMAINS[d]}_train_normal_{i:04d}_{attr}.wav"
            specs.append(ClipSpec(machine, f"{base}/train/{name}", name, "train", _DOMAINS[d], "normal", i, attr,
                                  n_dev, (seed, mi, 0, d, 0, i)))
    # test clips: four balanced groups
    g = preset.n_test_group
    toy_idx = prng.permutation(4 * g) if machine in ("ToyCar", "ToyCarEmu") else None  # real quirk: 0..4g-1
    test = []
    for d, dom in enumerate(_DOMAINS):
        vocab = VOCAB[machine]["test_target"] if (dom == "target" and "test_target" in VOCAB[machine]) \
            else VOCAB[machine][dom]
        for lab_i, lab in enumerate(_LABELS):
            order = prng.permutation(np.arange(g) % len(vocab))
            for i in range(g):
                gi = d * 2 + lab_i
                idx = int(toy_idx[gi * g + i]) if toy_idx is not None else i
                test.append((dom, lab, idx, vocab[order[i]], (seed, mi, 1, d, lab_i, i)))
    if not is_add:
        for dom, lab, idx, attr, key in test:
            name = f"section_00_{dom}_test_{lab}_{idx:04d}_{attr}.wav"
            specs.append(ClipSpec(machine, f"{base}/test/{name}", name, "test", dom, lab, idx, attr, n_dev, key))
        lengths = [round(n_dev / SAMPLE_RATE, 3)]
    else:
        perm = prng.permutation(len(test))
        lens = prng.choice([int(round(s * preset.scale * SAMPLE_RATE)) for s in EVAL_LENGTHS_S], size=len(test))
        for j, (dom, lab, idx, attr, key) in enumerate(test):
            ev = f"section_00_{int(perm[j]):04d}.wav"
            dev_name = f"section_00_{dom}_test_{lab}_{idx:04d}_{attr}.wav"
            specs.append(ClipSpec(machine, f"{base}/test/{ev}", dev_name, "test", dom, lab, idx, attr,
                                  int(lens[j]), key, eval_name=ev))
        lengths = sorted({round(int(v) / SAMPLE_RATE, 3) for v in lens})
    used_src = sorted({s.attributes for s in specs if s.split == "train" and s.domain == "source"},
                      key=VOCAB[machine]["source"].index)
    facts = dict(kept_target=kept, all_target=list(VOCAB[machine]["target"]), source=used_src,
                 all_source=list(VOCAB[machine]["source"]),
                 train_length_s=round(n_dev / SAMPLE_RATE, 3), test_lengths_s=lengths)
    return specs, facts


def synth_clip(spec: ClipSpec) -> tuple[np.ndarray, dict]:
    """Synthesise one clip: int16 (n, 2) samples and its info row (fault, severity, conditions)."""
    rng = np.random.default_rng(list(spec.key))
    attrs = dict(zip(spec.attributes.split("_")[0::2], spec.attributes.split("_")[1::2])) \
        if spec.attributes != "noAttribute" else {}
    fault, sev = None, 0.0
    if spec.label == "anomaly":
        fault = str(rng.choice(FAULTS[spec.machine]))
        sev = float(min(1.0, draw_severity(rng) * FAULT_GAIN[spec.machine]))
    cond = room.draw_conditions(rng, spec.domain)
    op = draw_operating_point(rng)
    dry = run_machine(spec.machine, rng, spec.n_samples, SAMPLE_RATE, attrs, spec.domain, fault, sev, op)
    stereo = room.render(rng, dry, SAMPLE_RATE, cond)
    pcm = np.clip(np.round(stereo.T * 32767.0), -32768, 32767).astype(np.int16)
    info = dict(path=spec.rel_path, machine=spec.machine, split=spec.split, domain=spec.domain, label=spec.label,
                attributes=spec.attributes, fault=fault or "", severity=round(sev, 4),
                duration_s=round(spec.n_samples / SAMPLE_RATE, 4), rt60=round(cond["rt60"], 3),
                dist_m=round(cond["dist"], 3), snr_far_db=round(cond["snr_far"], 2),
                peak=round(float(np.abs(stereo).max()), 4))
    return pcm, info


def draw_severity(rng: np.random.Generator) -> float:
    """A fault's severity, log-uniform over SEVERITY."""
    lo, hi = np.log(SEVERITY)
    return float(np.exp(rng.uniform(lo, hi)))


def _write_chunk(args: tuple[str, list[ClipSpec]]) -> list[dict]:
    """Worker: synthesise and write a list of clips under a root folder."""
    import soundfile as sf

    root, specs = args
    rows = []
    for spec in specs:
        pcm, info = synth_clip(spec)
        path = Path(root) / spec.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        rows.append(info)
    return rows


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _write_metadata(root: Path, machine: str, specs: list[ClipSpec]) -> None:
    """attributes_00.csv in the organisers' format and, for eval-style tests, the ground-truth CSVs."""
    rows, width = [], 1
    for s in specs:
        if s.eval_name:
            rows.append([f"{machine}/test/{s.eval_name}"])
            continue
        pairs = [] if s.attributes == "noAttribute" else s.attributes.split("_")
        width = max(width, len(pairs) // 2)
        rows.append([f"{machine}/{s.split}/{s.file_name}"] + pairs)
    header = ["file_name"] + [f"d{i}{k}" for i in range(1, width + 1) for k in ("p", "v")]
    rows = [r + [""] * (len(header) - len(r)) for r in sorted(rows)]
    mdir = Path(root) / Path(specs[0].rel_path).parent.parent
    _write_csv(mdir / "attributes_00.csv", [header] + rows)
    ev = sorted((s for s in specs if s.eval_name), key=lambda s: s.eval_name)
    if ev:
        gt = Path(root) / "ground_truth"
        fn = f"ground_truth_{machine}_section_00_test.csv"
        _write_csv(gt / "ground_truth_data" / fn, [[s.eval_name, int(s.label == "anomaly")] for s in ev])
        _write_csv(gt / "ground_truth_domain" / fn, [[s.eval_name, int(s.domain == "target")] for s in ev])
        _write_csv(gt / "ground_truth_attributes" / fn, [[s.eval_name, s.file_name[:-4]] for s in ev])


def plan(preset: str = "tiny", seed: int = 0) -> tuple[list[ClipSpec], dict]:
    """All clip specs of a preset and the summary it would produce (nothing written)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    specs: list[ClipSpec] = []
    machines = {}
    for m in ALL_MACHINES:
        ms, facts = plan_machine(m, p, seed)
        specs += ms
        cnt = {}
        for s in ms:
            k = f"{s.split}_{s.domain}_{s.label}"
            cnt[k] = cnt.get(k, 0) + 1
        machines[m] = dict(set="add" if m in ADD_MACHINES else "dev", test_style="eval" if m in ADD_MACHINES else "dev",
                           counts=cnt, bytes=sum(44 + s.n_samples * 4 for s in ms), **facts)
    summary = dict(preset=p.name, seed=int(seed), code_version=_code_version(), sample_rate=SAMPLE_RATE,
                   channels=2, subtype="PCM_16", preset_sizes=asdict(p), n_files=len(specs),
                   disk_bytes=sum(v["bytes"] for v in machines.values()), machines=machines)
    return specs, summary


def summary_table(summary: dict) -> str:
    """A per-machine text table of a summary (counts per split/domain/label, lengths, attribute combos)."""
    import pandas as pd

    rows, notes = [], []
    for m, v in summary["machines"].items():
        c = v["counts"]
        rows.append(dict(machine=m, set=v["set"], tr_src=c.get("train_source_normal", 0),
                         tr_tgt=c.get("train_target_normal", 0),
                         te_sN=c.get("test_source_normal", 0), te_sA=c.get("test_source_anomaly", 0),
                         te_tN=c.get("test_target_normal", 0), te_tA=c.get("test_target_anomaly", 0),
                         test_names=v["test_style"], train_s=v["train_length_s"],
                         test_s="/".join(f"{x:g}" for x in v["test_lengths_s"]),
                         src_combos=f"{len(v['source'])}/{len(v['all_source'])}", tgt_combos=f"{len(v['kept_target'])}/{len(v['all_target'])}",
                         MB=round(v["bytes"] / 1e6, 1)))
        if len(v["source"]) < len(v["all_source"]):
            notes.append(f"  {m}: source training has {len(v['source'])} of {len(v['all_source'])} "
                         f"combinations: {', '.join(v['source'])}")
        if len(v["kept_target"]) < len(v["all_target"]):
            notes.append(f"  {m}: target training keeps {len(v['kept_target'])} of {len(v['all_target'])} "
                         f"combinations: {', '.join(v['kept_target'])}")
    df = pd.DataFrame(rows)
    out = [f"synthetic DCASE 2026 Task 2 benchmark: preset {summary['preset']}, seed {summary['seed']}, "
           f"{summary['n_files']} stereo 16 kHz PCM_16 files, {summary['disk_bytes'] / 1e6:.1f} MB "
           f"({summary['disk_bytes'] / 2**30:.2f} GiB) on disk",
           df.to_string(index=False)]
    if notes:
        out.append("classes: attribute combinations absent from training (test clips still use them):")
        out += notes
    dev = sum(len(v["source"]) + len(v["kept_target"]) for m, v in summary["machines"].items() if v["set"] == "dev")
    allc = sum(len(v["source"]) + len(v["kept_target"]) for v in summary["machines"].values())
    out.append(f"training classes (machine_sec_domain_attr): dev {dev} ({2 * dev} with channels), "
               f"dev+add {allc} ({2 * allc} with channels)")
    return "\n".join(out)


def _check_target(out: Path, preset: str, seed: int) -> dict | None:
    """None if `out` is absent or empty; the previous summary if `out` is our output of the same preset+seed."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder, got a file: {out}")
    if not any(out.iterdir()):
        return None
    sfile = out / "summary.json"
    prev = None
    if sfile.is_file():
        try:
            prev = json.loads(sfile.read_text())
        except (OSError, ValueError):
            prev = None
    if not prev or prev.get("preset") != preset or prev.get("seed") != int(seed):
        what = f"synthetic data of preset {prev.get('preset')!r}, seed {prev.get('seed')}" if prev else "other files"
        raise FileExistsError(
            f"refusing to write into {out}: it is not empty and holds {what}. "
            "Choose another --out folder, or delete this one."
        )
    return prev


def generate(out_dir: str | Path, preset: str = "tiny", seed: int = 0, jobs: int | None = None,
             force: bool = False) -> Path:
    """Write the synthetic benchmark into out_dir (atomically) and return its path.

    A folder already holding this preset+seed from the same generator code is reused unless `force`.
    """
    out = Path(out_dir).expanduser().absolute()
    specs, summary = plan(preset, seed)
    prev = _check_target(out, preset, seed)
    if prev is not None and not force and prev.get("code_version") == summary["code_version"]:
        return out
    tmp = temp_dir(out)
    try:
        if jobs is None:
            jobs = 1 if len(specs) < 800 else min(4, os.cpu_count() or 1)
        chunk = 40
        tasks = [(str(tmp), specs[i:i + chunk]) for i in range(0, len(specs), chunk)]
        bar = progress.bar(total=len(specs), desc=f"synth {preset}", unit="clip")
        if jobs > 1:  # spawn: the same behaviour on Linux, macOS and Windows (workers import this module)
            import multiprocessing as mp

            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
                results = []
                for res in ex.map(_write_chunk, tasks):
                    results.append(res)
                    bar.update(len(res))
        else:
            results = []
            for t in tasks:
                results.append(_write_chunk(t))
                bar.update(len(t[1]))
        bar.close()
        for m in ALL_MACHINES:
            _write_metadata(tmp, m, [s for s in specs if s.machine == m])
        info = [r for res in results for r in res]
        _write_csv(tmp / "clip_info.csv", [list(info[0])] + [list(r.values()) for r in info])
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m asd_lib.synth --out DIR --preset NAME --seed N."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m asd_lib.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output folder (created; must be empty or a previous output of this preset+seed)")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: up to 4)")
    ap.add_argument("--force", action="store_true", help="regenerate even if DIR already holds this output")
    ap.add_argument("--plan", action="store_true", help="print the summary (counts, disk size) without writing")
    a = ap.parse_args(argv)
    logs.configure()
    if a.plan:
        print(summary_table(plan(a.preset, a.seed)[1]))
        return 0
    if not a.out:
        ap.error("--out is required (or use --plan)")
    t0 = time.perf_counter()
    try:
        out = generate(a.out, a.preset, a.seed, jobs=a.jobs, force=a.force)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = json.loads((out / "summary.json").read_text())
    print(summary_table(summary))
    print(f"written to {out} in {time.perf_counter() - t0:.1f} s")
    return 0
