"""Fitted scorers to files and back without pickle: a small JSON file plus an npz of numeric arrays.

``save_scorer(est, "dir/knn")`` writes ``dir/knn.json`` and ``dir/knn.npz``; ``load_scorer("dir/knn")`` rebuilds
the fitted estimator from them with ``json`` and ``np.load(..., allow_pickle=False)``: the files hold data only,
and the classes they name must be among the few below (anything else is refused). Covered: ``AAUPreprocess``,
``KNNScorer``, ``GMMScorer``, ``AEScorer``, ``LDNScorer``, and an sklearn ``Pipeline`` of them (``make_scorer`` puts
``AAUPreprocess`` in front).

The JSON holds the format name and version and one node per estimator: its class name, its constructor parameters
(``get_params(deep=False)``) and its fitted attributes. Strings, numbers, booleans and None are stored in the JSON;
every array (numeric dtypes only) is stored in the npz and referenced from the JSON as ``{"array": key}``; a dict
is stored as ``{"dict": {...}}``. Nested sklearn objects are stored as the data that rebuilds them: each
``NearestNeighbors`` bank of a KNNScorer as its parameters and training array (refitted on load; the brute-force
search it runs then is the same computation on the same numbers), the ``GaussianMixture`` of a GMMScorer as its
parameters and the fitted arrays ``score_samples`` reads. Autoencoder weights held as torch tensors are stored as
numpy arrays and come back as numpy arrays, the type ``scorers.ae_network.reconstruction_mse`` takes.
"""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline

from asd_lib.fsutil import atomic_savez, atomic_write_text
from asd_lib.scorers.autoencoder import AEScorer
from asd_lib.scorers.gmm import GMMScorer
from asd_lib.scorers.knn import KNNScorer
from asd_lib.scorers.ldn import LDNScorer
from asd_lib.scorers.preprocess import AAUPreprocess

__all__ = ["SCORER_FORMAT", "SCORER_FORMAT_VERSION", "save_scorer", "load_scorer", "scorer_files"]

SCORER_FORMAT = "asd-kit scorer"
SCORER_FORMAT_VERSION = 1

#: Fitted attributes stored per estimator class (constructor parameters are stored separately).
_FITTED: dict[type, tuple[str, ...]] = {
    AAUPreprocess: ("references_", "quantiles_", "n_features_in_"),
    KNNScorer: ("bank_keys_", "bank_index_", "banks_", "n_train_", "n_features_in_"),
    GMMScorer: ("gmm_", "n_features_in_"),
    AEScorer: ("params_", "n_epochs_", "loss_curve_", "n_features_in_"),
    LDNScorer: ("references_", "density_", "n_used_neighbours_", "tail_weight_", "n_features_in_"),
}
_CLASSES: dict[str, type] = {cls.__name__: cls for cls in _FITTED}

#: GaussianMixture attributes stored; the first four and n_features_in_ are what score_samples needs.
_GMM_FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "converged_", "n_iter_",
               "lower_bound_", "lower_bounds_", "n_features_in_")
_GMM_REQUIRED = {"weights_", "means_", "covariances_", "precisions_cholesky_", "n_features_in_"}


# ------------------------------------------------------------------------------------------ plain values
def scorer_files(path: str | Path) -> tuple[Path, Path]:
    """(``<path>.json``, ``<path>.npz``) for a path given without suffix."""
    p = Path(path)
    return p.parent / (p.name + ".json"), p.parent / (p.name + ".npz")


def _as_numpy(value: Any) -> Any:
    """A torch tensor as a numpy array (torch is not imported for this); anything else unchanged."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON value for ``value``; arrays are put in ``arrays[key]`` and referenced by ``{"array": key}``."""
    value = _as_numpy(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"save_scorer: {key} is a {value.dtype} array; only numeric arrays are stored "
                             "(strings belong in the JSON)")
        if key in arrays:
            raise ValueError(f"save_scorer: two arrays would be stored under the name {key!r}")
        arrays[key] = value
        return {"array": key}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    raise ValueError(f"save_scorer: {key} is a {type(value).__name__}, which cannot be stored without pickle")


