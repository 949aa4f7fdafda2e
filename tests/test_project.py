"""Project-level checks: the conda environment mirrors pyproject's pins, the package imports light."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_entries = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_entries) == wanted


def test_torch_and_torchaudio_pinned_as_a_pair():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if "==" in d}
    assert pins["torch"] == pins["torchaudio"]


def test_import_asd_lib_does_not_import_torch():
    code = "import sys, asd_lib, asd_lib.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_console_scripts_exist_and_answer_help():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"asd-synth", "asd-pretrain", "asd-finetune", "asd-run", "asd-evaluate", "asd-score", "asd-params",
            "asd-nbclean"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        code = f"import sys; sys.argv = ['{name}', '--help']; from {module} import {func}; {func}()"
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0 and "usage" in out.stdout.lower(), (name, out.stderr[-500:])


def test_atomic_files_respect_the_umask_and_killed_runs_leave_no_temp_folders(tmp_path):
    from asd_lib import fsutil

    old = os.umask(0o027)
    try:
        fsutil._UMASK = 0o027
        out = fsutil.atomic_write_text(tmp_path / "a.txt", "x")
        assert (out.stat().st_mode & 0o777) == 0o640  # as open() would make it, not mkstemp's 0600
    finally:
        os.umask(old)
        fsutil._UMASK = old
    dead = tmp_path / ".results.tmp-999999999"  # no such process: a killed run's leftover
    dead.mkdir()
    alive = tmp_path / f".results.tmp-{os.getppid()}"  # a live process still building
    alive.mkdir()
    tmp = fsutil.temp_dir(tmp_path / "results")
    assert tmp.is_dir() and not dead.exists() and alive.exists()


def test_a_regular_install_runs_from_the_kits_folder(tmp_path):
    """`pip install .` (not editable) puts only asd_lib in site-packages; params/ and notebooks/ come from the
    folder the command runs in."""
    import shutil

    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the work tree
    shutil.copytree(ROOT / "asd_lib", src / "asd_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                          "--target", str(site), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(site))
    code = "import asd_lib.params as P, asd_lib.run as R; print(P.__file__); print(P.ROOT); raise SystemExit(" \
           "R.main(['--system', 'dev_offline', '--params', 'params/smoke.yaml', '--dry-run']))"
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lib, root = run.stdout.splitlines()[:2]
    assert lib.startswith(str(site)) and root == str(ROOT)
    elsewhere = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert elsewhere.returncode == 2 and "ASD_KIT_ROOT" in elsewhere.stderr
    env["ASD_KIT_ROOT"] = str(ROOT)
    again = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]


def test_progress_bars_show_in_a_terminal_or_notebook_and_stay_quiet_in_ci(monkeypatch):
    from asd_lib import progress

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress.enabled() and not progress.enabled(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress.enabled()  # make test, the runner's papermill stages
    monkeypatch.delenv("TQDM_DISABLE")
    monkeypatch.setattr(sys, "stderr", object())  # a log file or CI: no terminal, no kernel
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not progress.enabled()
