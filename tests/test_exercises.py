"""A notebook run by hand with settings other than the system's (an exercise) writes beside the system's artifacts,
in a folder named by what differs, and leaves the later notebooks' inputs alone (notebooks 01 and 02)."""
from __future__ import annotations

import json
from pathlib import Path

from asd_lib import finetune, params as P


def test_changed_settings_compare_values_as_json_and_only_recorded_names():
    recorded = {"arcface_m": 0.2, "train_channels": [0, 1], "trainable": "aau"}
    wanted = {"arcface_m": 0.2, "train_channels": (0, 1), "trainable": "frozen", "device": "cpu"}
    assert P.changed_settings(recorded, wanted) == {"trainable": ("aau", "frozen")}
    assert P.changed_settings({}, wanted) == {}  # nothing recorded: nothing to protect


def test_variant_names_say_what_differs_and_stay_one_folder():
    changed = {"trainable": ("aau", "frozen"), "arcface_m": (0.2, 0.0)}
    assert P.variant_name("beats", changed) == "beats~arcface_m=0.0~trainable=frozen"
    assert P.variant_name("sslam@1", {"backbone": ("a.pt", "ckpt/b.pt")}) == "sslam@1~backbone=ckpt-b.pt"
    assert P.variant_name("beats", {"train_channels": ([0, 1], [0])}) == "beats~train_channels=0"
    assert P.describe_changes(changed) == "arcface_m 0.2 -> 0.0, trainable 'aau' -> 'frozen'"


def test_run_settings_of_a_finetuning_run(tmp_path: Path):
    assert finetune.run_settings(tmp_path) == {}
    cfg = finetune.FinetuneConfig(backbone="beats-tiny", backbone_id="beats", arcface_m=0.0, epochs=3)
    (tmp_path / "config.json").write_text(json.dumps({"config": json.loads(json.dumps(cfg.__dict__))}))
    got = finetune.run_settings(tmp_path)
    assert got["arcface_m"] == 0.0 and got["backbone"] == "beats-tiny"
    assert "backbone_id" not in got and "epochs" not in got  # the folder's name; more epochs extend a run
    run = finetune.system_runs(P.load("dev_offline", [P.PARAMS_DIR / "smoke.yaml"]).values)["beats"]
    assert "arcface_m" in P.changed_settings(got, run)


def test_the_runner_tells_the_notebooks_it_runs_them(monkeypatch):
    monkeypatch.delenv(P.RUNNER_ENV, raising=False)
    assert not P.under_runner()
    monkeypatch.setenv(P.RUNNER_ENV, "1")
    assert P.under_runner()


def test_an_exercise_writes_its_own_folder_and_the_runner_keeps_the_systems(monkeypatch, caplog):
    recorded, wanted = {"pooling": "gem", "recipe": None}, {"pooling": "mean", "recipe": None}
    monkeypatch.delenv(P.RUNNER_ENV, raising=False)
    with caplog.at_level("INFO", logger="asd_lib.params"):
        assert P.exercise_folder("beats@11", recorded, wanted, "the embeddings 03-04 read") == \
            ("beats@11~pooling=mean", {"pooling": ("gem", "mean")})
    assert "the embeddings 03-04 read stays as it is, this run writes beats@11~pooling=mean" in caplog.text
    assert P.exercise_folder("beats@11", recorded, dict(recorded), "x") == ("beats@11", {})
    monkeypatch.setenv(P.RUNNER_ENV, "1")  # under asd-run the system's own settings changed: same folder
    assert P.exercise_folder("beats@11", recorded, wanted, "x") == ("beats@11", {"pooling": ("gem", "mean")})


def test_a_scoring_exercise_writes_its_own_scores_and_04_keeps_the_systems(tmp_path: Path, monkeypatch):
    """03a-03d: the score files record their settings; run by hand with others, the notebook's score root is its own
    folder named by what differs, and under the runner (or with the same settings) it is the system's."""
    import numpy as np

    from asd_lib import artifacts, scorers
    from test_scorers import _fake_embeddings

    L = artifacts.layout(tmp_path, "dev")
    _fake_embeddings(L.embeddings, ["beats@1"], ["fan"], np.random.default_rng(0))
    system = scorers.stage_settings("aau", "holdout", 0, {"n_neighbors": 6})
    scorers.score_embeddings(L.embeddings, L.scores, ["beats@1"], scorers=("knn", "ae"),
                             scorer_params={"knn": {"n_neighbors": 6}, "ae": {"max_epochs": 2}})
    assert artifacts.score_settings(L.scores, "beats@1", "ch0", "knn") == system
    assert artifacts.score_settings(L.scores, "beats@1", "ch0", "ae")["max_epochs"] == 2  # batched AE files too
    assert artifacts.score_settings(L.scores, "beats@1", "ch0", "gmm") == {}  # nothing scored: nothing to protect
    monkeypatch.delenv(P.RUNNER_ENV, raising=False)
    assert scorers.exercise_scores(L, ["beats@1"], "ch0", "knn", system) == L.scores
    exercise = scorers.stage_settings("aau", "holdout", 0, {"n_neighbors": 1})
    own = scorers.exercise_scores(L, ["beats@1"], "ch0", "knn", exercise)
    assert own == L.regime_dir / "scores" / "knn~n_neighbors=1"
    monkeypatch.setenv(P.RUNNER_ENV, "1")
    assert scorers.exercise_scores(L, ["beats@1"], "ch0", "knn", exercise) == L.scores
