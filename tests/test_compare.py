"""The regularizer comparison: paired folds, per-config outputs, only new configs trained."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flows.compare_regularizers import compare_regularizers
from tasks.compare import paired_test
from tasks.config import CompareConfig, CVConfig, ExecutionConfig, GridEntry, ModelConfig
from tests.prefect_runs import fold_states, trained

TINY = [
    GridEntry(name="l1", changes={"regularizer": "l1"}),
    GridEntry(name="plain", changes={"regularizer": "none"}),
]


def compare_config(tmp_path, grid, out="out") -> CompareConfig:
    cv = CVConfig(
        model=ModelConfig(epochs=2),
        folds=3,
        output_dir=str(tmp_path / out),
        cache_dir=str(tmp_path / "cache"),
        execution=ExecutionConfig(runner="thread", workers=1),
        fold_retries=0,
    )
    return CompareConfig(cv=cv, grid=grid, baseline="l1")


def test_paired_test_on_hand_made_numbers():
    base = [0.60, 0.62, 0.64, 0.61, 0.63]
    better = [0.65, 0.66, 0.70, 0.64, 0.69]
    result = paired_test(better, base)
    assert result["mean_difference"] == pytest.approx(0.048)
    assert result["t_test_p"] == pytest.approx(stats.ttest_rel(better, base).pvalue)
    assert result["significant"] is True
    assert result["wilcoxon_p"] == pytest.approx(0.0625)  # the floor with 5 folds
    noisy = [0.61, 0.60, 0.66, 0.60, 0.64]
    assert paired_test(noisy, base)["significant"] is False
    assert paired_test(base, base) == {
        "mean_difference": 0.0, "std_difference": 0.0, "t_test_p": 1.0,
        "wilcoxon_p": 1.0, "significant": False,
    }  # fmt: skip
    with pytest.raises(ValueError):
        paired_test([0.5], [0.4])


@pytest.mark.slow  # trains several configs (98 s)
def test_comparison_matches_each_config_and_adding_one_trains_only_it(tmp_path):
    state = compare_regularizers(compare_config(tmp_path, TINY), return_state=True)
    assert state.is_completed()
    table = pd.read_parquet(tmp_path / "out" / "comparison.parquet")
    assert sorted(table["name"]) == ["l1", "plain"]
    folds_by_config = {}
    for _, row in table.iterrows():
        metrics = json.loads((tmp_path / "out" / row["name"] / "metrics.json").read_text())
        assert row["oof_accuracy"] == metrics["final_accuracy"]
        assert list(row["fold_accuracy"]) == metrics["fold_accuracy"]
        assert row["log_loss"] == metrics["log_loss"]
        oof = pd.read_parquet(tmp_path / "out" / row["name"] / "oof_predictions.parquet")
        folds_by_config[row["name"]] = oof["fold"].to_numpy()
    np.testing.assert_array_equal(folds_by_config["l1"], folds_by_config["plain"])
    first = fold_states(state.state_details.flow_run_id)
    assert len(trained(first)) == 6

    grid = [*TINY, GridEntry(name="l2", changes={"regularizer": "l2", "regularizer_on": "kernel"})]
    state = compare_regularizers(compare_config(tmp_path, grid, "out2"), return_state=True)
    assert state.is_completed()
    states = fold_states(state.state_details.flow_run_id)
    assert trained(states) == {"fold-1-l2", "fold-2-l2", "fold-3-l2"}
    assert {states[name] for name in first} == {"Cached"}
    assert len(pd.read_parquet(tmp_path / "out2" / "comparison.parquet")) == 3


def regression_run(truth: np.ndarray, predicted: np.ndarray, folds: np.ndarray):
    """A regression configuration's OOF table and its RunMetrics, as the join writes them."""
    from tasks.metrics import RunMetrics

    table = pd.DataFrame({"row": np.arange(len(truth)), "fold": folds, "y": truth,
                          "predicted": predicted, "residual": truth - predicted})  # fmt: skip
    per_fold = [float(np.sqrt((table[table.fold == k].residual ** 2).mean())) for k in (1, 2, 3)]
    metrics = RunMetrics(
        task="regression", target="y", key="row", n_rows=len(truth), n_scored=len(truth),
        partial=False, folds=[], rmse=float(np.sqrt((table.residual**2).mean())),
        mae=float(table.residual.abs().mean()), r2=0.0, fold_rmse=per_fold,
        mean_rmse=float(np.mean(per_fold)), std_rmse=float(np.std(per_fold)),
    )  # fmt: skip
    return table, metrics


def test_compare_ranks_regressions_by_rmse_with_a_paired_test_on_squared_errors(tmp_path):
    from tasks.compare import compare_configurations

    rng = np.random.default_rng(0)
    truth = rng.normal(100, 20, 300)
    folds = np.tile([1, 2, 3], 100)
    runs = {
        "l1": regression_run(truth, truth + rng.normal(0, 10, 300), folds),
        "plain": regression_run(truth, truth + rng.normal(0, 5, 300), folds),
        "wild": regression_run(truth, truth + rng.normal(0, 30, 300), folds),
    }
    paths = {}
    for name, (table, _) in runs.items():
        paths[name] = str(tmp_path / f"{name}.parquet")
        table.to_parquet(paths[name])
    results = {name: metrics for name, (_, metrics) in runs.items()}
    labels = {name: name for name in runs}
    summary = compare_configurations.fn(results, labels, "l1", str(tmp_path / "out"), paths)

    table = pd.read_parquet(summary["paths"]["parquet"])
    assert table["name"].tolist() == ["plain", "l1", "wild"] and summary["best"] == "plain"
    assert table["oof_rmse"].is_monotonic_increasing
    plain = table.set_index("name").loc["plain"]
    errors = {name: t["residual"].to_numpy() ** 2 for name, (t, _) in runs.items()}
    assert plain["t_test_p"] == pytest.approx(stats.ttest_rel(errors["plain"], errors["l1"]).pvalue)
    assert plain["diff_vs_baseline"] == pytest.approx(results["plain"].rmse - results["l1"].rmse)
    assert plain["t_test_p"] < 0.05 and list(plain["fold_rmse"]) == results["plain"].fold_rmse
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "best is `plain`" in markdown and "OOF RMSE" in markdown and "squared errors" in markdown
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
