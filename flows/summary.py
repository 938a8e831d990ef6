"""What `foldflow run` prints when it ends: a table of the folds and the run's scores."""

from __future__ import annotations

import time
from typing import Any


def print_summary(result: dict[str, Any], seconds: float) -> None:
    """The short table `foldflow run` ends with."""
    from tasks.metrics import RunMetrics

    metrics, paths = RunMetrics.model_validate(result["metrics"]), result["paths"]
    started = time.time() - seconds  # a fold finished before this command came from the cache
    score_names = list(metrics.folds[0].scores) if metrics.folds else []
    stopped = any(row.best_epoch is not None for row in metrics.folds)  # early stopping
    epochs = "  epochs (best)" if stopped else ""
    print("\n" + f"{'fold':>8}  " + "  ".join(f"{n:>9}" for n in score_names)
          + f"{epochs}  train-s  worker")  # fmt: skip
    for row in metrics.folds:
        scores = "  ".join(f"{row.scores[n]:>9.4f}" for n in score_names)
        used = f"  {f'{row.epochs} ({row.best_epoch})':>13}" if stopped else ""
        took = f"{row.train_seconds:>7.1f}" if row.finished_at >= started else f"{'cached':>7}"
        print(f"{row.label:>8}  {scores}{used}  {took}  {row.worker} ({row.device})")
    cached = sum(row.finished_at < started for row in metrics.folds)
    if cached:
        print(f"{cached} of {len(metrics.folds)} folds came from the cache, trained by an "
              "earlier run (--refresh retrains them)")  # fmt: skip
    for failure in metrics.failed_folds:
        print(f"{failure.label:>8}  FAILED  {failure.error}")
    partial = "  (PARTIAL)" if metrics.partial else ""
    if metrics.task == "regression":
        print(f"\nout-of-fold RMSE: {metrics.rmse:.4f}{partial}")
        print(
            f"fold RMSE: {metrics.mean_rmse:.4f} ± {metrics.std_rmse:.4f}; MAE {metrics.mae:.4f}; "
            f"R² {metrics.r2:.4f}; baseline RMSE (training-fold mean) {metrics.baseline_rmse:.4f}"
        )
        if metrics.mape is not None:
            print(f"MAPE {100 * metrics.mape:.2f} %")
    else:
        print(f"\nfinal accuracy (out-of-fold): {metrics.final_accuracy:.4f}{partial}")
        print(
            f"fold accuracy: {metrics.mean_accuracy:.4f} ± {metrics.std_accuracy:.4f}; "
            f"log-loss {metrics.log_loss:.4f}; majority class {metrics.majority_accuracy:.4f}"
        )
        if metrics.roc_auc is not None or metrics.balanced_accuracy is not None:
            auc = "n/a" if metrics.roc_auc is None else f"{metrics.roc_auc:.4f}"
            print(f"balanced accuracy {metrics.balanced_accuracy:.4f}; ROC-AUC {auc}")
    if metrics.linear_baseline:
        linear = metrics.linear_baseline
        print(f"linear baseline ({linear.model}, same folds): {linear.headline}")
    if metrics.repeat_scores:
        print("per repeat: " + ", ".join(f"{v:.4f}" for v in metrics.repeat_scores))
    for path in paths.values():
        print(f"wrote {path}")
    print(f"wall time: {seconds:.1f} s")


