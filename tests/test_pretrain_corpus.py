"""Tests of asd_lib.pretrain.corpus: determinism over workers, breadth, no benchmark clip, no faults."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from asd_lib.pretrain import corpus
from asd_lib.pretrain.corpus import KINDS, SAMPLE_RATE, corpus_clip, generate_corpus
from asd_lib.synth import generate, room
from asd_lib.synth.machines import MACHINE_FN

INFO_KEYS = {"kind", "kinds", "machine", "mixed", "channel", "fault"}


def test_deterministic_whatever_the_workers():
    a, ia = generate_corpus(8, 1.0, seed=3, jobs=1)
    b, ib = generate_corpus(8, 1.0, seed=3, jobs=2)
    assert a.dtype == np.float32 and a.shape == (8, SAMPLE_RATE)
    assert a.tobytes() == b.tobytes() and ia == ib
    x, info = corpus_clip(3, 5, 1.0)
    assert x.tobytes() == a[5].tobytes() and info == ia[5]
    c, _ = generate_corpus(8, 1.0, seed=4, jobs=1)
    assert not np.array_equal(a, c)


def test_breadth_and_sanity():
    audio, infos = generate_corpus(60, 1.0, seed=0)
    assert np.isfinite(audio).all()
    peaks = np.abs(audio).max(axis=1)
    assert (peaks <= 1.0).all() and (peaks > 0.09).all()  # peak between -20 and -1 dBFS
    assert (np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=1)) > 1e-4).all()
    assert all(INFO_KEYS <= set(i) for i in infos)
    assert {k for i in infos for k in i["kinds"]} == set(KINDS)
    assert all(i["kind"] == i["kinds"][0] and i["mixed"] == (len(i["kinds"]) == 2) for i in infos)
    assert all(i["channel"] in (0, 1) for i in infos) and {i["channel"] for i in infos} == {0, 1}
    prim = Counter(i["kind"] for i in infos)
    assert 10 <= prim["machine"] <= 40 and 5 <= sum(i["mixed"] for i in infos) <= 35
    assert all((i["machine"] is not None) == ("machine" in i["kinds"]) for i in infos)


def test_room_conditions_have_the_benchmark_keys():
    bench = room.draw_conditions(np.random.default_rng(0), "source")
    assert set(corpus._ROOM) | {"hum"} == set(bench)
    for k in set(corpus._ROOM) & set(room.CONDITIONS["source"]):  # at least as wide as both benchmark domains
        vals = np.concatenate([np.atleast_1d(room.CONDITIONS[d][k]) for d in ("source", "target")])
        assert corpus._ROOM[k][0] <= vals.min() and corpus._ROOM[k][1] >= vals.max(), k


def test_no_corpus_clip_is_a_benchmark_clip(tmp_path):
    root = generate(tmp_path / "tiny", preset="tiny", seed=0)
    wavs = sorted(Path(root).rglob("*.wav"))
    bench = [sf.read(str(p), dtype="int16")[0] for p in wavs]
    n = Counter(b.shape[0] for b in bench).most_common(1)[0][0]  # the tiny clip length
    audio, _ = generate_corpus(24, n / SAMPLE_RATE, seed=0)
    assert audio.shape[1] == n
    heads = {b[:1000, ch].tobytes() for b in bench for ch in (0, 1)}
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    assert not any(x[:1000].tobytes() in heads for x in pcm)
    same = np.array([b[:, ch] for b in bench if b.shape[0] == n for ch in (0, 1)], np.float64)
    unit = lambda m: m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    assert len(same) > 100 and np.abs(unit(audio.astype(np.float64)) @ unit(same).T).max() < 0.99


def test_machines_never_get_a_fault(monkeypatch):
    calls = []
    for name, fn in list(MACHINE_FN.items()):
        def spy(rng, n, sr, attrs, domain, fault, sev, _fn=fn, _name=name):
            calls.append((_name, fault, sev, domain))
            return _fn(rng, n, sr, attrs, domain, fault, sev)
        monkeypatch.setitem(MACHINE_FN, name, spy)
    _, infos = generate_corpus(40, 0.5, seed=1)
    machines = [i for i in infos if "machine" in i["kinds"]]
    assert machines and len(calls) == len(machines)
    assert all(i["fault"] is None and i["machine"] in MACHINE_FN for i in machines)
    assert all(f is None and s == 0.0 and d in ("source", "target") for _, f, s, d in calls)
