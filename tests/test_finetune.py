"""Tests of asd_lib.finetune: ArcFace logits, trainable sets by name, resume, logs, and a real fine-tuning run."""
from __future__ import annotations

import collections
import csv
import json
import math

import numpy as np
import pytest
import torch

from asd_lib.finetune import (ArcFaceHead, SoftmaxHead, apply_trainable, finetune, load_head, switch_overrides,
                              trainable_names)

backbones = pytest.importorskip("asd_lib.backbones")


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dev_manifest(tiny_data):
    """The dev part (labelled train + test) of the tiny preset."""
    from asd_lib.data import scan

    man = scan(tiny_data)
    return man[man["set"] == "dev"].reset_index(drop=True)


def _meta_encoder(name: str):
    """A named configuration built on the meta device (names and shapes only, no memory, no init)."""
    kind, cfg = backbones.NAMED_CONFIGS[name]
    cls = backbones.BEATsEncoder if kind == "beats" else backbones.EATEncoder
    with torch.device("meta"):
        return cls(dict(cfg))


def _read_log(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# -------------------------------------------------------------------------------------------- ArcFace


def _direct_arcface(emb: np.ndarray, w: np.ndarray, labels: np.ndarray, s: float, m: float) -> np.ndarray:
    """ArcFace logits written out from the formula, in float64."""
    c = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    c = np.clip(c, -1.0, 1.0)
    out = s * c
    for i, y in enumerate(labels):
        theta = math.acos(c[i, y])
        if theta + m <= math.pi:  # cos(theta) > cos(pi - m): the margin applies
            out[i, y] = s * math.cos(theta + m)
        else:  # fall-back, keeps the target logit decreasing in theta
            out[i, y] = s * (c[i, y] - m * math.sin(math.pi - m))
    return out


def test_arcface_logits_match_direct_formula_including_fallback():
    g = torch.Generator().manual_seed(0)
    n_classes, dim, batch, s, m = 9, 24, 90, 64.0, 0.2
    head = ArcFaceHead(dim, n_classes, s=s, m=m).double()  # float64: the comparison checks the formula
    with torch.no_grad():
        head.weight.copy_(torch.randn(n_classes, dim, generator=g, dtype=torch.float64))
    emb = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_classes, (batch,), generator=g)
    k = batch // 3  # a third nearly opposite their class weight: theta + m > pi, the fall-back region
    emb[:k] = -head.weight.detach()[labels[:k]] + 0.03 * torch.randn(k, dim, generator=g)
    emb[k:k + 5] = head.weight.detach()[labels[k:k + 5]]  # theta = 0 exactly: the sqrt must stay finite
    emb.requires_grad_(True)
    logits, cos = head(emb, labels)
    expected = _direct_arcface(emb.detach().double().numpy(), head.weight.detach().double().numpy(),
                               labels.numpy(), s, m)
    theta = np.arccos(np.clip(cos.detach().double().numpy()[np.arange(batch), labels.numpy()], -1, 1))
    fallback = theta + m > math.pi
    assert fallback.sum() >= 10 and (~fallback).sum() >= 10
    # atol: the guard sin >= 1e-6 (clamp of 1 - cos^2) moves theta = 0 logits by s * m * 1e-6 = 1.3e-5
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=0, atol=1e-4)
    # the fall-back really differs from cos(theta + m) there, so the check above can fail
    naive = s * np.cos(theta[fallback] + m)
    assert np.abs(naive - expected[np.arange(batch), labels.numpy()][fallback]).min() > 0.1
    # no margin without labels, and finite gradients everywhere
    np.testing.assert_allclose(head(emb)[0].detach().numpy(), s * cos.detach().numpy(), atol=1e-9)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    head32, emb32 = head.float(), emb.detach().float().requires_grad_(True)  # float32 at theta = 0: still finite
    torch.nn.functional.cross_entropy(head32(emb32, labels)[0], labels).backward()
    assert torch.isfinite(emb32.grad).all()


def test_softmax_head_is_plain_linear():
    head = SoftmaxHead(8, 5)
    x = torch.randn(4, 8)
    logits, same = head(x, torch.zeros(4, dtype=torch.long))
    assert torch.equal(logits, same) and logits.shape == (4, 5)
    torch.testing.assert_close(logits, x @ head.weight.T + head.fc.bias)


