"""Join fold results into the out-of-fold table, every prediction at its own row `id`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn import metrics as skm

from tasks.clean import ID, TARGET, CleanedData
from tasks.errors import FoldFailedError, FoldflowError, describe_failure
from tasks.folds import FoldSpec
from tasks.logs import run_logger
from tasks.outputs import staged_files
from tasks.plots import plot_confusion_matrix, plot_learning_curves
from tasks.report import publish_artifacts, publish_failures
from tasks.train import FoldResult

OOF_PARQUET, OOF_CSV, METRICS_JSON = (
    "oof_predictions.parquet",
    "oof_predictions.csv",
    "metrics.json",
)
CURVES_PNG, CONFUSION_PNG = "learning_curves.png", "confusion_matrix.png"


class PartitionError(FoldflowError):
    """Fold results do not cover each row exactly once."""


@dataclass(frozen=True)
class JoinOutcome:
    """What a run produced: its metrics and the files it wrote."""

    metrics: dict[str, Any]
    paths: dict[str, str]


def split_outcomes(
    folds: list[FoldSpec], outcomes: list[Any]
) -> tuple[list[FoldResult], dict[int, str]]:
    """Separate completed folds from failed ones.

    A failed fold is anything else: a failure record with `describe()` (flows/fanout.py's
    FoldFailure), an exception, or None.
    """
    if len(folds) != len(outcomes):
        raise PartitionError(f"expected {len(folds)} fold results, got {len(outcomes)}")
    done: list[FoldResult] = []
    failed: dict[int, str] = {}
    for spec, outcome in zip(folds, outcomes):
        if isinstance(outcome, FoldResult):
            done.append(outcome)
        elif callable(getattr(outcome, "describe", None)):
            failed[spec.index] = outcome.describe()
        elif isinstance(outcome, BaseException):
            failed[spec.index] = f"failed: {describe_failure(outcome)}"
        else:
            failed[spec.index] = "failed: no result"
    return done, failed


def check_results(results: list[FoldResult], folds: list[FoldSpec], ids: np.ndarray) -> None:
    """Refuse results that overlap, stray outside the table, or disagree with the fold plan."""
    planned = {spec.index: spec for spec in folds}
    owner = np.zeros(len(ids), dtype=np.int64)
    for res in results:
        spec = planned.get(res.fold)
        if spec is None:
            raise PartitionError(f"fold {res.fold} is not in the fold plan {sorted(planned)}")
        pos = np.asarray(res.test_positions)
        if pos.min(initial=0) < 0 or pos.max(initial=0) >= len(ids):
            raise PartitionError(f"fold {res.fold} has test rows outside 0..{len(ids) - 1}")
        if not np.array_equal(np.sort(pos), np.sort(spec.test_positions)):
            raise PartitionError(f"fold {res.fold} tested other rows than the fold plan gave it")
        if not np.array_equal(np.asarray(res.test_ids), ids[pos]):
            raise PartitionError(f"fold {res.fold}: its test ids do not match the data's ids")
        if len(res.probabilities) != len(pos):
            raise PartitionError(
                f"fold {res.fold}: {len(res.probabilities)} predictions for {len(pos)} rows"
            )
        clash = owner[pos] != 0
        if clash.any():
            row = int(pos[np.flatnonzero(clash)[0]])
            raise PartitionError(
                f"id {ids[row]} is in the test rows of folds {owner[row]} and {res.fold}"
            )
        owner[pos] = res.fold


def build_oof_table(
    ids: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    results: list[FoldResult],
    folds: list[FoldSpec],
) -> pd.DataFrame:
    """Scatter each fold's predictions back to its rows (cross_val_predict's rule), by id."""
    n, k = len(ids), len(classes)
    probs = np.full((n, k), np.nan)
    fold_of = np.zeros(n, dtype=np.int64)
    for spec in folds:
        fold_of[spec.test_positions] = spec.index
    done = np.zeros(n, dtype=bool)
    for res in results:
        probs[res.test_positions] = res.probabilities
        done[res.test_positions] = True
    predicted = pd.Series(pd.NA, index=range(n), dtype="string")
    predicted[done] = np.asarray(classes, dtype=object)[probs[done].argmax(axis=1)]
    table = pd.DataFrame(
        {
            ID: ids,
            "fold": fold_of,
            TARGET: pd.Series(labels, dtype="string"),
            "predicted": predicted,
        }
    )
    table["correct"] = (table["predicted"] == table[TARGET]).astype("boolean")
    for j, cls in enumerate(classes):
        table[f"p_{cls}"] = probs[:, j]
    if not done.all():
        table["missing"] = ~done
    return table.sort_values(ID, kind="stable").reset_index(drop=True)


def compute_metrics(
    table: pd.DataFrame,
    classes: list[str],
    results: list[FoldResult],
    failed: dict[int, str],
    n_folds: int,
) -> dict[str, Any]:
    """Pooled and per-fold scores over the rows that have predictions."""
    scored = table[table["predicted"].notna()]
    truth = scored[TARGET].to_numpy(dtype=object)
    pred = scored["predicted"].to_numpy(dtype=object)
    probs = scored[[f"p_{c}" for c in classes]].to_numpy()
    by_fold = {r.fold: r for r in results}
    fold_acc = [by_fold[i].accuracy if i in by_fold else None for i in range(1, n_folds + 1)]
    accs = np.array([a for a in fold_acc if a is not None])
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, pred, labels=classes, zero_division=0
    )
    return {
        "final_accuracy": float(skm.accuracy_score(truth, pred)),
        "fold_accuracy": fold_acc,
        "mean_accuracy": float(accs.mean()),
        "std_accuracy": float(accs.std()),
        "log_loss": float(skm.log_loss(truth, probs, labels=classes)),
        "majority_accuracy": float(table[TARGET].value_counts(normalize=True).iloc[0]),
        "n_rows": int(len(table)),
        "n_scored": int(len(scored)),
        "classes": list(classes),
        "partial": bool(failed),
        "missing_folds": sorted(failed),
        "fold_errors": {str(k): v for k, v in sorted(failed.items())},
        "folds": [
            {
                "fold": r.fold,
                "accuracy": r.accuracy,
                "log_loss": r.log_loss,
                "final_loss": r.final_loss,
                "epochs": r.epochs,
                "train_seconds": round(r.train_seconds, 3),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "worker": r.worker,
                "device": r.device,
                "attempt": r.attempt,
                "n_test": int(len(r.test_positions)),
            }
            for r in sorted(results, key=lambda r: r.fold)
        ],
        "per_class": {
            c: {
                "precision": float(p),
                "recall": float(rc),
                "f1": float(f),
                "support": int(s),
            }
            for c, p, rc, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": skm.confusion_matrix(truth, pred, labels=classes).tolist(),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


@task(name="join", task_run_name="join", cache_policy=NO_CACHE)
def join_out_of_fold(
    data: CleanedData,
    folds: list[FoldSpec],
    outcomes: list[Any],
    output_dir: str,
    run_info: dict[str, Any],
    min_folds: int | None = None,
) -> JoinOutcome:
    """Write the OOF table and metrics; fail naming the folds that did not finish."""
    logger = run_logger()
    results, failed = split_outcomes(folds, outcomes)
    for index, reason in sorted(failed.items()):
        logger.error("fold %d %s", index, reason)
    if failed:
        publish_failures(failed)
    needed = len(folds) if min_folds is None else min_folds
    if len(results) < needed:
        names = "; ".join(f"fold {i} {why}" for i, why in sorted(failed.items()))
        hint = (
            ""
            if min_folds
            else "; to accept partial results set min_folds (UI form) or --min-folds (CLI)"
        )
        raise FoldFailedError(
            f"{names} — {len(failed)} of {len(folds)} folds failed, {len(results)} done, "
            f"{needed} needed{hint}"
        )

    frame = pd.read_parquet(data.path, columns=[ID, TARGET])
    ids = frame[ID].to_numpy(dtype=np.int64)
    check_results(results, folds, ids)
    classes = list(data.classes)
    table = build_oof_table(ids, frame[TARGET].to_numpy(dtype=object), classes, results, folds)
    metrics = compute_metrics(table, classes, results, failed, len(folds))
    metrics.update(run_info)
    metrics["data_sha256"] = data.raw_sha256

    out = Path(output_dir)
    names = (OOF_PARQUET, OOF_CSV, METRICS_JSON, CURVES_PNG, CONFUSION_PNG)
    paths = {name: out / name for name in names}
    text = json.dumps(metrics, indent=2, default=_json_default, allow_nan=False)
    with staged_files(*paths.values()) as (parquet, csv, json_file, curves, confusion):
        table.to_parquet(parquet, index=False)
        table.to_csv(csv, index=False)
        plot_learning_curves(results, curves)
        plot_confusion_matrix(metrics["confusion_matrix"], classes, confusion)
        json_file.write_text(text + "\n")
    logger.info(
        "OOF accuracy %.4f (folds %.4f ± %.4f) over %d rows%s -> %s",
        metrics["final_accuracy"], metrics["mean_accuracy"], metrics["std_accuracy"],
        metrics["n_scored"], " (PARTIAL)" if failed else "", out,
    )  # fmt: skip
    outcome = JoinOutcome(metrics=metrics, paths={k: str(v) for k, v in paths.items()})
    publish_artifacts(outcome)
    return outcome
