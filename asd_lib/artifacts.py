"""Artifacts: the one home of a run's results layout and of every read and write of the stages' files.

Every stage hands its output to the next one through files under ``results_dir``; this module is the only place
that knows where they lie and what they hold, so a notebook, a scorer, the fusion, the online export and the tables
ask it for a path instead of joining folder names themselves (docs/design.md, "Stages shared between systems"):

    <results_dir>/                              params: results_dir
      <regime>/                                 dev | devadd: stages shared by a regime's systems (regime_dir)
        checkpoints/<backbone>/                 notebook 01 (asd_lib.finetune)
          epoch_XXX.pt, epoch_XXX.head.pt       encoder (official format) and ArcFace head of an epoch
          last.pt, log.csv, config.json         resume state, per-epoch log, the run's switches
          selected_on_test_LEAKY.json           the epochs the leaky selection chose
        embeddings/<model>/<channel>/           notebook 02 (asd_lib.embed); model = <backbone>@<epoch>
          <machine>_{train,test}.npz            emb (N, D) float32, names, labels, domains
                                                [, checkpoint_sha256, settings]
        scores/<model>/<channel>/<scorer>/      notebooks 03a-d (asd_lib.scorers)
          <machine>.npz                         test, calib, names [, calib_names, calib_kind, variant, iterations]
          fitted/<machine>.{json,npz}           the scorer fitted on every training clip (asd_lib.scorer_io)
        ablations/<study>/...                   notebooks 06-08
      <system>/                                 dev_online, dev_offline, ...: one system (system_dir)
        params.json, timings.csv                the runner's merged parameters and stage times
        result.csv, eval_result.csv             notebook 04's evaluation
        submission/, eval_submission/           the organisers' CSV files (development, evaluation set)
        package/teams/<team>/<label>/           the evaluation set packaged for the organisers
      baseline/, tables/, pretrain/             notebooks 04b, 05, 00b
      seed<k>/                                  the k-th seed repeat (asd-run --seeds): the same tree again

The readers check what they read and name the file in every error, so a damaged or foreign file stops a run with
the stage to run again instead of a KeyError three notebooks later. Imports stay light (no torch).
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from asd_lib.fsutil import atomic_savez

__all__ = [
    "Layout", "layout", "seed_dir", "seed_repeats", "system_dir", "params_file", "timings_file", "records_dir",
    "submission_dir", "variant_submission_dir", "stage_records", "baseline_dir", "tables_dir", "pretrain_dirs",
    "checkpoints_dir", "checkpoint_dir", "checkpoint_file", "head_file", "head_beside", "checkpoint_epochs",
    "leaky_selection_file",
    "embeddings_dir", "embedding_dir", "embedding_path", "save_embeddings", "load_embeddings", "embeddings_current",
    "embedded_machines", "embedding_source", "score_settings", "embedding_settings",
    "scores_dir", "scorer_dir", "score_path", "fitted_path", "save_scores", "load_scores", "scored_machines",
]

CHECKPOINTS, EMBEDDINGS, SCORES, FITTED, ABLATIONS = "checkpoints", "embeddings", "scores", "fitted", "ablations"
LEAKY_SELECTION = "selected_on_test_LEAKY.json"  # the leaky selection's ranking, next to a backbone's checkpoints
EMBEDDING_KEYS = ("emb", "names", "labels", "domains")
SCORE_KEYS = ("test", "calib", "names")
_EPOCH_FILE = re.compile(r"epoch_(\d+)(\.head)?\.pt")


# ----------------------------------------------------------------------------------------------------------
# the layout of one run


@dataclass(frozen=True)
class Layout:
    """Folders and files of one run: per regime (shared by its systems) and per system (see the module's tree)."""

    results_dir: Path
    regime: str
    system: str = ""

    @property
    def regime_dir(self) -> Path:
        """results/<regime>: checkpoints, embeddings, raw scores (shared by the online and offline systems)."""
        return self.results_dir / self.regime

    @property
    def manifest(self) -> Path:
        """results/<regime>/manifest.csv: the clips the regime uses (notebook 00)."""
        return self.regime_dir / "manifest.csv"

    @property
    def checkpoints(self) -> Path:
        """results/<regime>/checkpoints/<backbone>/epoch_XXX.pt"""
        return checkpoints_dir(self.regime_dir)

    @property
    def embeddings(self) -> Path:
        """results/<regime>/embeddings/<backbone>@<epoch>/<channel>/<machine>_{train,test}.npz"""
        return embeddings_dir(self.regime_dir)

    @property
    def scores(self) -> Path:
        """results/<regime>/scores/<backbone>@<epoch>/<channel>/<scorer>/<machine>.npz"""
        return scores_dir(self.regime_dir)

    def ablations(self, *parts: str) -> Path:
        """results/<regime>/ablations/<parts...>: the studies of notebooks 06-08, beside the system's own files."""
        return self.regime_dir.joinpath(ABLATIONS, *parts)

    @property
    def system_dir(self) -> Path:
        """results/<system>: params.json, result.csv, submission, timings.csv."""
        return system_dir(self.results_dir, self.system)

    @property
    def params_file(self) -> Path:
        """results/<system>/params.json: the runner's merged parameters (values and the file each came from)."""
        return params_file(self.results_dir, self.system)

    @property
    def timings(self) -> Path:
        """results/<system>/timings.csv: how long each stage of the last ``asd-run`` took."""
        return timings_file(self.results_dir, self.system)

    @property
    def result_file(self) -> Path:
        """results/<system>/result.csv: notebook 04's evaluation of the development-set submission."""
        return self.system_dir / "result.csv"

    @property
    def eval_result_file(self) -> Path:
        """results/<system>/eval_result.csv: the same for the evaluation set, where its ground truth is at hand."""
        return self.system_dir / "eval_result.csv"

    @property
    def submission(self) -> Path:
        """results/<system>/submission: the organisers' CSV files (development set)."""
        return self.system_dir / "submission"

    @property
    def eval_submission(self) -> Path:
        """results/<system>/eval_submission: the CSV files of the evaluation set (DEV+ADD systems)."""
        return self.system_dir / "eval_submission"

    @property
    def package(self) -> Path:
        """results/<system>/package/teams/<team>/<label>/: the evaluation set packaged for the organisers."""
        return self.system_dir / "package"

    def models(self, ensemble: Iterable[str], epoch_scale: float = 1.0, epoch_selection: str = "fixed") -> list[str]:
        """The ensemble's model ids for this run (``params.ensemble_models`` with this regime's checkpoints)."""
        from asd_lib.params import ensemble_models

        return ensemble_models(ensemble, epoch_scale, epoch_selection, self.checkpoints)

    def checkpoint_dir(self, backbone: str) -> Path:
        """results/<regime>/checkpoints/<backbone>: one fine-tuning run."""
        return checkpoint_dir(self.regime_dir, backbone)

    def checkpoint(self, model_id: str) -> Path:
        """Checkpoint file of a model id such as 'beats@2'."""
        backbone, _, epoch = model_id.partition("@")
        return checkpoint_file(self.checkpoint_dir(backbone), int(epoch))

    def embedding_dir(self, model: str, channel: str) -> Path:
        """One model's embeddings of one channel under this regime (``embedding_dir``)."""
        return embedding_dir(self.embeddings, model, channel)

    def embedding(self, model: str, channel: str, machine: str, split: str) -> Path:
        """One machine's embeddings of one split (``embedding_path`` under this regime)."""
        return embedding_path(self.embeddings, model, channel, machine, split)

    def score(self, model: str, channel: str, scorer: str, machine: str) -> Path:
        """One machine's raw scores of one scorer (``score_path`` under this regime)."""
        return score_path(self.scores, model, channel, scorer, machine)

    def fitted(self, model: str, channel: str, scorer: str, machine: str) -> Path:
        """The fitted scorer behind those scores (``fitted_path`` under this regime)."""
        return fitted_path(self.scores, model, channel, scorer, machine)

    def seed(self, k: int) -> "Layout":
        """The same run's k-th seed repeat (k = 0: this one)."""
        return Layout(seed_dir(self.results_dir, k), self.regime, self.system)


def layout(results_dir: str | Path, regime: str, system: str = "") -> Layout:
    """The run's folders; ``regime`` must be 'dev' or 'devadd'."""
    from asd_lib.params import REGIME_SETS, ParamsError

    if regime not in REGIME_SETS:
        raise ParamsError(f"regime must be one of {sorted(REGIME_SETS)}, got {regime!r}")
    return Layout(Path(results_dir), regime, system)


def checkpoints_dir(regime_dir: str | Path) -> Path:
    """<regime_dir>/checkpoints: one folder per fine-tuning run. ``regime_dir`` is ``results/<regime>``, or any
    folder laid out like one (an ablation's own run, notebook 08)."""
    return Path(regime_dir) / CHECKPOINTS


def embeddings_dir(regime_dir: str | Path) -> Path:
    """<regime_dir>/embeddings: the root that ``embedding_path`` and ``load_embeddings`` take."""
    return Path(regime_dir) / EMBEDDINGS


def scores_dir(regime_dir: str | Path, variant: str = "") -> Path:
    """<regime_dir>/scores (``score_path``'s root); with ``variant``, <regime_dir>/scores/<variant>: the scores of
    the same embeddings scored another way, kept apart from the system's own (notebook 08)."""
    return Path(regime_dir) / SCORES / variant if variant else Path(regime_dir) / SCORES


def baseline_dir(results_dir: str | Path) -> Path:
    """results/baseline: the organisers' baseline systems (notebook 04b), one folder per system, shared by all."""
    return system_dir(results_dir, "baseline")


def tables_dir(results_dir: str | Path) -> Path:
    """results/tables: the paper's tables (notebook 05)."""
    return Path(results_dir) / "tables"


def pretrain_dirs(results_dir: str | Path) -> tuple[Path, Path]:
    """(checkpoints, work) of the kit's own pre-training (notebook 00b), under results/pretrain."""
    root = Path(results_dir) / "pretrain"
    return root / CHECKPOINTS, root / "work"


def system_dir(results_dir: str | Path, system: str) -> Path:
    """results/<system>: one system's own files (also the folder of a shared stage such as 'baseline')."""
    return Path(results_dir) / system


def params_file(results_dir: str | Path, system: str) -> Path:
    """results/<system>/params.json: what ``asd-run`` merged for the system; the tables read its epoch selection."""
    return system_dir(results_dir, system) / "params.json"


def timings_file(results_dir: str | Path, system: str) -> Path:
    """results/<system>/timings.csv."""
    return system_dir(results_dir, system) / "timings.csv"


def records_dir(results_dir: str | Path, label: str) -> Path:
    """results/<label>/notebooks: the runner's executed notebooks and their ``.done.json`` records, per regime,
    system or shared stage."""
    return Path(results_dir) / label / "notebooks"


def stage_records(results_dir: str | Path) -> list[Path]:
    """Every ``.done.json`` record under ``results_dir`` (all regimes, systems, shared stages and seed repeats)."""
    return sorted(Path(results_dir).glob("**/notebooks/*.done.json"))


def variant_submission_dir(regime_dir: str | Path, variant: str) -> Path:
    """<regime_dir>/submissions/<variant>: the CSV files of one variant of a study scored on its own (notebook 08)."""
    return Path(regime_dir) / "submissions" / variant


def submission_dir(results_dir: str | Path, system: str, sub: str = "submission") -> Path:
    """results/<system>/<sub>: a system's CSV files ('submission', 'eval_submission'; '' for the system folder
    itself, as the baseline writes them)."""
    return system_dir(results_dir, system) / sub if sub else system_dir(results_dir, system)


def seed_dir(results_dir: str | Path, k: int) -> Path:
    """The results folder of the k-th seed repeat: ``results_dir`` itself for k = 0, else ``results_dir/seed<k>``."""
    return Path(results_dir) if k == 0 else Path(results_dir) / f"seed{k}"


def seed_repeats(results_dir: str | Path) -> list[tuple[int, Path]]:
    """(k, folder) of every seed repeat present: (0, results_dir) first, then the ``seed<k>`` folders by k."""
    root = Path(results_dir)
    found = sorted((int(m.group(1)), p) for p in (root.iterdir() if root.is_dir() else ())
                   if p.is_dir() and (m := re.fullmatch(r"seed(\d+)", p.name)))
    return [(0, root)] + found


# ----------------------------------------------------------------------------------------------------------
# checkpoints (written by asd_lib.finetune, read by the embedding stage and the online export)


def checkpoint_dir(regime_dir: str | Path, backbone: str) -> Path:
    """<regime_dir>/checkpoints/<backbone>: the folder of one fine-tuning run."""
    return checkpoints_dir(regime_dir) / backbone


def checkpoint_file(folder: str | Path, epoch: int) -> Path:
    """<folder>/epoch_XXX.pt: the encoder after ``epoch`` epochs (0: the pre-trained one)."""
    return Path(folder) / f"epoch_{int(epoch):03d}.pt"


def head_file(folder: str | Path, epoch: int) -> Path:
    """<folder>/epoch_XXX.head.pt: the head (and a joint run's channel embedding) of that epoch."""
    return head_beside(checkpoint_file(folder, epoch))


def head_beside(checkpoint: str | Path) -> Path:
    """The head file of the epoch checkpoint ``checkpoint`` (``.../epoch_XXX.pt`` -> ``.../epoch_XXX.head.pt``)."""
    ckpt = Path(checkpoint)
    return ckpt.with_name(ckpt.stem + ".head.pt")


def checkpoint_epochs(folder: str | Path, heads: bool = False) -> dict[int, list[Path]]:
    """{epoch: [its files]} of the epoch checkpoints in ``folder`` (with ``heads``, the head files too)."""
    out: dict[int, list[Path]] = {}
    for p in sorted(Path(folder).glob("epoch_*.pt")):
        m = _EPOCH_FILE.fullmatch(p.name)
        if m and (heads or not m.group(2)):
            out.setdefault(int(m.group(1)), []).append(p)
    return out


def leaky_selection_file(checkpoints: str | Path, backbone: str) -> Path:
    """<checkpoints>/<backbone>/selected_on_test_LEAKY.json: the epochs ranked on the labelled test clips."""
    return Path(checkpoints) / backbone / LEAKY_SELECTION


# ----------------------------------------------------------------------------------------------------------
# embeddings (written by asd_lib.embed, read by the scorers, the fusion notebooks and the online export)


def embedding_dir(emb_root: str | Path, model_id: str, channel: str) -> Path:
    """<emb_root>/<model_id>/<channel>: one model's embeddings of one channel, every machine and split."""
    return Path(emb_root) / model_id / channel


def embedding_path(emb_root: str | Path, model_id: str, channel: str, machine: str, split: str) -> Path:
    """<emb_root>/<model_id>/<channel>/<machine>_<split>.npz, ``emb_root`` being ``results/<regime>/embeddings``."""
    return embedding_dir(emb_root, model_id, channel) / f"{machine}_{split}.npz"


def save_embeddings(path: str | Path, emb: np.ndarray, names: Sequence[str], labels: np.ndarray,
                    domains: Sequence[str], checkpoint_sha256: str = "", settings: str = "", clips: str = "") -> Path:
    """Write one embedding file atomically: a killed run never leaves half a file that the next one trusts.
    ``clips``: ``provenance.clips_digest`` of the audio files, so that regenerated clips are embedded again."""
    return atomic_savez(path, emb=np.asarray(emb, dtype=np.float32), names=np.asarray(names, dtype=str),
                        labels=np.asarray(labels, dtype=np.int64), domains=np.asarray(domains).astype(str),
                        checkpoint_sha256=np.array(checkpoint_sha256), settings=np.array(settings),
                        clips=np.array(clips))


def load_embeddings(emb_root: str | Path, model_id: str, channel: str, machine: str, split: str) -> dict:
    """Read one cached file: dict with emb (N, D) float32, names, labels (0/1/-1), domains ('' unknown).

    A missing file is a FileNotFoundError, a damaged or foreign one a ValueError; both name the file."""
    path = embedding_path(emb_root, model_id, channel, machine, split)
    if not path.exists():
        raise FileNotFoundError(f"no embeddings at {path}; run asd_lib.embed.extract_embeddings first")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = set(EMBEDDING_KEYS) - set(z.files)
            out = {k: z[k] for k in EMBEDDING_KEYS if k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable embedding file ({err}); run the embedding stage again") from None
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)} (expected {', '.join(EMBEDDING_KEYS)}); run the "
                         "embedding stage again")
    if out["emb"].ndim != 2 or len(out["emb"]) != len(out["names"]):
        raise ValueError(f"{path}: emb {out['emb'].shape} and names {out['names'].shape} disagree")
    return out


