"""The runner and the parameters: merging, validation, stage reuse, failures, and one end-to-end smoke system."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from asd_lib import params as P, run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(P.PARAMS_DIR / "smoke.yaml")


def _overlay(tmp_path: Path, name: str, values: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, "-m", "asd_lib.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------- parameters


def test_merge_order_and_provenance(tmp_path: Path):
    extra = _overlay(tmp_path, "extra.yaml", {"knn_k": 3})
    p = P.load("dev_online", [SMOKE, extra])
    assert p["fusion_mode"] == "online" and p.sources["fusion_mode"] == "params/dev_online.yaml"
    assert p["beats_checkpoint"] == "checkpoints/beats_kit.pt" and p.sources["beats_checkpoint"] == "params/smoke.yaml"
    assert p["knn_k"] == 3 and p.sources["knn_k"] == extra
    assert p["arcface_m"] == 0.2 and p.sources["arcface_m"] == "params/base.yaml"


def test_unknown_parameter_names_key_and_file(tmp_path: Path):
    bad = _overlay(tmp_path, "typo.yaml", {"knn_kk": 6})
    p = P.load("dev_offline", [bad])
    declared = {"03a_score_knn.ipynb": {"knn_k": 6}, "x.ipynb": {k: v for k, v in p.values.items() if k != "knn_kk"}}
    with pytest.raises(P.ParamsError, match=r"'knn_kk' \(set in .*typo.yaml\)"):
        P.validate(p, declared)


def test_type_mismatch_names_notebook(tmp_path: Path):
    p = P.Params({"knn_k": "six"}, {"knn_k": "params/x.yaml"})
    with pytest.raises(P.ParamsError, match=r"knn_k.*params/x.yaml.*03a_score_knn.ipynb declares it as int"):
        P.validate(p, {"03a_score_knn.ipynb": {"knn_k": 6}})
    ok = P.Params({"lr": 1, "flag": True, "xs": [1]}, {})
    P.validate(ok, {"a.ipynb": {"lr": 0.5, "flag": False, "xs": []}})  # int for float is fine
    assert P.inject(ok, {"lr": 0.5})["lr"] == 1.0 and isinstance(P.inject(ok, {"lr": 0.5})["lr"], float)


def test_nested_yaml_is_refused(tmp_path: Path):
    with pytest.raises(P.ParamsError, match="nested"):
        P.read_yaml(_overlay(tmp_path, "nested.yaml", {"a": {"b": 1}}))


def test_parameters_cell_must_be_literals():
    assert P.parse_parameters_source("a = 1  # one\nb = [1, 'x']\n") == {"a": 1, "b": [1, "x"]}
    with pytest.raises(P.ParamsError, match="not a plain literal"):
        P.parse_parameters_source("a = 1\nb = a + 1\n", "nb.ipynb")
    with pytest.raises(P.ParamsError, match="assigned twice"):
        P.parse_parameters_source("a = 1\na = 2\n")


def test_ensemble_scaling_and_plan():
    models = P.resolve_ensemble(["beats@107", "beats@204", "sslam@100"], 0.01)
    assert models == ["beats@1", "beats@2", "sslam@1"]
    assert P.training_plan(models) == {"beats": [1, 2], "sslam": [1]}
    with pytest.raises(P.ParamsError, match="twice"):
        P.resolve_ensemble(["beats@107", "beats@108"], 0.01)
    with pytest.raises(P.ParamsError, match="<backbone>@<epoch>"):
        P.resolve_ensemble(["beats"])


def test_layout_matches_design():
    L = P.layout("results", "dev", "dev_online")
    assert L.checkpoint("beats@7") == Path("results/dev/checkpoints/beats/epoch_007.pt")
    assert L.scores == Path("results/dev/scores") and L.submission == Path("results/dev_online/submission")


def test_seed_repeats_go_to_their_own_root():
    p = P.Params({"seed": 5, "results_dir": "results"}, {})
    assert run.seed_params(p, 0) is p
    p2 = run.seed_params(p, 2)
    assert p2["seed"] == 7 and p2["results_dir"] == str(Path("results") / "seed2")


def test_only_selects_by_prefix():
    assert run.select(["03"]) == ["03a_score_knn", "03b_score_gmm", "03c_score_autoencoder", "03d_score_ldn"]
    assert run.select(["04b"]) == ["04b_baseline"]
    with pytest.raises(SystemExit):
        run.select(["99"])


def test_time_table_lists_every_stage():
    log = run.RunLog([run.StageResult("00_data", "results/dev", "ran", 1.25),
                      run.StageResult("01_ft", "results/dev", "reused", 0.0)])
    text = log.table()
    assert "00_data" in text and "reused" in text and "total" in text and "1.2" in text


# ---------------------------------------------------------------------------------------------- command line


def test_cli_rejects_unknown_key_with_file_name(tmp_path: Path):
    bad = _overlay(tmp_path, "bad.yaml", {"not_a_parameter": 1})
    out = _run("--system", "dev_offline", "--params", SMOKE, bad, "--dry-run")
    assert out.returncode == 2
    assert "not_a_parameter" in out.stderr and "bad.yaml" in out.stderr


def test_cli_rejects_unknown_system():
    out = _run("--system", "dev_sideways", "--dry-run")
    assert out.returncode == 2 and "dev_sideways" in out.stderr


def test_dry_run_lists_stages_of_a_system():
    out = _run("--system", "dev_online", "--params", SMOKE, "--dry-run", "--force")
    assert out.returncode == 0, out.stderr
    for name in ("00_data_and_labels", "03d_score_ldn", "04_normalise_and_fuse", "05_results_tables"):
        assert name in out.stdout
    assert "06_paper_figures" not in out.stdout  # report notebooks beyond the tables run only with several systems


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_data):
    """dev_offline on the tiny preset, into a temporary results folder (the first run of this module)."""
    tmp = tmp_path_factory.mktemp("run")
    overlay = _overlay(tmp, "where.yaml", {"results_dir": str(tmp / "results"), "figures_dir": str(tmp / "figures"),
                                          "data_root": str(tiny_data)})
    t0 = time.perf_counter()
    out = _run("--system", "dev_offline", "--params", SMOKE, overlay, timeout=900)
    return tmp, overlay, out, time.perf_counter() - t0


def test_end_to_end_dev_offline_on_the_smoke_config(smoke_run):
    tmp, _, out, seconds = smoke_run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = tmp / "results"
    params = json.loads((res / "dev_offline" / "params.json").read_text())
    assert params["values"]["system"] == "dev_offline" and params["sources"]["beats_checkpoint"] == "params/smoke.yaml"
    subs = sorted((res / "dev_offline" / "submission").glob("anomaly_score_*_section_00_test.csv"))
    assert len(subs) == 7 and len(list((res / "dev_offline" / "submission").glob("decision_result_*"))) == 7
    assert (res / "dev_offline" / "result.csv").is_file()
    for name, scope in run.NOTEBOOKS[:8]:
        where = {"regime": "dev", "system": "dev_offline", "shared": "baseline"}[scope]
        assert (res / where / "notebooks" / f"{name}.ipynb").is_file(), name
    assert (res / "baseline" / "MSE").is_dir() and (res / "tables" / "table1.md").is_file()
    assert "per-stage time" in out.stdout and (res / "dev_offline" / "timings.csv").is_file()
    assert "without encryption" not in out.stderr  # the kernels' start-up noise stays out of the runner's output
    print(f"smoke dev_offline end to end: {seconds:.1f} s")


def test_second_run_reuses_every_stage(smoke_run):
    tmp, overlay, first, _ = smoke_run
    assert first.returncode == 0
    out = _run("--system", "dev_offline", "--params", SMOKE, overlay)
    assert out.returncode == 0, out.stderr[-2000:]
    stage_lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    reused = [ln for ln in stage_lines if ln.endswith(")") and ": reused (" in ln]
    assert stage_lines and len(reused) == len(stage_lines), out.stdout


def test_a_library_edit_or_a_data_change_makes_the_stage_stale(smoke_run):
    tmp, overlay, first, _ = smoke_run
    assert first.returncode == 0
    params = P.load("dev_offline", [SMOKE, overlay])
    runner = run.Runner(declared=run.all_declared())
    record = runner._where("04_normalise_and_fuse", "system", params)[1]
    up = [json.loads(runner._where("03d_score_ldn", "regime", params)[1].read_text())["finished"]]
    assert runner.why_stale("04_normalise_and_fuse", "system", params, up) is None
    saved = record.read_text()
    try:  # the record as if fusion.py had been different when the stage ran
        rec = json.loads(saved)
        assert "asd_lib.fusion" in rec["parts"]["library"] and "asd_lib.finetune" not in rec["parts"]["library"]
        rec["parts"]["library"]["asd_lib.fusion"] = "0" * 64
        record.write_text(json.dumps(rec))
        assert runner.why_stale("04_normalise_and_fuse", "system", params, up) == "library changed: asd_lib.fusion"
    finally:
        record.write_text(saved)
    wav = next((Path(params["data_root"]) / "dev_data").rglob("*.wav"))
    st = wav.stat()
    try:  # a replaced data file (same name, new mtime)
        os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert runner.why_stale("00_data_and_labels", "regime", params, []).startswith("data changed")
    finally:
        os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert runner.why_stale("00_data_and_labels", "regime", params, []) is None


def test_only_refuses_to_run_over_a_stale_earlier_stage(smoke_run):
    tmp, overlay, first, _ = smoke_run
    assert first.returncode == 0
    other = _overlay(tmp, "pooling.yaml", {"pooling": "mean"})  # 02's parameter: its embeddings are now stale
    out = _run("--system", "dev_offline", "--params", SMOKE, overlay, other, "--only", "03a")
    assert out.returncode == 2, out.stdout[-2000:]
    assert "02_extract_embeddings (dev_offline) is not current (parameters changed)" in out.stderr
    assert "03a_score_knn: running" not in out.stdout


def test_failure_names_notebook_cell_and_executed_copy(smoke_run):
    tmp, overlay, first, _ = smoke_run
    broken = _overlay(tmp, "broken.yaml", {"ensemble": ["nosuchbackbone@1"], "epoch_scale": 1.0})
    out = _run("--system", "dev_offline", "--params", SMOKE, overlay, broken, "--only", "01")
    assert out.returncode == 1
    assert "01_finetune_arcface.ipynb failed in cell" in out.stderr
    assert "nosuchbackbone" in out.stderr
    assert "executed copy" in out.stderr and "results/dev/notebooks/01_finetune_arcface.ipynb" in out.stderr


def test_a_second_runner_on_the_same_results_folder_refuses(tmp_path: Path):
    from asd_lib.fsutil import FolderBusy, folder_lock

    res = tmp_path / "results"
    overlay = _overlay(tmp_path, "where.yaml", {"results_dir": str(res)})
    with folder_lock(res, "test holder"):
        out = _run("--system", "dev_offline", "--params", SMOKE, overlay, "--only", "00")
        with pytest.raises(FolderBusy, match=f"process {os.getpid()}"):
            with folder_lock(res, "a second holder"):
                pass
    assert out.returncode == 2 and "is in use by process" in out.stderr and "running" not in out.stdout


def test_asd_params_prints_what_the_runner_would_inject(tmp_path: Path, capsys):
    assert run.params_main(["--system", "dev_online", "--params", SMOKE, "--notebook", "04", "--sources"]) == 0
    text = capsys.readouterr().out
    merged = yaml.safe_load(text)
    declared = run.all_declared()["04_normalise_and_fuse.ipynb"]
    assert merged == P.inject(P.load("dev_online", [SMOKE]), declared) and merged["fusion_mode"] == "online"
    assert "# params/dev_online.yaml" in text
    bad = _overlay(tmp_path, "bad.yaml", {"no_such_key": 1})
    assert run.params_main(["--system", "dev_online", "--params", bad]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_leaky_selection_really_picks_the_ensembles_epochs_and_is_labelled(tmp_path: Path):
    from asd_lib import tables

    ckpt = tmp_path / "dev" / "checkpoints"
    for backbone, ranked in (("beats", [5, 3, 9]), ("sslam", [2, 7])):
        (ckpt / backbone).mkdir(parents=True)
        (ckpt / backbone / P.LEAKY_SELECTION).write_text(json.dumps({"epochs": ranked}))
    L = P.layout(tmp_path, "dev", "dev_offline")
    ens = ["beats@107", "beats@204", "sslam@100"]
    assert L.models(ens, 0.1) == ["beats@11", "beats@20", "sslam@10"]  # fixed: no test labels involved
    assert L.models(ens, 0.1, "select-on-test-leaky") == ["beats@3", "beats@5", "sslam@2"]  # the 2 best, in order
    (ckpt / "sslam" / P.LEAKY_SELECTION).unlink()
    with pytest.raises(P.ParamsError, match="select-on-test-leaky"):
        L.models(ens, 0.1, "select-on-test-leaky")
    (tmp_path / "dev_offline").mkdir()
    (tmp_path / "dev_offline" / "params.json").write_text(json.dumps({"values": {"epoch_selection":
                                                                                   "select-on-test-leaky"}}))
    labels = tables.system_labels(tmp_path)
    assert "LEAKY" in labels["dev_offline"] and "LEAKY" not in labels["dev_online"]


def test_a_notebook_run_outside_the_runner_checks_its_parameters(tmp_path: Path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    good = P.inject(P.load("dev_online", [SMOKE]), run.all_declared()["04_normalise_and_fuse.ipynb"])
    P.check_namespace({**good, "np": np, "setup": print})  # modules and functions are not parameters
    with pytest.raises(P.ParamsError, match="'ensemble' = 'beats@107' has type str.*asd-params"):
        P.check_namespace({**good, "ensemble": "beats@107"})
    with pytest.raises(P.ParamsError, match="system = 'dev_sideways'"):
        P.check_namespace({**good, "system": "dev_sideways"})
    with pytest.raises(P.ParamsError, match="regime = 'both'"):
        P.check_namespace({**good, "regime": "both"})
    # papermill -f with a value the runner would refuse: the notebook stops in its set-up cell, naming it
    with pytest.raises(PapermillExecutionError, match="'seed' = 'zero' has type str"):
        pm.execute_notebook(str(ROOT / "notebooks/05_results_tables.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"seed": "zero", "results_dir": str(tmp_path / "results")},
                            kernel_name=run.KERNEL, cwd=str(ROOT), progress_bar=False)


def test_an_executed_notebook_keeps_its_figures_under_the_makefiles_agg_backend(tmp_path: Path, monkeypatch):
    """`make` exports MPLBACKEND=Agg; plots.setup switches the kernel to the inline backend, so the committed
    notebooks show their figures."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from asd_lib import plots\nplots.setup(figures_dir={str(tmp_path)!r})\n"
                                          "import matplotlib.pyplot as plt\nplt.plot([0, 1]);")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name=run.KERNEL,
                        cwd=str(ROOT), progress_bar=False)
    outputs = nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_the_runner_shows_one_bar_over_its_stages_in_a_terminal():
    import fcntl
    import pty
    import re
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    proc = subprocess.Popen([sys.executable, "-m", "asd_lib.run", "--system", "dev_online", "--params", SMOKE,
                             "--dry-run", "--force"], cwd=ROOT, env=env, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    n_lines = len(re.findall(r": would run \(", text))
    assert n_lines == 11  # 10 stages of the system + the tables
    assert re.search(rf"asd-run: 100%\|[^\r\n]*\| {n_lines}/{n_lines} ", text)


def test_asd_finetune_system_trains_what_notebook_01_trained(smoke_run):
    tmp, overlay, first, _ = smoke_run
    assert first.returncode == 0
    out = subprocess.run([sys.executable, "-m", "asd_lib.finetune", "--system", "dev_offline", "--params", SMOKE,
                          overlay, "--print-settings"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert set(runs) == {"beats", "sslam"}
    for backbone, settings in runs.items():
        trained = json.loads((tmp / "results" / "dev" / "checkpoints" / backbone / "config.json").read_text())["config"]
        for key, value in settings.items():
            if key != "device":  # where it ran, not what it trained
                assert trained[key] == value, (backbone, key, trained[key], value)


def test_a_damaged_output_reruns_its_stage_and_force_retrains_from_scratch(smoke_run):
    """Last in this module: it leaves the smoke run's later stages out of date."""
    import re

    tmp, overlay, first, _ = smoke_run
    assert first.returncode == 0
    assert _run("--system", "dev_offline", "--params", SMOKE, overlay).returncode == 0  # current again after the above
    res = tmp / "results"
    npz = sorted((res / "dev" / "scores").rglob("knn/*.npz"))[0]
    content, st = npz.read_bytes(), npz.stat()
    npz.write_bytes(content[: len(content) // 2])  # truncated, as by a full disk or a killed copy
    try:
        out = _run("--system", "dev_offline", "--params", SMOKE, overlay, "--dry-run")
        assert out.returncode == 0, out.stderr
        assert re.search(r"03a_score_knn: would run \(its output dev/scores/\S+/knn/\S+\.npz changed since it was "
                         r"written\)", out.stdout), out.stdout
        assert "02_extract_embeddings: reused" in out.stdout and "04_normalise_and_fuse: would run" in out.stdout
    finally:
        npz.write_bytes(content)
        os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns))
    ckpt = res / "dev" / "checkpoints" / "beats"
    kept = {p.name: p.stat().st_mtime_ns for p in ckpt.glob("epoch_*.pt")}
    out = _run("--system", "dev_offline", "--params", SMOKE, overlay, "--only", "01", "--force")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # a finished last.pt would have made a resumed run train nothing; --force trained every epoch again
    assert kept and all(ckpt.joinpath(n).stat().st_mtime_ns != t for n, t in kept.items())
