"""Type the feature columns: numbers or categories, their levels, gap policies and scaling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tasks.data.cells import Cells, class_text, missing_rows, row_label
from tasks.data.spec import MISSING_LEVEL, DataSpec, PresetName

FREE_TEXT_MIN_LEVELS = 20  # undeclared text with more levels than this may be free text ...
DISTINCT_SHARE_DROPPED = 0.95  # ... and is, when this share of its cells are distinct


def split_types(
    cells: Cells, s: DataSpec, preset: PresetName | None, candidates: list[str]
) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns (declared, else inferred); numbers stay parsed."""
    numeric: list[str] = []
    categorical: list[str] = []
    # file order, except the preset: its declared order is today's feature order
    order = [*s.numeric, *s.categorical] if preset is not None else candidates
    for name in order:
        if cells.kept[name].isna().all():
            raise cells.fail(f"column {name!r} is empty in every row; drop it or fill it in")
        if name in s.categorical:
            categorical.append(name)
            continue
        values, bad = cells.numbers(name)
        if bad.any() and name not in s.numeric:
            categorical.append(name)
            continue
        cells.check_numbers(name)  # a declared numeric column must hold only numbers
        cells.check_finite(name, values)
        numeric.append(name)
    return numeric, categorical


# Dates and times as people write them: ISO 8601 (2024-01-31, 2024-01-31T10:00:00Z), 2024/1/31,
# 31/1/2024 or 1/31/2024. Every present cell must match, and parse, for a column to be dates.
_DATE = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{4}"
)


