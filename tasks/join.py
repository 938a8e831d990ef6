"""Join fold results into the out-of-fold table, every prediction at its own row's key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clean import CleanedData
from tasks.data.features import add_fold_fills
from tasks.data.spec import ResolvedSpec
from tasks.errors import FoldFailedError, FoldflowError
from tasks.folds import FoldSpec
from tasks.logs import run_logger
from tasks.metrics import FailedFold, FoldMetrics, LinearBaseline, RunInfo, RunMetrics
from tasks.outputs import staged_files
from tasks.plots import plot_confusion_matrix, plot_learning_curves, plot_predicted_vs_true
from tasks.report import publish_artifacts, publish_failures
from tasks.scores import classification_scores, regression_scores
from tasks.train import FoldResult

OOF_PARQUET, OOF_CSV, METRICS_JSON = (
    "oof_predictions.parquet",
    "oof_predictions.csv",
    "metrics.json",
)
OOF_BY_REPEAT = "oof_predictions_by_repeat.parquet"  # repeated k-fold: one row per (row, repeat)
CURVES_PNG, CONFUSION_PNG = "learning_curves.png", "confusion_matrix.png"
SCATTER_PNG = "predicted_vs_true.png"  # regression's picture in place of the confusion matrix


class PartitionError(FoldflowError):
    """Fold results do not cover each row exactly once."""


@dataclass(frozen=True)
class JoinOutcome:
    """What a run produced: its metrics and the files it wrote."""

    metrics: RunMetrics
    paths: dict[str, str]


def split_outcomes(
    folds: list[FoldSpec], outcomes: list[FoldResult | FailedFold]
) -> tuple[list[FoldResult], list[FailedFold]]:
    """Separate completed folds from failed ones, refusing outcomes that do not match the plan."""
    if len(folds) != len(outcomes):
        raise PartitionError(f"expected {len(folds)} fold results, got {len(outcomes)}")
    strays = [o for o in outcomes if not isinstance(o, (FoldResult, FailedFold))]
    if strays:
        raise TypeError(f"a fold outcome is a FoldResult or a FailedFold, not {strays[0]!r}")
    done = [o for o in outcomes if isinstance(o, FoldResult)]
    return done, [o for o in outcomes if isinstance(o, FailedFold)]


def check_results(results: list[FoldResult], folds: list[FoldSpec], keys: np.ndarray) -> None:
    """Refuse results that overlap, stray outside the table, or disagree with the fold plan."""
    planned = {(spec.repeat, spec.index): spec for spec in folds}
    owners: dict[int, np.ndarray] = {}
    for res in results:
        spec = planned.get((res.repeat, res.fold))
        name = f"fold {res.fold}" + (f" of repeat {res.repeat}" if res.repeat else "")
        if spec is None:
            raise PartitionError(f"{name} is not in the fold plan")
        pos = np.asarray(res.test_positions)
        if pos.min(initial=0) < 0 or pos.max(initial=0) >= len(keys):
            raise PartitionError(f"{name} has test rows outside 0..{len(keys) - 1}")
        if not np.array_equal(np.sort(pos), np.sort(spec.test_positions)):
            raise PartitionError(f"{name} tested other rows than the fold plan gave it")
        if not np.array_equal(np.asarray(res.test_ids), keys[pos]):
            raise PartitionError(f"{name}: its test keys do not match the data's keys")
        if len(res.predictions) != len(pos):
            raise PartitionError(f"{name}: {len(res.predictions)} predictions for {len(pos)} rows")
        owner = owners.setdefault(res.repeat, np.zeros(len(keys), dtype=np.int64))
        clash = owner[pos] != 0
        if clash.any():
            row = int(pos[np.flatnonzero(clash)[0]])
            raise PartitionError(
                f"key {keys[row]} is in the test rows of folds {owner[row]} and {res.fold}"
            )
        owner[pos] = res.fold


def build_oof_table(
    keys: np.ndarray,
    truth: np.ndarray,
    spec: ResolvedSpec,
    results: list[FoldResult],
    folds: list[FoldSpec],
) -> pd.DataFrame:
    """Scatter each fold's predictions back to its rows (cross_val_predict's rule), by key.

    One repeat's folds (or a plain k-fold's): every row appears once.
    """
    n = len(keys)
    fold_of = np.zeros(n, dtype=np.int64)
    for fold in folds:
        fold_of[fold.test_positions] = fold.index
    done = np.zeros(n, dtype=bool)
    for res in results:
        done[res.test_positions] = True
    table = pd.DataFrame({spec.key: keys, "fold": fold_of})
    if spec.task == "regression":
        values = np.full(n, np.nan)
        for res in results:
            values[res.test_positions] = res.predictions
        table[spec.target] = truth.astype(float)
        table["predicted"] = values
        table["residual"] = table[spec.target] - table["predicted"]
    else:
        classes = list(spec.classes)
        probs = np.full((n, len(classes)), np.nan)
        for res in results:
            probs[res.test_positions] = res.predictions
        predicted = pd.Series(pd.NA, index=range(n), dtype="string")
        predicted[done] = np.asarray(classes, dtype=object)[probs[done].argmax(axis=1)]
        table[spec.target] = pd.Series(truth, dtype="string")
        table["predicted"] = predicted
        table["correct"] = (table["predicted"] == table[spec.target]).astype("boolean")
        for j, cls in enumerate(classes):
            table[f"p_{cls}"] = probs[:, j]
    if not done.all():
        table["missing"] = ~done
    return table.sort_values(spec.key, kind="stable", key=exact_integers).reset_index(drop=True)


def exact_integers(keys: pd.Series) -> pd.Series:
    """Sort integer ids stored as text (beyond int64) by their value, not as 10 < 100 < 9."""
    if keys.dtype == "int64" or not bool(keys.str.fullmatch(r"[+-]?\d+").all()):
        return keys
    return pd.Series([int(v) for v in keys], index=keys.index, dtype=object)


def pool_repeats(tables: list[pd.DataFrame], spec: ResolvedSpec) -> pd.DataFrame:
    """One row per key: probabilities (or predictions) averaged over the repeats."""
    stacked = pd.concat(tables, ignore_index=True)
    value_columns = (
        ["predicted"] if spec.task == "regression" else [f"p_{c}" for c in spec.classes]
    )
    pooled = stacked.groupby(spec.key, sort=True)[value_columns].mean().reset_index()
    truth = tables[0][[spec.key, spec.target]]
    pooled = truth.merge(pooled, on=spec.key, how="left", validate="one_to_one")
    if spec.task == "regression":
        pooled["residual"] = pooled[spec.target] - pooled["predicted"]
        return pooled
    probs = pooled[value_columns].to_numpy()
    scored = ~np.isnan(probs).any(axis=1)
    predicted = pd.Series(pd.NA, index=pooled.index, dtype="string")
    predicted[scored] = np.asarray(spec.classes, dtype=object)[probs[scored].argmax(axis=1)]
    pooled.insert(2, "predicted", predicted)
    pooled.insert(3, "correct", (predicted == pooled[spec.target]).astype("boolean"))
    return pooled


def fold_metrics(res: FoldResult, label: str) -> FoldMetrics:
    """A fold's row in metrics.json."""
    return FoldMetrics(
        fold=res.fold,
        repeat=res.repeat,
        label=label,
        n_test=int(len(res.test_positions)),
        best_epoch=int(res.history["best_epoch"][0]) if res.history.get("best_epoch") else None,
        **res.run.model_dump(),
    )


