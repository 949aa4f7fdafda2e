"""Turning a finished batch run into an online system folder (``export_system``).

Reads the run's params, checkpoints, cached embeddings and scores; copies the scorers the scoring stage
stored, refuses them unless they reproduce the cached raw test scores and the fused scores equal
``fusion.fuse_online``'s (``batch_online_scores``), then lets ``OnlineSystem.save`` write the folder.
Refuses offline or test-dependent settings (``fusion_args_from``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asd_lib.artifacts import embedding_source, fitted_path, layout, load_embeddings
from asd_lib.fsutil import file_sha256
from asd_lib.fusion import (AAU_Z_CONSTANTS, check_aau_constants, fuse_online, list_machines,
                            load_machine_scores, z_constants)
from asd_lib.online.common import _ONLINE_NORMALISATIONS
from asd_lib.online.system import ExportError, ModelSpec, OnlineSystem
from asd_lib.scorer_io import load_scorer, scorer_files
from asd_lib.scorers import final_step, make_scorer, scorer_params_from


def _resolve_params(params: Any) -> dict[str, Any]:
    """Params object, mapping, params.json (runner format), YAML file or system name -> flat dict of values."""
    from asd_lib import params as P

    if isinstance(params, P.Params):
        return dict(params.values)
    if isinstance(params, Mapping):
        vals = params.get("values", params) if "values" in params and isinstance(params["values"], Mapping) \
            else params
        return dict(vals)
    if isinstance(params, (str, Path)):
        s = str(params)
        if s in P.SYSTEMS:
            return dict(P.load(s).values)
        path = Path(s)
        if not path.is_file():
            raise ExportError(f"params not found: {s}; give results/<system>/params.json, a YAML file, a system "
                              f"name ({', '.join(P.SYSTEMS)}) or a dict of values")
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
            return dict(obj.get("values", obj))
        return dict(P.read_yaml(path))
    raise ExportError(f"params must be a Params, a mapping, a file or a system name, got {type(params).__name__}")


def fusion_args_from(params: Mapping[str, Any]) -> dict[str, Any]:
    """``asd_lib.fusion.fuse_online`` arguments of an online system's params (refuses test-dependent choices)."""
    if params.get("fusion_mode", "online") != "online":
        raise ExportError(f"system {params.get('system')!r} uses fusion_mode={params.get('fusion_mode')!r}: "
                          "offline rank fusion scores a clip against the other test clips, so it cannot score one "
                          "clip alone. Export an online system (dev_online, devadd_online)")
    normalisation = params.get("online_normalisation", "pooled")
    if normalisation not in _ONLINE_NORMALISATIONS:
        raise ExportError(f"online_normalisation={normalisation!r} cannot be exported: a per-clip system needs fixed "
                          f"constants ({' | '.join(_ONLINE_NORMALISATIONS)}); 'streaming' makes a clip's score depend "
                          "on the test clips before it")
    decision = params.get("online_decision", "calibration")
    if decision != "calibration":
        raise ExportError(f"online_decision={decision!r} min-max scales over the machine's TEST clips, so one clip "
                          "cannot be decided alone; export with online_decision: calibration (the test-independent "
                          "threshold on fused calibration scores)")
    return {"normalisation": normalisation, "decision": "calibration",
            "quantile": float(params.get("decision_quantile", 0.9)), "fusion": params.get("fusion_pool", "min")}


def _checkpoint_info(ckpt: Path) -> tuple[str | None, list[str], bool]:
    """(fbank recipe, classes, classes_with_channel) recorded by asd_lib.finetune next to a checkpoint."""
    cfg_path = ckpt.parent / "config.json"
    recipe, classes, with_ch = None, [], True
    if cfg_path.is_file():
        blob = json.loads(cfg_path.read_text())
        recipe = blob.get("recipe")
        classes = list(blob.get("classes", []))
        with_ch = bool(blob.get("config", {}).get("classes_with_channel", True))
    head = ckpt.with_name(ckpt.stem + ".head.pt")
    if not classes and head.is_file():
        from asd_lib.finetune.heads import load_head  # torch

        classes = load_head(head)[1]
    return recipe, classes, with_ch


