"""Run the paper's systems as papermill batch jobs: ``python -m asd_lib.run --system NAME [...]``.

Each system is the ordered notebooks under ``notebooks/`` executed with the merged parameters of
``params/base.yaml`` + ``params/<system>.yaml`` + the overlays given with ``--params`` (see ``asd_lib.params``).
Stages shared by the online and offline systems of one data regime (data, fine-tuning, embeddings, raw scores)
run once per regime under ``results/<regime>/``; normalisation, fusion and submission run per system under
``results/<system>/`` (docs/design.md, "Stages shared between systems"). A stage is reused when nothing it depends on
changed: its injected parameters, its notebook's source, the library modules it loads (``provenance.code_digest``),
its upstream stages, and the files under ``data_root`` when it declares that parameter (``provenance.data_digest``);
and only while the files it wrote are still as it wrote them (their hashes are in its record). The runner says why
each stage runs; ``--force`` reruns it. ``--only`` refuses to run over an earlier stage that is
missing or out of date. The README ("Running the systems") introduces this module.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import yaml

from asd_lib import logs
from asd_lib import params as P
from asd_lib import progress
from asd_lib import provenance
from asd_lib.artifacts import params_file, records_dir, seed_dir, stage_records, timings_file
from asd_lib.fsutil import FolderBusy, folder_lock
from asd_lib.fsutil import atomic_write_text as atomic_write

ROOT = P.ROOT
NOTEBOOK_DIR = P.NOTEBOOK_DIR
KERNEL = "asd-kit"  # the Jupyter kernel `make venv` registers for this environment (--kernel picks another)

# The notebooks in pipeline order and where each one's outputs live:
#   regime - shared by the online and offline systems of one data regime: results/<regime>/
#   system - one per system: results/<system>/
#   shared - once per results root, for every system (the pre-training probes, the organisers' baseline): results/baseline/
#   report - once per invocation, over all systems found under the results root: results/report/
NOTEBOOKS: tuple[tuple[str, str], ...] = (
    ("00_data_and_labels", "regime"),
    ("00b_pretrain", "shared"),
    ("01_finetune_arcface", "regime"),
    ("02_extract_embeddings", "regime"),
    ("03a_score_knn", "regime"),
    ("03b_score_gmm", "regime"),
    ("03c_score_autoencoder", "regime"),
    ("03d_score_ldn", "regime"),
    ("04_normalise_and_fuse", "system"),
    ("04b_baseline", "shared"),
    ("05_results_tables", "report"),
    ("06_paper_figures", "report"),
    ("07_paper_vs_code", "report"),
    ("08_ablations", "report"),
)
# Report notebooks run after a single system: only the tables. After several systems (or `all`): every one.
SINGLE_SYSTEM_REPORT = ("05_results_tables",)
# The system whose parameters the report notebooks receive when several systems ran (the paper's best).
PRIMARY_SYSTEM = "dev_offline"


class StageFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the executed copy."""


@dataclass
class StageResult:
    """One line of the time table."""

    notebook: str
    where: str
    status: str  # ran | reused | failed | skipped
    seconds: float = 0.0
    executed: str = ""