def embeddings_current(path: str | Path, names: Sequence[str], checkpoint_sha256: str, settings: str,
                       clips: str = "") -> bool:
    """Whether a cached embedding file can be reused: exactly these clips (names, and the files' digest ``clips``),
    made from the same checkpoint file with the same settings. A corrupt or foreign file is recomputed, never
    trusted."""
    if not Path(path).exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            made_by = str(z["checkpoint_sha256"]) if "checkpoint_sha256" in z.files else ""
            return (list(z["names"]) == list(names) and z["emb"].shape[0] == len(names) and "domains" in z
                    and made_by == checkpoint_sha256 and "settings" in z.files and str(z["settings"]) == settings
                    and (str(z["clips"]) if "clips" in z.files else "") == clips)
    except Exception:  # noqa: BLE001 - any unreadable file is simply made again
        return False


def embedded_machines(emb_root: str | Path, model_id: str, channel: str) -> list[str]:
    """The machines that have training embeddings of ``model_id`` / ``channel`` under ``emb_root``."""
    folder = embedding_dir(emb_root, model_id, channel)
    if not folder.is_dir():
        raise FileNotFoundError(f"no embedding folder {folder}; run the embedding stage first")
    return sorted(p.name[: -len("_train.npz")] for p in folder.glob("*_train.npz"))


