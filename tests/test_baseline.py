"""The linear baseline on the run's own folds, and the usual scores (ROC-AUC, balanced, MAPE)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flows.cli_options import add_config_options, config_from_args
from tasks.baseline import linear_baseline_scores
from tasks.clean import clean_to_parquet, load_table
from tasks.data.spec import DataSpec
from tasks.folds import split_folds
from tasks.scores import probability_scores, value_scores


def cleaned(tmp_path: Path, frame: pd.DataFrame, target: str):
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return clean_to_parquet.fn(str(path), sha, str(tmp_path / "cache"), DataSpec(target=target))


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "diabetes"])
def test_the_baseline_is_a_scaled_linear_model_on_the_same_folds(tmp_path, name):
    loader = getattr(datasets, f"load_{name}")
    frame = (loader(as_frame=True, scaled=False) if name == "diabetes" else
             loader(as_frame=True)).frame  # fmt: skip
    data = cleaned(tmp_path, frame, "target")
    folds = split_folds(data.n_rows, 4, True, 42)
    got = linear_baseline_scores(load_table(data), data.spec, folds)
    # scikit-learn alone: StandardScaler (the same population z-score) and the same folds
    x, y = frame.drop(columns="target"), frame["target"]
    splits = [(f.train_positions(), f.test_positions) for f in folds]
    if name == "diabetes":
        pred = cross_val_predict(make_pipeline(StandardScaler(), Ridge()), x, y, cv=splits)
        assert got.model == "Ridge" and set(got.scores) == {"rmse", "mae", "r2", "mape"}
        assert got.scores["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), 1e-4)
        assert got.scores["mape"] == pytest.approx(
            skm.mean_absolute_percentage_error(y, pred), 1e-4
        )
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        probs = cross_val_predict(model, x, y, cv=splits, method="predict_proba")
        assert got.model == "LogisticRegression"
        assert got.scores["accuracy"] == pytest.approx(
            skm.accuracy_score(y, probs.argmax(1)), abs=0.006
        )
        auc = skm.roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else skm.roc_auc_score(
            y, probs, multi_class="ovr")  # fmt: skip
        assert got.scores["roc_auc"] == pytest.approx(auc, abs=0.002)
    assert got.seconds < 60  # seconds, not minutes (generous: the machine is shared)


def test_probability_and_value_scores_are_scikit_learns():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200)
    probs[np.arange(200), truth] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    got = probability_scores(truth, probs, 3)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, probs, multi_class="ovr"))
    assert got["balanced_accuracy"] == skm.balanced_accuracy_score(truth, probs.argmax(1))
    binary = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    two = (truth == 1).astype(int)
    assert probability_scores(two, binary, 2)["roc_auc"] == skm.roc_auc_score(two, binary[:, 1])
    assert probability_scores(np.zeros(200, int), probs, 3)["roc_auc"] is None  # undefined
    y, p = rng.uniform(10, 20, 50), rng.uniform(10, 20, 50)
    assert value_scores(y, p)["mape"] == pytest.approx(np.mean(np.abs(y - p) / np.abs(y)))


def test_no_linear_baseline_is_a_cli_option_from_the_config():
    parser = argparse.ArgumentParser()
    add_config_options(parser)
    assert config_from_args(parser.parse_args([])).linear_baseline is True
    assert config_from_args(parser.parse_args(["--no-linear-baseline"])).linear_baseline is False
    parsed = config_from_args(parser.parse_args(["--early-stopping", "20"]))
    assert parsed.model.early_stopping == 20
