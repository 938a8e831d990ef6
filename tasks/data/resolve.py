"""Resolve a table's spec in one pass: every column's role and type, declared or inferred."""

# Inference for undeclared columns (the target, id and group columns are never features):
# - every present cell parses as a number -> numeric (non-finite numbers are refused);
# - otherwise text (bools included) -> categorical, one-hot over the whole file's sorted levels;
# - text with more than 20 levels that are over 95 % distinct -> dropped with a warning (an
#   identifier or free text); less distinct but more than `max_categories` levels -> refused;
# - a constant column (one value, zero variance) -> dropped with a warning;
# - undeclared text whose every cell is a date or date-time -> dropped with a warning saying so.
# - with no id declared, one column named id, ID or <something>_id whose values are unique and
#   present in every row is the key (said in a warning), never a feature.
# Task: a text target, or an integer target with <= 20 distinct values -> classification;
# any other numeric target -> regression. Rows whose target is missing are left out and counted.
# The jh-simple preset declares everything, in today's order, and ignores extra columns.

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd

from tasks.data import features
from tasks.data.cells import Cells, Warn, class_text, fits_int64, missing_rows, row_label, rows_text
from tasks.data.spec import ROW_KEY, DataSpec, PresetName, ResolvedSpec, expand_preset

MAX_CLASSES_INFERRED = 20  # an integer target with at most this many values is a class label
ID_NAME = re.compile(r"id|.+_id", re.IGNORECASE)  # names taken as the key when unique


def resolve_spec(frame: pd.DataFrame, spec: DataSpec, label: str, warn: Warn) -> ResolvedSpec:
    """Decide every column's role and type from the declared spec plus the data, or refuse."""
    return resolve_cells(Cells(frame, label, warn), spec)


def resolve_cells(cells: Cells, spec: DataSpec) -> ResolvedSpec:
    """The checks in the order a user would want to fix them; `cells` keeps what it parsed."""
    preset = spec.active_preset
    s = expand_preset(spec)
    if cells.renamed:
        cells.warn(
            f"{cells.label}: stripped surrounding whitespace from column name(s) {cells.renamed}"
        )
    if preset is None and s.id_column is None:
        s = _infer_id_column(cells, s)
    _check_declared(cells, s)
    special = [c for c in (s.target, s.id_column, s.group_column) if c]
    # roles: declared first, then inferred (the preset declares everything and ignores extras)
    dropped = _declared_drops(cells, s, preset, special)
    candidates = [c for c in cells.columns if c not in special and c not in dropped]
    _check_cell_length(cells, s.max_cell_chars, [*special, *candidates])

    task, reason, classes = _resolve_target(cells, s)
    id_dtype = _check_keys(cells, s)
    numeric, categorical = features.split_types(cells, s, preset, candidates)
    features.drop_dates(cells, s, categorical, dropped)
    features.drop_constant_numbers(cells, numeric, dropped)
    features.report_stripped(cells, [s.target or "", *categorical])
    policies = features.missing_policies(cells, s, numeric, categorical, special)
    vocabularies = features.vocabularies(cells, s, preset, categorical, policies, dropped)
    zscore = features.zscore_columns(cells, s, numeric, categorical)
    features.check_one_hot_names(cells, categorical, vocabularies, dropped)
    filled = features.missing_filled(cells, numeric, categorical, policies, s.resolved_scope())
    return ResolvedSpec(
        target=s.target or "",
        task=task,  # type: ignore[arg-type]
        task_reason=reason,
        key=s.id_column or ROW_KEY,
        id_column=s.id_column,
        numeric=numeric,
        zscore=zscore,
        categorical=categorical,
        vocabularies=vocabularies,
        classes=classes,
        missing_policy=policies,
        dropped=dropped,
        scope=s.resolved_scope(),
        group_column=s.group_column,
        loss=s.loss,
        n_rows=int(cells.keep.sum()),
        excluded_target_rows=int((~cells.keep).sum()),
        preset=preset,
        id_dtype=id_dtype,
        warnings=list(cells.notes),
        missing_filled=filled,
    )


def _infer_id_column(cells: Cells, s: DataSpec) -> DataSpec:
    """A lone undeclared column named like an id (id, ID, <x>_id), unique and full, is the key."""
    declared = {s.target, s.group_column, *s.categorical, *s.numeric, *s.drop}
    found = [
        c for c in cells.columns
        if c not in declared and ID_NAME.fullmatch(c)
        and cells.frame[c].notna().all() and not cells.frame[c].duplicated().any()
    ]  # fmt: skip
    if len(found) > 1:
        cells.warn(
            f"{cells.label}: columns {found} all look like unique row ids; none is taken as the "
            f"key: pass --id-column <name> (e.g. --id-column {found[0]}) to key the table by one"
        )
    if len(found) != 1:
        return s
    cells.warn(
        f"{cells.label}: taking column {found[0]!r} as the key (named like an id, unique, one "
        "per row; not a feature); pass --id-column <name> to choose another, or "
        f"--numeric {found[0]} to train on it"
    )
    return s.model_copy(update={"id_column": found[0]})