def embedding_source(emb_root: str | Path, model_id: str, channel: str, machine: str, split: str) -> str:
    """sha256 of the checkpoint file a cached embedding file was made from ('' for a module or a backbone name)."""
    with np.load(embedding_path(emb_root, model_id, channel, machine, split), allow_pickle=False) as z:
        return str(z["checkpoint_sha256"]) if "checkpoint_sha256" in z.files else ""


def embedding_settings(emb_root: str | Path, model_id: str, channel: str) -> dict[str, Any]:
    """The extraction settings (pooling, recipe) recorded in a cached embedding folder, {} when there is none.
    Notebook 02 compares them with its parameters (``params.changed_settings``)."""
    folder = embedding_dir(emb_root, model_id, channel)
    for path in sorted(folder.glob("*_train.npz"))[:1]:
        try:
            with np.load(path, allow_pickle=False) as z:
                return json.loads(str(z["settings"])) if "settings" in z.files else {}
        except (OSError, ValueError):
            return {}
    return {}


# ----------------------------------------------------------------------------------------------------------
# scores (written by asd_lib.scorers, read by the fusion, the online export and the notebooks)


def scorer_dir(score_root: str | Path, model: str, channel: str, scorer: str) -> Path:
    """<score_root>/<model>/<channel>/<scorer>: one scorer's files of one model and channel, every machine."""
    return Path(score_root) / model / channel / scorer