# -------------------------------------------------------------------------------------- trainable sets


def _layer_names(names, prefix, layers):
    return {n for n in names for i in layers if n.startswith(f"{prefix}.{i}.")}


def test_trainable_sets_beats_base_by_name():
    enc = _meta_encoder("beats-base")
    names = [n for n, _ in enc.named_parameters()]
    bias = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    assert bias in names and sum("relative_attention_bias" in n for n in names) == 1  # shared: listed once
    top4 = _layer_names(names, "encoder.layers", range(8, 12))
    assert len(top4) == 4 * 19  # q,k,v,out (8) + grep_linear (2) + grep_a + 2 LayerNorms (4) + fc1, fc2 (4)
    authors = top4 | {"layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight", "post_extract_proj.bias",
                      bias}
    assert set(trainable_names(enc, "aau-beats")) == authors
    assert set(trainable_names(enc, "aau")) == authors
    assert set(trainable_names(enc, "top_k")) == top4  # the paper text's set: no patch LN, no shared bias
    assert set(trainable_names(enc, "top_k", top_k=2)) == _layer_names(names, "encoder.layers", (10, 11))
    assert trainable_names(enc, "frozen") == []
    assert set(trainable_names(enc, "all")) == set(names)
    for frozen in ("patch_embedding.weight", "encoder.pos_conv.0.weight_g", "encoder.layer_norm.weight",
                   "encoder.layers.7.fc1.weight", "encoder.layers.0.self_attn.q_proj.weight"):
        assert frozen not in authors


def test_trainable_sets_sslam_base_by_name():
    enc = _meta_encoder("sslam-base")
    names = [n for n, _ in enc.named_parameters()]
    top10 = _layer_names(names, "blocks", range(2, 12))
    assert set(trainable_names(enc, "top_k")) == top10
    assert set(trainable_names(enc, "aau")) == top10
    assert not any(n.startswith(("blocks.0.", "blocks.1.", "local_encoder", "context_encoder", "extra_tokens"))
                   for n in top10)
    assert set(trainable_names(enc, "all")) == set(names) - {"fixed_positional_encoder.positions"}
    with pytest.raises(ValueError, match="BEATs set"):
        trainable_names(enc, "aau-beats")
    with pytest.raises(ValueError, match="trainable must be one of"):
        trainable_names(enc, "top4")


def test_trainable_sets_tiny_backbones_and_requires_grad():
    beats = backbones.load_backbone("beats-tiny")
    names = [n for n, _ in beats.named_parameters()]
    chosen = apply_trainable(beats, "aau-beats")  # 3 layers: "top 4" is all of them
    expected = (_layer_names(names, "encoder.layers", range(3)) | {"layer_norm.weight", "layer_norm.bias",
                                                                  "post_extract_proj.weight",
                                                                  "post_extract_proj.bias"})
    assert set(chosen) == expected
    assert {n for n, p in beats.named_parameters() if p.requires_grad} == expected
    sslam = backbones.load_backbone("sslam-tiny")
    assert set(apply_trainable(sslam, "aau")) == _layer_names([n for n, _ in sslam.named_parameters()], "blocks",
                                                              range(3))


def test_switch_overrides_name_cfg_fields():
    beats = backbones.load_backbone("beats-tiny")
    assert switch_overrides(beats, dropout=True, layerdrop=True, grad_decay=True) == {}
    off = switch_overrides(beats, dropout=False, layerdrop=False, grad_decay=False)
    assert off == {"dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0, "encoder_layerdrop": 0.0,
                   "layer_wise_gradient_decay_ratio": 1.0}  # activation_dropout is already 0 in the cfg


# ------------------------------------------------------------------------------------ runs on data

_FAST = dict(duration=1.0, batch_size=8, warmup_epochs=0.5, lr_backbone=1e-3, lr_head=1e-2, progress=False,
             verbose=False)


