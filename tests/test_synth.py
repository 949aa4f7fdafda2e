"""Tests of asd_lib.synth: vocabularies from the real names, layout and naming, determinism, channels, refusals."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_lib.data import ADD_MACHINES, ALL_MACHINES, DEV_MACHINES, class_labels, load_clip, parse_name, scan
from asd_lib.synth import FAULTS, PRESETS, VOCAB, generate, main, plan, synth_clip


def test_vocabularies_are_those_of_the_real_names(tv_dir):
    found: dict = {}
    for f in ("train", "dev_test"):
        for line in (tv_dir / "dcase2026_file_names" / f"{f}.txt").read_text().split():
            m = line.split("/")[0]
            c = parse_name(line)
            found.setdefault((m, c.split, c.domain), set()).add(c.attributes)
    for m in ALL_MACHINES:
        assert set(VOCAB[m]["source"]) == found[(m, "train", "source")], m
        assert set(VOCAB[m]["target"]) == found[(m, "train", "target")], m
        if m in DEV_MACHINES:
            assert set(VOCAB[m].get("test_target", VOCAB[m]["target"])) == found[(m, "test", "target")], m
            assert set(VOCAB[m]["source"]) == found[(m, "test", "source")], m
        assert FAULTS[m]


def test_layout_names_and_counts(tiny_data):
    root = Path(tiny_data)
    summary = json.loads((root / "summary.json").read_text())
    p = PRESETS["tiny"]
    assert summary["preset"] == "tiny" and summary["seed"] == 0
    man = scan(root)
    assert set(man.machine) == set(ALL_MACHINES)
    for m in DEV_MACHINES:
        assert (root / "dev_data" / "raw" / m / "attributes_00.csv").is_file()
    for m in ADD_MACHINES:
        assert (root / "eval_data" / "raw" / m / "attributes_00.csv").is_file()
        for kind in ("data", "domain", "attributes"):
            assert (root / "ground_truth" / f"ground_truth_{kind}" / f"ground_truth_{m}_section_00_test.csv").is_file()
    tr = man[man.split == "train"].groupby(["machine", "domain"]).size().unstack()
    assert (tr["source"] == p.n_train_source).all() and (tr["target"] == p.n_train_target).all()
    dev_test = man[(man.split == "test") & (man.set == "dev")]
    assert (dev_test.groupby(["machine", "domain", "label"]).size() == p.n_test_group).all()
    ev = man[man.set == "eval"]
    assert len(ev) == 4 * p.n_test_group * len(ADD_MACHINES) and (ev.label == "unknown").all()
    assert set(man[man.set == "add"].machine) == set(ADD_MACHINES)
    # the ground truth makes the eval split labelled again, balanced in the 4 groups
    lab = scan(root, ground_truth=root / "ground_truth")
    ev = lab[lab.set == "eval"]
    assert (ev.groupby(["machine", "domain", "label"]).size() == p.n_test_group).all()
    # class labels match the summary's kept combinations
    n_cls = sum(len(v["source"]) + len(v["kept_target"]) for v in summary["machines"].values())
    assert len(class_labels(man, channels=False)) == n_cls
    assert len(class_labels(man)) == 2 * n_cls


def test_attributes_csv_round_trip(tiny_data):
    root = Path(tiny_data)
    for m in ("ToyCarEmu", "Sander", "valveEmu"):
        base = root / ("eval_data" if m in ADD_MACHINES else "dev_data") / "raw" / m
        with open(base / "attributes_00.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0][:3] == ["file_name", "d1p", "d1v"]
        files = {r[0]: [v for v in r[1:] if v] for r in rows[1:]}
        wavs = sorted(base.glob("*/*.wav"))
        assert set(files) == {f"{m}/{w.parent.name}/{w.name}" for w in wavs}
        for w in wavs:
            c = parse_name(w.name)
            if c.domain is not None:
                expect = [] if c.attributes == "noAttribute" else c.attributes.split("_")
                assert files[f"{m}/{w.parent.name}/{w.name}"] == expect


def test_audio_format_lengths_and_channels(tiny_data):
    root = Path(tiny_data)
    man = scan(root)
    info = sf.info(man.path.iloc[0])
    assert (info.channels, info.samplerate, info.subtype) == (2, 16000, "PCM_16")
    toy = man[man.machine == "ToyCar"].path.iloc[0]
    assert sf.info(toy).frames == round(12 * 0.1 * 16000)
    ev_frames = {sf.info(p).frames for p in man[man.set == "eval"].path}
    assert ev_frames <= {round(s * 0.1 * 16000) for s in (6, 10, 16)} and len(ev_frames) >= 2
    corrs = []
    for p in man[man.machine.isin(["fan", "gearboxEmu", "Sander"])].path.iloc[::7]:
        x = load_clip(p)
        assert not np.array_equal(x[0], x[1])
        corrs.append(np.corrcoef(x[0], x[1])[0, 1])
    assert max(corrs) < 0.9  # the far mic is a different signal, not a copy


def test_anomalies_recorded_with_faults(tiny_data):
    info = pd.read_csv(Path(tiny_data) / "clip_info.csv", keep_default_na=False)
    assert ((info.label == "anomaly") == (info.fault != "")).all()
    an = info[info.label == "anomaly"]
    assert an.severity.between(0, 1).all() and an.severity.min() < 0.5  # some subtle faults
    assert info.peak.max() < 1.0  # no clipping
    for m in ALL_MACHINES:
        assert set(an[an.machine == m].fault) <= set(FAULTS[m])


def test_deterministic_bytes(tiny_data, tmp_path):
    """Re-synthesise every 8th clip (in other chunks than the original run) and all metadata: identical bytes."""
    from asd_lib.synth import core

    specs, _ = plan("tiny", 0)
    core._write_chunk((str(tmp_path), specs[3::8]))
    for m in ALL_MACHINES:
        core._write_metadata(tmp_path, m, [s for s in specs if s.machine == m])
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) > len(specs) // 8 + 12
    for rel in written:
        assert (Path(tiny_data) / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_seed_changes_audio():
    s0 = [s for s in plan("tiny", 0)[0] if s.machine == "fan"][0]
    s1 = [s for s in plan("tiny", 1)[0] if s.machine == "fan"][0]
    assert not np.array_equal(synth_clip(s0)[0], synth_clip(s1)[0])
    np.testing.assert_array_equal(synth_clip(s0)[0], synth_clip(s0)[0])


def test_refuses_foreign_or_other_preset_folders(tiny_data, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        generate(foreign, preset="tiny", seed=0)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="seed 0"):
        generate(tiny_data, preset="tiny", seed=3)
    stamp = (Path(tiny_data) / "summary.json").stat().st_mtime_ns
    assert generate(tiny_data, preset="tiny", seed=0) == Path(tiny_data).absolute()  # reused, not rewritten
    assert (Path(tiny_data) / "summary.json").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".*tmp*"))


def test_plan_sizes_and_cli_summary(capsys):
    _, dev = plan("dev-size", 0)
    fan = dev["machines"]["fan"]["counts"]
    assert fan["train_source_normal"] == 990 and fan["train_target_normal"] == 10
    assert sum(v for k, v in fan.items() if k.startswith("test")) == 200
    assert dev["machines"]["ToyCar"]["train_length_s"] == 12.0 and dev["machines"]["fan"]["train_length_s"] == 10.0
    assert dev["machines"]["Sander"]["test_lengths_s"] == [6.0, 10.0, 16.0]
    assert dev["disk_bytes"] > 4e9
    assert main(["--plan", "--preset", "small"]) == 0
    out = capsys.readouterr().out
    # small has the real 10 target clips per machine: every target combination is trained on, as in the real names
    assert "keeps" not in out and "BlowerDustCollector" in out
    assert "dev 45 (90 with channels), dev+add 80 (160 with channels)" in out
    assert main(["--plan", "--preset", "tiny"]) == 0
    assert "Sander: target training keeps 2 of 9" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown preset"):
        plan("huge")


def test_normal_recordings_of_one_setting_differ_as_real_ones_do(tiny_data):
    # operating point and background change per recording: the near-mic level of the normal training clips of one
    # machine and attribute setting spreads by more than 1.5 dB (sd); before these changes it was about 0.9 dB
    man = scan(tiny_data)
    tr = man[(man.split == "train") & (man.domain == "source") & man.machine.isin(DEV_MACHINES)]
    sds = []
    for _, g in tr.groupby(["machine", "attributes"]):
        if len(g) >= 4:
            level = [20 * np.log10(np.sqrt(np.mean(load_clip(p, channels=(0,)) ** 2))) for p in g.path]
            sds.append(np.std(level, ddof=1))
    assert len(sds) >= 5 and np.median(sds) > 1.5, sds


def test_operating_point_moves_the_machine_in_speed_and_level():
    from asd_lib.synth.machines import run_machine

    n, sr = 16000, 16000
    base = dict(speed=1.0, tilt=0.0, level_db=0.0)
    x0 = run_machine("fan", np.random.default_rng(1), n, sr, {"spd": "2"}, "source", None, 0.0, base)
    loud = run_machine("fan", np.random.default_rng(1), n, sr, {"spd": "2"}, "source", None, 0.0,
                       dict(base, level_db=6.0))
    assert np.allclose(loud, x0 * 10 ** (6 / 20))
    fast = run_machine("fan", np.random.default_rng(1), n, sr, {"spd": "2"}, "source", None, 0.0,
                       dict(base, speed=1.04))
    f = np.fft.rfftfreq(n, 1 / sr)
    band = (f > 80) & (f < 400)  # the blade-pass line of a 6-blade fan at speed 2 (about 108 Hz)
    peak = lambda x: f[band][np.argmax(np.abs(np.fft.rfft(x))[band])]  # noqa: E731
    assert 1.02 < peak(fast) / peak(x0) < 1.06  # every line moves up with the speed


def test_worker_processes_start_with_spawn_and_write_the_same_bytes(tiny_data, tmp_path):
    """Generation with worker processes (spawn, as on macOS and Windows) gives the one-process bytes."""
    from asd_lib.synth import generate

    out = generate(tmp_path / "tiny", preset="tiny", seed=0, jobs=2)
    wavs = sorted(p.relative_to(out) for p in out.rglob("*.wav"))
    assert wavs and all((Path(tiny_data) / rel).read_bytes() == (out / rel).read_bytes() for rel in wavs[::7])