@dataclass
class RunLog:
    """Stage results in the order they happened."""

    results: list[StageResult] = field(default_factory=list)

    def table(self) -> str:
        """The per-stage time table as aligned text."""
        rows = [("stage", "where", "status", "seconds")]
        rows += [(r.notebook, r.where, r.status, f"{r.seconds:.1f}") for r in self.results]
        total = sum(r.seconds for r in self.results)
        rows.append(("total", "", "", f"{total:.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*r) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        """Write the time table as CSV (atomically)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["stage", "where", "status", "seconds", "executed"])
        for r in self.results:
            w.writerow([r.notebook, r.where, r.status, f"{r.seconds:.2f}", r.executed])
        atomic_write(path, buf.getvalue())


def notebook_path(name: str) -> Path:
    """Path of a pipeline notebook; a clear error when it is missing."""
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.is_file():
        hint = ("the runner's stage list is asd_lib.run.NOTEBOOKS" if NOTEBOOK_DIR.is_dir() else
                "run the kit's commands from its folder (the clone that holds params/ and notebooks/), or set "
                "ASD_KIT_ROOT to that folder")
        raise FileNotFoundError(f"notebook missing: {path} ({hint})")
    return path


def all_declared() -> dict[str, dict[str, Any]]:
    """Declared parameters of every notebook in the stage list."""
    return P.declared_parameters(notebook_path(n) for n, _ in NOTEBOOKS)


def select(only: Sequence[str] | None) -> list[str]:
    """Notebook names matching the ``--only`` prefixes (e.g. ``03`` matches 03a..03d); all when None."""
    names = [n for n, _ in NOTEBOOKS]
    if not only:
        return names
    chosen = [n for n in names if any(n.startswith(o) or n.split("_")[0] == o for o in only)]
    missing = [o for o in only if not any(n.startswith(o) for n in names)]
    if missing:
        raise SystemExit(f"--only {' '.join(missing)} matches no notebook; choose from: {' '.join(names)}")
    return chosen


INJECTED = "injected-parameters"  # papermill's tag for the cell it adds (and replaces) after `parameters`


def _cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell of a notebook but papermill's injected one: the committed notebooks keep
    the demo run's injected cell, and papermill replaces it at every run, so it is not part of a stage's source."""
    nb = json.loads(path.read_text())
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in nb["cells"] if INJECTED not in c.get("metadata", {}).get("tags", [])]


class StageOutOfDate(RuntimeError):
    """``--only`` would run over an earlier stage that is missing or stale."""


def _stage_dir(results_dir: Path, scope: str, system: str, regime: str) -> tuple[Path, str]:
    label = {"regime": regime, "system": system, "shared": "baseline", "report": "report"}[scope]
    return records_dir(results_dir, label), label


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_kernel(kernel: str = KERNEL) -> None:
    """Stop when the kernel is missing; warn when it would not run this interpreter (papermill starts notebooks with
    it)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:  # pragma: no cover - jupyter_client comes with papermill
        return
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise SystemExit(f"no Jupyter kernel named {kernel!r}; install one for this environment with\n"
                         f"  {sys.executable} -m ipykernel install --sys-prefix --name {kernel} "
                         f"--display-name 'Python 3 ({kernel})'\n(or `make venv`), or pass --kernel NAME")
    exe = spec.argv[0]
    if exe not in {"python", "python3", f"python3.{sys.version_info[1]}"} and \
            os.path.abspath(exe) != os.path.abspath(sys.executable):
        print(f"warning: kernel {kernel!r} runs {exe}, not {sys.executable}; if the notebooks fail to import "
              f"asd_lib, run: {sys.executable} -m ipykernel install --sys-prefix --name {kernel}", file=sys.stderr)


# The kernel's own start-up warnings ("Kernel is running over TCP without encryption", once per stage) are not the
# notebook's output: the kernel process logs errors only. The notebook's cells still show their warnings.
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]