def _stored_scorers(score_root: Path, models: Sequence[str], machines: Sequence[str], scorer_ids: Sequence[str],
                    channel: str) -> dict[tuple[str, str, str], Path]:
    """(machine, model, scorer) -> the fitted scorer the scoring stage stored (``artifacts.fitted_path``)."""
    out = {}
    for mc in machines:
        for m in models:
            for sid in scorer_ids:
                path = fitted_path(score_root, m, channel, sid, mc)
                if not all(f.is_file() for f in scorer_files(path)):
                    raise ExportError(f"no fitted {sid} scorer of {m}/{mc} at {path}.json/.npz: the scores under "
                                      f"{score_root} were made by an older version of the kit; rerun the scoring "
                                      "notebooks (03*, or asd-run --only 03 --force)")
                out[mc, m, sid] = path
    return out


def _check_settings(est: Any, scorer: str, vals: Mapping[str, Any], where: str) -> None:
    """ExportError unless a stored scorer has the settings these params give (parameters, preprocessing, seed)."""
    sp = scorer_params_from(vals).get(scorer, {})
    want = make_scorer(scorer, preprocess=vals.get("preprocess", "aau"), seed=int(vals.get("seed", 0)), **sp)
    got_steps = [type(e).__name__ for e in getattr(est, "named_steps", {"": est}).values()]
    want_steps = [type(e).__name__ for e in getattr(want, "named_steps", {"": want}).values()]
    drop = {"device"}  # where it ran, not what it computes
    got = {k: v for k, v in final_step(est).get_params().items() if k not in drop}
    exp = {k: v for k, v in final_step(want).get_params().items() if k not in drop}
    if got_steps != want_steps or got != exp:
        diff = sorted(k for k in set(got) | set(exp) if got.get(k) != exp.get(k))
        raise ExportError(f"{where}: the {scorer} scorer the scoring stage stored ({' + '.join(got_steps)}"
                          + (f"; {', '.join(f'{k}={got.get(k)!r}' for k in diff)}" if diff else "")
                          + f") is not the one these params describe ({' + '.join(want_steps)}"
                          + (f"; {', '.join(f'{k}={exp.get(k)!r}' for k in diff)}" if diff else "")
                          + "): rerun the scoring notebooks (03*) with these params, or export with the params "
                          "the scores were made with")


def batch_online_scores(score_root: str | Path, models: Sequence[str], scorers: Sequence[str], channel: str,
                        fusion_args: Mapping[str, Any], machines: Sequence[str] | None = None) -> dict:
    """The batch pipeline's online result for reference: ``fusion.fuse_online`` on the score cache."""
    return fuse_online(score_root, models, scorers, channel=channel, machines=machines, **dict(fusion_args))


