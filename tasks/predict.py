"""Score new rows with a saved model bundle: check against the saved spec, preprocess, predict."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.bundle import Bundle, BundleError, load_bundle
from tasks.data.read import read_table
from tasks.data.spec import ResolvedSpec
from tasks.data.table import typed_table
from tasks.errors import DataValidationError
from tasks.logs import run_logger
from tasks.model import infer
from tasks.outputs import write_atomic
from tasks.preprocess import decode_regression, transform, unseen_categories

PLACEHOLDER_TARGET = "0"  # stands in for the target so rows without one are validated too


@task(name="load-bundle", task_run_name="load-bundle", cache_policy=NO_CACHE)
def verify_bundle(folder: str, use: str) -> Bundle:
    """Refuse a bundle with missing or altered files, or without the model asked for."""
    bundle = load_bundle(folder)
    if use == "full" and not bundle.manifest.get("full"):
        raise BundleError(
            f"model bundle {bundle.path} has no full model; train with --refit to get one"
        )
    if use.startswith("fold-") and use not in bundle.fold_models():
        raise BundleError(
            f"model bundle {bundle.path} has no {use}; it has {bundle.fold_models()}"
        )
    return bundle


def model_names(bundle: Bundle, use: str) -> list[str]:
    """The models to score with: every fold model (ensemble), full, or one fold."""
    return bundle.fold_models() if use == "ensemble" else [use]


@dataclasses.dataclass(frozen=True)
class NewRows:
    """New rows typed like the training table, with their true targets where given."""

    table: pd.DataFrame
    truth: pd.Series | None  # by position; NA where a row has no target
    warnings: list[str]
    kept: pd.DataFrame | None = None  # input columns to copy through, as read (text)


def kept_columns(
    frame: pd.DataFrame, label: str, spec: ResolvedSpec, keep: list[str], keep_all: bool
) -> pd.DataFrame | None:
    """The input columns to copy into the predictions (not the key: it is there already)."""
    if not keep and not keep_all:
        return None
    found = list(frame.columns)
    absent = [c for c in keep if c not in found]
    if absent:
        raise DataValidationError(
            f"{label}: column(s) {absent} given in --keep not found; found columns {found}"
        )
    names = [c for c in (found if keep_all else dict.fromkeys(keep)) if c != spec.key]
    written = ["predicted", "spread", *[f"p_{c}" for c in spec.classes]]
    clash = [c for c in names if c in written]
    if clash:
        raise DataValidationError(
            f"{label}: kept column(s) {clash} have the name of a column predict writes "
            f"({[spec.key, *written]}); rename them in the input or leave them out"
        )
    return frame[names].reset_index(drop=True)


def add_kept(predictions: pd.DataFrame, kept: pd.DataFrame | None, key: str) -> pd.DataFrame:
    """The predictions with the kept input columns right after the key, row for row."""
    if kept is None:
        return predictions
    out = predictions.reset_index(drop=True)
    return pd.concat([out[[key]], kept, out.drop(columns=[key])], axis=1)


@task(name="read-new-rows", task_run_name="read-new-rows", cache_policy=NO_CACHE)
def read_new_rows(
    path: str, label: str, bundle: Bundle, keep: list[str] | None = None, keep_all: bool = False
) -> NewRows:
    """Read and type the new rows as the training table was; the target is optional."""
    logger = run_logger()
    spec = bundle.spec
    frame = read_table(path, label, bundle.declared)
    frame.columns = [str(c).strip() for c in frame.columns]
    kept = kept_columns(frame, label, spec, list(keep or []), keep_all)
    warnings: list[str] = []
    known = {spec.target, spec.id_column, spec.group_column, *spec.numeric, *spec.categorical}
    extra = [c for c in frame.columns if c not in known and c not in spec.dropped]
    if extra:
        warnings.append(f"{label}: column(s) {extra} are not in the model's spec; ignored")
    missing = [c for c in (*spec.numeric, *spec.categorical) if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{label}: feature column(s) {missing} missing; the model needs "
            f"{[*spec.numeric, *spec.categorical]}"
        )
    # Validate and type every row, target or not: a placeholder target keeps them all.
    scoring = dataclasses.replace(spec, group_column=None)
    truth = None
    if spec.target in frame.columns:
        given = frame[spec.target].astype("string").str.strip()
        given = given.mask(given == "")
        if given.notna().any():
            labelled = typed_table(frame, scoring, label)[spec.target]
            kind = "Float64" if spec.task == "regression" else "string"
            truth = pd.Series(pd.NA, index=range(len(frame)), dtype=kind)
            truth[np.flatnonzero(given.notna().to_numpy())] = labelled.to_numpy()
    if truth is not None and spec.task == "classification":
        warnings += unseen_classes(truth, spec, label)
    table = typed_table(frame.assign(**{spec.target: PLACEHOLDER_TARGET}), scoring, label)
    for message in warnings:
        logger.warning(message)
    logger.info("Read %d rows to score from %s", len(table), label)
    return NewRows(table=table, truth=truth, warnings=warnings, kept=kept)


def unseen_classes(truth: pd.Series, spec: ResolvedSpec, label: str) -> list[str]:
    """A warning naming the given targets' classes the model never saw, and their rows."""
    given = truth.dropna()
    counts = given[~given.isin(spec.classes)].value_counts().sort_index()
    if not len(counts):
        return []
    shown = ", ".join(f"{cls!r} ({n} rows)" for cls, n in counts.items())
    return [
        f"{label}: target column {spec.target!r} holds {int(counts.sum())} row(s) of class(es) "
        f"the model never saw, which count as wrong: {shown}"
    ]