def training_mean_baseline(truth: np.ndarray, folds: list[FoldSpec]) -> np.ndarray:
    """Each row's prediction by a model that learned nothing: its fold's training-row mean."""
    baseline = np.full(len(truth), np.nan)
    for fold in folds:
        baseline[fold.test_positions] = truth[fold.train_positions()].mean()
    return baseline


def compute_metrics(
    table: pd.DataFrame,
    truth: np.ndarray,
    spec: ResolvedSpec,
    results: list[FoldResult],
    failed: list[FailedFold],
    folds: list[FoldSpec],
) -> RunMetrics:
    """Pooled and per-fold scores over the rows that have predictions (first repeat's folds)."""
    by_fold = {(r.repeat, r.fold): r for r in results}
    metric = "rmse" if spec.task == "regression" else "accuracy"
    per_fold = [
        by_fold[(f.repeat, f.index)].run.scores[metric] if (f.repeat, f.index) in by_fold else None
        for f in folds
    ]
    if spec.task == "regression":
        first = [f for f in folds if f.repeat in (0, 1)]
        scores = regression_scores(
            table, spec.target, per_fold, training_mean_baseline(truth.astype(float), first)
        )
    else:
        scores = classification_scores(table, spec.target, list(spec.classes), per_fold)
    labels = {(f.repeat, f.index): f.label for f in folds}
    return RunMetrics(
        task=spec.task,
        task_reason=spec.task_reason,
        target=spec.target,
        key=spec.key,
        n_rows=int(len(table)),
        n_scored=int(table["predicted"].notna().sum()),
        excluded_target_rows=spec.excluded_target_rows,
        repeats=max(1, max(f.repeat for f in folds)),
        partial=bool(failed),
        failed_folds=failed,
        folds=[
            fold_metrics(r, labels[(r.repeat, r.fold)])
            for r in sorted(results, key=lambda r: (r.repeat, r.fold))
        ],
        data=spec.to_dict(),
        **scores,
    )