def execute(src: Path, out: Path, parameters: dict[str, Any], log_output: bool = False, kernel: str = KERNEL) -> None:
    """Execute one notebook with papermill into ``out``; raise StageFailed naming the cell on error."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out.parent.mkdir(parents=True, exist_ok=True)
    rel_src, rel_out = _rel(src), _rel(out)
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=kernel, cwd=str(ROOT),
                            progress_bar=False, log_output=log_output,
                            extra_arguments=KERNEL_QUIET)
    except PapermillExecutionError as exc:
        # papermill counts cells from 0 including the injected-parameters cell it adds after `parameters`.
        code = "\n".join(exc.source.splitlines()[:6])
        raise StageFailed(f"{rel_src} failed in cell {exc.cell_index} of the executed copy (execution count "
                          f"{exc.exec_count}):\n"
                          f"  {exc.ename}: {exc.evalue}\n  cell source:\n    "
                          + code.replace("\n", "\n    ")
                          + f"\n  executed copy with the traceback: {rel_out}") from None
    except Exception as exc:  # kernel death, missing kernel, unreadable notebook...
        raise StageFailed(f"{rel_src} could not be executed: {type(exc).__name__}: {exc}\n"
                          f"  executed copy (if any): {rel_out}") from None


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


@dataclass
class Runner:
    """Runs stages for one results root, reusing finished ones."""

    force: bool = False
    dry_run: bool = False
    log_output: bool = False
    kernel: str = KERNEL
    log: RunLog = field(default_factory=RunLog)
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # dry run: stages that would have run
    bar: Any = None  # a progress bar over the run's stages (asd_lib.progress), or None

    def say(self, line: str) -> None:
        """A stage's line, printed above the stage bar when one shows."""
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def _done(self, result: StageResult) -> None:
        self.log.results.append(result)
        if self.bar is not None:
            self.bar.update(1)

    def _parts(self, name: str, params: P.Params, upstream: list[str]) -> dict[str, Any]:
        """What a stage's result depends on, each part digested (the record keeps them to say what changed)."""
        src = notebook_path(name)
        injected = P.inject(params, self.declared[src.name])
        cells = _cells(src)
        code = "\n".join(text for kind, text in cells if kind == "code")
        return {"params": P.digest(injected), "source": P.digest([text for _, text in cells]),
                "library": provenance.code_digest(code), "upstream": P.digest(upstream)}

    def _where(self, name: str, scope: str, params: P.Params) -> tuple[Path, Path, str]:
        folder, label = _stage_dir(ROOT / params["results_dir"], scope, params.get("system", ""),
                                   params.get("regime", ""))
        return folder / f"{name}.ipynb", folder / f"{name}.done.json", label

    def why_stale(self, name: str, scope: str, params: P.Params, upstream: list[str],
                  parts: dict[str, Any] | None = None) -> str | None:
        """None when the stage's finished result is current; else the reason it must run. ``parts``: the stage's
        ``_parts``, when the caller has them already."""
        out, marker, _ = self._where(name, scope, params)
        record = self.pending.get(str(marker)) or _read_record(marker)
        if not record or not (out.is_file() or self.dry_run):
            return "no finished run"
        parts = parts or self._parts(name, params, upstream)
        old = record.get("parts")
        if old is None:
            return "recorded by an older version of the runner"
        if old.get("params") != parts["params"]:
            return "parameters changed"
        if old.get("source") != parts["source"]:
            return "notebook changed"
        if old.get("library") != parts["library"]:
            before = old.get("library") or {}
            changed = sorted(m for m in set(before) | set(parts["library"])
                             if before.get(m) != parts["library"].get(m))
            return "library changed: " + ", ".join(changed)
        if old.get("upstream") != parts["upstream"]:
            return "an earlier stage ran again"
        if "data_root" in self.declared[f"{name}.ipynb"] and "data" in record and \
                record["data"] != provenance.data_digest(ROOT / params["data_root"]):
            return f"data changed under {params['data_root']}"
        return provenance.damaged_output(ROOT / params["results_dir"], record.get("outputs", {}))

    @staticmethod
    def _snapshot(params: P.Params) -> dict[str, tuple[int, int]]:
        """The results folder's files, without the runner's own (executed notebooks, records) and the data."""
        root = ROOT / params["results_dir"]
        snap = provenance.snapshot(root, skip=(ROOT / params["data_root"],) if "data_root" in params.values else ())
        return {k: v for k, v in snap.items() if "notebooks" not in k.split("/")[:-1]}

    def stage(self, name: str, scope: str, params: P.Params, upstream: list[str]) -> dict[str, Any]:
        """Run (or reuse) one notebook; return its record (``finished`` feeds the next stage's key)."""
        out, marker, label = self._where(name, scope, params)
        injected = P.inject(params, self.declared[f"{name}.ipynb"])
        parts = self._parts(name, params, upstream)
        reason = "--force" if self.force else self.why_stale(name, scope, params, upstream, parts)
        if reason is None:
            self.say(f"[{label}] {name}: reused ({_rel(out)})")
            self._done(StageResult(name, label, "reused", 0.0, _rel(out)))
            return self.pending.get(str(marker)) or _read_record(marker)
        if self.dry_run:
            self.say(f"[{label}] {name}: would run ({reason}) with {json.dumps(injected)}")
            self._done(StageResult(name, label, "would run", 0.0, _rel(out)))
            self.pending[str(marker)] = {"parts": parts, "finished": f"pending-{P.digest(parts)}"}
            return self.pending[str(marker)]
        marker.unlink(missing_ok=True)
        self.say(f"[{label}] {name}: running ({reason}) ...")
        if self.bar is not None:
            self.bar.set_postfix_str(f"{label} {name}")
        t0 = time.perf_counter()
        before = self._snapshot(params)
        try:
            execute(notebook_path(name), out, injected, self.log_output, self.kernel)
        except StageFailed:
            self._done(StageResult(name, label, "failed", time.perf_counter() - t0, _rel(out)))
            raise
        seconds = time.perf_counter() - t0
        record = {"parts": parts, "seconds": round(seconds, 2), "params": injected,
                  "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                  "outputs": provenance.written_files(ROOT / params["results_dir"], before, self._snapshot(params))}
        if "data_root" in injected:  # after the run: a stage may have generated the data
            record["data"] = provenance.data_digest(ROOT / params["data_root"])
        atomic_write(marker, json.dumps(record, indent=1))
        self.say(f"[{label}] {name}: done in {seconds:.1f} s")
        self._done(StageResult(name, label, "ran", seconds, _rel(out)))
        return record


def seed_params(params: P.Params, k: int) -> P.Params:
    """Parameters of the k-th seed repeat: seed + k, results under <results_dir>/seed<k> (k >= 1)."""
    if k == 0:
        return params
    return params.updated({"seed": int(params["seed"]) + k,
                           "results_dir": str(seed_dir(params["results_dir"], k))}, f"--seeds (repeat {k})")


def run_system(runner: Runner, params: P.Params, names: list[str]) -> None:
    """Run the regime, system and shared stages of one system (one seed).

    A stage left out by ``--only`` is chained on its existing record, so later stages see whether it changed. When
    a selected stage comes after it, it must be finished and current, or the run stops before that stage.
    """
    results_dir = ROOT / params["results_dir"]
    if not runner.dry_run:
        atomic_write(params_file(results_dir, params["system"]), params.to_json())
    chain = [(n, s) for n, s in NOTEBOOKS if s != "report"]
    last = max((i for i, (n, _) in enumerate(chain) if n in names), default=-1)
    upstream: list[str] = []
    for i, (name, scope) in enumerate(chain):
        if name in names:
            rec = runner.stage(name, scope, params, [] if scope == "shared" else upstream)
        elif scope == "shared":
            continue
        else:
            reason = runner.why_stale(name, scope, params, upstream) if i < last else None
            if reason is not None:
                raise StageOutOfDate(
                    f"{name} ({params['system']}) is not current ({reason}), and a stage that --only selected reads "
                    f"its results: run it first (add {name.split('_')[0]} to --only) or run without --only")
            rec = _read_record(runner._where(name, scope, params)[1])
            if rec is None:
                continue
        if scope != "shared":
            upstream = [rec["finished"]]


def run_report(runner: Runner, params: P.Params, names: list[str]) -> None:
    """Run the report notebooks once over everything under the results root."""
    results_dir = ROOT / params["results_dir"]
    upstream = sorted(str(r.get("finished")) for m in stage_records(results_dir)
                      if "report" not in m.parts and (r := _read_record(m)))
    for name, scope in NOTEBOOKS:
        if scope == "report" and name in names:
            runner.stage(name, scope, params, upstream)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m asd_lib.run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n"
                                        "  python -m asd_lib.run --system dev_offline --params params/smoke.yaml\n"
                                        "  python -m asd_lib.run --system all --params params/demo.yaml\n"
                                        "  python -m asd_lib.run --system dev_online --only 04 --force\n")
    ap.add_argument("--system", nargs="+", required=True, metavar="NAME",
                    help=f"one or more of {', '.join(P.SYSTEMS)}, or 'all'")
    ap.add_argument("--params", nargs="+", action="extend", default=[], metavar="YAML",
                    help="overlay files merged after base.yaml and <system>.yaml, in order")
    ap.add_argument("--only", nargs="+", action="extend", default=None, metavar="NN",
                    help="run only the notebooks whose names start with these prefixes (e.g. 03 or 03a)")
    ap.add_argument("--force", action="store_true", help="rerun stages even when a finished copy matches")
    ap.add_argument("--seeds", type=int, default=1, metavar="N",
                    help="repeat each system with seeds seed..seed+N-1 (repeat k under <results_dir>/seed<k>); "
                         "the tables then show mean ± sd")
    ap.add_argument("--dry-run", action="store_true", help="check the parameters and list the stages; run nothing")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' cell outputs")
    ap.add_argument("--kernel", default=KERNEL, metavar="NAME",
                    help=f"Jupyter kernel that runs the notebooks (default {KERNEL!r}, registered by `make venv`)")
    args = ap.parse_args(argv)
    logs.configure()

    systems = list(P.SYSTEMS) if args.system == ["all"] else args.system
    bad = [s for s in systems if s not in P.SYSTEMS]
    if bad:
        ap.error(f"unknown system {' '.join(bad)}; choose from {', '.join(P.SYSTEMS)} or all")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    names = select(args.only)

    try:
        declared = all_declared()
        per_system = {}
        for s in systems:
            prm = P.load(s, args.params)
            P.validate(prm, declared)
            for required in ("system", "regime", "results_dir", "seed"):
                if required not in prm.values:
                    raise P.ParamsError(f"parameter {required!r} is not set by params/base.yaml, "
                                        f"params/{s}.yaml or the overlays")
            if prm["system"] != s:
                raise P.ParamsError(f"params/{s}.yaml sets system: {prm['system']!r} "
                                    f"(from {prm.sources['system']}); it must be {s!r}")
            per_system[s] = prm
    except (P.ParamsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if not args.dry_run:
        check_kernel(args.kernel)
    if args.only:
        report_names = names
    elif len(systems) == 1:
        report_names = list(SINGLE_SYSTEM_REPORT)
    else:
        report_names = names
    n_stages = (sum(n in names for n, scope in NOTEBOOKS if scope != "report") * len(systems) * args.seeds
                + sum(n in report_names for n, scope in NOTEBOOKS if scope == "report"))
    # the stage bar follows the terminal; made before the notebooks' own bars are switched off below
    bar = progress.bar(total=n_stages, desc="asd-run", unit="stage", leave=True)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would bloat the executed notebooks
    os.environ[P.RUNNER_ENV] = "1"  # the notebooks see it: a changed setting retrains in place (no exercise folder)
    if args.force:  # the notebooks see it: fine-tuning starts over instead of resuming
        os.environ[P.FORCE_ENV] = "1"
    runner = Runner(force=args.force, dry_run=args.dry_run, log_output=args.log_output, kernel=args.kernel,
                    declared=declared, bar=bar)
    t0 = time.perf_counter()
    status = 0
    locks = contextlib.ExitStack()
    try:
        if not args.dry_run:  # one runner per results folder: a second one refuses instead of mixing files
            for folder in sorted({ROOT / per_system[s]["results_dir"] for s in systems}):
                locks.enter_context(folder_lock(folder, "asd-run"))
        for s in systems:
            for k in range(args.seeds):
                runner.say(f"== {s}" + (f" (seed repeat {k + 1}/{args.seeds})" if args.seeds > 1 else ""))
                run_system(runner, seed_params(per_system[s], k), names)
        primary = per_system.get(PRIMARY_SYSTEM, per_system[systems[0]])
        run_report(runner, primary, report_names)
    except StageFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    except StageOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except (P.ParamsError, FileNotFoundError, FolderBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    finally:
        locks.close()
        bar.close()
    print("\nper-stage time (s):")
    print(runner.log.table())
    print(f"wall time: {time.perf_counter() - t0:.1f} s")
    if not args.dry_run:
        for s in systems:
            out = timings_file(ROOT / per_system[s]["results_dir"], s)
            runner.log.write_csv(out)
    return status



# asd-params: the merged parameters of a system, for papermill -f
def params_main(argv: list[str] | None = None) -> int:
    """``asd-params --system S [--params YAML ...] [--notebook NAME] [--out FILE]``: print the merged parameters."""
    ap = argparse.ArgumentParser(
        prog="asd-params", description="Print the merged parameters of a system (base.yaml, then <system>.yaml, "
        "then the overlays; later wins) as YAML, checked as the runner checks them, for `papermill -f`.",
        epilog="example:\n  asd-params --system dev_offline --params params/demo.yaml --notebook 04 --out p.yaml\n"
               "  papermill notebooks/04_normalise_and_fuse.ipynb out.ipynb -f p.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", required=True, help=f"one of {', '.join(P.SYSTEMS)}")
    ap.add_argument("--params", nargs="+", action="extend", default=[], metavar="YAML",
                    help="overlay files merged after base.yaml and <system>.yaml, in order")
    ap.add_argument("--notebook", default=None, metavar="NAME",
                    help="only the parameters this notebook declares (a name or its number prefix, e.g. 04), "
                         "converted to its types, as the runner injects them")
    ap.add_argument("--sources", action="store_true", help="add a comment with the file that set each value")
    ap.add_argument("--out", default=None, metavar="FILE", help="write the YAML here instead of printing it")
    args = ap.parse_args(argv)
    try:
        prm = P.load(args.system, args.params)
        declared = all_declared()
        P.validate(prm, declared)
        values = dict(prm.values)
        if args.notebook:
            stem = args.notebook.removesuffix(".ipynb")
            names = ([n for n in declared if n.removesuffix(".ipynb") == stem]
                     or [n for n in declared if n.split("_")[0] == stem]
                     or [n for n in declared if n.startswith(stem)])
            if len(names) != 1:
                raise P.ParamsError(f"--notebook {args.notebook!r} matches {names or 'no notebook'}; choose one of "
                                    + ", ".join(n.removesuffix('.ipynb') for n in declared))
            values = P.inject(prm, declared[names[0]])
    except (P.ParamsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = []
    for key, value in values.items():
        text = yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()
        text = text[1:-1] if text.startswith("{") else text  # one `key: value` line per parameter
        lines.append(text + (f"  # {prm.sources.get(key, '?')}" if args.sources else ""))
    out = "\n".join(lines) + "\n"
    if args.out:
        atomic_write(args.out, out)
        print(f"{len(values)} parameters -> {args.out}")
    else:
        print(out, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