def _check_unseen(table: pd.DataFrame, spec: ResolvedSpec, params: dict[str, Any]) -> list[str]:
    """Warnings counting rows whose category the model never saw (they score as all zeros)."""
    return [
        f"column {name!r}: {count} of {len(table)} row(s) hold a category not seen in training; "
        "encoded as all zeros"
        for name, count in unseen_categories(table, spec, params).items()
    ]


def predict_with(bundle: Bundle, name: str, table: pd.DataFrame) -> np.ndarray:
    """One model's predictions: class probabilities (rows, classes) or values in target units."""
    import keras

    params = bundle.params(name)
    x = transform(table, bundle.spec, params)
    net = keras.saving.load_model(bundle.model_file(name), compile=False)
    raw = infer(net, x)  # float64: the fold task's OOF values for the same rows
    if bundle.spec.task == "regression":
        return decode_regression(raw[:, 0], params)
    return raw / raw.sum(axis=1, keepdims=True)  # as the fold task did for its OOF rows


@task(name="score", task_run_name="score-{use}", cache_policy=NO_CACHE)
def score_rows(bundle: Bundle, rows: NewRows, use: str) -> tuple[pd.DataFrame, list[str]]:
    """Each chosen model's predictions, averaged for the ensemble with their spread."""
    from tasks.tf_runtime import import_tensorflow

    import_tensorflow(os.cpu_count() or 1, None)  # one scoring process: all the cores
    spec, names = bundle.spec, model_names(bundle, use)
    warnings = _check_unseen(rows.table, spec, bundle.params(names[0]))
    for message in warnings:
        run_logger().warning(message)
    stacked = np.stack([predict_with(bundle, name, rows.table) for name in names])
    mean = stacked.mean(axis=0)
    out = pd.DataFrame({spec.key: rows.table[spec.key].to_numpy()})
    if spec.task == "regression":
        out["predicted"] = mean
        if use == "ensemble":
            out["spread"] = stacked.std(axis=0)
    else:
        winner = mean.argmax(axis=1)
        out["predicted"] = pd.Series(np.asarray(spec.classes, dtype=object)[winner], dtype="string")
        for j, cls in enumerate(spec.classes):
            out[f"p_{cls}"] = mean[:, j]
        if use == "ensemble":
            out["spread"] = stacked[:, np.arange(len(winner)), winner].std(axis=0)
    return out, warnings


def score_against_truth(
    predictions: pd.DataFrame, truth: pd.Series | None, spec: ResolvedSpec
) -> dict[str, float] | None:
    """Accuracy (classification) or RMSE and MAE (regression) over the rows with a target."""
    if truth is None:
        return None
    given = truth.notna().to_numpy()
    if spec.task == "regression":
        error = predictions["predicted"].to_numpy()[given] - truth[given].to_numpy(dtype=float)
        return {
            "rmse": float(np.sqrt((error**2).mean())),
            "mae": float(np.abs(error).mean()),
            "n": int(given.sum()),
        }
    hits = predictions["predicted"].to_numpy(dtype=object)[given] == truth[given].to_numpy(
        dtype=object
    )
    return {"accuracy": float(hits.mean()), "n": int(given.sum())}


@task(name="write-predictions", task_run_name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(predictions: pd.DataFrame, output: str) -> str:
    """Write the predictions atomically: .csv as CSV, anything else as Parquet."""
    path = Path(output).expanduser().resolve()
    if path.suffix.lower() == ".csv":
        write_atomic(path, lambda tmp: predictions.to_csv(tmp, index=False))
    else:
        write_atomic(path, lambda tmp: predictions.to_parquet(tmp, index=False))
    return str(path)
