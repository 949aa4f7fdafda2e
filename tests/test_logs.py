"""Library messages go through `logging` under one switch ($ASD_KIT_LOG); only the commands print."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from asd_lib import logs

ROOT = Path(__file__).resolve().parents[1]
# modules that are commands as a whole: what they print is their output
COMMAND_MODULES = {"run.py", "score.py", "nbclean.py", "logs.py"}


def _prints_outside_commands() -> list[str]:
    found = []
    for path in sorted((ROOT / "asd_lib").rglob("*.py")):
        if path.name in COMMAND_MODULES:
            continue
        tree = ast.parse(path.read_text())

        def visit(node: ast.AST, func: str) -> None:
            for child in ast.iter_child_nodes(node):
                name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
                if isinstance(child, ast.Call) and getattr(child.func, "id", None) == "print" and \
                        not (name == "main" or name.endswith("_main")):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno} in {name or '<module>'}")
                visit(child, name)

        visit(tree, "")
    return found


def test_library_code_prints_nothing_outside_the_commands():
    assert _prints_outside_commands() == []


def test_info_goes_to_stdout_warnings_to_stderr_and_the_switch_hides_info(monkeypatch, capsys):
    log = logging.getLogger("asd_lib.finetune")
    monkeypatch.delenv(logs.ENV, raising=False)
    logs.configure()
    log.info("epoch 1 done")
    log.warning("something odd")
    out = capsys.readouterr()
    assert out.out == "epoch 1 done\n" and out.err == "something odd\n"
    monkeypatch.setenv(logs.ENV, "warning")
    logs.configure()
    log.info("hidden")
    log.warning("shown")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "shown\n"
    logs.configure()  # configuring twice adds no second handler
    log.warning("once")
    assert capsys.readouterr().err == "once\n"
    monkeypatch.setenv(logs.ENV, "loud")
    assert logs.configure().level == logging.INFO
    assert "ASD_KIT_LOG='loud'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose one of"):
        logs.configure("chatty")
    monkeypatch.delenv(logs.ENV)
    logs.configure(info_stream="stderr")  # a command whose stdout is data
    log.info("progress note")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "progress note\n"
    logs.configure()


def test_baseline_training_reports_through_the_logger(caplog):
    import numpy as np

    from asd_lib import baseline

    rng = np.random.default_rng(0)
    with caplog.at_level(logging.INFO, logger="asd_lib.baseline"):
        baseline.train_baseline(rng.standard_normal((64, 640)).astype(np.float32), np.zeros(64, bool), epochs=2,
                                batch_size=32, verbose=True)
    assert [r.name for r in caplog.records if "epoch" in r.getMessage()] == ["asd_lib.baseline"] * 2