def score_path(score_root: str | Path, model: str, channel: str, scorer: str, machine: str) -> Path:
    """<score_root>/<model>/<channel>/<scorer>/<machine>.npz, ``score_root`` being ``results/<regime>/scores``."""
    return scorer_dir(score_root, model, channel, scorer) / f"{machine}.npz"


def fitted_path(score_root: str | Path, model: str, channel: str, scorer: str, machine: str) -> Path:
    """<score_root>/<model>/<channel>/<scorer>/fitted/<machine> (+ .json / .npz, ``scorer_io``): the scorer fitted on
    every training clip, raw embeddings in, the written test scores out; the online export copies it."""
    return scorer_dir(score_root, model, channel, scorer) / FITTED / machine


def save_scores(path: str | Path, test: np.ndarray, calib: np.ndarray, names: Sequence[str],
                calib_names: Sequence[str], calib_kind: str, variant: str = "",
                iterations: Sequence[int] | None = None, settings: Mapping[str, Any] | None = None) -> Path:
    """Write one score file atomically: test and calibration scores (float64), the test clips' names, the training
    clips the calibration scores belong to, how they were made ('loo' or 'holdout'), the scorer's variant, for
    GMM and AE the iterations of the final and the calibration fit, and the settings the scores were made with
    (JSON; ``score_settings`` reads them)."""
    extra = {} if iterations is None else {"iterations": np.asarray(iterations)}
    if settings is not None:
        extra["settings"] = np.array(json.dumps(settings, sort_keys=True))
    return atomic_savez(path, test=np.asarray(test, dtype=np.float64), calib=np.asarray(calib, dtype=np.float64),
                        names=np.asarray(names).astype(str), calib_names=np.asarray(calib_names).astype(str),
                        calib_kind=np.array(calib_kind), variant=np.array(variant), **extra)


