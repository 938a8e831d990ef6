"""A trial's objective: the pooled out-of-fold score of its folds, as `run` computes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.data.spec import ResolvedSpec
from tasks.train import FoldResult
from tasks.tune_config import MAXIMISED

CLASSIFICATION_METRICS = ("accuracy", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def resolve_metric(metric: str, task: str) -> str:
    """`auto` as `run` reports it (accuracy or RMSE); a metric that fits the task, or an error."""
    from tasks.errors import PermanentError

    if metric == "auto":
        return "rmse" if task == "regression" else "accuracy"
    fits = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    if metric not in fits:
        raise PermanentError(
            f"metric {metric!r} does not fit a {task} target; use one of {', '.join(fits)}"
        )
    return metric


def direction(metric: str) -> str:
    """Optuna's study direction for a metric."""
    return "maximize" if metric in MAXIMISED else "minimize"


@dataclass(frozen=True)
class Truth:
    """Every row's target in the cleaned table: class positions, or values in target units."""

    task: str
    values: np.ndarray
    n_classes: int = 0

    @classmethod
    def of(cls, spec: ResolvedSpec, target: np.ndarray) -> Truth:
        """From the target column as the cleaned table holds it."""
        if spec.task == "regression":
            return cls("regression", np.asarray(target, dtype=float))
        codes = {label: i for i, label in enumerate(spec.classes)}
        return cls("classification", np.array([codes[str(v)] for v in target]), len(codes))


def pooled_score(metric: str, truth: Truth, results: Sequence[FoldResult]) -> float:
    """The metric over the test rows of these folds, pooled (as run's out-of-fold scores)."""
    from sklearn import metrics as skm

    if not results:
        raise ValueError("a pooled score needs at least one fold result")
    positions = np.concatenate([np.asarray(r.test_positions) for r in results])
    predicted = np.concatenate([np.asarray(r.predictions) for r in results])
    actual = truth.values[positions]
    if metric == "accuracy":
        return float(skm.accuracy_score(actual, predicted.argmax(axis=1)))
    if metric == "log_loss":
        return float(skm.log_loss(actual, predicted, labels=list(range(truth.n_classes))))
    if metric == "rmse":
        return float(np.sqrt(skm.mean_squared_error(actual, predicted)))
    if metric == "mae":
        return float(skm.mean_absolute_error(actual, predicted))
    if metric == "r2":
        return float(skm.r2_score(actual, predicted))
    raise ValueError(f"unknown metric {metric!r}")