def test_resume_after_crash_equals_uninterrupted(dev_manifest, tmp_path):
    # dropout, layer-drop and gradient decay on (RNG state must be restored); every augmentation on (waveform
    # noise at the authors' 15-35 dB SNR, p 0.3: no fbank cache); gradient accumulation
    kw = dict(_FAST, machines=["fan", "valveEmu"], epochs=2, accum=2, time_shift=0.2, fbank_noise_std=0.1,
              noise_snr_db=(15, 35), noise_prob=0.3, seed=3, save_every_steps=2, keep_epochs=[1])
    ref = finetune(dev_manifest, "beats-tiny", tmp_path / "a", **kw)
    # 56 samples / 8 = 7 micro-batches = 4 optimiser steps per epoch; the state saved at step 6 is mid-epoch 2
    with pytest.raises(RuntimeError, match="test hook"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "b", _crash_after_step=7, **kw)
    state = torch.load(tmp_path / "b/checkpoints/beats/last.pt", weights_only=False)
    assert (state["epoch"], state["micro"], state["global_step"]) == (2, 4, 6)
    got = finetune(dev_manifest, "beats-tiny", tmp_path / "b", **kw)
    for epoch in (1, 2):
        a = torch.load(ref / f"epoch_{epoch:03d}.pt", weights_only=True)["model"]
        b = torch.load(got / f"epoch_{epoch:03d}.pt", weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch} differs"
    ha, hb = load_head(ref / "epoch_002.head.pt")[0], load_head(got / "epoch_002.head.pt")[0]
    assert torch.equal(ha.weight, hb.weight)
    la, lb = _read_log(ref / "log.csv"), _read_log(got / "log.csv")
    assert [(r["loss"], r["accuracy"], r["lr_head"]) for r in la] == [(r["loss"], r["accuracy"], r["lr_head"])
                                                                     for r in lb]
    # the aau-beats set trained exactly its parameters; the rest is bit-identical to the pre-trained encoder
    start = backbones.load_backbone("beats-tiny").state_dict()
    changed = {k for k in a if not torch.equal(a[k], start[k])}
    assert {k for k in changed if "relative_attention_bias" not in k} == {
        k for k in a if k.startswith(("encoder.layers.", "layer_norm.", "post_extract_proj."))
        and "relative_attention_bias" not in k}
    assert all(f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" in changed for i in range(3))
    assert not any(k.startswith(("patch_embedding", "encoder.pos_conv", "encoder.layer_norm")) for k in changed)
    # a resume with other settings is refused
    with pytest.raises(ValueError, match="other settings"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "b", **{**kw, "lr_head": 5e-3})


def test_a_run_on_regenerated_clips_is_not_resumed_nor_its_fbank_reused(rerecordable, tmp_path):
    # the same file names with new contents (a regenerated benchmark): classes and settings match, the clips do not
    copy, rerecord = rerecordable
    man = copy("fan")
    kw = dict(_FAST, machines=["fan"], epochs=1)
    finetune(man, "beats-tiny", tmp_path / "run", **kw)
    cache = next((tmp_path / "run" / "fbank").rglob("*.npy"))
    before = np.load(cache).copy()
    rerecord(man)
    with pytest.raises(ValueError, match="other training clips"):
        finetune(man, "beats-tiny", tmp_path / "run", **kw)
    finetune(man, "beats-tiny", tmp_path / "run", **{**kw, "resume": False})
    after = np.load(cache)
    assert not np.array_equal(after[0], before[0]) and np.array_equal(after[1:], before[1:])


def test_checkpoints_logs_and_cache(dev_manifest, tmp_path):
    kw = dict(_FAST, machines=["fan"], epochs=3, keep_epochs=[1], head="softmax", trainable="top_k", top_k=1,
              dropout=False, layerdrop=False)
    ckpt = finetune(dev_manifest, "sslam-tiny", tmp_path, backbone_id="sslam", recipe="aau", **kw)
    assert ckpt == tmp_path / "checkpoints" / "sslam"
    assert sorted(p.name for p in ckpt.glob("epoch_*.pt")) == ["epoch_001.head.pt", "epoch_001.pt",
                                                               "epoch_003.head.pt", "epoch_003.pt"]
    rows = _read_log(ckpt / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "lr_backbone", "lr_head", "seconds"}
    assert float(rows[-1]["lr_head"]) == 0.0 and float(rows[0]["lr_head"]) > 0  # cosine decays to zero
    enc = backbones.load_backbone(str(ckpt / "epoch_003.pt"))  # official format, loads back
    assert enc.kind == "eat"
    head, classes = load_head(ckpt / "epoch_003.head.pt")
    from asd_lib.data import class_labels

    assert isinstance(head, SoftmaxHead)
    assert classes == class_labels(dev_manifest[dev_manifest["machine"] == "fan"], channels=True)
    assert all(c.startswith("fan_sec00_") and c.endswith(("_ch0", "_ch1")) for c in classes)
    cache = sorted((tmp_path / "fbank").rglob("*.npy"))
    assert [p.parent.name for p in cache] == ["aau"] and len(cache) == 1
    mtime = cache[0].stat().st_mtime_ns
    finetune(dev_manifest, "sslam-tiny", tmp_path, backbone_id="sslam", recipe="aau", resume=False, **kw)
    assert cache[0].stat().st_mtime_ns == mtime  # the regime's cache was reused, not rewritten


def test_frozen_run_writes_the_pretrained_encoder(dev_manifest, tmp_path):
    ckpt = finetune(dev_manifest, "beats-tiny", tmp_path, trainable="frozen", epochs=0, **_FAST)
    saved = torch.load(ckpt / "epoch_000.pt", weights_only=True)
    start = backbones.load_backbone("beats-tiny")
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in saved["model"].items())
    assert saved["cfg"]["encoder_layerdrop"] == start.cfg["encoder_layerdrop"]


