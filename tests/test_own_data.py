"""Your own data, end to end through the real flow: scikit-learn's bundled tables, regression,
splitters, the pinned jh-simple preset, and `foldflow inspect` feeding `foldflow run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import datasets
from sklearn import metrics as skm

from flows.cross_validate import cross_validate
from flows.summary import print_summary
from tasks.config import BUNDLED_DATA, CVConfig, ExecutionConfig, ModelConfig
from tasks.data.spec import DataSpec
from tests.prefect_runs import fold_states, trained

pytestmark = pytest.mark.slow  # every test runs the whole flow or the CLI (9-20 s each)

ROOT = Path(__file__).resolve().parents[1]
PINNED_OOF = Path(__file__).parent / "data" / "jh_simple_oof_40_epochs.parquet"


def sklearn_csv(tmp_path: Path, name: str) -> tuple[Path, pd.DataFrame]:
    """A scikit-learn bundled table written as a user's CSV (no network needed)."""
    if name == "iris":
        frame = datasets.load_iris(as_frame=True).frame
        frame["species"] = frame.pop("target").map({0: "setosa", 1: "versicolor", 2: "virginica"})
    elif name == "wine":
        frame = datasets.load_wine(as_frame=True).frame  # integer classes 0..2: inferred
    elif name == "breast_cancer":
        frame = datasets.load_breast_cancer(as_frame=True).frame
        rng = np.random.default_rng(0)  # a text column, to take the one-hot path too
        frame["clinic"] = rng.choice(["north", "south", "east"], size=len(frame))
    else:
        frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path, frame


def config(tmp_path: Path, source: Path, data: DataSpec, **changes) -> CVConfig:
    return CVConfig(
        source=str(source),
        data=data,
        folds=changes.pop("folds", 3),
        model=ModelConfig(epochs=changes.pop("epochs", 5)),
        execution=ExecutionConfig(runner="thread", workers=1),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        fold_retries=0,
        **changes,
    )