def load_scores(path: str | Path) -> dict[str, Any]:
    """Read one score file: test, calib (float64), names (str) and, when the file has them, calib_names (str),
    calib_kind, variant (str) and iterations. Errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing score file {path}; run asd_lib.scorers.score_embeddings first")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = set(SCORE_KEYS) - set(z.files)
            out: dict[str, Any] = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable score file ({err}); run the scoring stage again") from None
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)} (expected {', '.join(SCORE_KEYS)}); run the "
                         "scoring stage again")
    out["test"], out["calib"] = out["test"].astype(np.float64), out["calib"].astype(np.float64)
    out["names"] = out["names"].astype(str)
    if "calib_names" in out:
        out["calib_names"] = out["calib_names"].astype(str)
    for key in ("calib_kind", "variant", "settings"):
        if key in out:
            out[key] = str(out[key])
    if out["test"].ndim != 1 or len(out["test"]) != len(out["names"]):
        raise ValueError(f"{path}: {len(out['test'])} test scores but {len(out['names'])} names")
    return out


def score_settings(score_root: str | Path, model: str, channel: str, scorer: str) -> dict[str, Any]:
    """The settings recorded in the score files of ``model`` / ``channel`` / ``scorer`` (``save_scores``), {} when
    there are none. Notebooks 03a-03d compare them with their parameters (``params.exercise_folder``)."""
    for machine in scored_machines(score_root, model, channel, scorer)[:1]:
        try:
            with np.load(score_path(score_root, model, channel, scorer, machine), allow_pickle=False) as z:
                return json.loads(str(z["settings"])) if "settings" in z.files else {}
        except (OSError, ValueError, zipfile.BadZipFile):
            return {}
    return {}


def scored_machines(score_root: str | Path, model: str, channel: str, scorer: str) -> list[str]:
    """The machines that have a score file of ``model`` / ``channel`` / ``scorer`` under ``score_root``."""
    folder = scorer_dir(score_root, model, channel, scorer)
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []
