"""Tests of the joint-channel input (asd_lib.backbones.joint): the sequence layout, fine-tuning, embeddings, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asd_lib.backbones import JointChannelEncoder, load_backbone
from asd_lib.embed import extract_embeddings, load_embeddings
from asd_lib.finetune import add_wave_noise, add_wave_noise_channels, finetune, load_head

_FAST = dict(duration=1.0, batch_size=8, warmup_epochs=0.5, lr_backbone=1e-3, lr_head=1e-2, progress=False,
             verbose=False, machines=["fan", "valveEmu"], epochs=1)


@pytest.fixture(scope="module")
def dev_manifest(tiny_data):
    """The dev part (labelled train + test) of the tiny preset."""
    from asd_lib.data import scan

    man = scan(tiny_data)
    return man[man["set"] == "dev"].reset_index(drop=True)


@pytest.fixture(scope="module")
def joint_run(dev_manifest, tmp_path_factory):
    """One 1-epoch joint fine-tune (time shift and fbank noise on) shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("joint_run")
    ckpt = finetune(dev_manifest, "beats-tiny", out, channel_input="joint", classes_with_channel=False,
                    time_shift=0.2, fbank_noise_std=0.1, **_FAST)
    return out, ckpt


def _fbanks(seed: int, batch: int = 2, frames: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 128, generator=g), torch.randn(batch, frames, 128, generator=g)