@pytest.mark.parametrize(
    ("name", "target", "task", "classes"),
    [
        ("iris", "species", "classification", ["setosa", "versicolor", "virginica"]),
        ("wine", "target", "classification", ["0", "1", "2"]),
        ("breast_cancer", "target", "classification", ["0", "1"]),
        ("diabetes", "target", "regression", []),
    ],
)
def test_sklearn_tables_through_the_whole_flow(tmp_path, capsys, name, target, task, classes):
    source, frame = sklearn_csv(tmp_path, name)
    result = cross_validate(config(tmp_path, source, DataSpec(target=target)))
    metrics = result["metrics"]
    table = pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet")

    assert metrics["task"] == task and metrics["task_reason"].startswith("inferred")
    assert metrics["classes"] == classes
    # keyed by file row (no id column), every row once, the truth next to its own row
    assert table["row"].tolist() == list(range(len(frame)))
    assert sorted(table["fold"].unique()) == [1, 2, 3]
    if task == "regression":
        np.testing.assert_array_equal(table[target].to_numpy(), frame[target].to_numpy())
        np.testing.assert_allclose(table["residual"], table[target] - table["predicted"])
        rmse = np.sqrt(skm.mean_squared_error(table[target], table["predicted"]))
        assert metrics["rmse"] == pytest.approx(rmse)
        assert metrics["r2"] == pytest.approx(skm.r2_score(table[target], table["predicted"]))
        assert metrics["mae"] == pytest.approx(np.abs(table["residual"]).mean())
        assert metrics["baseline_rmse"] > 0 and len(metrics["fold_rmse"]) == 3
        mape = skm.mean_absolute_percentage_error(table[target], table["predicted"])
        assert metrics["mape"] == pytest.approx(mape)
        assert metrics["linear_baseline"]["model"] == "Ridge"
        assert 0 < metrics["linear_baseline"]["scores"]["rmse"] < metrics["baseline_rmse"]
        assert (tmp_path / "out" / "predicted_vs_true.png").read_bytes()[:4] == b"\x89PNG"
    else:
        truth = frame[target].astype(str).to_numpy()
        assert (table[target].to_numpy() == truth).all()
        probs = table[[f"p_{c}" for c in classes]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        predicted = np.array(classes)[probs.argmax(axis=1)]
        assert (table["predicted"].to_numpy() == predicted).all()
        assert metrics["final_accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
        assert metrics["log_loss"] == pytest.approx(skm.log_loss(truth, probs, labels=classes))
        assert (tmp_path / "out" / "confusion_matrix.png").exists()
        labels = pd.Categorical(truth, categories=classes).codes
        auc = (skm.roc_auc_score(labels, probs[:, 1]) if len(classes) == 2 else
               skm.roc_auc_score(labels, probs, multi_class="ovr"))  # fmt: skip
        assert metrics["roc_auc"] == pytest.approx(auc)
        assert metrics["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(truth, predicted)
        )
        assert metrics["linear_baseline"]["model"] == "LogisticRegression"
        assert metrics["linear_baseline"]["scores"]["accuracy"] > metrics["majority_accuracy"]
    print_summary(result, 1.0)
    shown = capsys.readouterr().out
    assert f"linear baseline ({metrics['linear_baseline']['model']}, same folds)" in shown
    assert ("MAPE" if task == "regression" else "ROC-AUC") in shown
    if name == "breast_cancer":
        assert metrics["data"]["categorical"] == ["clinic"]
        assert metrics["data"]["vocabularies"]["clinic"] == ["east", "north", "south"]


def test_regression_with_declared_schema_group_folds_and_resume(tmp_path):
    """Declared columns, an id, group k-fold (no group in two folds), then a cached rerun."""
    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    frame.insert(0, "customer_id", np.arange(10_000, 10_000 + len(frame)))
    frame["household"] = (np.arange(len(frame)) // 4).astype(str)  # 4 rows per household
    frame["notes"] = [f"free text {i}" for i in range(len(frame))]
    source = tmp_path / "houses.csv"
    frame.to_csv(source, index=False)
    spec = DataSpec(
        target="target",
        task="regression",
        id_column="customer_id",
        categorical=["sex"],
        drop=["notes"],
        group_column="household",
        loss="huber",
    )
    cfg = config(tmp_path, source, spec, splitter="group")
    state = cross_validate(cfg, return_state=True)
    metrics = state.result()["metrics"]
    table = pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet")
    assert table["customer_id"].tolist() == frame["customer_id"].tolist()
    households = frame.set_index("customer_id").loc[table["customer_id"], "household"]
    assert (pd.Series(table["fold"].to_numpy()).groupby(households.to_numpy()).nunique() == 1).all()
    assert metrics["data"]["categorical"] == ["sex"] and "notes" not in metrics["data"]["numeric"]
    assert len(trained(fold_states(state.state_details.flow_run_id))) == 3

    again = cross_validate(cfg, return_state=True)
    assert set(fold_states(again.state_details.flow_run_id).values()) == {"Cached"}
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet"), table
    )


def test_repeated_kfold_predicts_every_row_once_per_repeat(tmp_path):
    source, frame = sklearn_csv(tmp_path, "iris")
    cfg = config(tmp_path, source, DataSpec(target="species"), splitter="repeated", repeats=2)
    state = cross_validate(cfg, return_state=True)
    metrics = state.result()["metrics"]
    states = fold_states(state.state_details.flow_run_id)
    assert sorted(states) == [f"fold-{r}.{k}" for r in (1, 2) for k in (1, 2, 3)]
    by_repeat = pd.read_parquet(tmp_path / "out" / "oof_predictions_by_repeat.parquet")
    assert len(by_repeat) == 2 * len(frame)
    assert (by_repeat.groupby("repeat")["row"].nunique() == len(frame)).all()
    pooled = pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet")
    assert pooled["row"].tolist() == list(range(len(frame)))
    probs = [f"p_{c}" for c in metrics["classes"]]
    mean = by_repeat.groupby("row")[probs].mean()
    np.testing.assert_allclose(pooled[probs].to_numpy(), mean.to_numpy())
    assert len(metrics["repeat_scores"]) == 2 and metrics["repeats"] == 2
    for r, score in zip((1, 2), metrics["repeat_scores"]):
        one = by_repeat[by_repeat["repeat"] == r]
        assert score == pytest.approx((one["predicted"] == one["species"]).mean())


def test_default_run_is_pinned_to_todays_oof_table(tmp_path):
    """The notebook preset on the bundled data: the OOF table foldflow wrote before DataSpec."""
    cfg = CVConfig(
        model=ModelConfig(epochs=40),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert cfg.source == str(BUNDLED_DATA) and cfg.data == DataSpec()
    cross_validate(cfg)
    got = pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet")
    pinned = pd.read_parquet(PINNED_OOF)
    assert list(got.columns) == list(pinned.columns)
    exact = [c for c in pinned.columns if not c.startswith("p_")]
    pd.testing.assert_frame_equal(got[exact], pinned[exact], check_exact=True)
    probs = [c for c in pinned.columns if c.startswith("p_")]
    # Training runs in float32, and CPUs round its products differently (AVX2 vs AVX-512
    # kernels): an AMD EPYC (AVX2) moves one of the 14000 probabilities by 1.3e-6. A change to
    # the training moves them by 1e-3 or more.
    np.testing.assert_allclose(got[probs].to_numpy(), pinned[probs].to_numpy(), rtol=0, atol=1e-5)


def test_inspect_prints_a_spec_that_run_accepts(tmp_path):
    """`foldflow inspect` → YAML → `foldflow run --config`: the inferred spec round-trips."""
    source, _ = sklearn_csv(tmp_path, "iris")
    cli = [sys.executable, "-m", "flows.cli"]
    shown = subprocess.run(
        [*cli, "inspect", "--source", str(source), "--target", "species",
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "# task: classification (inferred: target 'species' is text)" in shown.stdout
    spec = yaml.safe_load(shown.stdout)
    assert spec["data"]["target"] == "species" and spec["data"]["preprocess_scope"] == "fold"
    assert len(spec["data"]["numeric"]) == 4
    spec_file = tmp_path / "my-data.yaml"
    spec_file.write_text(shown.stdout)
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    ran = subprocess.run(
        [*cli, "run", "--config", str(spec_file), "--no-progress", "--epochs", "2",
         "--folds", "2", "--runner", "thread", "--output-dir", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, **env},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["task_reason"] == "declared"
    assert "final accuracy (out-of-fold)" in ran.stdout