def _is_dates(column: pd.Series) -> bool:
    """Whether every present cell is a date or date-time pandas can parse."""
    present = column.dropna()
    if not len(present) or not bool(present.str.fullmatch(_DATE).all()):
        return False
    try:
        parsed = pd.to_datetime(present, errors="coerce", format="mixed", utc=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return bool(parsed.notna().all())


def drop_dates(
    cells: Cells, s: DataSpec, categorical: list[str], dropped: dict[str, str]
) -> None:
    """Undeclared date columns are dropped, saying so: as levels or free text they mislead."""
    for name in [c for c in categorical if c not in s.categorical]:
        column = cells.kept[name]
        if _is_dates(column):
            example = str(column.dropna().iloc[0])
            categorical.remove(name)
            dropped[name] = f"dates (e.g. {example!r}); no features are derived"
            cells.warn(
                f"{cells.label}: dropping column {name!r}: it holds dates (e.g. {example!r}); "
                "foldflow derives no features from dates: add numeric columns (year, month, "
                f"day of week, ...) to the file, or declare --categorical {name} to one-hot them"
            )


def drop_constant_numbers(cells: Cells, numeric: list[str], dropped: dict[str, str]) -> None:
    """Constant numeric columns carry nothing and would divide by zero when scaled."""
    for name in list(numeric):
        values = cells.numbers(name)[0]
        present = values[~np.isnan(values)]
        if present.min() == present.max():
            numeric.remove(name)
            dropped[name] = f"constant (every value is {class_text(present[0])})"
            cells.warn(f"{cells.label}: dropping column {name!r}: it is constant ({present[0]:g})")


def report_stripped(cells: Cells, columns: list[str]) -> None:
    """Labels and categories: say how many cells lost surrounding whitespace."""
    stripped = {c: n for c, n in cells.stripped.items() if c in columns}
    if stripped:
        cells.warn(
            f"{cells.label}: stripped surrounding whitespace from {sum(stripped.values())} "
            f"cell(s) ({', '.join(f'{c!r}: {n}' for c, n in stripped.items())})"
        )


def missing_policies(
    cells: Cells, s: DataSpec, numeric: list[str], categorical: list[str], special: list[str]
) -> dict[str, str]:
    """Each feature column's missing-value policy, checked against its kind and its gaps."""
    not_features = [c for c in s.missing if c in special]
    if not_features:
        raise cells.fail(
            f"missing-value policy given for {not_features}, which is the target, id or "
            "group column; policies apply to feature columns only"
        )
    policies = {name: s.missing.get(name, s.numeric_missing) for name in numeric}
    policies.update({name: s.missing.get(name, s.categorical_missing) for name in categorical})
    for name, policy in policies.items():
        allowed = ("median", "error") if name in numeric else ("missing", "error")
        if policy not in allowed:
            kind = "numeric" if name in numeric else "categorical"
            raise cells.fail(
                f"column {name!r} is {kind}; missing-value policy {policy!r} does not apply "
                f"(use one of {list(allowed)})"
            )
        holes = missing_rows(cells.kept[name])
        if policy == "error" and len(holes):
            raise cells.fail(
                f"column {name!r} {row_label(int(cells.positions[holes[0]]))} is empty; "
                "its missing-value policy is 'error'"
            )
    return policies


def vocabularies(
    cells: Cells,
    s: DataSpec,
    preset: PresetName | None,
    categorical: list[str],
    policies: dict[str, str],
    dropped: dict[str, str],
) -> dict[str, list[str]]:
    """Each categorical column's levels; identifiers and constants dropped, giants refused."""
    found: dict[str, list[str]] = {}
    for name in list(categorical):
        column = cells.kept[name]
        levels = _levels(cells, s, name, column)
        if levels is None or (len(levels) < 2 and preset is None):
            categorical.remove(name)
            del policies[name]
            if levels is None:
                dropped[name] = f"text with {column.nunique()} distinct values"
            else:
                dropped[name] = f"constant (every value is {levels[0]!r})"
                cells.warn(f"{cells.label}: dropping column {name!r}: it is constant")
            continue
        if policies[name] == "missing" and column.isna().any():
            if MISSING_LEVEL in levels:
                cells.warn(
                    f"{cells.label}: column {name!r} already has a value {MISSING_LEVEL!r}; "
                    "its empty cells join that level"
                )
            levels = sorted({*levels, MISSING_LEVEL})
        found[name] = levels
    return found


def _levels(cells: Cells, s: DataSpec, name: str, column: pd.Series) -> list[str] | None:
    """The sorted levels; None for text that looks like an identifier (dropped)."""
    levels = sorted(column.dropna().unique().tolist())
    n_present = int(column.notna().sum())
    if (
        name not in s.categorical
        and len(levels) > FREE_TEXT_MIN_LEVELS
        and len(levels) > DISTINCT_SHARE_DROPPED * n_present
    ):
        cells.warn(
            f"{cells.label}: dropping column {name!r}: {len(levels)} distinct values in "
            f"{n_present} rows looks like an identifier or free text (if it is a unique row "
            f"key, pass --id-column {name})"
        )
        return None
    if len(levels) <= s.max_categories:
        return levels
    raise cells.fail(
        f"column {name!r} has {len(levels)} distinct values, more than max_categories="
        f"{s.max_categories}; use --drop {name} or, if it holds numbers, --numeric {name}"
    )


def zscore_columns(
    cells: Cells, s: DataSpec, numeric: list[str], categorical: list[str]
) -> list[str]:
    """The declared subset to z-score, or every numeric column."""
    if s.scaling == "none":
        return []
    if s.zscore is None:
        return list(numeric)
    wrong = [c for c in s.zscore if c in categorical]
    if wrong:
        raise cells.fail(f"zscore column(s) {wrong} are categorical; only numbers can be z-scored")
    return [c for c in numeric if c in s.zscore]


def check_one_hot_names(
    cells: Cells,
    categorical: list[str],
    vocabularies: dict[str, list[str]],
    dropped: dict[str, str],
) -> None:
    """One-hot names must not collide with real columns or with each other."""
    owners = {
        c: f"column {c!r}" for c in cells.columns if c not in categorical and c not in dropped
    }
    for name in categorical:
        for value in vocabularies[name]:
            dummy = f"{name}_{value}"
            if dummy in owners:
                raise cells.fail(
                    f"one-hot column {dummy!r} for column {name!r} value {value!r} "
                    f"collides with {owners[dummy]}; rename one of them or --drop one"
                )
            owners[dummy] = f"the one-hot column of column {name!r} value {value!r}"


def missing_filled(
    cells: Cells, numeric: list[str], categorical: list[str], policies: dict[str, str],
    scope: str,
) -> dict[str, dict[str, object]]:
    """Per feature column with gaps: how many cells are filled, and with what (for the report).

    Global scope fills with one median of every row (computed as `tasks/preprocess.py` does);
    fold scope with each fold's training-row median, which the join adds per fold.
    """
    report: dict[str, dict[str, object]] = {}
    for name in [*numeric, *categorical]:
        holes = int(cells.kept[name].isna().sum())
        if not holes:
            continue
        if name in categorical:
            report[name] = {"cells": holes, "with": "level", "value": MISSING_LEVEL}
            continue
        value = None
        if scope == "global" and policies.get(name) == "median":
            values = cells.numbers(name)[0]
            value = float(pd.Series(values[~np.isnan(values)]).median())
        report[name] = {"cells": holes, "with": "median", "value": value}
    return report


def describe_filled(report: dict[str, dict[str, object]]) -> str | None:
    """One line naming each column's filled cells, or None when nothing was filled."""
    if not report:
        return None
    parts = []
    for name, entry in report.items():
        if entry["with"] == "level":
            how = f"the level {entry['value']!r}"
        elif entry["value"] is None:
            how = "the median of each fold's training rows"
        else:
            how = f"the median of all rows, {entry['value']:.10g}"
        parts.append(f"{name!r} {entry['cells']} with {how}")
    return "missing cells filled: " + "; ".join(parts)


def add_fold_fills(
    report: dict[str, dict[str, object]], fills: dict[str, dict[str, float | None]]
) -> dict[str, dict[str, object]]:
    """The report with each fold's median per column ({fold label: {column: fill}} in)."""
    out = {}
    for name, entry in report.items():
        out[name] = dict(entry)
        if entry["with"] == "median" and entry["value"] is None:  # fold scope
            out[name]["folds"] = {label: f.get(name) for label, f in fills.items()}
    return out
