"""The typed table to cache: key, target, numbers as float64 and categories as text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.data.cells import Cells, Warn, class_text, row_label
from tasks.data.resolve import resolve_cells
from tasks.data.spec import MISSING_LEVEL, DataSpec, ResolvedSpec


def typed_table(frame: pd.DataFrame, resolved: ResolvedSpec, label: str) -> pd.DataFrame:
    """Type a table by a spec resolved before (a saved model's), refusing what does not fit."""
    cells = Cells(frame, label)
    missing_cols = [
        c
        for c in (resolved.target, resolved.id_column, resolved.group_column,
                  *resolved.numeric, *resolved.categorical)
        if c and c not in cells.columns
    ]  # fmt: skip
    if missing_cols:
        raise cells.fail(f"column(s) {missing_cols} not found; found columns {cells.columns}")
    cells.keep_rows(resolved.target)
    return _table_of(cells, resolved)


def resolve_table(
    frame: pd.DataFrame, spec: DataSpec, label: str, warn: Warn
) -> tuple[ResolvedSpec, pd.DataFrame]:
    """Resolve and type in one pass: the table reuses the cells and numbers resolving parsed."""
    cells = Cells(frame, label, warn)
    resolved = resolve_cells(cells, spec)
    return resolved, _table_of(cells, resolved)


def _table_of(cells: Cells, resolved: ResolvedSpec) -> pd.DataFrame:
    """The typed columns of the kept rows, in the cached table's order."""
    kept = cells.kept
    out: dict[str, Any] = {resolved.key: _key_column(cells, resolved)}
    out[resolved.target] = _target_column(cells, resolved)
    for name in resolved.numeric:
        out[name] = cells.check_numbers(name)
    for name in resolved.categorical:
        column = kept[name].astype("string")
        if resolved.missing_policy.get(name) == "missing":
            column = column.fillna(MISSING_LEVEL)
        out[name] = column
    if resolved.group_column:
        out[resolved.group_column] = kept[resolved.group_column].astype("string")
    return pd.DataFrame(out)


def _key_column(cells: Cells, resolved: ResolvedSpec) -> Any:
    """The id exactly as written (int64 when it fits, else text), or the file row number."""
    if resolved.id_column is None:
        return cells.positions.astype("int64")
    if resolved.id_dtype == "int64":
        return np.array([int(v) for v in cells.kept[resolved.id_column]], dtype="int64")
    return cells.kept[resolved.id_column].astype("string")


def _target_column(cells: Cells, resolved: ResolvedSpec) -> Any:
    """Regression targets as float64; class labels as the canonical text of resolve_spec."""
    values, bad = cells.numbers(resolved.target)
    if resolved.task == "regression":
        if bad.any():
            pos = int(cells.positions[np.flatnonzero(bad)[0]])
            raise cells.fail(f"target column {resolved.target!r} {row_label(pos)} is not a number")
        return values
    if not bad.any():  # numeric labels: the same canonical text as resolve_spec's classes
        return pd.Series([class_text(v) for v in values], dtype="string")
    return cells.kept[resolved.target].astype("string")


__all__ = ["resolve_table", "typed_table"]
