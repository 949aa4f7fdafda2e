"""Tests of asd_lib.online and asd_lib.score: export/load of a fitted online system, one-by-one scoring equal to
the batch pipeline, bad input, and the folder watcher.

A small DEV-online-shaped system is built once per module on the tiny synthetic preset (two machines): two BEATs
epochs of one tiny fine-tuning run + one tiny SSLAM, embeddings, KNN/AE/LDN scores and online fusion, each stage
called the way notebooks 01-04 call it; then it is exported and scored clip by clip through the exported folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from asd_lib import artifacts, fsutil, online, scorers  # noqa: E402
from asd_lib.fsutil import file_sha256  # noqa: E402
from asd_lib.online import ClipError, ExportError, SystemLoadError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MACHINES = ("fan", "valveEmu")
MODELS = ["beats@1", "beats@2", "sslam@1"]
SCORERS = ["knn", "ae", "ldn"]
TOL = 1e-5


def _params(results_dir: Path) -> dict:
    """Flat parameter values of the demo system (the keys of params/*.yaml that the export reads)."""
    return {"system": "dev_online", "regime": "dev", "results_dir": str(results_dir), "seed": 0,
            "ensemble": MODELS, "epoch_scale": 1.0, "sslam_recipe": "aau", "channel": "ch0", "pooling": "gem",
            "preprocess": "aau", "knn_k": 6, "gmm_components": 6, "ae_bottleneck": 32, "ae_epochs": 4,
            "ae_patience": 5, "ae_lr": 1e-3, "ae_batch_size": 64, "ldn_variant": "aau-gwrp", "ldn_r": 0.98,
            "ldn_k": 1, "fusion_mode": "online", "scorers": SCORERS, "fusion_pool": "min",
            "online_normalisation": "pooled", "online_decision": "calibration", "decision_quantile": 0.9}


@pytest.fixture(scope="module")
def demo(tiny_data, tmp_path_factory):
    """Batch run (fine-tune, embed, score, fuse online) + exported system; returns a dict of paths and results."""
    from asd_lib import params as P
    from asd_lib.data import scan
    from asd_lib.embed import extract_embeddings
    from asd_lib.finetune import finetune
    from asd_lib.fusion import fuse_online
    from asd_lib.scorers import score_embeddings, scorer_params_from

    warnings.filterwarnings("ignore", message="n_quantiles")
    base = tmp_path_factory.mktemp("online")
    vals = _params(base / "results")
    lay = artifacts.layout(vals["results_dir"], "dev")
    man = P.regime_manifest(scan(tiny_data), "dev")
    man = man[man["machine"].isin(MACHINES)].reset_index(drop=True)
    common = dict(duration=1.0, batch_size=16, warmup_epochs=1.0, amp=False, progress=False, verbose=False,
                  device="cpu", seed=0)
    finetune(man, "beats-tiny", lay.regime_dir, epochs=2, keep_epochs=[1, 2], backbone_id="beats", **common)
    finetune(man, "sslam-tiny", lay.regime_dir, epochs=1, keep_epochs=[1], backbone_id="sslam", recipe="aau",
             **common)
    for m in MODELS:
        extract_embeddings(man, lay.checkpoint(m), lay.embeddings, m, channel="ch0", pooling="gem",
                           recipe="aau" if m.startswith("sslam") else None, device="cpu", progress=False)
    sp = scorer_params_from(vals)
    for s in SCORERS:  # one call per scorer, as notebooks 03a-03d do
        score_embeddings(lay.embeddings, lay.scores, MODELS, channel="ch0", scorers=(s,), preprocess="aau", seed=0,
                         scorer_params={s: sp[s]})
    batch = fuse_online(lay.scores, MODELS, SCORERS, channel="ch0", normalisation="pooled",
                        decision="calibration", quantile=0.9, fusion="min")
    params_json = lay.system_dir / "params.json"
    params_json.parent.mkdir(parents=True, exist_ok=True)
    params_json.write_text(json.dumps({"values": vals, "sources": {}}))
    out = online.export_system(base / "system", params_json)
    return {"base": base, "vals": vals, "lay": lay, "man": man, "batch": batch, "system_dir": out,
            "data": Path(tiny_data)}


@pytest.fixture(scope="module")
def system(demo):
    """The exported system, loaded."""
    return online.load_system(demo["system_dir"])


def _test_clip(demo, machine: str, name: str) -> Path:
    return demo["data"] / "dev_data" / "raw" / machine / "test" / name


# ------------------------------------------------------------------------------------ equality with batch
def test_one_by_one_equals_batch(demo, system):
    """Every test clip scored alone through the exported folder gets the batch pipeline's online score."""
    lay = demo["lay"]
    n = 0
    for mc in MACHINES:
        df = demo["batch"][mc]
        cached = {(s, m): np.load(lay.scores / m / "ch0" / s / f"{mc}.npz") for s in SCORERS for m in MODELS}
        for i, (name, score, dec) in enumerate(zip(df["names"], df["score"], df["decision"])):
            res = system.score_clip(_test_clip(demo, mc, name))
            assert res["machine"] == mc  # from the folder <machine>/test/x.wav
            assert abs(res["fused"] - score) < TOL, (mc, name, res["fused"], score)
            if abs(score - df.attrs["threshold"]) > TOL:
                assert res["decision"] == dec, (mc, name)
            assert res["threshold"] == pytest.approx(df.attrs["threshold"], abs=1e-12)
            for (s, m), z in cached.items():
                j = list(z["names"]).index(name)
                assert res["raw"][s][m] == pytest.approx(z["test"][j], rel=1e-6, abs=1e-9), (s, m, name)
            assert set(res["scores"]) == set(SCORERS)
            assert min(res["scores"].values()) == pytest.approx(res["fused"], abs=1e-12)  # min fusion
            parts = res["latency_parts_ms"]
            assert set(parts) == {"load", "preprocess", "encode", "score"} and all(v >= 0 for v in parts.values())
            n += 1
    assert n == sum(len(demo["batch"][m]) for m in MACHINES) and n > 20


def test_export_contents_and_manifest(demo, system):
    """The folder holds backbones, scorers, calibration, params, classes; the manifest hashes every file."""
    d = demo["system_dir"]
    man = json.loads((d / "manifest.json").read_text())
    assert set(man["versions"]) >= {"asd_lib", "torch", "sklearn", "numpy"}
    files = set(man["files"])
    assert {f"backbones/{m}.pt" for m in MODELS} <= files
    assert {f"scorers/{m}/{mc}/{s}.{ext}" for m in MODELS for mc in MACHINES for s in SCORERS
            for ext in ("json", "npz")} <= files
    assert {"system.json", "params.json", "classes.json", "calibration.json"} <= files
    for rel, meta in man["files"].items():
        assert file_sha256(d / rel) == meta["sha256"]
    # the backbones are byte copies of the fine-tuning checkpoints (official format)
    assert (d / "backbones/beats@2.pt").read_bytes() == demo["lay"].checkpoint("beats@2").read_bytes()
    calib = json.loads((d / "calibration.json").read_text())
    assert {c["scorer"] for c in calib["z_constants"]} == set(SCORERS)
    assert set(calib["decision"]["thresholds"]) == set(MACHINES)
    assert man["verification"]["scorers_vs_cached_raw_test_scores_max_abs_diff"] <= 1e-9
    assert json.loads((d / "params.json").read_text())["values"]["ensemble"] == MODELS
    # the label scheme is that of the fine-tuning run: 2 machines' classes x 2 channels
    from asd_lib.data import class_labels

    assert system.classes == class_labels(demo["man"], channels=True)
    assert not list(d.parent.glob(f".{d.name}.tmp-*"))  # nothing half-written left behind


def test_load_refuses_damaged_or_foreign_systems(demo, tmp_path):
    """Missing file, changed file, other label scheme, no manifest: SystemLoadError with a clear message."""
    src = demo["system_dir"]
    bad = tmp_path / "sys"
    shutil.copytree(src, bad)
    (bad / "scorers/beats@1/fan/knn.npz").unlink()
    with pytest.raises(SystemLoadError, match=r"missing file scorers/beats@1/fan/knn\.npz"):
        online.load_system(bad)
    shutil.rmtree(bad)
    shutil.copytree(src, bad)
    with open(bad / "calibration.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(SystemLoadError, match="hash mismatch for calibration.json"):
        online.load_system(bad)
    with pytest.raises(SystemLoadError, match="another label scheme"):
        online.load_system(src, expected_classes=["fan_sec00_source_spd_1_ch0"])
    from asd_lib.data import class_labels

    assert online.load_system(src, expected_classes=demo["man"]).machines == list(MACHINES)
    with pytest.raises(SystemLoadError, match="another label scheme"):
        online.load_system(src, expected_classes=class_labels(demo["man"], channels=False))
    (bad / "manifest.json").unlink()
    with pytest.raises(SystemLoadError, match="manifest.json is missing"):
        online.load_system(bad)


def _rehash(folder: Path, rel: str) -> None:
    """Record the current sha256 of ``rel`` in the folder's manifest, as whoever edits a folder can."""
    man = json.loads((folder / "manifest.json").read_text())
    man["files"][rel]["sha256"] = file_sha256(folder / rel)
    (folder / "manifest.json").write_text(json.dumps(man))


def test_load_refuses_old_formats_and_unknown_scorer_classes(demo, tmp_path):
    """A folder of format version 1 (joblib scorers) is refused; so is a scorer file naming a class the kit does not
    know, even with the manifest hashes rewritten to match."""
    bad = tmp_path / "sys"
    shutil.copytree(demo["system_dir"], bad)
    man = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**man, "format_version": 1}))
    with pytest.raises(SystemLoadError, match=r"version 1; this asd_lib reads .* version 2\. Export the system"):
        online.load_system(bad)
    (bad / "manifest.json").write_text(json.dumps(man))
    rel = "scorers/sslam@1/valveEmu/ldn.json"
    doc = json.loads((bad / rel).read_text())
    doc["estimator"]["class"] = "builtins.eval"
    (bad / rel).write_text(json.dumps(doc))
    _rehash(bad, rel)
    with pytest.raises(SystemLoadError, match=r"ldn\.json: unknown scorer class 'builtins\.eval'"):
        online.load_system(bad)


def test_exported_folder_loads_without_pickle(demo, system, clips, monkeypatch):
    """The folder holds no pickle file, and loading it and scoring a clip work with every unpickling path
    (pickle.load/loads, joblib.load, np.load with allow_pickle=True, torch.load without weights_only) refused."""
    import pickle

    import joblib

    d = demo["system_dir"]
    assert not [p for p in d.rglob("*") if p.suffix in (".joblib", ".pkl", ".pickle")]
    want = system.score_clip(clips["good"])

    def refuse(*args, **kwargs):
        raise AssertionError("an exported system was read with pickle")

    np_load, torch_load, calls = np.load, torch.load, []

    def np_load_no_pickle(file, *args, **kwargs):
        if kwargs.get("allow_pickle", args[1] if len(args) > 1 else False):
            refuse()
        calls.append(("np.load", Path(file).suffix))
        return np_load(file, *args, **kwargs)

    def torch_load_weights_only(f, *args, **kwargs):
        if kwargs.get("weights_only") is not True:
            refuse()
        calls.append(("torch.load", Path(f).suffix))
        return torch_load(f, *args, **kwargs)

    for module, name in ((pickle, "load"), (pickle, "loads"), (joblib, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(np, "load", np_load_no_pickle)
    monkeypatch.setattr(torch, "load", torch_load_weights_only)
    loaded = online.load_system(d)
    got = loaded.score_clip(clips["good"])
    assert calls.count(("np.load", ".npz")) == len(MODELS) * len(MACHINES) * len(SCORERS)
    assert calls.count(("torch.load", ".pt")) == len(MODELS)
    assert got["fused"] == want["fused"] and got["raw"] == want["raw"]


def test_export_copies_the_scoring_stages_fitted_scorers_and_refits_nothing(demo, tmp_path, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("the export fitted a scorer")

    for cls in (scorers.AAUPreprocess, scorers.KNNScorer, scorers.GMMScorer, scorers.AEScorer, scorers.LDNScorer):
        monkeypatch.setattr(cls, "fit", no_fit)
    monkeypatch.setattr(scorers.autoencoder, "train_autoencoders", no_fit)  # AEScorer.fit and the stage look it up here
    out = online.export_system(tmp_path / "system", demo["vals"])
    for m in MODELS:
        for mc in MACHINES:
            for s in SCORERS:
                stored = demo["lay"].fitted(m, "ch0", s, mc)
                for ext in ("json", "npz"):
                    assert file_sha256(out / "scorers" / m / mc / f"{s}.{ext}") == \
                        file_sha256(stored.with_suffix(f".{ext}")), (m, mc, s, ext)


def test_export_refusals(demo, tmp_path):
    """Existing folder, offline or test-dependent systems, scorer parameters other than the cache's."""
    vals = demo["vals"]
    with pytest.raises(FileExistsError):
        online.export_system(demo["system_dir"], vals)
    with pytest.raises(ExportError, match="offline rank fusion"):
        online.export_system(tmp_path / "a", {**vals, "fusion_mode": "offline"})
    with pytest.raises(ExportError, match="TEST clips"):
        online.export_system(tmp_path / "b", {**vals, "online_decision": "aau-minmax"})
    with pytest.raises(ExportError, match="streaming"):
        online.export_system(tmp_path / "c", {**vals, "online_normalisation": "streaming"})
    with pytest.raises(ExportError, match=r"n_neighbors=6\) is not the one these params describe .*n_neighbors=3"):
        online.export_system(tmp_path / "d", {**vals, "knn_k": 3, "scorers": ["knn", "ldn"]})
    assert not (tmp_path / "d").exists()
    knn = demo["lay"].fitted("beats@1", "ch0", "knn", "fan")
    test_scores = demo["lay"].score("beats@1", "ch0", "knn", "fan")
    original = test_scores.read_bytes()
    try:  # the stored scorer and the score file are not from one run: refused, never re-fitted
        with np.load(test_scores) as z:
            fsutil.atomic_savez(test_scores, **{k: (z[k] + 1.0 if k == "test" else z[k]) for k in z.files})
        with pytest.raises(ExportError, match="does not reproduce the cached raw test scores"):
            online.export_system(tmp_path / "d2", vals)
    finally:
        test_scores.write_bytes(original)
    assert knn.with_suffix(".json").is_file()
    ckpt = demo["lay"].checkpoint("beats@1")
    original = ckpt.read_bytes()
    try:  # another run's checkpoint under the same name: the cached embeddings no longer belong to it
        ckpt.write_bytes(demo["lay"].checkpoint("beats@2").read_bytes())
        with pytest.raises(ExportError, match="were not made from"):
            online.export_system(tmp_path / "e", vals)
    finally:
        ckpt.write_bytes(original)
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def clips(demo, tmp_path_factory):
    """Good and bad clips under <tmp>/fan/..., built from one fan test clip."""
    d = tmp_path_factory.mktemp("clips")
    (d / "fan").mkdir()
    src = sorted((demo["data"] / "dev_data/raw/fan/test").glob("*.wav"))[0]
    x, sr = sf.read(src, dtype="float32")
    out = {"good": d / "fan" / "good.wav", "src": src}
    shutil.copy(src, out["good"])
    sf.write(d / "fan/mono.wav", x[:, 0], sr)
    t_new = np.arange(int(len(x) * 22050 / sr)) * sr / 22050
    sf.write(d / "fan/sr22050.wav", np.stack([np.interp(t_new, np.arange(len(x)), x[:, c]) for c in (0, 1)], 1),
             22050)
    sf.write(d / "fan/short.wav", x[: online.MIN_SAMPLES - 1], sr)
    sf.write(d / "fan/silent.wav", np.zeros_like(x), sr)
    y = x.copy()
    y[123, 0] = np.nan
    sf.write(d / "fan/nan.wav", y, sr, subtype="FLOAT")
    raw = src.read_bytes()
    (d / "fan/truncated.wav").write_bytes(raw[: len(raw) // 2])
    (d / "fan/notwav.wav").write_text("this is not audio\n")
    shutil.copy(src, d / "ToyDrone_x.wav")   # a machine the DEV system does not know
    shutil.copy(src, d / "mystery.wav")      # no machine in folder or name
    shutil.copy(src, d / "fan_prefixed.wav")  # machine from the name prefix
    out.update({p.stem: p for p in d.rglob("*.wav")})
    return out


@pytest.mark.parametrize("name,kind", [("short", "short"), ("silent", "silent"), ("nan", "nan"),
                                       ("truncated", "truncated"), ("notwav", "unreadable"),
                                       ("ToyDrone_x", "unknown-machine"), ("mystery", "unknown-machine")])
def test_bad_input_is_refused_clearly(system, clips, name, kind):
    """Each bad clip raises ClipError of its kind, naming the file."""
    with pytest.raises(ClipError) as err:
        system.score_clip(clips[name])
    assert err.value.kind == kind
    assert name in str(err.value)


def test_missing_file_and_unknown_machine_argument(system, clips):
    with pytest.raises(ClipError, match="not found") as err:
        system.score_clip(clips["good"].with_name("nope.wav"))
    assert err.value.kind == "missing"
    with pytest.raises(ClipError, match="unknown machine type 'ToyCar'"):
        system.score_clip(clips["good"], machine="ToyCar")


def test_mono_resampled_prefix_and_array_inputs(system, clips):
    """Mono (ch0 system) and 22.05 kHz clips are scored with a note; prefix names and arrays work."""
    ref = system.score_clip(clips["good"])
    assert ref["notes"] == []
    mono = system.score_clip(clips["mono"])
    assert any("mono" in n for n in mono["notes"])
    assert mono["fused"] == pytest.approx(ref["fused"], abs=1e-9)  # ch0 of the stereo clip is the mono clip
    res = system.score_clip(clips["sr22050"])
    assert any("resampled" in n for n in res["notes"]) and np.isfinite(res["fused"])
    assert abs(res["fused"] - ref["fused"]) < 0.5 * max(1.0, abs(ref["fused"]))  # same sound, close score
    assert system.score_clip(clips["fan_prefixed"])["fused"] == pytest.approx(ref["fused"], abs=1e-12)
    x, _ = sf.read(clips["src"], dtype="float32")
    arr = system.score_clip(x.T.copy(), machine="fan")
    assert arr["fused"] == pytest.approx(ref["fused"], abs=1e-9) and arr["file"] == "<array>"
    with pytest.raises(ClipError, match="needs machine"):
        system.score_clip(x.T.copy())


def test_machine_from_path():
    known = ["ToyCar", "ToyCarEmu", "fan"]
    assert online.machine_from_path("/d/fan/test/x.wav", known) == "fan"
    assert online.machine_from_path("/d/fan/x.wav", known) == "fan"
    assert online.machine_from_path("/d/in/ToyCarEmu_0001.wav", known) == "ToyCarEmu"
    assert online.machine_from_path("/d/in/ToyCar-0001.wav", known) == "ToyCar"
    assert online.machine_from_path("/d/in/fancy.wav", known) is None


# ------------------------------------------------------------------------------------------ CLI / watcher
def test_watch_in_process(system, clips, tmp_path, capsys):
    """watch(): files present and dropped in are scored once; a bad file does not stop it; timeout ends it."""
    from asd_lib.score import watch

    folder = tmp_path / "fan"
    folder.mkdir()
    shutil.copy(clips["good"], folder / "a.wav")
    shutil.copy(clips["notwav"], folder / "b.wav")
    shutil.copy(clips["mono"], folder / "c.wav")
    scored, failed = watch(system, folder, poll=0.05, settle=0.1, max_files=3, timeout=30)
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert (scored, failed) == (2, 1) and len(lines) == 3
    assert {Path(r["file"]).name for r in lines} == {"a.wav", "b.wav", "c.wav"}
    assert [r.get("error_kind") for r in lines if "error" in r] == ["unreadable"]
    t0 = time.monotonic()
    assert watch(system, folder, poll=0.05, settle=0.1, timeout=0.3, skip_existing=True) == (0, 0)
    assert time.monotonic() - t0 < 5


def test_cli_watcher_subprocess(demo, system, clips, tmp_path):
    """`python -m asd_lib.score --watch`: clips dropped into the folder are scored, a bad one does not stop it."""
    folder = tmp_path / "incoming" / "fan"
    folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "asd_lib.score", "--system-dir", str(demo["system_dir"]), str(clips["silent"]),
           "--watch", str(folder.parent), "--max-files", "3", "--timeout", "120", "--poll", "0.1", "--settle", "1.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    shutil.copy(clips["notwav"], folder / "1_bad.wav")
    shutil.copy(clips["good"], folder / "2_good.wav")
    raw = clips["good"].read_bytes()
    with open(folder / "3_slow.wav", "wb") as fh:  # written in two parts: scored only once complete
        fh.write(raw[: len(raw) // 2])
        fh.flush()
        time.sleep(0.3)
        fh.write(raw[len(raw) // 2:])
    out, err = proc.communicate(timeout=180)
    lines = [json.loads(s) for s in out.splitlines()]
    assert proc.returncode == 1, err  # some clips failed
    assert [Path(r["file"]).name for r in lines] == ["silent.wav", "1_bad.wav", "2_good.wav", "3_slow.wav"], err
    assert lines[0]["error_kind"] == "silent" and lines[1]["error_kind"] == "unreadable"
    ref = system.score_clip(clips["good"])
    for r in lines[2:]:
        assert "error" not in r, (r, err)
        assert r["machine"] == "fan" and r["decision"] in (0, 1)
        assert r["fused"] == pytest.approx(ref["fused"], abs=TOL)
        assert set(r["latency_parts_ms"]) == {"load", "preprocess", "encode", "score"}
    assert "silent clip" in err and "not a readable WAV" in err


def test_cli_bad_system_dir(tmp_path):
    from asd_lib.score import main

    assert main(["--system-dir", str(tmp_path / "none"), "x.wav"]) == 2
