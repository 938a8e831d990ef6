"""A run's scores as typed objects: what metrics.json, the UI, the terminal and compare read.

Computed from the out-of-fold table alone (plus each fold's own scores), so anyone can
recompute them from `oof_predictions.parquet`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn import metrics as skm


class FoldRun(BaseModel):
    """How a fold's training went and where it ran: kept with its result, and in metrics.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scores: dict[str, float]  # accuracy + log_loss, or rmse + mae, on the test rows
    final_loss: float
    epochs: int
    train_seconds: float
    started_at: float
    finished_at: float
    worker: str
    device: str
    attempt: int


class FoldMetrics(FoldRun):
    """One trained fold in metrics.json: which fold, how many test rows, and its run."""

    fold: int
    repeat: int = 0
    label: str
    n_test: int


class FailedFold(BaseModel):
    """A fold without a result, and why."""

    model_config = ConfigDict(extra="forbid")

    fold: int
    repeat: int = 0
    label: str
    error: str


class ClassScores(BaseModel):
    """Per-class precision, recall, F1 and support over the out-of-fold predictions."""

    precision: float
    recall: float
    f1: float
    support: int


class RunInfo(BaseModel):
    """What ran: the same shape from every caller (cross-validate, compare)."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    model_label: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""


class RunMetrics(BaseModel):
    """The pooled out-of-fold scores of a run; metrics.json is its JSON form."""

    model_config = ConfigDict(extra="forbid")

    task: str
    task_reason: str = ""
    target: str
    key: str
    n_rows: int
    n_scored: int
    excluded_target_rows: int = 0
    repeats: int = 1
    partial: bool
    failed_folds: list[FailedFold] = Field(default_factory=list)
    folds: list[FoldMetrics]
    # classification
    final_accuracy: float | None = None
    fold_accuracy: list[float | None] = Field(default_factory=list)
    mean_accuracy: float | None = None
    std_accuracy: float | None = None
    log_loss: float | None = None
    majority_accuracy: float | None = None
    classes: list[str] = Field(default_factory=list)
    per_class: dict[str, ClassScores] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] = Field(default_factory=list)
    # regression
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None
    fold_rmse: list[float | None] = Field(default_factory=list)
    mean_rmse: float | None = None
    std_rmse: float | None = None
    baseline_rmse: float | None = None
    # repeated k-fold: the pooled score of each repeat (accuracy or RMSE)
    repeat_scores: list[float] = Field(default_factory=list)
    # provenance
    data: dict[str, Any] = Field(default_factory=dict)
    data_sha256: str = ""
    run: RunInfo = Field(default_factory=RunInfo)

    @property
    def headline(self) -> str:
        """The one score a person looks at first."""
        if self.task == "regression":
            return f"RMSE {self.rmse:.4f} (MAE {self.mae:.4f}, R² {self.r2:.4f})"
        return f"accuracy {self.final_accuracy:.4f}"


def _spread(values: list[float | None]) -> tuple[float | None, float | None]:
    done = np.array([v for v in values if v is not None], dtype=float)
    return (float(done.mean()), float(done.std())) if len(done) else (None, None)


def classification_scores(
    table: pd.DataFrame, target: str, classes: list[str], fold_accuracy: list[float | None]
) -> dict[str, Any]:
    """Accuracy, log-loss, per-class scores and the confusion matrix of the scored rows."""
    scored = table[table["predicted"].notna()]
    # Class positions, not text: for text labels scikit-learn's log-loss takes the probability
    # columns in alphabetical order, which numeric classes ('2', '10') are not in; positions
    # keep `classes`' own order. It is also ~8x faster (1 s less at 200 000 rows).
    labels = list(range(len(classes)))
    truth = pd.Categorical(scored[target], categories=classes).codes.astype(np.int64)
    pred = pd.Categorical(scored["predicted"], categories=classes).codes.astype(np.int64)
    probs = scored[[f"p_{c}" for c in classes]].to_numpy()
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, pred, labels=labels, zero_division=0
    )
    mean, std = _spread(fold_accuracy)
    return {
        "final_accuracy": float(skm.accuracy_score(truth, pred)),
        "fold_accuracy": fold_accuracy,
        "mean_accuracy": mean,
        "std_accuracy": std,
        "log_loss": float(skm.log_loss(truth, probs, labels=labels)),
        "majority_accuracy": float(table[target].value_counts(normalize=True).iloc[0]),
        "classes": list(classes),
        "per_class": {
            c: ClassScores(precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": skm.confusion_matrix(truth, pred, labels=labels).tolist(),
    }


def regression_scores(
    table: pd.DataFrame, target: str, fold_rmse: list[float | None], baseline: np.ndarray
) -> dict[str, Any]:
    """Pooled RMSE, MAE and R², per-fold RMSE spread, and the training-mean baseline's RMSE.

    `baseline` holds, for each row of `table`, the mean target of its fold's training rows:
    what a model that learned nothing would predict.
    """
    scored = table["predicted"].notna().to_numpy()
    truth = table[target].to_numpy(dtype=float)[scored]
    pred = table["predicted"].to_numpy(dtype=float)[scored]
    mean, std = _spread(fold_rmse)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(truth, pred))),
        "mae": float(skm.mean_absolute_error(truth, pred)),
        "r2": float(skm.r2_score(truth, pred)),
        "fold_rmse": fold_rmse,
        "mean_rmse": mean,
        "std_rmse": std,
        "baseline_rmse": float(np.sqrt(skm.mean_squared_error(truth, baseline[scored]))),
    }
