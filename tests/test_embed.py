"""Tests of asd_lib.embed: pooling formulas, channels, the cache layout, reuse and atomicity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asd_lib.embed import (embed_paths, embedding_path, embedding_source, extract_embeddings, gem_pool,
                           load_embeddings, pool_tokens)

backbones = pytest.importorskip("asd_lib.backbones")


@pytest.fixture(scope="module")
def manifest(tiny_data):
    """Tiny preset manifest: one dev machine (labelled test) and one eval machine (unlabelled, 0.6-1.6 s clips)."""
    from asd_lib.data import scan

    man = scan(tiny_data)
    return man[man["machine"].isin(["valveEmu", "Sander"])].reset_index(drop=True)


@pytest.fixture(scope="module")
def beats():
    return backbones.load_backbone("beats-tiny")


def test_gem_matches_the_authors_formula():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(3, 11, 6, generator=g)
    t = tokens.double().numpy()
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    t = np.maximum(t, 1e-6)  # negative coordinates clamp to 1e-6 before the cube
    expected = np.mean(t ** 3, axis=1) ** (1 / 3)
    np.testing.assert_allclose(gem_pool(tokens).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(pool_tokens(tokens, "mean").numpy(), tokens.mean(1).numpy(), rtol=1e-6)
    assert torch.equal(pool_tokens(tokens, "cls", kind="eat"), tokens[:, 0])
    with pytest.raises(ValueError, match="EAT/SSLAM"):
        pool_tokens(tokens, "cls", kind="beats")
    with pytest.raises(ValueError, match="pooling must be"):
        pool_tokens(tokens, "max")


def test_extract_embeddings_layout_labels_and_both_channels(manifest, beats, tmp_path):
    out = extract_embeddings(manifest, beats, tmp_path, "beats@0", channel="ch0", pooling="gem", device="cpu",
                             progress=False)
    assert set(out) == {"valveEmu", "Sander"} and set(out["Sander"]) == {"train", "test"}
    dev = load_embeddings(tmp_path, "beats@0", "ch0", "valveEmu", "test")
    assert embedding_path(tmp_path, "beats@0", "ch0", "valveEmu", "test") == tmp_path / "beats@0/ch0/valveEmu_test.npz"
    rows = manifest[(manifest["machine"] == "valveEmu") & (manifest["split"] == "test")].sort_values("file_name")
    assert dev["emb"].dtype == np.float32 and dev["emb"].shape == (len(rows), beats.embed_dim)
    assert list(dev["names"]) == rows["file_name"].tolist()
    assert list(dev["labels"]) == [1 if lab == "anomaly" else 0 for lab in rows["label"]]
    assert set(dev["domains"]) == {"source", "target"}
    ev = load_embeddings(tmp_path, "beats@0", "ch0", "Sander", "test")  # eval clips of 3 lengths, whole clips
    assert set(ev["labels"]) == {-1} and set(ev["domains"]) == {""} and np.isfinite(ev["emb"]).all()
    # 'both' is the mean of the two channels' pooled embeddings
    for ch in ("ch1", "both"):
        extract_embeddings(manifest, beats, tmp_path, "beats@0", channel=ch, pooling="gem", machines=["valveEmu"],
                           device="cpu", progress=False)
    e = {ch: load_embeddings(tmp_path, "beats@0", ch, "valveEmu", "train")["emb"] for ch in ("ch0", "ch1", "both")}
    np.testing.assert_allclose(e["both"], (e["ch0"] + e["ch1"]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(e["ch0"], e["ch1"], atol=1e-3)


def test_batching_and_duration_do_not_change_embeddings(manifest, beats):
    paths = manifest[manifest["machine"] == "Sander"]["path"].tolist()[:7]
    one = embed_paths(beats, paths, "ch0", "mean", None, batch_size=1, progress=False)
    many = embed_paths(beats, paths, "ch0", "mean", None, batch_size=5, progress=False)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)
    sslam = backbones.load_backbone("sslam-tiny", recipe="aau")
    cls = embed_paths(sslam, paths[:2], "ch0", "cls", 0.5, progress=False)
    assert cls.shape == (2, sslam.embed_dim)
    with pytest.raises(ValueError, match="EAT/SSLAM"):
        embed_paths(beats, paths[:1], "ch0", "cls", 0.5, progress=False)


def test_cache_is_reused_and_never_trusted_when_partial(manifest, beats, tmp_path):
    kw = dict(channel="ch0", pooling="mean", machines=["valveEmu"], device="cpu", progress=False)
    extract_embeddings(manifest, beats, tmp_path, "m@1", **kw)
    path = embedding_path(tmp_path, "m@1", "ch0", "valveEmu", "train")
    first = path.stat().st_mtime_ns
    saved = load_embeddings(tmp_path, "m@1", "ch0", "valveEmu", "train")["emb"]
    extract_embeddings(manifest, "/no/such/checkpoint.pt", tmp_path, "m@1", **kw)  # cached: no model needed
    assert path.stat().st_mtime_ns == first
    path.write_bytes(path.read_bytes()[:100])  # a file cut short (killed writer without os.replace)
    extract_embeddings(manifest, beats, tmp_path, "m@1", **kw)
    np.testing.assert_array_equal(load_embeddings(tmp_path, "m@1", "ch0", "valveEmu", "train")["emb"], saved)
    train = manifest[(manifest["machine"] == "valveEmu") & (manifest["split"] == "train")]
    fewer = manifest.drop(index=train.index[0])  # another clip list: the cache is stale and recomputed
    extract_embeddings(fewer, beats, tmp_path, "m@1", **kw)
    assert len(load_embeddings(tmp_path, "m@1", "ch0", "valveEmu", "train")["names"]) == len(train) - 1
    assert not list(path.parent.glob(".*.tmp"))
    extract_embeddings(manifest, beats, tmp_path, "m@1", force=True, **kw)
    assert path.stat().st_mtime_ns != first
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        extract_embeddings(manifest, "/no/such/checkpoint.pt", tmp_path, "m@2", **kw)


def test_cache_belongs_to_the_checkpoint_file_it_came_from(manifest, beats, tmp_path):
    from asd_lib.fsutil import file_sha256

    kw = dict(channel="ch0", pooling="mean", machines=["valveEmu"], device="cpu", progress=False)
    ckpt = tmp_path / "a.pt"
    beats.save(ckpt)
    extract_embeddings(manifest, ckpt, tmp_path / "emb", "m@1", **kw)
    assert embedding_source(tmp_path / "emb", "m@1", "ch0", "valveEmu", "train") == file_sha256(ckpt)
    path = embedding_path(tmp_path / "emb", "m@1", "ch0", "valveEmu", "train")
    first = path.stat().st_mtime_ns
    other = backbones.load_backbone("beats-tiny")
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    other.save(ckpt)  # retrained under the same name: the cache is recomputed, not trusted
    extract_embeddings(manifest, ckpt, tmp_path / "emb", "m@1", **kw)
    assert path.stat().st_mtime_ns != first
    assert embedding_source(tmp_path / "emb", "m@1", "ch0", "valveEmu", "train") == file_sha256(ckpt)


def test_cache_is_not_reused_for_regenerated_clips(rerecordable, beats, tmp_path):
    copy, rerecord = rerecordable
    man = copy("valveEmu")
    ckpt = tmp_path / "a.pt"
    beats.save(ckpt)
    kw = dict(channel="ch0", pooling="mean", device="cpu", progress=False)
    extract_embeddings(man, ckpt, tmp_path / "emb", "m@1", **kw)
    before = load_embeddings(tmp_path / "emb", "m@1", "ch0", "valveEmu", "train")["emb"]
    rerecord(man)  # same checkpoint file
    extract_embeddings(man, ckpt, tmp_path / "emb", "m@1", **kw)
    after = load_embeddings(tmp_path / "emb", "m@1", "ch0", "valveEmu", "train")["emb"]
    assert not np.allclose(after[0], before[0]) and np.allclose(after[1:], before[1:])


def test_cache_records_its_settings_and_is_not_reused_for_others(manifest, beats, tmp_path):
    from asd_lib.embed import embedding_settings

    kw = dict(channel="ch0", machines=["valveEmu"], device="cpu", progress=False)
    assert embedding_settings(tmp_path, "m@1", "ch0") == {}
    extract_embeddings(manifest, beats, tmp_path, "m@1", pooling="gem", **kw)
    assert embedding_settings(tmp_path, "m@1", "ch0") == {"pooling": "gem", "recipe": None}
    gem = load_embeddings(tmp_path, "m@1", "ch0", "valveEmu", "train")["emb"]
    extract_embeddings(manifest, beats, tmp_path, "m@1", pooling="mean", **kw)  # not the GeM cache
    assert embedding_settings(tmp_path, "m@1", "ch0") == {"pooling": "mean", "recipe": None}
    assert not np.allclose(load_embeddings(tmp_path, "m@1", "ch0", "valveEmu", "train")["emb"], gem)
