"""A run's scores as typed objects: what metrics.json, the UI, the terminal and compare read.

The pooled scores are computed in `tasks.scores` from the out-of-fold table alone (plus each
fold's own scores), so anyone can recompute them from `oof_predictions.parquet`. This module
imports no scikit-learn: fold workers import it for `FoldRun`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
    # early stopping: the epoch whose weights the fold kept (`epochs` is how many it trained)
    best_epoch: int | None = None


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


class LinearBaseline(BaseModel):
    """A scikit-learn linear model's OOF scores on the run's own folds: is the network worth it?"""

    model_config = ConfigDict(extra="forbid")

    model: str  # e.g. "LogisticRegression" or "Ridge", after the same per-fold preprocessing
    scores: dict[str, float | None]  # accuracy, balanced_accuracy, log_loss, roc_auc | rmse, ...
    seconds: float

    @property
    def headline(self) -> str:
        """Its score in the run's headline terms."""
        if "rmse" in self.scores:
            return f"RMSE {self.scores['rmse']:.4f} (R² {self.scores['r2']:.4f})"
        auc = self.scores.get("roc_auc")
        return f"accuracy {self.scores['accuracy']:.4f}" + (
            f" (ROC-AUC {auc:.4f})" if auc is not None else ""
        )


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
    balanced_accuracy: float | None = None
    roc_auc: float | None = None  # binary; one-vs-rest macro for more classes
    majority_accuracy: float | None = None
    classes: list[str] = Field(default_factory=list)
    per_class: dict[str, ClassScores] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] = Field(default_factory=list)
    # regression
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None
    mape: float | None = None
    fold_rmse: list[float | None] = Field(default_factory=list)
    mean_rmse: float | None = None
    std_rmse: float | None = None
    baseline_rmse: float | None = None
    # repeated k-fold: the pooled score of each repeat (accuracy or RMSE)
    repeat_scores: list[float] = Field(default_factory=list)
    # a scikit-learn linear model on the same folds (None: --no-linear-baseline)
    linear_baseline: LinearBaseline | None = None
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
