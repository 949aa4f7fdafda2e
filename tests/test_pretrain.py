"""Pre-training: objectives, masks, the loop (loss falls, bit-exact resume) and the shipped checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asd_lib.backbones import load_backbone
from asd_lib.pretrain.beats import RandomProjectionTokenizer, fbank_patches, random_keep
from asd_lib.pretrain.probe import frozen_probe, loo_1nn_accuracy
from asd_lib.pretrain.sslam import frame_targets, inverse_block_keep, mix_stretches
from asd_lib.pretrain.train import PretrainConfig, pretrain, verify_manifest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"


def test_patches_follow_the_encoder_token_order():
    fb = torch.arange(2 * 40 * 128, dtype=torch.float32).reshape(2, 40, 128)
    p = fbank_patches(fb)
    assert p.shape == (2, 2 * 8, 256)
    # token t * 8 + f holds frames [16t, 16t+16) and mel bins [16f, 16f+16)
    assert torch.equal(p[1, 1 * 8 + 3].reshape(16, 16), fb[1, 16:32, 48:64])


def test_tokenizer_is_frozen_and_deterministic():
    fb = torch.randn(4, 64, 128)
    a, b = RandomProjectionTokenizer(seed=3).fit(fb), RandomProjectionTokenizer(seed=3).fit(fb)
    la = a(fb)
    assert la.shape == (4, 32) and la.min() >= 0 and la.max() < 1024
    assert torch.equal(la, b(fb))
    assert not any(p.requires_grad for p in a.parameters())
    assert len(torch.unique(la)) > 16  # standardised patches spread over the codebook


def test_masks_have_the_right_counts():
    gen = torch.Generator().manual_seed(0)
    keep = random_keep(5, 96, 0.75, gen)
    assert keep.shape == (5, 24) and all(len(set(r.tolist())) == 24 for r in keep)
    keep = inverse_block_keep(7, 12, 8, 0.8, 2, gen)
    assert keep.shape == (7, 19)
    assert all(len(set(r.tolist())) == 19 and r.max() < 96 for r in keep)
    assert torch.all(keep[:, 1:] > keep[:, :-1])
    mixed = mix_stretches(6, 12, gen)
    assert mixed.shape == (6, 12) and torch.all((~mixed).sum(1) == 6)


def test_frame_targets_are_normalised():
    layers = [torch.randn(3, 1 + 16, 8) * 5 + 2 for _ in range(3)]
    frames, cls = frame_targets(layers, 1)
    assert frames.shape == (3, 16, 8) and cls.shape == (3, 8)
    assert torch.allclose(frames.mean(-1), torch.zeros(3, 16), atol=1e-5)
    assert cls.std(0).mean() > 0.1  # the utterance target differs between clips (not a constant)


def test_loo_1nn_accuracy():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], float)
    assert loo_1nn_accuracy(emb, np.array(["a", "a", "b", "b"])) == 1.0
    assert loo_1nn_accuracy(emb, np.array(["a", "b", "a", "b"])) == 0.0


def test_frozen_probe_summarises_its_per_machine_table(tiny_data):
    """The probe's source and target AUCs are the machine means of its table, and they enter its official score."""
    from asd_lib.metrics import official_score

    r = frozen_probe(load_backbone("beats-tiny"), tiny_data, machines=("fan", "valveEmu"))
    t = r["per_machine"]
    assert list(t["machine"]) == ["fan", "valveEmu"]
    assert r["auc_source"] == pytest.approx(t["auc_source"].mean())
    assert r["auc_target"] == pytest.approx(t["auc_target"].mean())
    assert r["official_score"] == pytest.approx(official_score(t["auc_source"], t["auc_target"], t["pauc"]))
    assert 0.0 <= r["class_1nn_accuracy"] <= 1.0 and r["n_classes"] > 2


@pytest.mark.parametrize("encoder", ["beats", "sslam"])
def test_pretraining_smoke_loss_falls_and_resume_is_exact(tmp_path, encoder):
    cfg = PretrainConfig(encoder=encoder, corpus_clips=32, seconds=1.0, steps=12, batch_size=8, lr=1e-3)
    kw = dict(threads=1, save_every=4, progress=False)
    full = pretrain(cfg, tmp_path / "a", tmp_path / "wa", **kw)
    assert full["final_losses"]["loss"] < full["first_losses"]["loss"]
    pretrain(cfg, tmp_path / "b", tmp_path / "wb", stop_after=5, **kw)  # interrupted after 5 steps
    resumed = pretrain(cfg, tmp_path / "b", tmp_path / "wb", **kw)
    assert resumed["weights_sha256"] == full["weights_sha256"]  # the same weights, bit for bit
    enc = load_backbone(tmp_path / "b" / full["file"])
    assert enc.kind == ("beats" if encoder == "beats" else "eat")
    assert verify_manifest(tmp_path / "b") == {full["file"]: True}
    with pytest.raises(RuntimeError, match="another run"):
        pretrain(PretrainConfig(encoder=encoder, corpus_clips=32, seconds=1.0, steps=13, batch_size=8),
                 tmp_path / "b", tmp_path / "wb", **kw)


def test_shipped_checkpoints_match_their_manifest_and_load():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())["checkpoints"]
    assert set(manifest) == {"beats_kit.pt", "sslam_kit.pt"}
    assert all(verify_manifest(SHIPPED).values())
    wave = torch.randn(2, 16000) * 0.1
    for name, e in manifest.items():
        enc = load_backbone(SHIPPED / name)
        assert enc.kind == ("beats" if e["encoder"] == "beats" else "eat")
        assert e["final_losses"]["loss"] < e["first_losses"]["loss"]
        with torch.no_grad():
            tokens = enc.extract_features(wave)
        assert torch.isfinite(tokens).all() and tokens.shape[-1] == enc.embed_dim


def test_shipped_checkpoints_round_trip_in_their_format(tmp_path):
    for name in ("beats_kit.pt", "sslam_kit.pt"):
        enc = load_backbone(SHIPPED / name)
        again = load_backbone(enc.save(tmp_path / name))
        for (k, v), (k2, v2) in zip(enc.state_dict().items(), again.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