def _decode(value: Any, arrays: Mapping[str, np.ndarray], where: Path) -> Any:
    """Inverse of ``_encode``: ``{"array": key}`` -> the npz array, ``{"dict": ...}`` -> dict, lists element-wise."""
    if isinstance(value, list):
        return [_decode(v, arrays, where) for v in value]
    if isinstance(value, dict):
        if set(value) == {"array"}:
            if value["array"] not in arrays:
                raise ValueError(f"{where}: array {value['array']!r} is missing from the npz file next to it")
            return arrays[value["array"]]
        if set(value) == {"dict"} and isinstance(value["dict"], dict):
            return {k: _decode(v, arrays, where) for k, v in value["dict"].items()}
        raise ValueError(f"{where}: unexpected JSON object with keys {sorted(value)}")
    return value


# ------------------------------------------------------------------------------------ nested sklearn objects
def _neighbors_state(banks: list[NearestNeighbors]) -> list[dict[str, Any]]:
    """KNN banks -> their parameters and training arrays."""
    return [{"params": nn.get_params(deep=False), "fit_X": nn._fit_X} for nn in banks]


def _neighbors_from(state: list[dict[str, Any]]) -> list[NearestNeighbors]:
    """KNN banks refitted on their stored training arrays."""
    return [NearestNeighbors(**bank["params"]).fit(bank["fit_X"]) for bank in state]


def _gmm_state(gmm: GaussianMixture) -> dict[str, Any]:
    """A fitted GaussianMixture -> its parameters and fitted attributes."""
    return {"params": gmm.get_params(deep=False),
            "fitted": {a: getattr(gmm, a) for a in _GMM_FITTED if hasattr(gmm, a)}}


def _gmm_from(state: dict[str, Any]) -> GaussianMixture:
    """A GaussianMixture with its fitted attributes set, ready for ``score_samples``."""
    fitted = state["fitted"]
    unknown, missing = set(fitted) - set(_GMM_FITTED), _GMM_REQUIRED - set(fitted)
    if unknown or missing:
        raise ValueError(f"GaussianMixture attributes: unknown {sorted(unknown)}, missing {sorted(missing)}")
    gmm = GaussianMixture(**state["params"])
    for name, value in fitted.items():
        setattr(gmm, name, value)
    return gmm


_NESTED: dict[tuple[type, str], tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    (KNNScorer, "banks_"): (_neighbors_state, _neighbors_from),
    (GMMScorer, "gmm_"): (_gmm_state, _gmm_from),
}


