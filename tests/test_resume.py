"""Persisted fold results: new runs reuse them, changes retrain, resumed runs equal clean ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.cross_validate import cross_validate
from tasks.config import CVConfig, ExecutionConfig, ModelConfig
from tests.prefect_runs import SETTLE_S, fold_states, trained

pytestmark = pytest.mark.slow  # whole-flow runs and a killed worker (11-39 s each)

ALL = {f"fold-{i}" for i in range(1, 6)}


def config(tmp_path, cache="cache", out="out", epochs=3, **overrides) -> CVConfig:
    base = dict(
        model=ModelConfig(epochs=epochs),
        output_dir=str(tmp_path / out),
        cache_dir=str(tmp_path / cache),
        execution=ExecutionConfig(runner="thread", workers=1),
        fold_retries=0,
    )
    return CVConfig(**{**base, **overrides})


def run(cfg: CVConfig, settle_s: float = SETTLE_S):
    state = cross_validate(cfg, return_state=True)
    return state, fold_states(state.state_details.flow_run_id, settle_s)


def oof(tmp_path, out="out") -> pd.DataFrame:
    return pd.read_parquet(tmp_path / out / "oof_predictions.parquet")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A clean 5-fold run to compare resumed runs with."""
    tmp = tmp_path_factory.mktemp("clean")
    state, states = run(config(tmp))
    assert state.is_completed() and trained(states) == ALL
    return tmp, oof(tmp)


def test_new_run_reuses_folds_and_changes_retrain(uninterrupted):
    tmp, first = uninterrupted
    state, states = run(config(tmp, out="again"))
    assert state.is_completed()
    assert set(states.values()) == {"Cached"}, states
    pd.testing.assert_frame_equal(oof(tmp, "again"), first)
    _, states = run(config(tmp, out="more-epochs", epochs=4))
    assert trained(states) == ALL
    _, states = run(config(tmp, out="refreshed", refresh=True))
    assert trained(states) == ALL
    pd.testing.assert_frame_equal(oof(tmp, "refreshed"), first)  # deterministic training
    _, states = run(config(tmp, out="other-seed", seed=7))
    assert trained(states) == ALL


def test_resume_after_a_failed_fold_retrains_only_it(tmp_path, monkeypatch, uninterrupted):
    _, clean = uninterrupted
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "3")
    state, states = run(config(tmp_path))
    assert state.is_failed() and states["fold-3"] == "Failed"
    assert trained(states) == ALL - {"fold-3"}
    monkeypatch.delenv("FOLDFLOW_FAIL_FOLDS")
    state, states = run(config(tmp_path))
    assert state.is_completed()
    assert trained(states) == {"fold-3"}
    assert {states[f] for f in ALL - {"fold-3"}} == {"Cached"}
    pd.testing.assert_frame_equal(oof(tmp_path), clean)  # exactly equal, not approximately


def test_transient_failure_is_retried_and_the_attempt_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "2:1")
    cfg = config(tmp_path, fold_retries=1)
    state, states = run(cfg)
    assert state.is_completed(), state.message
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {f["fold"]: f["attempt"] for f in metrics["folds"]} == {1: 1, 2: 2, 3: 1, 4: 1, 5: 1}


def test_partial_results_are_opt_in(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "4")
    state, _ = run(config(tmp_path, min_folds=4))
    assert state.is_completed()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["partial"] is True and [f["fold"] for f in metrics["failed_folds"]] == [4]
    assert "failed after 1 attempt:" in metrics["failed_folds"][0]["error"]
    table = oof(tmp_path)
    assert table.loc[table["fold"] == 4, "missing"].all()
    assert not table.loc[table["fold"] != 4, "missing"].any()


def test_killed_worker_is_recovered_by_a_rerun(tmp_path, monkeypatch, uninterrupted):
    _, clean = uninterrupted
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "3:kill")
    cfg = config(tmp_path, execution=ExecutionConfig(runner="process", workers=2))
    state, states = run(cfg, settle_s=5)  # the killed fold stays Running in the API
    assert state.is_failed()
    survived = trained(states)
    assert "fold-3" not in survived
    monkeypatch.delenv("FOLDFLOW_FAIL_FOLDS")
    state, states = run(cfg)
    assert state.is_completed()
    assert {f for f, s in states.items() if s == "Cached"} == survived
    assert "fold-3" in trained(states)
    pd.testing.assert_frame_equal(oof(tmp_path), clean)