def export_system(out_dir: str | Path, params: Any, *, results_dir: str | Path | None = None,
                  machines: Sequence[str] | None = None,
                  overwrite: bool = False, rtol: float = 1e-7, atol: float = 1e-10) -> Path:
    """Export the online system of a finished batch run to ``out_dir``; returns the folder.

    ``params``: the system's parameters (results/<system>/params.json, a Params, a dict of values, a YAML or a
    system name); ``results_dir`` overrides ``params['results_dir']``. Reads results/<regime>/checkpoints,
    embeddings and scores; takes the scorers the scoring stage fitted and stored (``artifacts.fitted_path``, copied
    byte for byte: nothing is refitted), checks that they reproduce the cached raw test scores (``rtol``/``atol``;
    ExportError otherwise) and that the fused scores equal ``fuse_online``'s, then writes the folder atomically.
    """
    from asd_lib import params as P

    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it, or choose "
                              "another folder")
    vals = _resolve_params(params)
    fargs = fusion_args_from(vals)
    regime = vals.get("regime", "dev")
    rdir = Path(results_dir) if results_dir is not None else Path(vals.get("results_dir", "results"))
    if results_dir is None and not rdir.is_absolute() and not rdir.exists():
        rdir = P.ROOT / rdir
    lay = layout(rdir, regime, vals.get("system", ""))
    models = lay.models(vals.get("ensemble", []), float(vals.get("epoch_scale", 1.0)),
                        vals.get("epoch_selection", "fixed"))
    if not models:
        raise ExportError("the params name no models (ensemble is empty)")
    scorer_ids = list(vals.get("scorers", ["knn", "ae", "ldn"]))
    channel, pooling = vals.get("channel", "ch0"), vals.get("pooling", "gem")

    # ---- backbones and the label scheme
    all_machines = list_machines(lay.scores, models, scorer_ids, channel)
    specs, sources, classes, with_ch = [], {}, None, True
    for m in models:
        ckpt = lay.checkpoint(m)
        if not ckpt.is_file():
            raise ExportError(f"checkpoint of {m} not found: {ckpt}; run the fine-tuning stage "
                              "(notebook 01_finetune_arcface) of this regime first")
        recipe, cls, wch = _checkpoint_info(ckpt)
        backbone = m.partition("@")[0]
        if recipe is None:
            recipe = vals.get("sslam_recipe", "aau") if backbone.startswith("sslam") else "beats"
        if not cls:
            raise ExportError(f"no class list next to {ckpt} (config.json or {ckpt.stem}.head.pt)")
        if classes is None:
            classes, with_ch = cls, wch
        elif cls != classes:
            raise ExportError(f"{m} was fine-tuned on another label scheme ({len(cls)} classes) than {models[0]} "
                              f"({len(classes)}); every backbone of one system must share it")
        from asd_lib.backbones import load_backbone

        made_from = {embedding_source(lay.embeddings, m, channel, mc, split)
                     for mc in all_machines for split in ("train", "test")}
        if made_from != {file_sha256(ckpt)}:
            raise ExportError(f"the cached {channel} embeddings of {m} under {lay.embeddings} were not made from "
                              f"{ckpt} as it is now (its sha256 differs from the one they recorded): rerun the "
                              "embedding and scoring stages (notebooks 02 and 03*) before exporting")
        enc = load_backbone(ckpt, recipe=recipe)
        specs.append(ModelSpec(id=m, kind=enc.kind, recipe=enc.recipe, file=f"backbones/{m}.pt",
                               embed_dim=int(enc.embed_dim), source=str(ckpt)))
        sources[m] = ckpt
        del enc

    # ---- scorers: refit and verify against the cache
    chosen = list(machines) if machines is not None else all_machines
    missing = sorted(set(chosen) - set(all_machines))
    if missing:
        raise ExportError(f"machines {missing} have no cached scores for every model and scorer under {lay.scores}")
    stored = _stored_scorers(lay.scores, models, chosen, scorer_ids, channel)
    fitted: dict[str, dict[str, dict[str, Any]]] = {mc: {m: {} for m in models} for mc in chosen}
    for (mc, m, sid), path in stored.items():
        try:
            fitted[mc][m][sid] = load_scorer(path)
        except (OSError, ValueError) as err:
            raise ExportError(f"cannot read the fitted {sid} scorer of {m}/{mc}: {err}") from None
        _check_settings(fitted[mc][m][sid], sid, vals, f"{path}.json")

    worst_raw = 0.0
    for mc in chosen:
        names, cached = load_machine_scores(lay.scores, models, scorer_ids, mc, channel)
        for m in models:
            te = load_embeddings(lay.embeddings, m, channel, mc, "test")
            pos = {n: i for i, n in enumerate(np.asarray(te["names"]).astype(str))}
            Xte = te["emb"][[pos[n] for n in names]].astype(np.float64)
            for s in scorer_ids:
                mine = fitted[mc][m][s].decision_function(Xte)
                ref = cached[s][m]["test"]
                if not np.allclose(mine, ref, rtol=rtol, atol=atol):
                    err = float(np.max(np.abs(mine - ref)))
                    raise ExportError(
                        f"the stored {s} scorer of {m}/{mc} does not reproduce the cached raw test scores in "
                        f"{lay.score(m, channel, s, mc)} (max abs diff {err:.3g}): the two files "
                        f"are not from one run of the scoring stage; rerun the scoring notebooks (03*, or asd-run "
                        f"--only 03 --force)")
                worst_raw = max(worst_raw, float(np.max(np.abs(mine - ref), initial=0.0)))

    # ---- calibration constants and thresholds (fusion module, over ALL machines as the batch run)
    norm = fargs["normalisation"]
    if norm == "aau-constants":
        check_aau_constants({mc: load_machine_scores(lay.scores, models, scorer_ids, mc, channel)[1]
                             for mc in all_machines}, scorer_ids)
        constants = {s: tuple(map(float, AAU_Z_CONSTANTS[s])) for s in scorer_ids}
    else:
        calib = {}
        for mc in all_machines:
            _, sc = load_machine_scores(lay.scores, models, scorer_ids, mc, channel)
            calib.update({(mc, m, s): sc[s][m]["calib"] for m in models for s in scorer_ids})
        zc = z_constants(calib, "pooled" if norm == "pooled" else "per-machine")
        constants = {(k if isinstance(k, str) else "|".join(k)): (float(v[0]), float(v[1])) for k, v in zc.items()
                     if isinstance(k, str) or k[0] in chosen}
    batch = batch_online_scores(lay.scores, models, scorer_ids, channel, fargs, machines=all_machines)
    thresholds = {mc: float(batch[mc].attrs["threshold"]) for mc in chosen}

    system = OnlineSystem(models=specs, encoders={}, scorers=fitted, scorer_ids=scorer_ids, constants=constants,
                          thresholds=thresholds, channel=channel, pooling=pooling, duration=None,
                          normalisation=norm, fusion=fargs["fusion"], quantile=fargs["quantile"],
                          classes=list(classes or []), classes_with_channel=with_ch, params=vals)
    # ---- end-to-end check on the cached test embeddings: fused scores and decisions equal fuse_online's
    worst_fused = 0.0
    for mc in chosen:
        names = np.asarray(batch[mc]["names"]).astype(str)
        embs = {}
        for m in models:
            te = load_embeddings(lay.embeddings, m, channel, mc, "test")
            pos = {n: i for i, n in enumerate(np.asarray(te["names"]).astype(str))}
            embs[m] = te["emb"][[pos[n] for n in names]]
        res = system.score_embeddings(embs, mc)
        diff = np.abs(res["fused"] - batch[mc]["score"].to_numpy())
        worst_fused = max(worst_fused, float(diff.max(initial=0.0)))
        if not np.allclose(res["fused"], batch[mc]["score"].to_numpy(), rtol=1e-9, atol=1e-9) or \
                not np.array_equal(res["decision"], batch[mc]["decision"].to_numpy()):
            raise ExportError(f"internal check failed for {mc}: fused scores of the exported scorers differ from "
                              f"fuse_online by {diff.max():.3g}; please report this")
    extra = {"verification": {
        "scorers_vs_cached_raw_test_scores_max_abs_diff": worst_raw,
        "fused_vs_fuse_online_max_abs_diff": worst_fused,
        "machines_checked": chosen, "note": "scores of the cached test EMBEDDINGS; clip-level equality (audio -> "
        "embedding) is tested in tests/test_online.py"},
        "built_from": {"results_dir": str(rdir), "regime": regime, "models": models}}
    return system.save(out_dir, overwrite=overwrite, extra_manifest=extra, checkpoint_sources=sources,
                       scorer_sources=stored)
