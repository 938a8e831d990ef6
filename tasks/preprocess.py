"""Fit and apply feature preprocessing on chosen rows, so a fold never learns from its test rows.

Parameters are plain JSON-able dicts (cacheable, loggable, reusable to score new data). For the
jh-simple preset with global scope this is the notebook's cleaning: the median fill, then
scipy's `zscore` arithmetic (mean, population std) on the same values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.data.spec import MISSING_LEVEL, ResolvedSpec
from tasks.errors import DataValidationError


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std computed exactly as `scipy.stats.zscore` does (bit for bit)."""
    mean = np.mean(values)
    centred = values - mean
    std = np.mean(centred * centred) ** 0.5
    return float(mean), float(std)


def _rows(table: pd.DataFrame, rows: np.ndarray | None) -> pd.DataFrame:
    """The fitted rows (all when None), by position."""
    return table if rows is None else table.iloc[np.asarray(rows, dtype=np.int64)]


def fit_preprocessor(
    table: pd.DataFrame, resolved: ResolvedSpec, rows: np.ndarray | None
) -> dict[str, Any]:
    """Learn fills, scales and the target's encoding from `rows` only (None = every row)."""
    fitted = _rows(table, rows)
    if len(fitted) == 0:
        raise ValueError("cannot fit preprocessing on zero rows")
    numeric: dict[str, dict[str, float | None]] = {}
    for name in resolved.numeric:
        values = fitted[name].to_numpy(dtype="float64")
        fill = None
        if resolved.missing_policy.get(name) == "median":
            present = values[~np.isnan(values)]
            # pandas' median on the same floats: today's `df["income"].median()`
            fill = float(pd.Series(present).median()) if len(present) else 0.0
            values = np.where(np.isnan(values), fill, values)
        mean = scale = None
        if name in resolved.zscore:
            mean, scale = _mean_std(values)
            if not np.isfinite(scale) or scale == 0.0:
                scale = 1.0  # constant on these rows: x - mean, never NaN
        numeric[name] = {"fill": fill, "mean": mean, "scale": scale}
    params: dict[str, Any] = {
        "numeric": numeric,
        "vocabularies": {c: list(v) for c, v in resolved.vocabularies.items()},
        "features": resolved.features(),
        "task": resolved.task,
    }
    if resolved.task == "classification":
        params["classes"] = list(resolved.classes)
    else:
        y = fitted[resolved.target].to_numpy(dtype="float64")
        mean, std = _mean_std(y)
        params["target"] = {"mean": mean, "std": std if std > 0 else 1.0}
    return params


def _numeric_block(table: pd.DataFrame, params: dict[str, Any]) -> list[np.ndarray]:
    """Each numeric column filled and scaled in float64, in the fitted order."""
    out = []
    for name, p in params["numeric"].items():
        values = table[name].to_numpy(dtype="float64")
        holes = np.isnan(values)
        if holes.any():
            if p["fill"] is None:
                pos = int(np.flatnonzero(holes)[0])
                raise DataValidationError(
                    f"column {name!r} row {pos + 1} is empty and its missing-value policy is "
                    "'error'"
                )
            values = np.where(holes, p["fill"], values)
        if p["mean"] is not None:
            values = (values - p["mean"]) / p["scale"]
        out.append(values)
    return out


def _category_codes(table: pd.DataFrame, name: str, levels: list[str]) -> np.ndarray:
    """Each row's index in the vocabulary; -1 for a value never seen when fitting."""
    column = table[name].astype("string").fillna(MISSING_LEVEL)
    return pd.Categorical(column, categories=levels).codes.astype(np.int64)


def transform(table: pd.DataFrame, resolved: ResolvedSpec, params: dict[str, Any]) -> np.ndarray:
    """float32 features in `resolved.features()` order; unseen categories become all zeros."""
    return transform_float64(table, resolved, params).astype(np.float32)


def transform_float64(
    table: pd.DataFrame, resolved: ResolvedSpec, params: dict[str, Any]
) -> np.ndarray:
    """The features before the float32 cast (what the exactness test compares)."""
    blocks = [v[:, None] for v in _numeric_block(table, params)]
    for name in resolved.categorical:
        levels = params["vocabularies"][name]
        codes = _category_codes(table, name, levels)
        onehot = np.zeros((len(table), len(levels)), dtype=np.float64)
        seen = codes >= 0
        onehot[np.flatnonzero(seen), codes[seen]] = 1.0
        blocks.append(onehot)
    if not blocks:
        return np.zeros((len(table), 0), dtype=np.float64)
    return np.hstack(blocks)


def unseen_categories(
    table: pd.DataFrame, resolved: ResolvedSpec, params: dict[str, Any]
) -> dict[str, int]:
    """How many rows per categorical column hold a value outside the vocabulary (for a warning)."""
    counts = {}
    for name in resolved.categorical:
        n = int((_category_codes(table, name, params["vocabularies"][name]) < 0).sum())
        if n:
            counts[name] = n
    return counts


def encode_target(
    table: pd.DataFrame, resolved: ResolvedSpec, params: dict[str, Any]
) -> np.ndarray:
    """One-hot float32 classes (classification) or the z-scored float32 target (regression)."""
    if resolved.task == "classification":
        classes = params["classes"]
        labels = table[resolved.target].astype("string")
        codes = pd.Categorical(labels, categories=classes).codes
        if (codes < 0).any():
            pos = int(np.flatnonzero(codes < 0)[0])
            raise DataValidationError(
                f"target column {resolved.target!r} row {pos + 1} has class "
                f"{labels.iloc[pos]!r}, not one of {classes}"
            )
        return np.eye(len(classes), dtype=np.float32)[codes]
    y = table[resolved.target].to_numpy(dtype="float64")
    return ((y - params["target"]["mean"]) / params["target"]["std"]).astype(np.float32)


def decode_regression(pred: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Predictions back in the target's own units (undo the z-score)."""
    target = params["target"]
    return np.asarray(pred, dtype=np.float64) * target["std"] + target["mean"]
