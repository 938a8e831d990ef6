"""foldflow tune: the space, the objective, the holdout, and whole searches through Prefect."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from tasks.config import CVConfig, ExecutionConfig, ModelConfig
from tasks.search_space import DEFAULT_SPACE, SearchSpaceError, load_space, parse_space
from tasks.tune_config import TuneConfig

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the space


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"l3": {"float": [0, 1]}}, "'l3' is not a model field"),
        ({"l1": {"log_float": [0, 1e-2]}}, "l1: a log distribution needs low > 0"),
        ({"batch_size": {"kind": "int", "low": 0, "high": 64, "log": True}}, "batch_size: a log"),
        ({"dropout": {"float": [0.5, 0.1]}}, "dropout: low 0.5 is above high 0.1"),
        ({"regularizer": {"choice": []}}, "regularizer: an empty choice"),
        ({"regularizer": {"choice": ["l9"]}}, "regularizer: the model field refuses 'l9'"),
        ({"dropout": {"float": [0, 2]}}, "dropout: the model field refuses 2"),
        ({"l1": {"gauss": [1, 2]}}, "l1: unknown distribution 'gauss'"),
        ({"l1": {"log_float": [1e-3]}}, "l1: log_float takes [low, high]"),
        ({}, "the search space is empty"),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(tmp_path, space, expected):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(SearchSpaceError) as err:
        load_space(str(path))
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_a_space_file_in_short_and_long_form_gives_optuna_distributions(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "hidden_units: {choice: [[32], [64, 32]]}\n"
        "learning_rate: {kind: log_float, low: 1.0e-4, high: 1.0e-2}\n"
        "batch_size: {int: [16, 128, 16]}\n"
    )
    space = load_space(str(path))
    dists = space.distributions()
    assert dists["learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["batch_size"] == optuna.distributions.IntDistribution(16, 128, step=16)
    # Lists are not Optuna choices: they travel as JSON text and come back as lists.
    labels = dists["hidden_units"].choices
    model = space.model_for({"hidden_units": labels[1], "batch_size": 32}, ModelConfig())
    assert model.hidden_units == [64, 32] and model.batch_size == 32
    with pytest.raises(SearchSpaceError, match="does not exist"):
        load_space(str(tmp_path / "missing.yaml"))


def test_the_default_space_is_the_issues_and_every_draw_is_a_valid_model():
    assert set(DEFAULT_SPACE.params) == {
        "regularizer", "regularizer_on", "l1", "l2", "dropout", "hidden_units", "learning_rate",
    }  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask(DEFAULT_SPACE.distributions())
        model = DEFAULT_SPACE.model_for(trial.params, ModelConfig())
        assert 1e-4 <= model.learning_rate <= 1e-2 and 0 <= model.dropout <= 0.5
        study.tell(trial, 0.0)
    with pytest.raises(ValueError, match="holdout splits rows"):
        TuneConfig(cv=CVConfig(splitter="group", data={"group_column": "g", "target": "y"}))


# ----------------------------------------------------------------------------- scores, holdout


def test_the_study_is_a_journal_file_unless_an_earlier_sqlite_study_is_there(tmp_path):
    from flows.tune import open_study

    config = TuneConfig(cv=CVConfig(cache_dir=str(tmp_path / "cache")))
    url = config.storage_url()
    assert url == f"journal:///{tmp_path / 'cache' / 'tune' / 'optuna.journal'}"
    study = open_study(config, "s", "accuracy")
    study.tell(study.ask(), 0.5)
    assert (tmp_path / "cache" / "tune" / "optuna.journal").stat().st_size > 0
    assert len(open_study(config, "s", "accuracy").trials) == 1  # it resumes from the file
    # a study kept in SQLite by an earlier foldflow resumes where it is
    earlier = tmp_path / "old" / "tune" / "optuna.db"
    earlier.parent.mkdir(parents=True)
    kept = optuna.create_study(storage=f"sqlite:///{earlier}", study_name="s",
                               direction="maximize")  # fmt: skip
    kept.tell(kept.ask(), 0.25)
    old = TuneConfig(cv=CVConfig(cache_dir=str(tmp_path / "old")))
    assert old.storage_url() == f"sqlite:///{earlier}"
    assert [t.value for t in open_study(old, "s", "accuracy").trials] == [0.25]


def test_pooled_score_is_runs_out_of_fold_score():
    from sklearn import metrics as skm

    from tasks.metrics import FoldRun
    from tasks.objective import Truth, pooled_score
    from tasks.train import FoldResult

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=30)
    probs = rng.dirichlet(np.ones(3), size=30)
    run = FoldRun(scores={}, final_loss=0, epochs=1, train_seconds=0, started_at=0,
                  finished_at=0, worker="w", device="CPU", attempt=1)  # fmt: skip
    folds = [
        FoldResult(fold=i + 1, test_ids=part, test_positions=part, predictions=probs[part], run=run)
        for i, part in enumerate(np.array_split(rng.permutation(30), 3))
    ]
    truth = Truth("classification", labels, 3)
    assert pooled_score("accuracy", truth, folds) == pytest.approx(
        skm.accuracy_score(labels, probs.argmax(1))
    )
    assert pooled_score("log_loss", truth, folds) == pytest.approx(skm.log_loss(labels, probs))
    one = pooled_score("accuracy", truth, folds[:1])
    part = folds[0].test_positions
    assert one == pytest.approx(skm.accuracy_score(labels[part], probs[part].argmax(1)))


def test_holdout_rows_never_enter_a_fold(tmp_path, bundled_csv):
    from flows.fetch import fetch_source
    from tasks.clean import clean_to_parquet
    from tasks.data.spec import DataSpec
    from tasks.folds import plan_folds
    from tasks.holdout import split_holdout

    raw = fetch_source(str(bundled_csv), str(tmp_path / "cache"), CVConfig().download, None)
    data = clean_to_parquet.fn(raw.path, raw.sha256, str(tmp_path / "cache"), DataSpec())
    split = split_holdout.fn(data, 0.2, 42, 5)
    full = pd.read_parquet(data.path)
    key, target = data.spec.key, data.spec.target
    held_ids = set(full[key].iloc[split.holdout_positions])
    assert len(held_ids) == math.ceil(0.2 * data.n_rows)
    search = pd.read_parquet(split.search.path)
    assert set(search[key]).isdisjoint(held_ids) and len(search) + len(held_ids) == len(full)
    for fold in plan_folds.fn(split.search, 5, True, 42):
        assert set(search[key].iloc[fold.test_positions]).isdisjoint(held_ids)
        assert set(search[key].iloc[fold.train_positions()]).isdisjoint(held_ids)
    # Stratified: each class's share of the holdout is its share of the table (to a row).
    shares = full[target].value_counts()
    held = full[target].iloc[split.holdout_positions].value_counts()
    assert ((held - 0.2 * shares).abs() <= 1).all()
    # The final fold trains on exactly the search rows and tests on the holdout.
    assert set(full[key].iloc[split.final.train_positions()]) == set(search[key])


def test_the_trials_table_and_progress_line_from_a_real_study():
    from tasks.trials import ERROR, FOLD_SCORES, FOLDS_TRAINED, progress_line, trials_table

    space = parse_space({"hidden_units": {"choice": [[8], [16, 8]]}, "l1": {"float": [0, 1]}})
    study = optuna.create_study(direction="maximize")
    for number, (state, scores) in enumerate(
        [("COMPLETE", [0.5, 0.7]), ("PRUNED", [0.1]), ("FAIL", []), ("COMPLETE", [0.6, 0.6])]
    ):
        trial = study.ask(space.distributions())
        trial.set_user_attr(FOLD_SCORES, scores)
        trial.set_user_attr(FOLDS_TRAINED, len(scores))
        if state == "FAIL":
            trial.set_user_attr(ERROR, "boom")
        value = float(np.mean(scores)) if state == "COMPLETE" else None
        if state == "PRUNED":
            trial.report(0.1, 1)
        study.tell(trial, value, state=optuna.trial.TrialState[state])
        assert trial.number == number
    table = trials_table(study.trials, space)
    assert list(table["state"]) == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    assert table.loc[0, "mean"] == pytest.approx(0.6) and table.loc[0, "std"] == pytest.approx(0.1)
    assert list(table["folds_trained"]) == [2, 1, 0, 2]
    assert table.loc[2, "error"] == "boom"
    assert isinstance(yaml.safe_load(table.loc[0, "params"])["hidden_units"], list)
    line = progress_line(study.trials, 10, (0, 0.6))
    assert line == "4 of 10 trials: 2 complete, 1 pruned, 1 failed; best 0.6000 (trial 0)"


# ----------------------------------------------------------------------------- whole searches


def tune_config(tmp_path: Path, space: dict, **changes) -> TuneConfig:
    cv = CVConfig(
        folds=2,
        model=ModelConfig(epochs=2),
        execution=ExecutionConfig(runner="thread", workers=1),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        fold_retries=0,
        **changes.pop("cv", {}),
    )
    return TuneConfig(cv=cv, space=parse_space(space), sampler="random", **changes)


def task_runs(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    from tests.prefect_runs import settled_task_runs

    with get_client(sync_client=True) as client:
        runs = settled_task_runs(client, flow_run_id, keep=lambda r: "fold-" in r.name)
    return {run.name: run.state.name for run in runs}


@pytest.mark.slow
def test_tune_prunes_reuses_folds_and_its_best_yaml_runs_from_the_cache(tmp_path):
    from flows.cross_validate import cross_validate
    from flows.tune import tune

    # Seed 6 draws 0.01, 0.01, 1e-7: trial 1 repeats trial 0 (its folds come from the cache),
    # trial 2 barely learns and is pruned after its first fold.
    config = tune_config(tmp_path, {"learning_rate": {"choice": [0.01, 1e-7]}}, trials=3,
                         holdout=0, sampler_seed=6, prune_startup_trials=1)  # fmt: skip
    state = tune(config, return_state=True)
    result = state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs == {
        "trial-0.fold-1": "Completed", "trial-0.fold-2": "Completed",
        "trial-1.fold-1": "Cached", "trial-1.fold-2": "Cached",
        "trial-2.fold-1": "Completed",  # pruned: its fold 2 never started
        "best.fold-1": "Cached", "best.fold-2": "Cached",
    }  # fmt: skip
    table = pd.read_parquet(result["paths"]["trials.parquet"])
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert list(table["folds_trained"]) == [2, 2, 1]
    assert table.loc[0, "value"] == table.loc[1, "value"]  # the same folds, the same score
    assert table.loc[2, "value"] < table.loc[0, "value"]

    # best.yaml is a plain run: its folds come from the cache, with the trial's numbers.
    best = CVConfig.model_validate(yaml.safe_load(Path(result["paths"]["best.yaml"]).read_text()))
    assert best.model.learning_rate == 0.01
    run_state = cross_validate(best, return_state=True)
    metrics = run_state.result()["metrics"]
    assert set(task_runs(run_state.state_details.flow_run_id).values()) == {"Cached"}
    assert metrics["final_accuracy"] == pytest.approx(table.loc[0, "value"])
    assert metrics["fold_accuracy"] == pytest.approx(list(table.loc[0, "fold_scores"]))


@pytest.mark.slow
def test_regression_tune_with_a_failing_trial_and_a_holdout(tmp_path):
    from sklearn import datasets

    from flows.tune import tune

    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    source = tmp_path / "diabetes.csv"
    frame.to_csv(source, index=False)
    # Seed 0 draws 1e12 (training diverges: a permanent error) then 0.003.
    config = tune_config(
        tmp_path, {"learning_rate": {"choice": [0.003, 1e12]}}, trials=2, sampler_seed=0,
        prune=False, cv={"source": str(source), "data": {"target": "target"}},
    )  # fmt: skip
    result = tune(config)
    table = pd.read_parquet(result["paths"]["trials.parquet"])
    assert list(table["state"]) == ["FAIL", "COMPLETE"]
    assert "diverged" in table.loc[0, "error"]
    assert result["metric"] == "rmse" and result["best_trial"] == 1
    assert result["holdout_rows"] == math.ceil(0.2 * len(frame))  # scikit-learn rounds up
    assert result["search_rows"] == len(frame) - result["holdout_rows"]
    assert np.isfinite(result["holdout_score"]) and result["holdout_score"] > 0
    assert (Path(result["paths"]["model"]) / "manifest.json").exists()


def cli_args(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "tune", "--trials", "2", "--folds", "2",
            "--epochs", "2", "--runner", "thread", "--workers", "1", "--holdout", "0",
            "--no-prune", "--sampler", "random", "--output-dir", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--retries", "0"]  # fmt: skip


def cli_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**base, "PREFECT_HOME": str(tmp_path / "home")}


@pytest.mark.slow
def test_a_killed_tune_resumes_without_retraining_a_finished_fold(tmp_path):
    from tests.test_signals import Output

    first = subprocess.Popen(cli_args(tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True,
                             env=cli_env(tmp_path))  # fmt: skip
    output = Output(first)
    output.wait_for("'trial-1.fold-1' - Finished in state Completed", timeout=600)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    (tmp_path / "first.log").write_text(output.text)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "folds").iterdir()}

    second = subprocess.run(cli_args(tmp_path), cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=cli_env(tmp_path))  # fmt: skip
    log = second.stdout + second.stderr
    (tmp_path / "second.log").write_text(log)
    assert second.returncode == 0, log[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "folds").iterdir()}
    # No fold result of before the kill was written again; the rerun added the missing one.
    assert {name: after[name] for name in before} == before
    assert len(after) == len(before) + 1
    assert "1 interrupted trial(s) run again" in log
    assert "'trial-2.fold-1' - Finished in state Cached" in log
    table = pd.read_parquet(tmp_path / "out" / "tune" / "trials.parquet")
    assert list(table["state"]) == ["COMPLETE", "INTERRUPTED", "COMPLETE"]
    assert table.loc[1, "params"] == table.loc[2, "params"]
