"""Parameters: flat YAML files merged in order, checked against the notebooks' ``parameters`` cells.

A system's parameters are ``params/base.yaml``, then ``params/<system>.yaml``, then any overlays given on the
command line (``--params params/demo.yaml``), later files winning key by key. Every key must be declared by
some notebook's ``parameters`` cell (a cell tagged ``parameters`` holding ``name = literal`` lines); an unknown key
is an error that names the file it came from, and a value whose type differs from the notebook's default is an
error too. Introduced in the README ("Running the systems") and used by ``asd_lib.run``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

# the run's folders live in asd_lib.artifacts; Layout and layout stay importable from here for the notebooks
from asd_lib.artifacts import LEAKY_SELECTION, Layout, layout, leaky_selection_file, params_file  # noqa: F401

log = logging.getLogger(__name__)


def find_root() -> Path:
    """The kit's folder (the one holding ``params/base.yaml`` and ``notebooks/``): ``$ASD_KIT_ROOT`` when set, else
    the current folder or the nearest one above it that holds them, else the source tree this package was imported
    from (an editable install). A regular ``pip install .`` puts only the library in site-packages: the parameters
    and notebooks stay in the clone, so run the commands from there."""
    env = os.environ.get("ASD_KIT_ROOT")
    here = Path.cwd().resolve()
    for folder in ([Path(env).expanduser().resolve()] if env else []) + [here, *here.parents]:
        if (folder / "params" / "base.yaml").is_file():
            return folder
    return Path(__file__).resolve().parents[1]


ROOT = find_root()
PARAMS_DIR = ROOT / "params"
NOTEBOOK_DIR = ROOT / "notebooks"

SYSTEMS: tuple[str, ...] = ("dev_online", "dev_offline", "devadd_online", "devadd_offline")


FORCE_ENV = "ASD_KIT_FORCE"  # set to 1 by `asd-run --force` for the notebooks it runs
RUNNER_ENV = "ASD_KIT_RUNNER"  # set to 1 by `asd-run` for the notebooks it runs


def forced() -> bool:
    """Whether this notebook runs under ``asd-run --force``: work it would resume (fine-tuning from ``last.pt``)
    starts from scratch instead."""
    return os.environ.get(FORCE_ENV) == "1"


def under_runner() -> bool:
    """Whether this notebook runs under ``asd-run`` (a system's stage) rather than by hand, e.g. in JupyterLab."""
    return os.environ.get(RUNNER_ENV) == "1"


def changed_settings(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{name: (recorded value, wanted value)} for every name of ``recorded`` whose value ``wanted`` changes
    (compared as JSON, so a tuple equals a list); empty when nothing is recorded."""
    as_json = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
    return {k: (v, wanted[k]) for k, v in recorded.items() if k in wanted and as_json(v) != as_json(wanted[k])}


def variant_name(name: str, changed: Mapping[str, tuple[Any, Any]]) -> str:
    """The folder of a by-hand run whose settings differ from the system's, named by what differs:
    ``beats~arcface_m=0.0``, ``beats@11~pooling=mean``. It sits beside the system's own folder, which the later
    stages keep reading, so an exercise never overwrites their inputs."""
    def text(v: Any) -> str:
        v = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        return v.replace("/", "-").replace("\\", "-")
    return name + "".join(f"~{k}={text(new)}" for k, (_, new) in sorted(changed.items()))


def describe_changes(changed: Mapping[str, tuple[Any, Any]]) -> str:
    """``arcface_m 0.2 -> 0.0, trainable 'aau' -> 'frozen'``."""
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))


def exercise_folder(name: str, recorded: Mapping[str, Any], wanted: Mapping[str, Any], kept: str
                    ) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """Where a stage's run writes, and what it changes from the run ``recorded`` in the system's folder ``name``.

    Run by hand with other settings (an exercise), it writes to its own folder named by what differs
    (``variant_name``) and says that ``kept`` stays as it is; under ``asd-run`` the system's own settings changed,
    so it writes (again) to ``name``."""
    changed = changed_settings(recorded, wanted)
    if changed and not under_runner():
        folder = variant_name(name, changed)
        log.info("%s: %s; %s stays as it is, this run writes %s", name, describe_changes(changed), kept, folder)
        return folder, changed
    return name, changed


def system_run_values(results_dir: str | Path, system: str) -> dict[str, Any]:
    """The merged parameter values of the system's last ``asd-run`` (results/<system>/params.json), {} when none."""
    try:
        return json.loads(params_file(results_dir, system).read_text())["values"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class ParamsError(ValueError):
    """A parameters file or a notebook's parameters cell is malformed or disagrees with the other."""


@dataclass
class Params:
    """Merged parameter values plus, for each key, the file that set it last."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Value of ``key`` or ``default``."""
        return self.values.get(key, default)

    def updated(self, values: Mapping[str, Any], source: str) -> "Params":
        """A copy with ``values`` set (recorded as coming from ``source``)."""
        out = Params(dict(self.values), dict(self.sources))
        for k, v in values.items():
            out.values[k] = v
            out.sources[k] = source
        return out

    def to_json(self) -> str:
        """JSON text with the values and the file each came from."""
        return json.dumps({"values": self.values, "sources": self.sources}, indent=1, sort_keys=True)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one flat parameters file: a mapping of names to plain values (numbers, strings, bools, lists)."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (ROOT / path).is_file():
        path = ROOT / path  # relative to the kit's folder, wherever the command runs
    if not path.is_file():
        raise ParamsError(f"parameters file not found: {path} (give a path relative to the repository root, "
                          f"e.g. params/smoke.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{_rel(path)} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{_rel(path)}: expected a mapping of name: value lines, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ParamsError(f"{_rel(path)}: key {key!r} is not a valid Python name (notebook parameters are "
                              f"injected as variables)")
        if isinstance(value, dict):
            raise ParamsError(f"{_rel(path)}: key {key!r} holds a nested mapping; parameters are flat "
                              f"(write e.g. {key}_x: ... instead)")
    return data


def system_files(system: str | None, params_dir: Path = PARAMS_DIR) -> list[Path]:
    """The files behind a system, in merge order: base.yaml then <system>.yaml (when a system is named)."""
    if not (params_dir / "base.yaml").is_file():
        raise ParamsError(f"no params/base.yaml in {params_dir.parent}: run the kit's commands from its folder (the "
                          "clone that holds params/ and notebooks/), or set ASD_KIT_ROOT to that folder")
    files = [params_dir / "base.yaml"]
    if system is not None:
        if system not in SYSTEMS:
            raise ParamsError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)} (files in "
                              f"{_rel(params_dir)}/)")
        files.append(params_dir / f"{system}.yaml")
    return files


def load(system: str | None, overlays: Iterable[str | Path] = (), params_dir: Path = PARAMS_DIR) -> Params:
    """Merge base.yaml, <system>.yaml and the overlays (later wins); record which file set each key."""
    params = Params()
    for path in [*system_files(system, params_dir), *map(Path, overlays)]:
        params = params.updated(read_yaml(path), _rel(path))
    return params


# ----------------------------------------------------------------------------------------------------------
# notebooks' parameters cells


def yaml_comments(path: str | Path) -> dict[str, str]:
    """The comment after each top-level ``key: value`` line of a parameters file (base.yaml documents every key)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.isidentifier() and "  #" in rest:
            out[key] = rest.split("  #", 1)[1].strip().removeprefix("# ").strip()
    return out


def parameters_cell(names: Iterable[str], values: Mapping[str, Any], comments: Mapping[str, str]) -> str:
    """A notebook's parameters cell: one ``name = literal  # comment`` line per name, comments aligned."""
    lines = []
    for name in names:
        lhs = f"{name} = {values[name]!r}"
        lines.append(f"{lhs.ljust(34)}  # {comments.get(name, '')}".rstrip())
    return "\n".join(lines)


def smoke_parameters_cell(path: str | Path) -> str:
    """What a notebook's parameters cell must hold: its declared names, in its order, at the smoke configuration's
    values (params/smoke.yaml over base.yaml and dev_offline.yaml) with base.yaml's comments. ``asd-params
    --write-cells`` writes it; tests/test_notebooks.py checks every notebook holds it."""
    smoke = load("dev_offline", [PARAMS_DIR / "smoke.yaml"]).values
    return parameters_cell(notebook_parameters(path), smoke, yaml_comments(PARAMS_DIR / "base.yaml"))



def _parameters_cell(nb: Mapping[str, Any], where: str) -> str:
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParamsError(f"{where}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    src = cells[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def parse_parameters_source(source: str, where: str = "<cell>") -> dict[str, Any]:
    """Names and literal defaults of a parameters cell: ``name = literal`` lines only (comments allowed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParamsError(f"{where}: parameters cell is not valid Python: {exc}") from exc
    out: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParamsError(f"{where}: line {node.lineno} of the parameters cell is not `name = literal`")
        name = node.targets[0].id
        if name in out:
            raise ParamsError(f"{where}: parameter {name!r} assigned twice in the parameters cell")
        try:
            out[name] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ParamsError(f"{where}: parameter {name!r} (line {node.lineno}) is not a plain literal") from exc
    return out


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters a notebook declares, with their default values."""
    path = Path(path)
    nb = json.loads(path.read_text())
    return parse_parameters_source(_parameters_cell(nb, _rel(path)), _rel(path))


def namespace_values(namespace: Mapping[str, Any], notebook: str) -> dict[str, Any]:
    """The values of one notebook's parameters (``notebook``: its name, e.g. '01_finetune_arcface') as they stand
    in ``namespace`` (a notebook's ``globals()``: its defaults, or what papermill injected)."""
    return {k: namespace[k] for k in notebook_parameters(NOTEBOOK_DIR / f"{notebook}.ipynb") if k in namespace}


def declared_parameters(notebooks: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Map notebook file name -> {parameter: default} for each notebook."""
    return {Path(p).name: notebook_parameters(p) for p in notebooks}


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def validate(params: Params, declared: Mapping[str, Mapping[str, Any]]) -> None:
    """Fail on a key no notebook declares, or a value whose type differs from a notebook's default."""
    owners: dict[str, list[str]] = {}
    for nb, names in declared.items():
        for name in names:
            owners.setdefault(name, []).append(nb)
    unknown = sorted(k for k in params.values if k not in owners)
    if unknown:
        lines = [f"  {k!r} (set in {params.sources.get(k, '?')})" for k in unknown]
        raise ParamsError("parameters that no notebook declares in its `parameters` cell:\n" + "\n".join(lines)
                          + "\nremove them from the file, or fix the spelling (declared names: "
                          + ", ".join(sorted(owners)) + ")")
    for key, value in params.values.items():
        for nb in owners[key]:
            default = declared[nb][key]
            if not _type_ok(value, default):
                raise ParamsError(f"parameter {key!r} = {value!r} (set in {params.sources.get(key, '?')}) has type "
                                  f"{type(value).__name__}, but {nb} declares it as {type(default).__name__} "
                                  f"(default {default!r})")


def check_namespace(namespace: Mapping[str, Any], notebooks: Iterable[str | Path] | None = None) -> None:
    """The runner's checks, for a notebook run another way (``papermill -f``, or its parameters cell edited in
    JupyterLab): every parameter of the kit's notebooks that ``namespace`` holds must have the type the notebooks
    declare, and ``system`` / ``regime`` must be ones the kit knows. A ParamsError names the parameter and the
    command that prints a system's checked parameters. (Names no notebook declares: papermill warns of them.)"""
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb")) if notebooks is None else list(notebooks)
    declared = declared_parameters(paths)
    hint = "; `asd-params --system SYSTEM [--params OVERLAY.yaml] --out p.yaml` writes a checked set for papermill -f"
    for nb, names in declared.items():
        for name, default in names.items():
            if name not in namespace or callable(namespace[name]) or type(namespace[name]).__name__ == "module":
                continue
            value = namespace[name]
            if not _type_ok(value, default):
                raise ParamsError(f"parameter {name!r} = {value!r} has type {type(value).__name__}, but {nb} declares "
                                  f"it as {type(default).__name__} (default {default!r})" + hint)
    if "system" in namespace and namespace["system"] not in SYSTEMS:
        raise ParamsError(f"system = {namespace['system']!r} is not one of {', '.join(SYSTEMS)}" + hint)
    if "regime" in namespace and namespace["regime"] not in REGIME_SETS:
        raise ParamsError(f"regime = {namespace['regime']!r} is not one of {', '.join(sorted(REGIME_SETS))}" + hint)


def coerce(value: Any, default: Any) -> Any:
    """``value`` converted to the default's type where that is lossless (int -> float, tuple -> list)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def inject(params: Params, declared_for_notebook: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters to inject into one notebook: only the names it declares, coerced to its types."""
    return {k: coerce(params.values[k], d) for k, d in declared_for_notebook.items() if k in params.values}


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable object (used to decide whether a stage can be reused)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# the ensemble


def resolve_ensemble(ensemble: Iterable[str], epoch_scale: float = 1.0) -> list[str]:
    """Model ids ``<backbone>@<epoch>`` with each epoch times ``epoch_scale`` (rounded half up, at least 1).

    >>> resolve_ensemble(["beats@107", "beats@204", "sslam@100"], 0.01)
    ['beats@1', 'beats@2', 'sslam@1']
    """
    out: list[str] = []
    for item in ensemble:
        backbone, sep, epoch = str(item).partition("@")
        if not sep or not backbone or not epoch.isdigit():
            raise ParamsError(f"ensemble entry {item!r} is not '<backbone>@<epoch>' (e.g. 'beats@107')")
        e = int(epoch) if epoch_scale == 1.0 else max(1, int(int(epoch) * epoch_scale + 0.5))
        model = f"{backbone}@{e}"
        if model in out:
            raise ParamsError(f"ensemble {list(ensemble)} with epoch_scale {epoch_scale} gives {model} twice; "
                              f"raise epoch_scale so the epochs stay distinct")
        out.append(model)
    return out




def ensemble_models(ensemble: Iterable[str], epoch_scale: float = 1.0, epoch_selection: str = "fixed",
                    checkpoints: str | Path | None = None) -> list[str]:
    """The ensemble's model ids. 'fixed': ``resolve_ensemble``, no test labels involved. 'select-on-test-leaky' (the
    authors' choice, a leak): each backbone's epochs replaced by the ones its fine-tuning run scored best on the
    labelled TEST clips (``<checkpoints>/<backbone>/selected_on_test_LEAKY.json``), as many as the ensemble names."""
    models = resolve_ensemble(ensemble, epoch_scale)
    if epoch_selection == "fixed":
        return models
    if epoch_selection != "select-on-test-leaky":
        raise ParamsError(f"epoch_selection must be 'fixed' or 'select-on-test-leaky', got {epoch_selection!r}")
    if checkpoints is None:
        raise ParamsError("epoch_selection 'select-on-test-leaky' needs the checkpoints folder")
    chosen: dict[str, list[int]] = {}
    for backbone in dict.fromkeys(m.partition("@")[0] for m in models):
        path = leaky_selection_file(checkpoints, backbone)
        if not path.is_file():
            raise ParamsError(f"no {path}: fine-tune with epoch_selection 'select-on-test-leaky' first (notebook 01)")
        ranked = [int(e) for e in json.loads(path.read_text())["epochs"]]
        n = sum(m.partition("@")[0] == backbone for m in models)
        if len(ranked) < n:
            raise ParamsError(f"{path} ranks {len(ranked)} epoch(s); the ensemble names {n} of {backbone}")
        chosen[backbone] = sorted(ranked[:n])
    picks = {b: iter(v) for b, v in chosen.items()}
    return [f"{m.partition('@')[0]}@{next(picks[m.partition('@')[0]])}" for m in models]


def training_plan(models: Iterable[str]) -> dict[str, list[int]]:
    """Backbone id -> sorted epochs to keep, from resolved model ids (each backbone trains to its last epoch)."""
    plan: dict[str, list[int]] = {}
    for m in models:
        backbone, _, epoch = m.partition("@")
        plan.setdefault(backbone, []).append(int(epoch))
    return {b: sorted(e) for b, e in plan.items()}


# ----------------------------------------------------------------------------------------------------------
# what the path parameters mean (the folders themselves: asd_lib.artifacts)

REGIME_SETS: dict[str, tuple[str, ...]] = {"dev": ("dev",), "devadd": ("dev", "add", "eval")}


def ensure_data(data_root: str | Path, synth_preset: str = "", synth_seed: int = 0) -> Path:
    """The data folder: generated first when ``synth_preset`` names a synthetic preset, else it must exist."""
    root = Path(data_root)
    if synth_preset:
        from asd_lib import synth

        return synth.generate(root, preset=synth_preset, seed=synth_seed)
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist: put the organisers' dev_data/ and eval_data/ "
                                f"there (README, 'Real data'), or set synth_preset to generate synthetic data")
    return root


def regime_manifest(manifest, regime: str):
    """Rows of a ``data.scan`` manifest that a regime uses: dev = the dev set; devadd = dev + additional train."""
    if regime not in REGIME_SETS:
        raise ParamsError(f"regime must be one of {sorted(REGIME_SETS)}, got {regime!r}")
    out = manifest[manifest["set"].isin(REGIME_SETS[regime])].reset_index(drop=True)
    if out.empty:
        raise ValueError(f"the manifest has no rows of set {REGIME_SETS[regime]} (regime {regime!r}); "
                         f"check data_root")
    return out