def _check_declared(cells: Cells, s: DataSpec) -> None:
    """Every declared column exists and has one role; no column clashes with the row key."""
    columns = cells.columns
    declared: list[tuple[str, str]] = [("target", s.target or "")]
    declared += [("id_column", s.id_column)] if s.id_column else []
    declared += [("group_column", s.group_column)] if s.group_column else []
    declared += [("categorical", c) for c in s.categorical]
    declared += [("numeric", c) for c in s.numeric]
    declared += [("drop", c) for c in s.drop]
    declared += [("zscore", c) for c in s.zscore or []]
    declared += [("missing", c) for c in s.missing]
    if s.target not in columns:
        raise cells.fail(f"target column {s.target!r} not found; found columns {columns}")
    absent = [(k, c) for k, c in declared if c not in columns]
    if absent:
        what = ", ".join(f"{c!r} ({k})" for k, c in absent)
        raise cells.fail(f"declared column(s) {what} not found; found columns {columns}")
    roles: dict[str, str] = {}
    for kind, name in declared:
        if kind in ("zscore", "missing"):
            continue
        if name in roles and roles[name] != kind:
            raise cells.fail(
                f"column {name!r} is declared both as {roles[name]} and as {kind}; "
                "give each column one role"
            )
        roles[name] = kind
    if s.id_column is None and ROW_KEY in columns and ROW_KEY not in s.drop:
        raise cells.fail(
            f"column {ROW_KEY!r} clashes with the row-number key used when there is no "
            "id column; declare it as the id column or drop it"
        )


def _declared_drops(
    cells: Cells, s: DataSpec, preset: PresetName | None, special: list[str]
) -> dict[str, str]:
    """Columns dropped by declaration (or, for the preset, by not being in its schema)."""
    dropped: dict[str, str] = {c: "declared in drop" for c in s.drop}
    if preset is not None:
        known = {*special, *s.categorical, *s.numeric}
        extra = [c for c in cells.columns if c not in known]
        if extra:
            cells.warn(f"{cells.label}: ignoring unknown column(s) {extra}")
        dropped.update({c: f"not in the {preset} schema" for c in extra})
    return dropped


def _check_cell_length(cells: Cells, limit: int, names: list[str]) -> None:
    """Refuse giant cells before anything reads them as levels or labels."""
    for name in names:
        lengths = cells.frame[name].str.len().fillna(0).to_numpy()
        long = np.flatnonzero(lengths > limit)
        if len(long):
            pos = int(long[0])
            value = str(cells.frame[name].iloc[pos])
            raise cells.fail(
                f"column {name!r} {row_label(pos)} has a cell of {len(value)} characters "
                f"(starting {value[:40]!r}); at most {limit} are allowed "
                "(max_cell_chars)"
            )


def _resolve_target(cells: Cells, s: DataSpec) -> tuple[str, str, list[str]]:
    """Task, its reason and class order; keeps only the rows whose target is present."""
    name = s.target or ""
    target = cells.frame[name]
    missing = missing_rows(target)
    if len(missing) == len(target):
        raise cells.fail(f"target column {name!r} is empty in every row")
    if len(missing):
        cells.warn(
            f"{cells.label}: {len(missing)} row(s) have no value in target column {name!r} and "
            f"are left out: {rows_text(missing)}"
        )
    cells.keep_rows(name)
    values, bad = cells.numbers(name)
    numeric = not bad.any()
    task, reason = _task_of(s, name, numeric, values)
    if task == "regression":
        if not numeric:
            pos = int(cells.positions[np.flatnonzero(bad)[0]])
            raise cells.fail(
                f"target column {name!r} {row_label(pos)} is {target.iloc[pos]!r}; "
                "regression needs a number in every row"
            )
        cells.check_finite(name, values)
        return task, reason, []
    if numeric:
        cells.check_finite(name, values)
        classes = [class_text(v) for v in np.unique(values)]
    else:
        classes = sorted(cells.kept[name].unique().tolist())
        _warn_case_twins(cells, name, classes)
    if len(classes) < 2:
        raise cells.fail(
            f"target column {name!r} has a single class {classes}; need at least 2 to classify"
        )
    return task, reason, classes


def _task_of(s: DataSpec, name: str, numeric: bool, values: np.ndarray) -> tuple[str, str]:
    """The task, declared or inferred, and why: text or few integers are classes."""
    if s.task != "auto":
        return s.task, "declared"
    if not numeric:
        return "classification", f"inferred: target {name!r} is text"
    distinct = len(np.unique(values))
    integer = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if integer and distinct <= MAX_CLASSES_INFERRED:
        return "classification", (
            f"inferred: integer target with {distinct} distinct values (<= {MAX_CLASSES_INFERRED})"
        )
    return "regression", "inferred: numeric target"


def _warn_case_twins(cells: Cells, name: str, classes: list[str]) -> None:
    """Classes that differ only by case are kept apart, but the user should hear of it."""
    folded: dict[str, list[str]] = {}
    for c in classes:
        folded.setdefault(c.casefold(), []).append(c)
    for group in folded.values():
        if len(group) > 1:
            cells.warn(
                f"{cells.label}: target column {name!r} has classes that differ only by "
                f"case: {group}; they are kept apart"
            )


def _check_keys(cells: Cells, s: DataSpec) -> Literal["int64", "string"]:
    """Ids present and unique, groups present; ids stay int64 only when exact."""
    kept, positions = cells.kept, cells.positions
    if s.group_column:
        groups = kept[s.group_column]
        if groups.isna().any():
            pos = int(positions[missing_rows(groups)[0]])
            raise cells.fail(
                f"group column {s.group_column!r} {row_label(pos)} is empty; groups are required"
            )
    if not s.id_column:
        return "string"
    ids = kept[s.id_column]
    if ids.isna().any():
        pos = int(positions[missing_rows(ids)[0]])
        raise cells.fail(
            f"id column {s.id_column!r} {row_label(pos)} is empty; every row needs an id"
        )
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        twins = np.flatnonzero((ids == ids.iloc[first]).to_numpy())[:2]
        raise cells.fail(
            f"id column {s.id_column!r} value {ids.iloc[first]!r} is duplicated "
            f"({', '.join(row_label(int(positions[p])) for p in twins)}); ids must be unique"
        )
    return "int64" if fits_int64(ids) else "string"


__all__ = ["resolve_cells", "resolve_spec"]