# ------------------------------------------------------------------------------------------ estimators
def _node(est: BaseEstimator, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The JSON node of one estimator (a Pipeline's steps recursively); its arrays go to ``arrays``."""
    if isinstance(est, Pipeline):
        params = {k: v for k, v in est.get_params(deep=False).items() if k != "steps"}
        return {"class": "Pipeline", "params": _encode_fields(params, prefix, arrays),
                "steps": [[name, _node(step, f"{prefix}{name}.", arrays)] for name, step in est.steps]}
    cls = type(est)
    if cls not in _FITTED:
        raise ValueError(f"save_scorer: cannot store a {cls.__name__}; storable are Pipeline and "
                         f"{', '.join(_CLASSES)}")
    missing = [a for a in _FITTED[cls] if not hasattr(est, a)]
    if missing:
        raise ValueError(f"save_scorer: the {cls.__name__} is not fitted (no {', '.join(missing)})")
    fitted = {}
    for attr in _FITTED[cls]:
        value = getattr(est, attr)
        if (cls, attr) in _NESTED:
            value = _NESTED[cls, attr][0](value)
        fitted[attr] = value
    return {"class": cls.__name__, "params": _encode_fields(est.get_params(deep=False), f"{prefix}params.", arrays),
            "fitted": _encode_fields(fitted, prefix, arrays)}


def _encode_fields(fields: dict[str, Any], prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """``_encode`` of each field, its array names prefixed with ``prefix``."""
    return {k: _encode(v, prefix + k, arrays) for k, v in fields.items()}


def _construct(cls: type, params: dict[str, Any], where: Path) -> Any:
    """``cls(**params)``; ValueError naming the file when the class does not take those parameters."""
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"{where}: {cls.__name__} does not take the stored parameters ({err}); the file was "
                         "written by another version of asd_lib or scikit-learn") from None


def _build(node: Any, arrays: dict[str, np.ndarray], where: Path) -> BaseEstimator:
    """The fitted estimator of one JSON node."""
    if not isinstance(node, dict) or not isinstance(node.get("class"), str):
        raise ValueError(f"{where}: an estimator entry without a class name")
    name = node["class"]
    params = {k: _decode(v, arrays, where) for k, v in node.get("params", {}).items()}
    if name == "Pipeline":
        entries = node.get("steps", [])
        if not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in entries):
            raise ValueError(f"{where}: each Pipeline step must be [name, estimator]")
        steps = [(step_name, _build(step, arrays, where)) for step_name, step in entries]
        return _construct(Pipeline, {**params, "steps": steps}, where)
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"{where}: unknown scorer class {name!r}; this asd_lib reads Pipeline and "
                         f"{', '.join(_CLASSES)}")
    est = _construct(cls, params, where)
    fitted = node.get("fitted", {})
    if set(fitted) != set(_FITTED[cls]):
        raise ValueError(f"{where}: {name} has fitted attributes {sorted(fitted)}; expected {sorted(_FITTED[cls])}")
    for attr in _FITTED[cls]:
        value = _decode(fitted[attr], arrays, where)
        if (cls, attr) in _NESTED:
            try:
                value = _NESTED[cls, attr][1](value)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: cannot rebuild {name}.{attr} ({err})") from None
        setattr(est, attr, value)
    return est


def _read_arrays(npath: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file, read with ``allow_pickle=False``; ValueError naming the file otherwise."""
    if not npath.is_file():
        raise FileNotFoundError(f"{npath}: no such file (save_scorer writes it next to the JSON file)")
    try:
        loaded = np.load(npath, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("not an npz archive")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{npath}: cannot be read as an npz of numeric arrays ({err})") from None


# ------------------------------------------------------------------------------------------ public
def save_scorer(est: BaseEstimator, path: str | Path) -> list[Path]:
    """Write a fitted scorer as ``<path>.json`` + ``<path>.npz`` (``path`` without suffix); returns both paths."""
    arrays: dict[str, np.ndarray] = {}
    doc = {"format": SCORER_FORMAT, "format_version": SCORER_FORMAT_VERSION, "estimator": _node(est, "", arrays)}
    jpath, npath = scorer_files(path)
    atomic_savez(npath, **arrays)
    atomic_write_text(jpath, json.dumps(doc, indent=1) + "\n")
    return [jpath, npath]


def load_scorer(path: str | Path) -> BaseEstimator:
    """Rebuild the fitted scorer that ``save_scorer`` wrote to ``<path>.json`` + ``<path>.npz``, without pickle.

    Raises FileNotFoundError for a missing file and ValueError naming the file for anything else it cannot read:
    invalid JSON, another format or format version, an unknown class, a missing or non-numeric array.
    """
    jpath, npath = scorer_files(path)
    try:
        doc = json.loads(jpath.read_text())
    except ValueError as err:
        raise ValueError(f"{jpath}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != SCORER_FORMAT \
            or doc.get("format_version") != SCORER_FORMAT_VERSION:
        got = (doc.get("format"), doc.get("format_version")) if isinstance(doc, dict) else (None, None)
        raise ValueError(f"{jpath}: format {got[0]!r} version {got[1]!r}; this asd_lib reads {SCORER_FORMAT!r} "
                         f"version {SCORER_FORMAT_VERSION}")
    arrays = _read_arrays(npath)
    try:
        return _build(doc.get("estimator"), arrays, jpath)
    except (AttributeError, KeyError, TypeError) as err:
        raise ValueError(f"{jpath}: not a scorer file of this layout ({type(err).__name__}: {err})") from None