def test_joint_tokens_interleave_the_channels_per_time_step():
    model = JointChannelEncoder(load_backbone("beats-tiny"), seed=1).eval()
    fb0, fb1 = _fbanks(0)
    with torch.no_grad():
        out = model(fb0, fb1)
        enc = model.backbone
        per_channel = [enc.patch_tokens(fb) + model.channel_embedding[c] for c, fb in enumerate((fb0, fb1))]
        n, bands = per_channel[0].shape[1], 8
        order = [(c, t * bands + f) for t in range(n // bands) for c in (0, 1) for f in range(bands)]
        joint = torch.stack([per_channel[c][:, i] for c, i in order], dim=1)
        expected = enc.encoder(joint)
    assert out.shape == (2, 2 * n, enc.embed_dim) == (2, 2 * enc.forward_fbank(fb0).shape[1], 96)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_fbank(torch.stack([fb0, fb1], 1)), out, rtol=1e-5, atol=1e-5)


def test_swapping_the_channels_changes_the_embedding():
    # The encoder tells the microphones apart: the pooled embedding of (ch1, ch0) is not that of (ch0, ch1).
    # (Zeroing the channel embedding does not make it swap-symmetric: BEATs' relative-position bias and positional
    # conv already see ch0 and ch1 at different offsets within a time step.)
    model = JointChannelEncoder(load_backbone("beats-tiny"), seed=1).eval()
    fb0, fb1 = _fbanks(2)
    with torch.no_grad():
        ab, ba = model(fb0, fb1).mean(1), model(fb1, fb0).mean(1)
    assert (ab - ba).abs().max() > 1e-2


def test_the_channel_embedding_is_seeded_and_small():
    enc = load_backbone("beats-tiny")
    a, b, c = (JointChannelEncoder(enc, seed=s).channel_embedding.detach() for s in (0, 0, 1))
    assert a.shape == (2, enc.embed_dim) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.01 < float(a.std()) < 0.03


def test_joint_refuses_sslam_and_channel_classes(dev_manifest, tmp_path):
    with pytest.raises(ValueError, match="CLS token"):
        JointChannelEncoder(load_backbone("sslam-tiny"))
    with pytest.raises(ValueError, match="CLS token"):
        finetune(dev_manifest, "sslam-tiny", tmp_path / "sslam", channel_input="joint", classes_with_channel=False,
                 **_FAST)
    with pytest.raises(ValueError, match="pass classes_with_channel=False"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "ch", channel_input="joint", **_FAST)
    with pytest.raises(ValueError, match="channel_input must be one of"):
        finetune(dev_manifest, "beats-tiny", tmp_path / "x", channel_input="stereo", **_FAST)
    assert not (tmp_path / "sslam" / "fbank").exists() and not (tmp_path / "ch").exists()


def test_joint_fine_tune_writes_45_class_heads_and_a_trained_channel_embedding(dev_manifest, joint_run):
    from asd_lib.data import class_labels

    _, ckpt = joint_run
    config = json.loads((ckpt / "config.json").read_text())
    assert config["config"]["channel_input"] == "joint" and "channel_embedding" in config["trained_parameters"]
    rows = dev_manifest[dev_manifest["machine"].isin(_FAST["machines"])]
    head, classes = load_head(ckpt / "epoch_001.head.pt")
    assert classes == class_labels(rows, channels=False) and not any("_ch" in c for c in classes)
    assert head.weight.shape == (len(classes), 96)
    blob = torch.load(ckpt / "epoch_001.head.pt", map_location="cpu", weights_only=True)
    assert blob["channel_input"] == "joint" and blob["channel_embedding"].shape == (2, 96)
    start = JointChannelEncoder(load_backbone("beats-tiny"), seed=0).channel_embedding.detach()
    assert (blob["channel_embedding"] - start).abs().max() > 1e-4  # it was trained
    assert load_backbone(str(ckpt / "epoch_001.pt")).kind == "beats"  # the encoder file is the official format
    assert sorted(json.loads((ckpt / "hashes.json").read_text())) == ["epoch_001.head.pt", "epoch_001.pt"]


def test_a_resume_with_another_channel_input_is_refused(dev_manifest, joint_run):
    out, _ = joint_run
    with pytest.raises(ValueError, match="other settings"):
        finetune(dev_manifest, "beats-tiny", out, channel_input="separate", classes_with_channel=False, **_FAST)


def test_joint_embeddings_have_the_format_of_the_other_channels_and_score(dev_manifest, joint_run, tmp_path):
    from asd_lib.fusion import fuse_offline, fuse_online
    from asd_lib.scorers import score_embeddings

    _, ckpt = joint_run
    emb, kw = tmp_path / "emb", dict(pooling="gem", machines=["fan"], device="cpu", progress=False)
    extract_embeddings(dev_manifest, ckpt / "epoch_001.pt", emb, "joint@1", channel="joint", **kw)
    extract_embeddings(dev_manifest, ckpt / "epoch_001.pt", emb, "joint@1", channel="ch0", **kw)
    for split in ("train", "test"):
        files = [np.load(emb / "joint@1" / ch / f"fan_{split}.npz") for ch in ("joint", "ch0")]
        assert files[0].files == files[1].files
        for key in files[0].files:
            assert files[0][key].shape == files[1][key].shape and files[0][key].dtype == files[1][key].dtype
        assert files[0]["emb"].shape[1] == 96 and not np.allclose(files[0]["emb"], files[1]["emb"], atol=1e-3)
        np.testing.assert_array_equal(files[0]["names"], files[1]["names"])
    score_embeddings(emb, tmp_path / "scores", ["joint@1"], channel="joint", scorers=("knn", "ldn"))
    test = load_embeddings(emb, "joint@1", "joint", "fan", "test")
    for fuse in (fuse_offline, fuse_online):
        fused = fuse(tmp_path / "scores", ["joint@1"], ["knn", "ldn"], channel="joint")
        assert list(fused) == ["fan"] and sorted(fused["fan"]["names"]) == sorted(test["names"])


def test_joint_embeddings_need_a_joint_checkpoint(dev_manifest, joint_run, tmp_path):
    _, ckpt = joint_run
    separate = finetune(dev_manifest, "beats-tiny", tmp_path / "sep", trainable="frozen", epochs=0,
                        **{k: v for k, v in _FAST.items() if k != "epochs"})
    kw = dict(channel="joint", machines=["fan"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="fine-tuned with channel_input='separate'"):
        extract_embeddings(dev_manifest, separate / "epoch_000.pt", tmp_path / "e", "m@0", **kw)
    with pytest.raises(ValueError, match="checkpoint file fine-tuned with channel_input='joint'"):
        extract_embeddings(dev_manifest, "beats-tiny", tmp_path / "e", "m@0", **kw)
    with pytest.raises(ValueError, match="needs a JointChannelEncoder"):
        extract_embeddings(dev_manifest, load_backbone("beats-tiny"), tmp_path / "e", "m@0", **kw)
    from asd_lib.backbones import load_joint_encoder

    with pytest.raises(ValueError, match="embeds only channel 'joint'"):
        extract_embeddings(dev_manifest, load_joint_encoder(ckpt / "epoch_001.pt"), tmp_path / "e", "m@0",
                           **{**kw, "channel": "ch0"})


def test_waveform_noise_of_a_joint_sample_is_the_same_draw_on_both_channels():
    g = np.random.default_rng(5)
    waves = np.stack([np.sin(np.linspace(0, 900, 8000)), 0.3 * g.standard_normal(8000)]).astype(np.float32)
    rng = np.random.default_rng(1)
    noisy = add_wave_noise_channels(waves, rng, 0.0, (10.0, 10.0), 1.0)
    ref = np.random.default_rng(1)
    first = add_wave_noise(waves[0], ref, 0.0, (10.0, 10.0), 1.0)
    np.testing.assert_array_equal(noisy[0], first)
    assert rng.random() == ref.random()  # the generator moved on by one channel's draws
    added = (noisy - waves).astype(np.float64)
    assert abs(np.corrcoef(added[0], added[1])[0, 1] - 1.0) < 1e-6  # one realisation, scaled per channel
    snr = 10 * np.log10(np.mean(waves.astype(np.float64) ** 2, 1) / np.mean(added ** 2, 1))
    np.testing.assert_allclose(snr, 10.0, atol=0.3)


def test_a_joint_sample_gets_one_time_shift_for_both_channels(dev_manifest, tmp_path, monkeypatch):
    from asd_lib import finetune as ft

    seen = []
    forward = ft.Classifier.forward

    def record(self, fbank, labels):
        seen.append(fbank.detach().clone())
        return forward(self, fbank, labels)

    monkeypatch.setattr(ft.Classifier, "forward", record)
    finetune(dev_manifest, "beats-tiny", tmp_path, channel_input="joint", classes_with_channel=False,
             time_shift=0.3, **{**_FAST, "machines": ["fan"]})
    cache = torch.from_numpy(np.load(next((tmp_path / "fbank").rglob("fan_*.npy"))))  # (clips, 2, frames, bins)
    x = torch.cat(seen)
    assert x.shape == (len(cache),) + tuple(cache.shape[1:])
    frames, shifted = cache.shape[2], 0
    for sample in x:
        match = [(clip, k) for clip in range(len(cache)) for k in range(-frames // 2, frames // 2)
                 if torch.equal(torch.roll(cache[clip, 0], k, dims=0), sample[0])]
        assert match, "channel 0 of a sample is not a roll of a cached clip"
        clip, k = match[0]
        assert torch.equal(torch.roll(cache[clip, 1], k, dims=0), sample[1])
        shifted += k != 0
    assert shifted > len(x) // 2


def test_joint_fine_tune_with_waveform_noise(dev_manifest, tmp_path):
    ckpt = finetune(dev_manifest, "beats-tiny", tmp_path, channel_input="joint", classes_with_channel=False,
                    noise_snr_db=(15.0, 35.0), noise_prob=0.5, **{**_FAST, "machines": ["fan"]})
    assert not (tmp_path / "fbank").exists()  # noise on the waveform: no cache
    log = (ckpt / "log.csv").read_text().splitlines()
    assert len(log) == 2 and np.isfinite(float(log[1].split(",")[1]))


@pytest.mark.slow
def test_two_gloo_processes_train_the_joint_model_as_one(tiny_data, tmp_path):
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    kw = dict(_FAST, dropout=False, layerdrop=False, accum=2, time_shift=0.2, fbank_noise_std=0.1, seed=5,
              device="cpu", channel_input="joint", classes_with_channel=False)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from asd_lib.data import scan
        from asd_lib.finetune import finetune

        man = scan(sys.argv[1])
        finetune(man[man["set"] == "dev"], "beats-tiny", sys.argv[2], **{kw!r})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # as in test_ddp: skip the interpreter teardown where gloo's threads can abort
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for procs, out in ((1, "one"), (2, "two")):
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                              str(procs), str(script), str(tiny_data), str(tmp_path / out)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    heads = [torch.load(tmp_path / out / "checkpoints/beats/epoch_001.head.pt", weights_only=True)
             for out in ("one", "two")]
    torch.testing.assert_close(heads[1]["channel_embedding"], heads[0]["channel_embedding"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(heads[1]["state"]["weight"], heads[0]["state"]["weight"], rtol=1e-4, atol=1e-5)
    start = JointChannelEncoder(load_backbone("beats-tiny"), seed=5).channel_embedding.detach()
    assert (heads[0]["channel_embedding"] - start).abs().max() > 1e-4
