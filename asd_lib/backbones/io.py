"""Checkpoint formats: detect, load and save BEATs (unilm) and EAT/SSLAM (fairseq .pt, Hugging Face folder).

Formats (facts from docs/reference.md §4 and the test-vector READMEs):

- unilm BEATs: ``torch.save({'cfg': flat BEATsConfig dict, 'model': state_dict})``; fine-tuned files add
  ``finetuned_model=True``, ``predictor.*`` and ``label_dict``.
- fairseq pre-training (``cfg['model']['_name'] == 'data2vec_multi'``): encoder keys under
  ``modality_encoders.IMAGE.*`` plus ``blocks.*``; decoder keys and the ``_ema`` teacher are dropped.
- fairseq fine-tuned (``'mae_image_classification'``): the same keys prefixed ``model.`` plus ``fc_norm.*``,
  ``head.*``; the encoder cfg is in ``cfg['model']['pretrained_model_args']['model']``.
- Hugging Face folder: ``config.json`` (EATConfig fields) + ``model.safetensors`` with keys ``model.*`` where
  ``model.pre_norm`` is ``context_encoder.norm``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..fsutil import atomic_torch_save
from .base import CheckpointFormatError, Encoder, UnsupportedConfigError, construct, load_strict
from .beats import BEATS_DEFAULTS, BEATsEncoder, check_shared_bias, validate_beats_cfg
from .eat import EAT_DEFAULTS, EATEncoder, validate_eat_cfg

log = logging.getLogger(__name__)

IMG = "modality_encoders.IMAGE."
# Pre-training-only parts of a data2vec_multi checkpoint that the encoder does not use.
PRETRAIN_ONLY_PREFIXES = (IMG + "decoder.", "shared_decoder.", "recon_proj.", "cls_proj.")

# data2vec_multi (fairseq cfg['model']) field -> our flat field
_D2V_TOP = ("embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "norm_affine", "layer_norm_first",
            "encoder_dropout", "attention_dropout", "activation_dropout", "post_mlp_drop", "dropout_input",
            "layerdrop", "start_drop_path_rate", "end_drop_path_rate")
_D2V_IMAGE = ("patch_size", "in_chans", "num_extra_tokens", "prenet_depth", "use_alibi_encoder", "fixed_positions",
              "max_length", "target_length", "prenet_dropout")
# Hugging Face EATConfig field -> our flat field
_HF_MAP = {"embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads", "mlp_ratio": "mlp_ratio",
           "qkv_bias": "qkv_bias", "norm_eps": "norm_eps", "norm_affine": "norm_affine",
           "layer_norm_first": "layer_norm_first", "patch_size": "patch_size", "in_chans": "in_chans",
           "mel_bins": "mel_bins", "max_length": "max_length", "fixed_positions": "fixed_positions",
           "num_classes": "num_classes", "model_variant": "model_variant", "drop_rate": "encoder_dropout",
           "attn_drop_rate": "attention_dropout", "activation_dropout": "activation_dropout",
           "post_mlp_drop": "post_mlp_drop", "start_drop_path_rate": "start_drop_path_rate",
           "end_drop_path_rate": "end_drop_path_rate"}


# ----------------------------------------------------------------------------------------------- loading
def read_torch_file(path: Path, allow_pickle: bool = False) -> Any:
    """torch.load with weights_only=True; only with ``allow_pickle=True`` fall back to full unpickling."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends
        if not allow_pickle:
            raise CheckpointFormatError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Real fairseq files can hold non-tensor objects "
                "(e.g. extra_state.metrics). If you trust this file, load it with "
                "load_backbone(path, allow_pickle=True), which runs Python's unpickler on it.") from err
    log.warning("%s: loading with weights_only=False (allow_pickle=True): only do this for trusted files", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def detect_format(obj: Any) -> str:
    """Name the checkpoint layout of a loaded .pt object: 'beats', 'fairseq-pretrain', 'fairseq-finetuned'."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("cfg"), dict):
        cfg = obj["cfg"]
        model_cfg = cfg.get("model")
        if isinstance(model_cfg, dict) and "_name" in model_cfg:
            name = model_cfg["_name"]
            if name == "data2vec_multi":
                return "fairseq-pretrain"
            if name == "mae_image_classification":
                return "fairseq-finetuned"
            return f"fairseq-unknown:{name}"
        if "encoder_embed_dim" in cfg or "patch_embedding.weight" in obj["model"]:
            return "beats"
    return "unknown"


def _describe(obj: Any) -> str:
    """Short description of an unrecognised object for error messages."""
    if isinstance(obj, dict):
        return f"a dict with top-level keys {sorted(map(str, obj.keys()))[:12]}"
    return f"a {type(obj).__name__}"


def _apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any], valid: dict[str, Any], source: str) -> None:
    """Update ``cfg`` in place with ``overrides``; unknown field names are an error."""
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise ValueError(f"{source}: unknown cfg field(s) in overrides: {unknown}; valid fields: {sorted(valid)}")
    cfg.update(overrides)


def eat_cfg_from_fairseq(model_cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """Flat EAT cfg from a fairseq ``data2vec_multi`` model cfg."""
    image = (model_cfg.get("modalities") or {}).get("image")
    if not isinstance(image, dict):
        raise UnsupportedConfigError(f"{source}: cfg.model.modalities.image is missing; only the IMAGE (fbank) "
                                     "modality of data2vec_multi (EAT/SSLAM) is supported")
    cfg = {k: model_cfg[k] for k in _D2V_TOP if k in model_cfg and model_cfg[k] is not None}
    cfg.update({k: image[k] for k in _D2V_IMAGE if k in image and image[k] is not None})
    if image.get("embed_dim") not in (None, cfg.get("embed_dim")):
        raise UnsupportedConfigError(f"{source}: modalities.image.embed_dim={image['embed_dim']} differs from "
                                     f"embed_dim={cfg.get('embed_dim')} (a projection is not implemented)")
    return cfg


def _load_beats(obj: dict, source: str, recipe: str | None, overrides: dict[str, Any]) -> BEATsEncoder:
    """Build a BEATsEncoder from a unilm {cfg, model} dict."""
    cfg = dict(obj["cfg"])
    _apply_overrides(cfg, overrides, {**BEATS_DEFAULTS, **cfg}, source)
    state = obj["model"]
    validate_beats_cfg(cfg, source)
    check_shared_bias(state, int(cfg.get("encoder_layers", 12)), source)
    enc = construct(BEATsEncoder, cfg, recipe)
    load_strict(enc, state, source)
    enc.source_format = "beats"
    enc.source_cfg = copy.deepcopy(obj["cfg"])
    if "label_dict" in obj:
        enc.extra["label_dict"] = obj["label_dict"]
    return enc


def _map_fairseq_keys(state: dict[str, Any], prefix: str, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip the fairseq prefixes and drop pre-training-only keys -> (our keys, dropped keys)."""
    out, dropped = {}, []
    for key, val in state.items():
        if key == "_ema":
            dropped.append(key)
            continue
        k = key[len(prefix):] if prefix and key.startswith(prefix) else key
        if k.startswith(PRETRAIN_ONLY_PREFIXES):
            dropped.append(key)
            continue
        if k.startswith(IMG):
            k = k[len(IMG):]
        out[k] = val
    return out, dropped


def _load_fairseq(obj: dict, fmt: str, source: str, recipe: str | None, overrides: dict[str, Any]) -> EATEncoder:
    """Build an EATEncoder from a fairseq pre-training or fine-tuned checkpoint dict."""
    model_cfg = obj["cfg"]["model"]
    if fmt == "fairseq-finetuned":
        pre = model_cfg.get("pretrained_model_args")
        if not isinstance(pre, dict) or not isinstance(pre.get("model"), dict):
            raise UnsupportedConfigError(f"{source}: fine-tuned cfg has no pretrained_model_args.model, so the "
                                         "encoder architecture is unknown")
        cfg = eat_cfg_from_fairseq(pre["model"], source)
        for k in ("norm_eps", "encoder_dropout", "post_mlp_drop", "attention_dropout", "activation_dropout",
                  "dropout_input", "layerdrop", "prenet_dropout"):
            if model_cfg.get(k) is not None:  # the fine-tuning cfg overrides these (norm_eps when set)
                cfg[k] = model_cfg[k]
        if model_cfg.get("drop_path_rate") is not None:
            cfg["start_drop_path_rate"] = cfg["end_drop_path_rate"] = model_cfg["drop_path_rate"]
        cfg.update(model_variant="finetune", num_classes=int(model_cfg.get("num_classes", 527)),
                   use_fc_norm=bool(model_cfg.get("use_fc_norm", True)),
                   prediction_mode=str(model_cfg.get("prediction_mode", "CLS_TOKEN")))
        if model_cfg.get("target_length") is not None:
            cfg["target_length"] = model_cfg["target_length"]
        prefix = "model."
    else:
        cfg = eat_cfg_from_fairseq(model_cfg, source)
        cfg["model_variant"] = "pretrain"
        prefix = ""
    _apply_overrides(cfg, overrides, {**EAT_DEFAULTS, **cfg}, source)
    state, dropped = _map_fairseq_keys(obj["model"], prefix, source)
    if dropped:
        log.debug("%s: dropped %d pre-training-only entries (decoder, _ema, ...)", source, len(dropped))
    enc = construct(EATEncoder, validate_eat_cfg(cfg, source), recipe)
    load_strict(enc, state, source)
    enc.source_format, enc.source_cfg = fmt, copy.deepcopy(obj["cfg"])
    return enc


def _load_hf(folder: Path, recipe: str | None, overrides: dict[str, Any]) -> EATEncoder:
    """Build an EATEncoder from a Hugging Face folder (config.json + model.safetensors)."""
    source = str(folder)
    with open(folder / "config.json", encoding="utf-8") as fh:
        hf = json.load(fh)
    cfg = {ours: hf[theirs] for theirs, ours in _HF_MAP.items() if theirs in hf}
    stride = hf.get("stride", hf.get("patch_size"))
    if stride != hf.get("patch_size", stride):
        raise UnsupportedConfigError(f"{source}/config.json: stride={stride} differs from patch_size="
                                     f"{hf.get('patch_size')} (overlapping patches are not implemented)")
    if isinstance(hf.get("img_size"), (list, tuple)) and len(hf["img_size"]) == 2:
        cfg["target_length"] = int(hf["img_size"][0])
        if int(hf["img_size"][1]) != int(hf.get("mel_bins", 128)):
            raise UnsupportedConfigError(f"{source}/config.json: img_size {hf['img_size']} does not match "
                                         f"mel_bins {hf.get('mel_bins')}")
    _apply_overrides(cfg, overrides, {**EAT_DEFAULTS, **cfg}, source)
    raw = load_file(str(folder / "model.safetensors"))
    state = {}
    for key, val in raw.items():
        k = key[len("model."):] if key.startswith("model.") else key
        if k.startswith("pre_norm."):
            k = "context_encoder.norm." + k[len("pre_norm."):]
        state[k] = val
    enc = construct(EATEncoder, validate_eat_cfg(cfg, source), recipe)
    load_strict(enc, state, source + "/model.safetensors")
    enc.source_format, enc.source_cfg = "hf", hf
    return enc


def load_checkpoint(path: str | Path, recipe: str | None = None, allow_pickle: bool = False,
                    **overrides: Any) -> Encoder:
    """Load an official checkpoint (unilm BEATs .pt, fairseq EAT/SSLAM .pt, HF folder) into our encoder."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            enc: Encoder = _load_hf(path, recipe, overrides)
        else:
            raise CheckpointFormatError(
                f"{path}: a folder, but not a Hugging Face EAT/SSLAM folder (need config.json and "
                f"model.safetensors; found {sorted(p.name for p in path.iterdir())[:10]})")
    elif path.is_file():
        if path.suffix == ".safetensors" or path.name == "config.json":
            raise CheckpointFormatError(f"{path}: pass the Hugging Face folder that holds config.json and "
                                        f"model.safetensors ({path.parent}), not one of its files")
        obj = read_torch_file(path, allow_pickle=allow_pickle)
        fmt = detect_format(obj)
        if fmt == "beats":
            enc = _load_beats(obj, str(path), recipe, overrides)
        elif fmt in ("fairseq-pretrain", "fairseq-finetuned"):
            enc = _load_fairseq(obj, fmt, str(path), recipe, overrides)
        elif fmt.startswith("fairseq-unknown"):
            raise CheckpointFormatError(
                f"{path}: a fairseq checkpoint of model '{fmt.split(':', 1)[1]}'; supported are 'data2vec_multi' "
                "(EAT/SSLAM pre-training) and 'mae_image_classification' (EAT/SSLAM fine-tuned)")
        else:
            raise CheckpointFormatError(
                f"{path}: unknown checkpoint format ({_describe(obj)}). Expected a unilm BEATs file "
                "{'cfg': BEATsConfig dict, 'model': state_dict}, a fairseq EAT/SSLAM file {'cfg': {'model': "
                "{'_name': ...}}, 'model': ...}, or a Hugging Face folder with config.json + model.safetensors.")
    else:
        raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
    log.debug("loaded %s (%s, %s format, recipe %s) cfg=%s", path, enc.kind, enc.source_format, enc.recipe,
             json.dumps(enc.cfg, sort_keys=True, default=str))
    return enc


# ------------------------------------------------------------------------------------------------ saving
def _fairseq_model_cfg(enc: EATEncoder) -> dict[str, Any]:
    """A data2vec_multi model cfg describing this encoder (based on the loaded one when there is one)."""
    c = enc.cfg
    base: dict[str, Any] = {}
    src = enc.source_cfg if enc.source_format in ("fairseq-pretrain", "fairseq-finetuned") else None
    if src is not None:
        m = src["model"]
        base = copy.deepcopy(m["pretrained_model_args"]["model"] if m.get("_name") == "mae_image_classification"
                             else m)
    base["_name"] = "data2vec_multi"
    for k in _D2V_TOP:
        base[k] = c[k]
    image = base.setdefault("modalities", {}).setdefault("image", {})
    image["type"] = "IMAGE"
    for k in _D2V_IMAGE:
        image[k] = c[k]
    image["embed_dim"] = c["embed_dim"]
    image["model_depth"] = c["depth"]
    base.setdefault("supported_modality", "IMAGE")
    return base


def save_encoder(enc: Encoder, path: str | Path, format: str | None = None) -> Path:
    """Write ``enc`` in an official format; returns the path. EAT: '.pt' -> fairseq, folder -> 'hf'."""
    path = Path(path)
    if isinstance(enc, BEATsEncoder):
        if format not in (None, "beats"):
            raise ValueError(f"BEATs encoders save only in the unilm format, not {format!r}")
        obj: dict[str, Any] = {"cfg": dict(enc.cfg), "model": {k: v.detach().cpu().clone()
                                                                for k, v in enc.official_state_dict().items()}}
        if "label_dict" in enc.extra:
            obj["label_dict"] = enc.extra["label_dict"]
        atomic_torch_save(obj, path)
        return path
    if not isinstance(enc, EATEncoder):
        raise TypeError(f"cannot save a {type(enc).__name__}")
    fmt = format or ("fairseq" if path.suffix == ".pt" else "hf")
    state = {k: v.detach().cpu().clone() for k, v in enc.official_state_dict().items()}
    if fmt == "hf":
        return _save_hf(enc, state, path)
    if fmt != "fairseq":
        raise ValueError(f"unknown EAT save format {format!r}; use 'fairseq' (.pt) or 'hf' (folder)")
    model_cfg = _fairseq_model_cfg(enc)
    enc_keys = {}
    for k, v in state.items():
        if k.startswith(("local_encoder.", "extra_tokens", "fixed_positional_encoder.", "context_encoder.")):
            enc_keys[IMG + k] = v
        elif k.startswith("blocks."):
            enc_keys[k] = v
    if enc.has_classifier:
        ft_cfg: dict[str, Any] = {}
        if enc.source_format == "fairseq-finetuned" and enc.source_cfg is not None:
            ft_cfg = copy.deepcopy(enc.source_cfg["model"])
        ft_cfg.update({"_name": "mae_image_classification", "num_classes": int(enc.cfg["num_classes"]),
                       "use_fc_norm": bool(enc.cfg["use_fc_norm"]), "prediction_mode": enc.cfg["prediction_mode"],
                       "target_length": int(enc.cfg["target_length"])})
        pre_args = ft_cfg.get("pretrained_model_args") or {}
        pre_args["model"] = model_cfg
        ft_cfg["pretrained_model_args"] = pre_args
        model_state = {"model." + k: v for k, v in enc_keys.items()}
        for k, v in state.items():
            if k.startswith(("fc_norm.", "head.")):
                model_state[k] = v
        cfg_model = ft_cfg
    else:
        model_state, cfg_model = enc_keys, model_cfg
    full_cfg: dict[str, Any] = {}
    if enc.source_cfg is not None and enc.source_format in ("fairseq-pretrain", "fairseq-finetuned"):
        full_cfg = copy.deepcopy(enc.source_cfg)
    full_cfg["model"] = cfg_model
    obj = {"args": None, "cfg": full_cfg, "model": model_state, "criterion": None,
           "optimizer_history": [{"criterion_name": "ModelCriterion", "optimizer_name": "asd_lib",
                                  "lr_scheduler_state": {}, "num_updates": 0}],
           "task_state": {}, "extra_state": {}}
    atomic_torch_save(obj, path)
    return path


def _save_hf(enc: EATEncoder, state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write a Hugging Face EAT folder (config.json + model.safetensors), each file atomically."""
    c = enc.cfg
    hf: dict[str, Any] = dict(enc.source_cfg) if enc.source_format == "hf" and enc.source_cfg else {
        "architectures": ["EATModel"],
        "auto_map": {"AutoConfig": "configuration_eat.EATConfig", "AutoModel": "modeling_eat.EATModel"},
        "model_type": "eat"}
    for theirs, ours in _HF_MAP.items():
        hf[theirs] = c[ours]
    hf.update(stride=c["patch_size"], img_size=[int(c["target_length"]), int(c["mel_bins"])],
              model_variant="finetune" if enc.has_classifier else "pretrain", torch_dtype="float32")
    out = {}
    for k, v in state.items():
        if k.startswith("context_encoder.norm."):
            k = "pre_norm." + k[len("context_encoder.norm."):]
        out["model." + k] = v.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    save_file(out, tmp, metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(hf, fh, indent=2)
    os.replace(tmp, folder / "config.json")
    return folder
