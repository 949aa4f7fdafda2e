"""Tests of asd_lib.data: the name parser on all real 2026 names, class counts, scan(), load_clip() and errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_lib.data import (ADD_MACHINES, DEV_MACHINES, class_labels, class_name, load_clip, parse_name, scan)


def _real_names(tv_dir: Path) -> list[str]:
    names = []
    for f in ("train", "dev_test", "eval_test"):
        names += (tv_dir / "dcase2026_file_names" / f"{f}.txt").read_text().split()
    return names


@pytest.fixture(scope="module")
def real_manifest(tv_dir) -> pd.DataFrame:
    """All 14,400 real names parsed into manifest-like rows."""
    rows = []
    for path in _real_names(tv_dir):
        machine, split, base = path.split("/")
        c = parse_name(path)
        assert c.split == split and c.file_name == base
        rows.append(dict(machine=machine, section=c.section, domain=c.domain, split=c.split, label=c.label,
                         index=c.index, attributes=c.attributes, pairs=c.attribute_pairs))
    return pd.DataFrame(rows)


def test_parser_handles_every_real_name(real_manifest):
    df = real_manifest
    assert len(df) == 14400
    assert set(df.machine) == set(DEV_MACHINES) | set(ADD_MACHINES)
    assert (df.section == "00").all()
    train = df[df.split == "train"]
    assert (train.label == "normal").all()
    assert train.groupby(["machine", "domain"]).size().unstack().eq(pd.Series({"source": 990, "target": 10})).all().all()
    dev_test = df[(df.split == "test") & df.domain.notna()]
    assert (dev_test.groupby(["machine", "domain", "label"]).size() == 50).all()
    ev = df[df.domain.isna()]
    assert len(ev) == 1000 and (ev.label == "unknown").all() and (ev.attributes == "").all()
    assert set(ev.machine) == set(ADD_MACHINES)
    # quirks: ToyCar indices up to 0199, both pro_Y and pro_y in gearboxEmu target test
    assert dev_test[dev_test.machine == "ToyCar"]["index"].max() == 199
    gt = dev_test[(dev_test.machine == "gearboxEmu") & (dev_test.domain == "target")]
    assert {"pro_Y", "pro_y"} <= set(gt.attributes)


def test_parser_fields_and_pairs():
    c = parse_name("ToyCarEmu/train/section_00_source_train_normal_0012_car_B1_spd_2_mic_2_mic_1.wav")
    assert (c.section, c.domain, c.split, c.label, c.index) == ("00", "source", "train", "normal", 12)
    assert c.attributes == "car_B1_spd_2_mic_2_mic_1"
    assert c.attribute_pairs == (("car", "B1"), ("spd", "2"), ("mic", "2"), ("mic", "1"))
    c = parse_name("section_00_target_test_anomaly_0199_noAttribute.wav")
    assert (c.domain, c.label, c.index, c.attribute_pairs) == ("target", "anomaly", 199, ())
    c = parse_name("Sander/test/section_00_0123.wav")
    assert (c.domain, c.split, c.label, c.index, c.attributes) == (None, "test", "unknown", 123, "")


@pytest.mark.parametrize("bad", ["section_00_source_train_normal_0001.wav", "fan_0001.wav",
                                 "section_00_source_test_broken_0001_spd_1.wav", "section_00_0001.flac"])
def test_parser_rejects_unknown_patterns_naming_the_file(bad):
    with pytest.raises(ValueError, match="matches no DCASE"):
        parse_name(f"fan/test/{bad}")
    with pytest.raises(ValueError) as e:
        parse_name(bad)
    assert bad in str(e.value)


def test_class_counts_on_real_names(real_manifest):
    dev = real_manifest[real_manifest.machine.isin(DEV_MACHINES)]
    assert len(class_labels(dev, channels=False)) == 45
    labels = class_labels(dev)
    assert len(labels) == 90 and labels == sorted(labels)
    assert "ToyCarEmu_sec00_source_car_B1_spd_2_mic_2_mic_1_ch0" in labels
    assert len(class_labels(real_manifest, channels=False)) == 80
    assert len(class_labels(real_manifest)) == 160
    # test-only attribute values (pro_y) never become classes
    assert not any("pro_y" in lab for lab in labels)


def test_class_name_format():
    assert class_name("fan", "00", "source", "spd_1") == "fan_sec00_source_spd_1"
    assert class_name("fan", 0, "target", "spd_2", channel=1) == "fan_sec00_target_spd_2_ch1"


# ------------------------------------------------------------------------------------------- scan
def _wav(path: Path, channels: int = 2, n: int = 800, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(0).uniform(-0.5, 0.5, (n, channels))).astype(np.float32)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def _machine(root: Path, machine: str, eval_test: bool = False) -> None:
    _wav(root / machine / "train" / "section_00_source_train_normal_0000_spd_1.wav")
    _wav(root / machine / "train" / "section_00_target_train_normal_0000_spd_2.wav")
    if eval_test:
        _wav(root / machine / "test" / "section_00_0000.wav")
        _wav(root / machine / "test" / "section_00_0001.wav")
    else:
        _wav(root / machine / "test" / "section_00_source_test_anomaly_0007_spd_1.wav")
    lines = ["file_name,d1p,d1v", f"{machine}/train/section_00_source_train_normal_0000_spd_1.wav,spd,1",
             f"{machine}/train/section_00_target_train_normal_0000_spd_2.wav,spd,2"]
    (root / machine / "attributes_00.csv").write_text("\n".join(lines) + "\n")


def test_scan_flat_layout(tmp_path):
    _machine(tmp_path, "fan")
    df = scan(tmp_path)
    assert list(df.columns) == ["path", "file_name", "machine", "section", "domain", "split", "label", "index",
                                "attributes", "set"]
    assert len(df) == 3 and (df.set == "dev").all()
    assert Path(df.path[0]).is_absolute()
    row = df[df.split == "test"].iloc[0]
    assert (row.domain, row.label, row["index"], row.attributes) == ("source", "anomaly", 7, "spd_1")
    assert class_labels(df, channels=False) == ["fan_sec00_source_spd_1", "fan_sec00_target_spd_2"]


def test_scan_organisers_layout_with_ground_truth(tmp_path):
    _machine(tmp_path / "dev_data" / "raw", "fan")
    _machine(tmp_path / "eval_data" / "raw", "Sander", eval_test=True)
    df = scan(tmp_path)
    assert dict(df.groupby("set").size()) == {"dev": 3, "add": 2, "eval": 2}
    ev = df[df.set == "eval"]
    assert (ev.label == "unknown").all() and ev.domain.isna().all()
    gt = tmp_path / "gt"
    for kind, vals in (("data", ("1", "0")), ("domain", ("0", "1")),
                       ("attributes", ("section_00_source_test_anomaly_0003_spd_4_grit_60",
                                       "section_00_target_test_normal_0001_spd_1_grit_120"))):
        p = gt / f"ground_truth_{kind}" / "ground_truth_Sander_section_00_test.csv"
        p.parent.mkdir(parents=True)
        p.write_text(f"section_00_0000.wav,{vals[0]}\nsection_00_0001.wav,{vals[1]}\n")
    ev = scan(tmp_path, ground_truth=gt).query("set == 'eval'").set_index("file_name")
    assert ev.loc["section_00_0000.wav", ["label", "domain", "attributes"]].tolist() == ["anomaly", "source",
                                                                                        "spd_4_grit_60"]
    assert ev.loc["section_00_0001.wav", ["label", "domain"]].tolist() == ["normal", "target"]


def test_scan_missing_ground_truth_file_is_named(tmp_path):
    _machine(tmp_path / "data", "Sander", eval_test=True)
    (tmp_path / "gt").mkdir()
    with pytest.raises(FileNotFoundError, match="ground_truth_Sander_section_00_test.csv"):
        scan(tmp_path / "data", ground_truth=tmp_path / "gt")


def test_scan_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="empty") as e:
        scan(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_scan_misspelled_root_suggests(tmp_path):
    (tmp_path / "dev_data").mkdir()
    with pytest.raises(FileNotFoundError, match="Did you mean 'dev_data'") as e:
        scan(tmp_path / "dev_dta")
    assert "dev_dta" in str(e.value)


def test_scan_misspelled_machine_folder_suggests(tmp_path):
    _machine(tmp_path, "fan")
    _machine(tmp_path, "gearboxEmu")
    (tmp_path / "gearboxEmu").rename(tmp_path / "gearboxEnu")
    with pytest.raises(ValueError, match="Did you mean 'gearboxEmu'") as e:
        scan(tmp_path)
    assert "gearboxEnu" in str(e.value)


def test_scan_machine_without_train(tmp_path):
    _wav(tmp_path / "valveEmu" / "test" / "section_00_source_test_normal_0000_noAttribute.wav")
    with pytest.raises(FileNotFoundError, match="without train/") as e:
        scan(tmp_path)
    assert "valveEmu" in str(e.value)


def test_scan_bad_file_name_is_named(tmp_path):
    _machine(tmp_path, "fan")
    _wav(tmp_path / "fan" / "train" / "recording_01.wav")
    with pytest.raises(ValueError, match="recording_01.wav"):
        scan(tmp_path)


# --------------------------------------------------------------------------------------- load_clip
def test_load_clip_shapes_channels_and_duration(tmp_path):
    p = _wav(tmp_path / "a.wav", n=1600)
    x = load_clip(p)
    assert x.shape == (2, 1600) and x.dtype == np.float32
    ref, _ = sf.read(str(p), dtype="float32")
    np.testing.assert_array_equal(x[1], ref[:, 1])
    assert load_clip(p, channels=(1,)).shape == (1, 1600)
    assert load_clip(p, duration=0.05).shape == (2, 800)
    y = load_clip(p, duration=0.2)
    assert y.shape == (2, 3200) and not y[:, 1600:].any()


def test_load_clip_mono_where_stereo_asked(tmp_path):
    p = _wav(tmp_path / "mono.wav", channels=1)
    assert load_clip(p, channels=(0,)).shape == (1, 800)
    with pytest.raises(ValueError, match="expected a stereo file") as e:
        load_clip(p)
    assert "mono.wav" in str(e.value) and "got 1 channel" in str(e.value)


def test_load_clip_truncated_and_unreadable(tmp_path):
    p = _wav(tmp_path / "cut.wav", n=1600)
    b = p.read_bytes()
    p.write_bytes(b[:-1000])
    with pytest.raises(ValueError, match="truncated") as e:
        load_clip(p)
    assert "cut.wav" in str(e.value)
    q = tmp_path / "junk.wav"
    q.write_bytes(b"RIFF\x00\x00not really audio at all")
    with pytest.raises(ValueError, match="unreadable") as e:
        load_clip(q)
    assert "junk.wav" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nothing.wav"):
        load_clip(tmp_path / "nothing.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_clip_refuses_non_finite_samples(tmp_path, bad):
    x = np.zeros((1600, 2), np.float32)
    x[1234, 1] = bad  # a float WAV can hold NaN or inf; one sample must not train or score silently
    p = tmp_path / "nan.wav"
    sf.write(str(p), x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="non-finite") as e:
        load_clip(p)
    assert "nan.wav" in str(e.value) and "sample 1234" in str(e.value)
    assert load_clip(p, channels=(0,)).shape == (1, 1600)  # the clean channel alone is fine


def test_load_clip_resamples_with_warning(tmp_path):
    p = _wav(tmp_path / "hi.wav", n=4410, sr=44100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x = load_clip(p)
    assert any("hi.wav" in str(m.message) and "44100" in str(m.message) for m in w)
    assert x.shape == (2, 1600) and x.dtype == np.float32