def test_waveform_noise_snr():
    from asd_lib.finetune import add_wave_noise

    wave = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    noisy = add_wave_noise(wave, np.random.default_rng(0), 0.0, (20.0, 20.0), 1.0)
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
    assert abs(snr - 20.0) < 0.3 and noisy.dtype == np.float32
    kept = [add_wave_noise(wave, np.random.default_rng(s), 0.0, (15, 35), 0.3) is wave for s in range(200)]
    assert 0.6 < np.mean(kept) < 0.8  # applied with probability 0.3


def _class_separation(encoder, rows) -> tuple[float, float]:
    """Leave-one-out 1-NN class accuracy and cosine silhouette of ch0 mean-pooled embeddings (classes >= 2 clips)."""
    from sklearn.metrics import silhouette_score

    from asd_lib.data import class_name
    from asd_lib.embed import embed_paths

    y = np.array([class_name(r.machine, r.section, r.domain, r.attributes) for r in rows.itertuples()])
    count = collections.Counter(y)
    keep = np.array([count[v] >= 2 for v in y])
    e = embed_paths(encoder, rows["path"].tolist(), "ch0", "mean", 1.0, progress=False)[keep]
    y = y[keep]
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = en @ en.T
    np.fill_diagonal(sim, -np.inf)
    return float((y[sim.argmax(1)] == y).mean()), float(silhouette_score(e, y, metric="cosine"))


@pytest.mark.slow
def test_finetuning_lowers_loss_and_separates_classes(dev_manifest, tmp_path):
    kw = dict(_FAST, epochs=6, lr_backbone=2e-3, lr_head=2e-2, train_channels=(0,), classes_with_channel=False,
              keep_epochs=[0])
    ckpt = finetune(dev_manifest, "beats-tiny", tmp_path, **kw)
    rows = _read_log(ckpt / "log.csv")
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
    assert float(rows[-1]["accuracy"]) > float(rows[0]["accuracy"]) + 0.2
    train = dev_manifest[dev_manifest["split"] == "train"].sort_values("file_name")
    before = _class_separation(backbones.load_backbone(str(ckpt / "epoch_000.pt")), train)
    after = _class_separation(backbones.load_backbone(str(ckpt / "epoch_006.pt")), train)
    print(f"1-NN accuracy {before[0]:.3f} -> {after[0]:.3f}; silhouette {before[1]:.3f} -> {after[1]:.3f}")
    # measured (seed 0): silhouette 0.132 -> 0.256 (+0.124), 1-NN 0.688 -> 0.787; the margin asked is 0.05
    assert after[1] - before[1] > 0.05
    assert after[0] >= before[0]