def _repeat_score(table: pd.DataFrame, spec: ResolvedSpec) -> float:
    """One repeat's pooled score: accuracy, or RMSE for regression."""
    scored = table[table["predicted"].notna()]
    if spec.task == "regression":
        return float(np.sqrt((scored["residual"] ** 2).mean()))
    return float((scored["predicted"] == scored[spec.target]).mean())


def fold_fills(
    results: list[FoldResult], folds: list[FoldSpec]
) -> dict[str, dict[str, float | None]]:
    """Each fold's fitted fill per numeric column, by fold label (for the missing-value report)."""
    labels = {(f.repeat, f.index): f.label for f in folds}
    return {
        labels[(r.repeat, r.fold)]: {
            name: p.get("fill") for name, p in r.preprocess.get("numeric", {}).items()
        }
        for r in sorted(results, key=lambda r: (r.repeat, r.fold))
    }


@task(name="join", task_run_name="join", cache_policy=NO_CACHE)
def join_out_of_fold(
    data: CleanedData,
    folds: list[FoldSpec],
    outcomes: list[FoldResult | FailedFold],
    output_dir: str,
    run: RunInfo | None = None,
    min_folds: int | None = None,
    linear: LinearBaseline | None = None,
) -> JoinOutcome:
    """Write the OOF table and metrics; fail naming the folds that did not finish."""
    logger = run_logger()
    results, failed = split_outcomes(folds, outcomes)
    for failure in failed:
        logger.error("%s %s", failure.label.replace("-", " ", 1), failure.error)
    publish_failures(failed)  # also says "no failed folds", replacing an earlier run's table
    needed = len(folds) if min_folds is None else min_folds
    if len(results) < needed:
        names = "; ".join(f"{f.label.replace('-', ' ', 1)} {f.error}" for f in failed)
        hint = (
            ""
            if min_folds
            else "; to accept partial results set min_folds (UI form) or --min-folds (CLI)"
        )
        raise FoldFailedError(
            f"{names} — {len(failed)} of {len(folds)} folds failed, {len(results)} done, "
            f"{needed} needed{hint}"
        )

    spec = data.spec
    frame = pd.read_parquet(data.path, columns=[spec.key, spec.target])
    keys = frame[spec.key].to_numpy()
    truth = frame[spec.target].to_numpy(dtype=float if spec.task == "regression" else object)
    check_results(results, folds, keys)
    repeats = sorted({f.repeat for f in folds})
    tables = [
        build_oof_table(
            keys,
            truth,
            spec,
            [r for r in results if r.repeat == repeat],
            [f for f in folds if f.repeat == repeat],
        )
        for repeat in repeats
    ]
    table = tables[0] if len(tables) == 1 else pool_repeats(tables, spec)
    metrics = compute_metrics(table, truth, spec, results, failed, folds)
    metrics.data_sha256 = data.raw_sha256
    metrics.data["missing_filled"] = add_fold_fills(spec.missing_filled, fold_fills(results, folds))
    metrics.run = run or RunInfo()
    metrics.linear_baseline = linear
    if len(tables) > 1:
        metrics.repeat_scores = [_repeat_score(t, spec) for t in tables]

    out = Path(output_dir)
    picture = SCATTER_PNG if spec.task == "regression" else CONFUSION_PNG
    names = [OOF_PARQUET, OOF_CSV, METRICS_JSON, CURVES_PNG, picture]
    if len(tables) > 1:
        names.append(OOF_BY_REPEAT)
    paths = {name: out / name for name in names}
    text = metrics.model_dump_json(indent=2)
    with staged_files(*paths.values()) as staged:
        parquet, csv, json_file, curves, figure = staged[:5]
        table.to_parquet(parquet, index=False)
        table.to_csv(csv, index=False)
        plot_learning_curves(results, curves)
        if spec.task == "regression":
            plot_predicted_vs_true(table, spec.target, figure, metrics.rmse, metrics.r2)
        else:
            plot_confusion_matrix(metrics.confusion_matrix, list(spec.classes), figure)
        json_file.write_text(text + "\n")
        if len(tables) > 1:
            by_repeat = pd.concat(
                [t.assign(repeat=r) for t, r in zip(tables, repeats)], ignore_index=True
            )
            by_repeat.to_parquet(staged[5], index=False)
    logger.info(
        "OOF %s over %d rows%s -> %s",
        metrics.headline, metrics.n_scored, " (PARTIAL)" if failed else "", out,
    )  # fmt: skip
    outcome = JoinOutcome(metrics=metrics, paths={k: str(v) for k, v in paths.items()})
    publish_artifacts(outcome)
    return outcome
