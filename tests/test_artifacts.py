"""The results layout and the stage files: one module knows every path, the readers name the file they refuse."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from asd_lib import artifacts as A
from asd_lib.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def test_layout_paths_of_a_model_channel_machine_and_scorer(tmp_path: Path):
    L = A.layout(tmp_path, "dev", "dev_online")
    r = tmp_path / "dev"
    assert L.checkpoint("beats@7") == r / "checkpoints/beats/epoch_007.pt"
    assert L.checkpoint_dir("sslam") == r / "checkpoints/sslam"
    assert L.embedding("beats@7", "ch0", "fan", "test") == r / "embeddings/beats@7/ch0/fan_test.npz"
    assert L.embedding_dir("beats@7", "ch1") == r / "embeddings/beats@7/ch1"
    assert L.score("beats@7", "ch0", "knn", "fan") == r / "scores/beats@7/ch0/knn/fan.npz"
    assert L.fitted("beats@7", "ch0", "knn", "fan") == r / "scores/beats@7/ch0/knn/fitted/fan"
    assert L.ablations("fusion", "knn") == r / "ablations/fusion/knn"
    assert L.manifest == r / "manifest.csv"
    system = tmp_path / "dev_online"
    assert (L.submission, L.eval_submission, L.params_file) == (
        system / "submission", system / "eval_submission", system / "params.json")
    assert A.embedding_path(L.embeddings, "m@1", "both", "gearbox", "train") == L.embedding("m@1", "both", "gearbox",
                                                                                            "train")
    assert A.score_path(L.scores, "m@1", "ch0", "ae", "fan") == L.score("m@1", "ch0", "ae", "fan")
    assert L.seed(2).score("m@1", "ch0", "ae", "fan") == tmp_path / "seed2/dev/scores/m@1/ch0/ae/fan.npz"
    with pytest.raises(ParamsError, match="regime"):
        A.layout(tmp_path, "eval")


def test_checkpoint_epochs_and_seed_repeats(tmp_path: Path):
    for e in (0, 3):
        A.checkpoint_file(tmp_path, e).write_bytes(b"")
        A.head_file(tmp_path, e).write_bytes(b"")
    (tmp_path / "last.pt").write_bytes(b"")
    assert list(A.checkpoint_epochs(tmp_path)) == [0, 3]
    assert [p.name for p in A.checkpoint_epochs(tmp_path, heads=True)[3]] == ["epoch_003.head.pt", "epoch_003.pt"]
    (tmp_path / "seed2").mkdir()
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seedling").mkdir()
    assert [k for k, _ in A.seed_repeats(tmp_path)] == [0, 1, 2]


def test_embedding_file_round_trip_and_errors_name_the_file(tmp_path: Path):
    path = A.embedding_path(tmp_path, "m@1", "ch0", "fan", "train")
    names = ["a.wav", "b.wav", "c.wav"]
    A.save_embeddings(path, np.ones((3, 4)), names, np.array([0, 0, -1]), ["source", "target", ""],
                      checkpoint_sha256="abc", settings='{"pooling": "gem", "recipe": null}')
    z = A.load_embeddings(tmp_path, "m@1", "ch0", "fan", "train")
    assert z["emb"].dtype == np.float32 and z["emb"].shape == (3, 4)
    assert list(z["names"]) == names and list(z["labels"]) == [0, 0, -1] and list(z["domains"]) == ["source",
                                                                                                   "target", ""]
    assert A.embedded_machines(tmp_path, "m@1", "ch0") == ["fan"]
    assert A.embedding_source(tmp_path, "m@1", "ch0", "fan", "train") == "abc"
    assert A.embedding_settings(tmp_path, "m@1", "ch0") == {"pooling": "gem", "recipe": None}
    assert A.embeddings_current(path, names, "abc", '{"pooling": "gem", "recipe": null}')
    assert not A.embeddings_current(path, names[:2], "abc", '{"pooling": "gem", "recipe": null}')

    with pytest.raises(FileNotFoundError, match="fan_test.npz"):
        A.load_embeddings(tmp_path, "m@1", "ch0", "fan", "test")
    with pytest.raises(FileNotFoundError, match="no embedding folder"):
        A.embedded_machines(tmp_path, "m@2", "ch0")
    np.savez(path, emb=np.ones((3, 4)), names=np.array(names))
    with pytest.raises(ValueError, match=r"fan_train\.npz: missing keys \['domains', 'labels'\]"):
        A.load_embeddings(tmp_path, "m@1", "ch0", "fan", "train")
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"fan_train\.npz: not a readable embedding file"):
        A.load_embeddings(tmp_path, "m@1", "ch0", "fan", "train")
    assert not A.embeddings_current(path, names, "abc", "")


def test_score_file_round_trip_and_errors_name_the_file(tmp_path: Path):
    path = A.score_path(tmp_path, "m@1", "ch0", "gmm", "fan")
    A.save_scores(path, [0.1, 0.2], [1.0, 2.0, 3.0], ["t1.wav", "t2.wav"], ["c1", "c2", "c3"], "holdout",
                  variant="kit", iterations=[4, 5])
    z = A.load_scores(path)
    assert z["test"].dtype == np.float64 and list(z["names"]) == ["t1.wav", "t2.wav"]
    assert list(z["calib_names"]) == ["c1", "c2", "c3"] and z["calib_kind"] == "holdout" and z["variant"] == "kit"
    assert list(z["iterations"]) == [4, 5]
    assert A.scored_machines(tmp_path, "m@1", "ch0", "gmm") == ["fan"]
    assert A.scored_machines(tmp_path, "m@1", "ch0", "knn") == []

    with pytest.raises(FileNotFoundError, match=r"knn/fan\.npz.*score_embeddings"):
        A.load_scores(A.score_path(tmp_path, "m@1", "ch0", "knn", "fan"))
    np.savez(path, test=np.zeros(2), names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"gmm/fan\.npz: missing keys \['calib'\]"):
        A.load_scores(path)
    np.savez(path, test=np.zeros(3), calib=np.zeros(2), names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"gmm/fan\.npz: 3 test scores but 2 names"):
        A.load_scores(path)
    path.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"gmm/fan\.npz: not a readable score file"):
        A.load_scores(path)


FOLDERS = {"embeddings", "scores", "checkpoints"}


def _joins_a_results_folder(tree: ast.AST) -> list[int]:
    """Lines that put one of the stage folders' names on a path: ``x / "scores"``, ``Path(x, "scores")``,
    ``x.joinpath("scores")``."""
    lines = []
    for node in ast.walk(tree):
        parts: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = [node.left, node.right]
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("Path", "joinpath", "join"):
                parts = list(node.args)
        if any(isinstance(p, ast.Constant) and isinstance(p.value, str) and p.value.strip("/") in FOLDERS
               for p in parts):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_no_other_library_module_builds_a_stage_folder_path():
    found = []
    for path in sorted((ROOT / "asd_lib").rglob("*.py")):
        if path.name == "artifacts.py":
            continue
        found += [f"{path.relative_to(ROOT)}:{n}" for n in _joins_a_results_folder(ast.parse(path.read_text()))]
    assert found == [], "build these paths with asd_lib.artifacts"


def test_the_scan_sees_a_join():
    assert _joins_a_results_folder(ast.parse('p = root / "scores" / m\nq = Path(r, "embeddings")')) == [1, 2]


def test_artifacts_imports_light():
    import subprocess
    import sys

    code = "import sys, asd_lib.artifacts; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
