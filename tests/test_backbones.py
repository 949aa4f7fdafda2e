"""Parity of our BEATs / EAT-SSLAM encoders with the reference test vectors, formats, round trips and errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from asd_lib.backbones import (CheckpointFormatError, ClipTooLongError, StateDictMismatchError,
                               UnsupportedConfigError, load_backbone)

DATA = Path(__file__).resolve().parent / "data"
BEATS, EAT = DATA / "beats", DATA / "eat"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


BEATS_CASES = sorted(_manifest(BEATS)["cases"])
EAT_CASES = sorted(_manifest(EAT)["cases"])
EAT_FORMATS = ["fairseq_pretrain.pt", "fairseq_finetuned.pt", "hf"]


def _tol(folder: Path, key: str, default: float) -> float:
    return float(_manifest(folder).get("suggested_tolerances", {}).get(key, default))

def _check_fbank(enc, wave, exp, case: str, manifest) -> "torch.Tensor":
    """Preprocess ``wave`` and check frame count, the strided reference frames and (when stored) every frame."""
    fb = enc.preprocess(wave)
    stride = int(exp["fbank_frame_stride"])
    assert fb.shape[1] == int(exp[f"fbank_num_frames_{case}"])
    atol = _tol(manifest, "fbank_atol", 1e-4)
    assert _abs(fb[:, ::stride], exp[f"fbank_strided_{case}"]) <= atol
    if f"fbank_{case}" in exp:
        assert _abs(fb, exp[f"fbank_{case}"]) <= atol
    return fb


def _rel(got: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _abs(got: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max())


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def beats_io():
    return np.load(BEATS / "inputs.npz"), np.load(BEATS / "expected.npz")


@pytest.fixture(scope="module")
def eat_io():
    inputs = EAT / "inputs.npz" if (EAT / "inputs.npz").exists() else BEATS / "inputs.npz"
    return np.load(inputs), np.load(EAT / "expected.npz")


@pytest.fixture(scope="module")
def beats_models():
    return {"pre": load_backbone(BEATS / "pretrained.pt"), "ft": load_backbone(BEATS / "finetuned.pt")}


@pytest.fixture(scope="module")
def eat_models():
    return {f: load_backbone(EAT / f) for f in EAT_FORMATS}


# ------------------------------------------------------------------------------------------- BEATs parity
@pytest.mark.parametrize("case", BEATS_CASES)
def test_beats_parity(case, beats_io, beats_models):
    inputs, exp = beats_io
    wave = torch.from_numpy(inputs[case])
    pre, ft = beats_models["pre"], beats_models["ft"]
    fb = _check_fbank(pre, wave, exp, case, BEATS)
    strict = _tol(BEATS, "features_max_abs_over_max_abs_strict", 2e-5)
    assert _rel(pre.forward_fbank(fb), exp[f"features_{case}"]) <= strict
    assert _rel(ft.extract_features(wave), exp[f"features_{case}"]) <= strict  # same encoder tensors
    assert _abs(ft.classify(wave), exp[f"probs_{case}"]) <= _tol(BEATS, "probs_atol", 1e-5)


def test_beats_structure_read_from_cfg(beats_models):
    pre = beats_models["pre"]
    cfg = torch.load(BEATS / "pretrained.pt", weights_only=True)["cfg"]
    assert pre.kind == "beats" and pre.embed_dim == cfg["encoder_embed_dim"]
    assert len(pre.encoder.layers) == cfg["encoder_layers"]
    assert pre.encoder.layers[0].alpha == pytest.approx((2 * cfg["encoder_layers"]) ** 0.25)
    names = dict(pre.named_parameters())
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in names
    assert not any("relative_attention_bias" in n for n in names if not n.startswith("encoder.layers.0."))
    # ... but the official state dict stores it under every layer (one shared tensor)
    sd = pre.state_dict()
    n = cfg["encoder_layers"]
    keys = [f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in range(n)]
    assert all(k in sd for k in keys) and all(sd[k].data_ptr() == sd[keys[0]].data_ptr() for k in keys)


# -------------------------------------------------------------------------------------------- EAT parity
@pytest.mark.parametrize("fmt", EAT_FORMATS)
@pytest.mark.parametrize("case", EAT_CASES)
def test_eat_parity_canonical(fmt, case, eat_io, eat_models):
    inputs, exp = eat_io
    enc = eat_models[fmt]
    enc.recipe = "eat"
    wave = torch.from_numpy(inputs[case])
    fb = _check_fbank(enc, wave, exp, case, EAT)
    tok = enc.forward_fbank(fb)
    assert tok.shape[1] == 1 + (fb.shape[1] // 16) * 8  # CLS first
    assert _rel(tok, exp[f"features_{case}"]) <= _tol(EAT, "features_max_abs_over_max_abs_strict", 2e-5)
    if enc.has_classifier:
        logits = enc.classify(wave)
        assert _abs(logits, exp[f"logits_{case}"]) <= _tol(EAT, "logits_atol", 2e-5)
        assert _abs(torch.sigmoid(logits), exp[f"probs_{case}"]) <= _tol(EAT, "probs_atol", 1e-5)


@pytest.mark.parametrize("fmt", EAT_FORMATS)
@pytest.mark.parametrize("case", EAT_CASES)
def test_eat_parity_aau(fmt, case, eat_io, eat_models):
    inputs, exp = eat_io
    enc = eat_models[fmt]
    enc.recipe = "aau"
    try:
        fb = enc.preprocess(torch.from_numpy(inputs[case]))
        stride = int(exp["fbank_frame_stride"])
        assert fb.shape[1] == int(exp[f"fbank_aau_num_frames_{case}"])
        assert _abs(fb[:, ::stride], exp[f"fbank_aau_strided_{case}"]) <= _tol(EAT, "fbank_atol", 1e-4)
        if f"features_aau_{case}" in exp:
            tol = _tol(EAT, "features_max_abs_over_max_abs_strict", 2e-5)
            assert _rel(enc.forward_fbank(fb), exp[f"features_aau_{case}"]) <= tol
    finally:
        enc.recipe = "eat"


def test_eat_formats_agree_and_drop_pretraining_keys(eat_models):
    a, b, c = (eat_models[f] for f in EAT_FORMATS)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]) and torch.equal(v, c.state_dict()[k]), k
    assert not any("decoder" in k or "_ema" in k for k in a.state_dict())
    assert a.kind == "eat" and a.embed_dim == a.cfg["embed_dim"] and not a.has_classifier and b.has_classifier


# ------------------------------------------------------------------------------ independent formulas
def _naive_beats(enc, fb: torch.Tensor) -> torch.Tensor:
    """Straight transcription of the BEATs formulas (per-head loop, explicit softmax), for other configs."""
    import math

    cfg = enc.cfg
    sd = enc.state_dict()
    p = cfg["input_patch_size"]
    x = torch.nn.functional.conv2d(fb[:, None], sd["patch_embedding.weight"], stride=p)
    x = x.flatten(2).transpose(1, 2)
    x = torch.nn.functional.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"])
    if "post_extract_proj.weight" in sd:
        x = x @ sd["post_extract_proj.weight"].T + sd["post_extract_proj.bias"]
    v = sd["encoder.pos_conv.0.weight_v"]
    w = sd["encoder.pos_conv.0.weight_g"] * v / torch.sqrt((v ** 2).sum(dim=(0, 1), keepdim=True))
    k = cfg["conv_pos"]
    c = torch.nn.functional.conv1d(x.transpose(1, 2), w, sd["encoder.pos_conv.0.bias"], padding=k // 2,
                                   groups=cfg["conv_pos_groups"])
    if k % 2 == 0:
        c = c[..., :-1]
    x = x + torch.nn.functional.gelu(c).transpose(1, 2)
    d = x.shape[-1]
    x = torch.nn.functional.layer_norm(x, (d,), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    n, h = x.shape[1], cfg["encoder_attention_heads"]
    hd = d // h
    nb, md = cfg["num_buckets"] // 2, cfg["max_distance"]
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    bucket = torch.zeros(n, n, dtype=torch.long)
    for i in range(n):
        for j in range(n):
            r = int(rel[i, j])
            b = nb if r > 0 else 0
            r = abs(r)
            exact = nb // 2
            if r < exact:
                b += r
            else:
                b += min(nb - 1, exact + int(math.log(r / exact) / math.log(md / exact) * (nb - exact)))
            bucket[i, j] = b
    table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    alpha = (2 * cfg["encoder_layers"]) ** 0.25
    for li in range(cfg["encoder_layers"]):
        P = f"encoder.layers.{li}."
        lin = lambda t, name: t @ sd[P + name + ".weight"].T + sd[P + name + ".bias"]  # noqa: E731
        q, kk, vv = lin(x, "self_attn.q_proj"), lin(x, "self_attn.k_proj"), lin(x, "self_attn.v_proj")
        heads = []
        for hi in range(h):
            qh, kh, vh = (t[..., hi * hd:(hi + 1) * hd] for t in (q, kk, vv))
            g = torch.sigmoid((qh @ sd[P + "self_attn.grep_linear.weight"].T + sd[P + "self_attn.grep_linear.bias"])
                              .view(*qh.shape[:2], 2, 4).sum(-1))
            gate = g[..., 0:1] * (g[..., 1:2] * sd[P + "self_attn.grep_a"][0, hi] - 1) + 2
            logits = (qh / math.sqrt(hd)) @ kh.transpose(1, 2) + gate * table[bucket, hi]
            heads.append(torch.softmax(logits, -1) @ vh)
        a = lin(torch.cat(heads, -1), "self_attn.out_proj")
        x = torch.nn.functional.layer_norm(alpha * x + a, (d,), sd[P + "self_attn_layer_norm.weight"],
                                           sd[P + "self_attn_layer_norm.bias"])
        y = lin(torch.nn.functional.gelu(lin(x, "fc1")), "fc2")
        x = torch.nn.functional.layer_norm(alpha * x + y, (d,), sd[P + "final_layer_norm.weight"],
                                           sd[P + "final_layer_norm.bias"])
    return x


@pytest.mark.parametrize("overrides", [
    {"encoder_layers": 2, "encoder_attention_heads": 3, "encoder_embed_dim": 48, "encoder_ffn_embed_dim": 64,
     "embed_dim": 48, "conv_pos_groups": 8, "conv_pos": 31},
    {"encoder_layers": 1, "encoder_attention_heads": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 40,
     "embed_dim": 24, "num_buckets": 64, "max_distance": 100},
])
def test_beats_other_configs_match_formulas(overrides):
    enc = load_backbone("beats-tiny", seed=3, **overrides)
    with torch.no_grad():  # make the gate and bias non-trivial
        for i, layer in enumerate(enc.encoder.layers):
            layer.self_attn.grep_a.normal_(1.0, 0.3)
            layer.self_attn.grep_linear.bias.normal_(0.0, 0.5)
    fb = torch.randn(2, 16 * 9 + 5, 128)
    assert _rel(enc.forward_fbank(fb), _naive_beats(enc, fb).numpy()) <= 2e-5


def test_eat_other_config_matches_formulas():
    enc = load_backbone("sslam-tiny", recipe="aau", seed=4, embed_dim=36, depth=2, num_heads=3, mlp_ratio=2.0,
                        max_length=20, norm_eps=1e-5)
    sd = enc.state_dict()
    fb = torch.randn(1, 16 * 11 + 7, 128)
    x = torch.nn.functional.conv2d(fb[:, None], sd["local_encoder.proj.weight"], sd["local_encoder.proj.bias"],
                                   stride=16).flatten(2).transpose(1, 2)
    d, n = x.shape[-1], x.shape[1]
    # table from its definition: first half frequency index, second half time index, each [sin | cos]
    om = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))
    t_idx, f_idx = torch.arange(n) // 8, torch.arange(n) % 8
    table = torch.cat([torch.sin(f_idx[:, None] * om), torch.cos(f_idx[:, None] * om),
                       torch.sin(t_idx[:, None] * om), torch.cos(t_idx[:, None] * om)], 1).float()
    x = torch.cat([sd["extra_tokens"], x + table], 1)
    ln = lambda t, p: torch.nn.functional.layer_norm(t, (d,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)  # noqa
    x = ln(x, "context_encoder.norm")
    h = 3
    for b in range(2):
        P = f"blocks.{b}."
        qkv = x @ sd[P + "attn.qkv.weight"].T + sd[P + "attn.qkv.bias"]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        hd = d // h
        out = torch.cat([torch.softmax(q[..., i * hd:(i + 1) * hd] @ k[..., i * hd:(i + 1) * hd].transpose(1, 2)
                                       / hd ** 0.5, -1) @ v[..., i * hd:(i + 1) * hd] for i in range(h)], -1)
        x = x + out @ sd[P + "attn.proj.weight"].T + sd[P + "attn.proj.bias"]
        r = x = ln(x, P + "norm1")
        m = torch.nn.functional.gelu(x @ sd[P + "mlp.fc1.weight"].T + sd[P + "mlp.fc1.bias"])
        x = ln(r + m @ sd[P + "mlp.fc2.weight"].T + sd[P + "mlp.fc2.bias"], P + "norm2")
    assert _rel(enc.forward_fbank(fb), x.numpy()) <= 2e-5


# ----------------------------------------------------------------------------------------- round trips
def _same_outputs(a, b, wave):
    assert torch.equal(a.extract_features(wave), b.extract_features(wave))
    if a.has_classifier:
        assert b.has_classifier and torch.equal(a.classify(wave), b.classify(wave))


@pytest.mark.parametrize("src", ["pretrained.pt", "finetuned.pt"])
def test_beats_save_round_trip(src, tmp_path):
    a = load_backbone(BEATS / src)
    out = a.save(tmp_path / "re.pt")
    raw = torch.load(out, weights_only=True)  # loadable by the official code: same layout and keys
    orig = torch.load(BEATS / src, weights_only=True)
    assert set(raw) == set(orig) and set(raw["model"]) == set(orig["model"]) and raw["cfg"] == orig["cfg"]
    _same_outputs(a, load_backbone(out), torch.randn(1, 16000))


@pytest.mark.parametrize("src,dest", [("fairseq_pretrain.pt", "re.pt"), ("fairseq_finetuned.pt", "re.pt"),
                                      ("hf", "re_hf"), ("fairseq_finetuned.pt", "re_ft_hf"),
                                      ("hf", "re_from_hf.pt")])
def test_eat_save_round_trip(src, dest, tmp_path):
    a = load_backbone(EAT / src)
    out = a.save(tmp_path / dest)
    b = load_backbone(out)
    assert b.cfg == a.cfg
    _same_outputs(a, b, torch.randn(1, 16000))
    if src.endswith(".pt") and dest.endswith(".pt"):
        raw, orig = torch.load(out, weights_only=True), torch.load(EAT / src, weights_only=True)
        kept = {k for k in orig["model"] if k != "_ema" and ".decoder." not in k}
        assert set(raw["model"]) == kept
        assert raw["cfg"]["model"]["_name"] == orig["cfg"]["model"]["_name"]


@pytest.mark.parametrize("name", ["beats-tiny", "sslam-tiny"])
def test_named_tiny_round_trip_and_seed(name, tmp_path):
    a = load_backbone(name, seed=1)
    wave = torch.randn(2, 32000)
    tok = a.extract_features(wave)
    assert tok.shape[0] == 2 and tok.shape[-1] == a.embed_dim and torch.isfinite(tok).all()
    assert torch.equal(tok, load_backbone(name, seed=1).extract_features(wave))
    assert not torch.equal(tok, load_backbone(name, seed=2).extract_features(wave))
    _same_outputs(a, load_backbone(a.save(tmp_path / "t.pt")), wave)


def test_named_configs_shapes_and_parameter_names():
    from asd_lib.backbones import NAMED_CONFIGS, BEATsEncoder, EATEncoder, construct

    b = construct(BEATsEncoder, NAMED_CONFIGS["beats-base"][1], None)  # shapes only: skip the random init
    assert sum(p.numel() for p in b.parameters()) == pytest.approx(90.3e6, rel=0.01)
    names = [n for n, _ in b.named_parameters()]
    for prefix in ("patch_embedding.", "layer_norm.", "post_extract_proj.", "encoder.pos_conv.0.weight_g",
                   "encoder.layer_norm.", "encoder.layers.11.fc2."):
        assert any(n.startswith(prefix) for n in names), prefix
    e = construct(EATEncoder, NAMED_CONFIGS["sslam-base"][1], None)
    assert e.embed_dim == 768 and len(e.blocks) == 12 and e.recipe == "eat"
    names = [n for n, _ in e.named_parameters()]
    for prefix in ("local_encoder.proj.", "extra_tokens", "fixed_positional_encoder.positions",
                   "context_encoder.norm.", "blocks.11.mlp.fc2."):
        assert any(n.startswith(prefix) for n in names), prefix
    assert not e.fixed_positional_encoder.positions.requires_grad
    t = load_backbone("sslam-tiny", recipe="aau")
    assert t.recipe == "aau" and t.extract_features(torch.randn(1, 32000)).shape == (1, 1 + 12 * 8, t.embed_dim)


def test_training_switches():
    from asd_lib.backbones.beats import _GradScale

    x = torch.ones(3, requires_grad=True)
    with torch.inference_mode(False), torch.enable_grad():
        _GradScale.apply(x, 0.6).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.6))
    enc = load_backbone("beats-tiny", encoder_layerdrop=1.0, dropout=0.0, attention_dropout=0.0,
                        dropout_input=0.0)
    fb = torch.randn(1, 32, 128)
    enc.train()
    skipped = enc.forward_fbank(fb)  # every layer dropped: output is the post-pos-conv LayerNorm
    enc.eval()
    assert not torch.allclose(skipped, enc.forward_fbank(fb))


def test_batch_equals_per_clip_and_numpy_input(beats_models, eat_models, beats_io):
    wave = beats_io[0][BEATS_CASES[0]]
    if wave.shape[0] < 2:
        wave = np.concatenate([wave, wave[:, ::-1].copy()])
    for enc in (beats_models["pre"], eat_models["hf"]):
        both = enc.extract_features(wave)  # numpy input is accepted
        for i in range(2):
            one = enc.extract_features(torch.from_numpy(wave[i:i + 1]))
            assert _rel(one, both[i:i + 1].numpy()) <= 2e-6


@pytest.mark.parametrize("name", ["beats-tiny", "sslam-tiny"])
def test_train_mode_backward_and_trainable_by_name(name):
    enc = load_backbone(name, **({"encoder_layerdrop": 0.0} if name.startswith("beats") else {})).train()
    top = "encoder.layers.2." if name.startswith("beats") else "blocks.2."
    for n, p in enc.named_parameters():
        p.requires_grad_(n.startswith(top) and p.dtype.is_floating_point)
    fb = torch.randn(2, 40, 128)
    with torch.enable_grad():
        enc.forward_fbank(fb).pow(2).mean().backward()
    with_grad = {n for n, p in enc.named_parameters() if p.grad is not None}
    assert with_grad and all(n.startswith(top) for n in with_grad)


def test_bf16_autocast_runs():
    for name in ("beats-tiny", "sslam-tiny"):
        enc = load_backbone(name)
        fb = torch.randn(1, 64, 128)
        ref = enc.forward_fbank(fb)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc.forward_fbank(fb)
        assert low.shape == ref.shape and _rel(low.float(), ref.numpy()) < 0.1


# ---------------------------------------------------------------------------------------------- errors
def test_error_unknown_format(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint format"):
        load_backbone(tmp_path / "x.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointFormatError, match="config.json"):
        load_backbone(tmp_path / "folder")
    obj = torch.load(EAT / "fairseq_pretrain.pt", weights_only=True)
    obj["cfg"]["model"]["_name"] = "wav2vec2"
    torch.save(obj, tmp_path / "w2v.pt")
    with pytest.raises(CheckpointFormatError, match="wav2vec2"):
        load_backbone(tmp_path / "w2v.pt")
    with pytest.raises(FileNotFoundError, match="named backbone"):
        load_backbone(tmp_path / "nope.pt")


class _Metric:  # a non-tensor object, like fairseq's extra_state metrics
    pass


def test_error_needs_pickle_opt_in(tmp_path, caplog):
    obj = torch.load(BEATS / "pretrained.pt", weights_only=True)
    obj["extra_state"] = {"metrics": _Metric()}
    torch.save(obj, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointFormatError, match="allow_pickle=True"):
        load_backbone(tmp_path / "pickled.pt")
    with caplog.at_level(logging.DEBUG, logger="asd_lib.backbones"):
        enc = load_backbone(tmp_path / "pickled.pt", allow_pickle=True)
    assert enc.kind == "beats" and "encoder_embed_dim" in caplog.text  # the cfg is logged (at debug level)


def test_error_missing_keys(tmp_path):
    obj = torch.load(BEATS / "pretrained.pt", weights_only=True)
    del obj["model"]["encoder.layers.1.fc1.bias"]
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(StateDictMismatchError, match=r"missing keys \(1\).*encoder\.layers\.1\.fc1\.bias"):
        load_backbone(tmp_path / "m.pt")


def test_error_unexpected_keys(tmp_path):
    obj = torch.load(EAT / "fairseq_finetuned.pt", weights_only=True)
    obj["model"]["model.blocks.0.attn.extra.weight"] = torch.zeros(3)
    torch.save(obj, tmp_path / "u.pt")
    with pytest.raises(StateDictMismatchError, match=r"unexpected keys \(1\).*blocks\.0\.attn\.extra\.weight"):
        load_backbone(tmp_path / "u.pt")


def test_error_shape_mismatch(tmp_path):
    obj = torch.load(BEATS / "pretrained.pt", weights_only=True)
    obj["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(97, 48)
    torch.save(obj, tmp_path / "s.pt")
    with pytest.raises(StateDictMismatchError,
                       match=r"encoder\.layers\.0\.fc1\.weight: expected \(96, 48\).*got \(97, 48\)"):
        load_backbone(tmp_path / "s.pt")


@pytest.mark.parametrize("src,field,value", [
    ("beats/pretrained.pt", "layer_norm_first", True),
    ("beats/pretrained.pt", "relative_position_embedding", False),
    ("beats/pretrained.pt", "conv_bias", True),
    ("eat/fairseq_pretrain.pt", "layer_norm_first", True),
    ("eat/fairseq_pretrain.pt", "use_alibi_encoder", True),
])
def test_error_unsupported_structure(src, field, value, tmp_path):
    obj = torch.load(DATA / src, weights_only=True)
    if src.startswith("beats"):
        obj["cfg"][field] = value
    elif field in obj["cfg"]["model"]:
        obj["cfg"]["model"][field] = value
    else:
        obj["cfg"]["model"]["modalities"]["image"][field] = value
    torch.save(obj, tmp_path / "c.pt")
    with pytest.raises(UnsupportedConfigError, match=f"{field}={value}"):
        load_backbone(tmp_path / "c.pt")


def test_error_clip_too_long(eat_models):
    enc = eat_models["hf"]
    enc.recipe = "aau"
    try:
        frames = enc.max_time_patches * 16 + 15  # the last partial patch is dropped
        longest = 400 + 160 * (frames - 1)
        assert enc.extract_features(torch.zeros(1, longest)).shape[1] == 1 + enc.max_time_patches * 8
        secs = f"{longest / 16000:.2f} s"
        with pytest.raises(ClipTooLongError, match=secs):
            enc.extract_features(torch.zeros(1, longest + 160))
    finally:
        enc.recipe = "eat"


def test_error_shared_bias_copies_differ(tmp_path):
    obj = torch.load(BEATS / "pretrained.pt", weights_only=True)
    key = "encoder.layers.2.self_attn.relative_attention_bias.weight"
    obj["model"][key] = obj["model"][key].clone() + 1.0
    torch.save(obj, tmp_path / "b.pt")
    with pytest.raises(StateDictMismatchError, match=r"layers\.2\.self_attn\.relative_attention_bias"):
        load_backbone(tmp_path / "b.pt")


def test_error_bad_override_and_recipe():
    with pytest.raises(ValueError, match="unknown cfg field"):
        load_backbone("beats-tiny", encoder_depth=3)
    with pytest.raises(ValueError, match="recipe"):
        load_backbone("beats-tiny", recipe="aau")
    with pytest.raises(FileNotFoundError, match="named backbone"):
        load_backbone("beats-huge")
    with pytest.raises(StateDictMismatchError, match="shape mismatch"):
        load_backbone(EAT / "hf", embed_dim=64)


def test_beats_trains_after_an_inference_pass():
    """Cached position buckets from an inference_mode pass must not break a later backward pass."""
    import torch
    from asd_lib.backbones import load_backbone
    enc = load_backbone("beats-tiny", encoder_layerdrop=0.0)  # layer-drop could skip the layer checked below
    wave = torch.randn(1, 16000) * 0.05
    with torch.inference_mode():
        enc.extract_features(wave)
    enc.train().requires_grad_(True)
    with torch.enable_grad():  # this module's autouse fixture runs every test under no_grad
        enc.extract_features(wave).mean().backward()
    assert enc.encoder.layers[-1].fc2.weight.grad is not None


# ------------------------------------------------------------------------------------------- CPU training attention
def _math_attention(q, k, v, gate, bias, keep_mask=None, p=0.0):
    """Plain softmax(q k^T / sqrt(hd) + gate * bias) [dropout with the given keep-mask] @ v."""
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + gate * bias, -1)
    if keep_mask is not None:
        probs = probs * keep_mask / (1.0 - p)
    return probs @ v


def _attention_inputs(b=2, h=3, n=17, hd=8, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, hd, generator=gen, dtype=dtype) for _ in range(3))
    gate = 1.0 + torch.rand(b, h, n, 1, generator=gen, dtype=dtype)
    bias = torch.randn(h, n, n, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v, gate, bias)]


@pytest.mark.parametrize("chunk", [1, 17 * 17 * 2, 1 << 20])  # one head, two heads (3 = 2 + 1), all heads per chunk
def test_gated_bias_attention_matches_math(chunk, monkeypatch):
    from asd_lib.backbones import beats

    monkeypatch.setattr(beats, "ATTN_CHUNK_ELEMENTS", chunk)
    args = _attention_inputs()
    with torch.enable_grad():
        assert torch.autograd.gradcheck(lambda *a: beats.GatedBiasAttention.apply(*a, 0.0), args)
        out = beats.GatedBiasAttention.apply(*args, 0.0)
        ref = _math_attention(*args)
        go = torch.randn_like(out)
        got = torch.autograd.grad(out, args, go)
        want = torch.autograd.grad(ref, args, go)
    assert torch.allclose(out, ref, rtol=0, atol=1e-10)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_gated_bias_attention_dropout():
    from asd_lib.backbones.beats import GatedBiasAttention

    p = 0.1
    args = _attention_inputs(b=2, h=3, n=64, hd=8)
    with torch.enable_grad():
        torch.manual_seed(5)
        out = GatedBiasAttention.apply(*args, p)
        keep = out.grad_fn.saved_tensors[-1]  # the bool keep-mask the backward pass uses
        torch.manual_seed(5)
        again = GatedBiasAttention.apply(*args, p)
        torch.manual_seed(6)
        other = GatedBiasAttention.apply(*args, p)
        ref = _math_attention(*args, keep_mask=keep, p=p)
        go = torch.randn_like(out)
        got = torch.autograd.grad(out, args, go)
        want = torch.autograd.grad(ref, args, go)
    assert torch.equal(out, again) and not torch.equal(out, other)  # deterministic for a fixed torch seed
    assert keep.dtype == torch.bool and keep.shape == (2, 3, 64, 64)
    assert abs((~keep).float().mean().item() - p) < 0.01  # 24,576 draws: 5 standard deviations
    assert torch.allclose(out, ref, rtol=0, atol=1e-10)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_beats_train_attention_matches_sdpa(monkeypatch):
    """Train mode without dropout: the chunked CPU attention gives the loss and gradients of the SDPA path."""
    from asd_lib.backbones import beats

    enc = load_backbone("beats-tiny", encoder_layerdrop=0.0, dropout=0.0, attention_dropout=0.0,
                        dropout_input=0.0).train()
    gen = torch.Generator().manual_seed(1)
    fb = torch.randn(2, 48, 128, generator=gen)
    weights = torch.randn(2, 24, enc.embed_dim, generator=gen)  # a loss that depends on every token and channel
    calls = []
    apply = beats.GatedBiasAttention.apply
    monkeypatch.setattr(beats.GatedBiasAttention, "apply", lambda *a: calls.append(1) or apply(*a))
    results = []
    for chunked in (True, False):
        monkeypatch.setattr(beats, "CHUNKED_CPU_ATTENTION", chunked)
        enc.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = (enc.forward_fbank(fb) * weights).mean()
            loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}))
    assert len(calls) == 3  # one per layer, in the chunked pass only
    (loss_new, grads_new), (loss_old, grads_old) = results
    assert torch.allclose(loss_new, loss_old, rtol=1e-5, atol=1e-6)
    assert grads_new.keys() == grads_old.keys()
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in grads_new
    for name, g in grads_new.items():
        ref = grads_old[name]  # (k_proj.bias gets ~0: softmax ignores a per-query shift of the logits)
        assert (g - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-10, name


def test_beats_train_attention_chooses_the_chunked_path_by_the_size_of_its_scores(monkeypatch):
    """By default the chunked CPU attention runs only when B x H x L x L reaches CHUNKED_MIN_SCORES; the switch
    forces either path."""
    from asd_lib.backbones import beats

    assert beats.CHUNKED_MIN_SCORES > 32 * 4 * 104 ** 2  # the demo's largest training batches stay on SDPA
    enc = load_backbone("beats-tiny", encoder_layerdrop=0.0).train()  # 3 layers, 4 heads
    calls = []
    apply = beats.GatedBiasAttention.apply
    monkeypatch.setattr(beats.GatedBiasAttention, "apply", lambda *a: calls.append(1) or apply(*a))

    def layers_chunked(frames: int, switch: bool | None, threshold: int) -> int:
        monkeypatch.setattr(beats, "CHUNKED_CPU_ATTENTION", switch)
        monkeypatch.setattr(beats, "CHUNKED_MIN_SCORES", threshold)
        calls.clear()
        with torch.enable_grad():
            enc.forward_fbank(torch.randn(2, frames, 128)).sum().backward()
        return len(calls)

    scores = 2 * 4 * 24 ** 2  # 48 frames -> 3 x 8 patches per clip
    assert layers_chunked(48, None, scores) == 3
    assert layers_chunked(48, None, scores + 1) == 0
    assert layers_chunked(48, True, 1 << 30) == 3
    assert layers_chunked(48, False, 1) == 0


def test_gated_bias_attention_same_on_threads_and_chunks(monkeypatch):
    """The worker threads and the chunk size change neither the keep-mask nor (beyond round-off) the results."""
    from asd_lib.backbones import beats

    args = _attention_inputs(b=2, h=4, n=33, hd=8)
    go = torch.randn(2, 4, 33, 8, dtype=torch.float64)
    runs = []
    old = torch.get_num_threads()
    try:
        for threads, chunk in ((1, 1 << 18), (2, 1 << 18), (2, 33 * 33 * 2), (2, 1)):
            torch.set_num_threads(threads)
            monkeypatch.setattr(beats, "ATTN_CHUNK_ELEMENTS", chunk)
            torch.manual_seed(3)
            with torch.enable_grad():
                out = beats.GatedBiasAttention.apply(*args, 0.2)
                keep = out.grad_fn.saved_tensors[-1]
                grads = torch.autograd.grad(out, args, go)
            assert torch.get_num_threads() == threads  # put back after the workers
            runs.append((keep, out, grads))
    finally:
        torch.set_num_threads(old)
    keep0, out0, grads0 = runs[0]
    for keep, out, grads in runs[1:]:
        assert torch.equal(keep, keep0)
        assert torch.allclose(out, out0, rtol=0, atol=1e-12)
        for a, b in zip(grads, grads0):
            assert torch.allclose(a, b, rtol=0, atol=1e-12)