def test_select_on_test_is_opt_in_and_labelled_leaky(dev_manifest, tmp_path):
    kw = dict(_FAST, machines=["fan"], epochs=2, keep_epochs=[], dropout=False, layerdrop=False)
    fixed = finetune(dev_manifest, "beats-tiny", tmp_path / "fixed", **kw)
    assert "leaky_test_score" not in _read_log(fixed / "log.csv")[0]
    assert not (fixed / "selected_on_test_LEAKY.json").exists()
    with pytest.raises(ValueError, match="epoch_selection"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "x", epoch_selection="best", **kw)
    leaky = finetune(dev_manifest, "beats-tiny", tmp_path / "leaky", epoch_selection="select-on-test-leaky", **kw)
    rows = _read_log(leaky / "log.csv")
    scores = [float(r["leaky_test_score"]) for r in rows]
    assert all(0.0 < s <= 1.0 for s in scores)
    import json

    sel = json.loads((leaky / "selected_on_test_LEAKY.json").read_text())
    assert sel["epoch"] == 1 + int(np.argmax(scores)) and "leak" in sel["warning"]
    assert sel["epochs"] == [sel["epoch"]]  # as many as the run keeps (at least one), best first
    assert (leaky / f"epoch_{sel['epoch']:03d}.pt").exists() and (leaky / "epoch_002.pt").exists()


def test_cli_explains_every_option_and_refuses_a_bad_path_without_a_traceback(tmp_path, capsys):
    from asd_lib.finetune.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    options = [ln.split()[0] for ln in text.splitlines() if ln.startswith("  --")]
    assert len(options) >= 30
    blocks = text.split("\n  --")[1:]
    assert all(len(b.split(None, 1)) == 2 and len(b.split()) > 2 for b in blocks), "an option without help text"
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_train_pooling_gem_trains_and_beats_cls_is_refused_before_any_work(dev_manifest, tmp_path):
    with pytest.raises(ValueError, match="no CLS token"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "cls", train_pooling="cls", epochs=1, **_FAST)
    assert not (tmp_path / "cls" / "fbank").exists()  # refused before the fbank cache was built
    ckpt = finetune(dev_manifest, "beats-tiny", tmp_path / "gem", train_pooling="gem", machines=["fan"], epochs=1,
                    **_FAST)
    assert np.isfinite(float(_read_log(ckpt / "log.csv")[0]["loss"]))
    assert json.loads((ckpt / "config.json").read_text())["config"]["train_pooling"] == "gem"


def test_noise_prob_zero_keeps_the_fbank_cache(dev_manifest, tmp_path):
    finetune(dev_manifest, "beats-tiny", tmp_path, machines=["fan"], epochs=1, noise_snr_db=(15.0, 35.0),
             noise_prob=0.0, **_FAST)
    assert list((tmp_path / "fbank").rglob("*.npy"))


def test_a_finished_run_refuses_to_skip_what_it_was_asked_for(dev_manifest, tmp_path):
    kw = dict(_FAST, machines=["fan"], epochs=2)
    ckpt = finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[2], **kw)
    assert sorted(json.loads((ckpt / "hashes.json").read_text())) == ["epoch_002.head.pt", "epoch_002.pt"]
    assert finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[2], **kw) == ckpt  # finished: reused
    with pytest.raises(ValueError, match="epoch_001.pt is missing.*--no-resume"):  # epoch 1 was pruned long ago
        finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[1, 2], **kw)
    data = (ckpt / "epoch_002.pt").read_bytes()
    (ckpt / "epoch_002.pt").write_bytes(data[: len(data) // 2])  # truncated by a full disk, say
    with pytest.raises(ValueError, match="does not have the hash it was written with"):
        finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[2], **kw)
    finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[1, 2], resume=False, **kw)  # the fix it names
    assert (ckpt / "epoch_001.pt").is_file() and (ckpt / "epoch_002.pt").read_bytes() == data
    (ckpt / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a resume state"):
        finetune(dev_manifest, "beats-tiny", tmp_path, keep_epochs=[2], **kw)


def test_a_non_finite_loss_stops_training_and_names_the_clips(dev_manifest, tmp_path):
    kw = dict(_FAST, machines=["fan"], epochs=2, keep_epochs=[1, 2])
    kw.update(lr_backbone=1e30, lr_head=1e30, grad_clip=0.0)  # weights blow up after the first step
    with pytest.raises(FloatingPointError, match=r"the loss is .* \(clips: section_00_"):
        finetune(dev_manifest, "beats-tiny", tmp_path, **kw)
    assert not list((tmp_path / "checkpoints").rglob("epoch_00[12].pt"))  # nothing of a broken epoch is kept
