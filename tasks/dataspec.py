"""Describe, read and validate any tabular data set: the pure core of "bring your own data".

No Prefect and no TensorFlow here: these functions are called by the Prefect tasks, the CLI and
the tests alike. Every check raises `DataValidationError` naming the file (a `label` passed in),
the column and, where it applies, the row as the user finds it in the file ("row N (line N+1)").

Inference for undeclared columns (the target, id and group columns are never features):
- every present cell parses as a number -> numeric (non-finite numbers are refused);
- otherwise text (bools included) -> categorical, one-hot over the whole file's sorted levels;
- text with more than 20 levels that are over 95 % distinct -> dropped with a warning (an
  identifier or free text); less distinct but more than `max_categories` levels -> refused;
- a constant column (one value, zero variance) -> dropped with a warning.
Task: a text target, or an integer target with <= 20 distinct values -> classification;
any other numeric target -> regression. Rows whose target is missing are left out and counted.
The jh-simple preset declares everything, in today's order, and ignores extra columns.
"""

from __future__ import annotations

import csv
import gzip
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import DataValidationError

Warn = Callable[[str], None]

MISSING_LEVEL = "missing"  # the category that stands for a missing categorical cell
ROW_KEY = "row"  # the key column when the file has no id column: 0-based file position
MAX_CLASSES_INFERRED = 20  # an integer target with at most this many values is a class label
FREE_TEXT_MIN_LEVELS = 20  # undeclared text with more levels than this may be free text ...
DISTINCT_SHARE_DROPPED = 0.95  # ... and is, when this share of its cells are distinct
SNIFF_BYTES = 16 * 1024
SHOWN_ROWS = 5  # how many rows an error or warning lists before "..."

PresetName = Literal["jh-simple"]
# Fields the preset fixes: setting any of them next to `preset` is refused.
_SCHEMA_FIELDS = (
    "target", "task", "id_column", "categorical", "numeric", "drop", "zscore", "scaling",
    "numeric_missing", "categorical_missing", "missing", "na_values", "group_column", "loss",
)  # fmt: skip


class DataSpec(BaseModel):
    """What the user says about their table; anything left out is inferred from the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName | None = Field(
        default=None,
        description="A known data set whose schema is fixed (jh-simple = the T81-558 notebook); "
        "used when no target is given.",
    )
    target: str | None = Field(default=None, description="The column to predict.")
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto",
        description="auto: text or integer targets with <= 20 values are classes, "
        "other numbers regression.",
    )
    id_column: str | None = Field(
        default=None,
        description="Unique row id (kept exactly, never a feature); none = row number.",
    )
    categorical: list[str] = Field(
        default=[], description="Columns to one-hot encode even if they look numeric."
    )
    numeric: list[str] = Field(default=[], description="Columns that must be numbers.")
    drop: list[str] = Field(default=[], description="Columns to ignore.")
    zscore: list[str] | None = Field(
        default=None,
        description="Numeric columns to z-score; none = every numeric column when scaling=zscore.",
    )
    scaling: Literal["zscore", "none"] = Field(
        default="zscore", description="Scale numeric columns to mean 0, std 1, or leave them raw."
    )
    numeric_missing: Literal["median", "error"] = Field(
        default="median", description="Missing numbers: fill with the median, or refuse the file."
    )
    categorical_missing: Literal["missing", "error"] = Field(
        default="missing",
        description="Missing categories: their own 'missing' level, or refuse the file.",
    )
    missing: dict[str, Literal["median", "error", "missing"]] = Field(
        default={}, description="Per-column missing-value policy, overriding the two above."
    )
    preprocess_scope: Literal["fold", "global"] | None = Field(
        default=None,
        description="Fit medians and scales per fold on training rows (fold) or on the whole file "
        "(global, the notebook's way); none = global for the preset, fold otherwise.",
    )
    max_categories: int = Field(
        default=200, ge=2, description="Refuse a categorical column with more levels than this."
    )
    max_cell_chars: int = Field(
        default=1000, ge=1, description="Refuse a cell longer than this many characters."
    )
    delimiter: str | None = Field(
        default=None, description="CSV field separator; none = detect among , ; tab |."
    )
    na_values: list[str] = Field(
        default=[], description="Extra cell texts meaning missing (blank, NA, null... always are)."
    )
    group_column: str | None = Field(
        default=None, description="Rows sharing a value stay in one fold (group k-fold)."
    )
    loss: Literal["mse", "mae", "huber"] = Field(
        default="mse", description="Regression loss (ignored for classification)."
    )

    @model_validator(mode="after")
    def _preset_fixes_the_schema(self) -> DataSpec:
        implied = self.preset is None and self.target is None
        if self.active_preset is not None:
            fields = type(self).model_fields
            changed = [n for n in _SCHEMA_FIELDS if getattr(self, n) != fields[n].default]
            if changed:
                why = "no target is given, so " if implied else ""
                raise ValueError(
                    f"{why}preset {self.active_preset!r} is used and it fixes the schema; remove "
                    f"{changed}, or give a target (and no preset) to describe your own data"
                )
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")
        return self

    def resolved_scope(self) -> Literal["fold", "global"]:
        """Global for the preset (the notebook fits on the whole file), fold otherwise."""
        if self.preprocess_scope is not None:
            return self.preprocess_scope
        return "global" if self.active_preset is not None else "fold"

    @property
    def active_preset(self) -> PresetName | None:
        """The preset in force: the one named, or jh-simple when no target is given."""
        if self.preset is None and self.target is None:
            return "jh-simple"  # no target: the bundled data set, as the notebook
        return self.preset


def preset_spec(name: PresetName) -> DataSpec:
    """The fully declared spec a preset stands for, so one code path handles every table."""
    if name != "jh-simple":
        raise ValueError(f"unknown preset {name!r}")
    return DataSpec(
        target="product",
        task="classification",
        id_column="id",
        categorical=["job", "area"],
        numeric=[
            "income",
            "aspect",
            "subscriptions",
            "dist_healthy",
            "save_rate",
            "dist_unhealthy",
            "age",
            "pop_dense",
            "retail_dense",
            "crime",
        ],  # fmt: skip
        zscore=["income", "aspect", "save_rate", "age", "subscriptions"],
        numeric_missing="error",
        missing={"income": "median"},
        na_values=["NA", "?"],
        preprocess_scope="global",
    )


def expand_preset(spec: DataSpec) -> DataSpec:
    """The declared spec to resolve: a preset's expansion, keeping the user's limits and scope."""
    if spec.active_preset is None:
        return spec
    base = preset_spec(spec.active_preset)
    return base.model_copy(
        update={
            "preprocess_scope": spec.resolved_scope(),
            "max_categories": spec.max_categories,
            "max_cell_chars": spec.max_cell_chars,
            "delimiter": spec.delimiter,
        }
    )


# ----------------------------------------------------------------------------- reading


def row_label(position: int) -> str:
    """Name a row the way a user finds it in the file: data row and line number."""
    return f"row {position + 1} (line {position + 2})"


def _rows_text(positions: np.ndarray) -> str:
    """A few row labels, then how many more."""
    shown = ", ".join(row_label(int(p)) for p in positions[:SHOWN_ROWS])
    more = len(positions) - SHOWN_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def detect_format(path: str) -> Literal["parquet", "gzip", "zip", "csv"]:
    """Trust the content's magic bytes first: downloads are often saved under another name."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"PK\x03\x04":
        return "zip"
    return "csv"


def _head_text(path: str, fmt: str, label: str) -> str:
    """The first few KB of (decompressed) text, cut at a line end, for sniffing the delimiter."""
    try:
        if fmt == "gzip":
            with gzip.open(path, "rb") as handle:
                blob = handle.read(SNIFF_BYTES)
        elif fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DataValidationError(
                        f"{label}: a zip file must hold exactly one CSV file; found {names}"
                    )
                with archive.open(names[0]) as handle:
                    blob = handle.read(SNIFF_BYTES)
        else:
            with open(path, "rb") as handle:
                blob = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        kind = {"gzip": "gzip-compressed", "zip": "a zip archive"}.get(fmt, "a file")
        raise DataValidationError(f"{label}: is {kind} but cannot be read: {err}") from None
    if len(blob) == SNIFF_BYTES and b"\n" in blob:
        blob = blob[: blob.rindex(b"\n")]
    return blob.decode("utf-8-sig", errors="replace")


def sniff_delimiter(sample: str) -> str:
    """Pick , ; tab or | from the sample's structure; a plain comma when it is unclear."""
    lines = [line for line in sample.splitlines() if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _utf8_error(path: str, fmt: str, label: str) -> DataValidationError | None:
    """Locate the first invalid UTF-8 byte by offset and line, as a user can find it."""
    if fmt == "gzip":
        blob, where = gzip.open(path, "rb").read(), " of the gzip-compressed content"
    elif fmt == "zip":
        with zipfile.ZipFile(path) as archive:
            blob = archive.read(archive.namelist()[0])
        where = " of the zipped file"
    else:
        blob, where = Path(path).read_bytes(), ""
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError as err:
        line = blob.count(b"\n", 0, err.start) + 1
        return DataValidationError(
            f"{label}: not valid UTF-8 at byte {err.start}{where} (line {line}, "
            f"{blob[err.start : err.start + 1]!r}); save the file as UTF-8"
        )
    return None


def _read_csv(path: str, fmt: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Every column as exact text, so ids and numbers are typed by us, not guessed by pandas."""
    delimiter = spec.delimiter or sniff_delimiter(_head_text(path, fmt, label))
    compression = {"gzip": "gzip", "zip": "zip"}.get(fmt)
    options: dict[str, Any] = dict(
        sep=delimiter,
        dtype="string",
        keep_default_na=True,
        na_values=list(spec.na_values),
        encoding="utf-8-sig",
        compression=compression,
    )
    try:
        exact = {**options, "keep_default_na": False, "na_values": None}  # "NA" can be a name
        header = pd.read_csv(path, header=None, nrows=1, **exact)
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            f"{label}: the file is empty; expected a CSV with a header row"
        ) from None
    except UnicodeDecodeError:
        error = _utf8_error(path, fmt, label)
        if error is not None:
            raise error from None
        raise
    except pd.errors.ParserError as err:
        raise DataValidationError(f"{label}: malformed CSV: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        kind = {"gzip": "gzip-compressed", "zip": "a zip archive"}.get(fmt, "a CSV file")
        raise DataValidationError(f"{label}: is {kind} but cannot be read: {err}") from err
    names = [str(n) for n in header.iloc[0].tolist()] if len(header) else []
    _check_header(names, label)
    return frame


def _check_header(names: list[str], label: str) -> None:
    """Refuse duplicate or blank column names instead of letting pandas rename them."""
    seen: dict[str, int] = {}
    for i, name in enumerate(n.strip() for n in names):
        if not name:
            raise DataValidationError(f"{label}: column {i + 1} of the header has no name")
        if name in seen:
            raise DataValidationError(
                f"{label}: column name {name!r} appears twice in the header "
                f"(columns {seen[name] + 1} and {i + 1}); names must be unique"
            )
        seen[name] = i


def _read_parquet(path: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Parquet columns cast to exact text (ints digit for digit, floats shortest round trip)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataValidationError(f"{label}: not a readable Parquet file: {err}") from err
    _check_header(list(table.column_names), label)
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
        if pa.types.is_floating(column.type):  # NaN is missing, not the text "nan"
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        try:
            text = pc.cast(column, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
            raise DataValidationError(
                f"{label}: column {name!r} has type {kind}, which is not a table cell type"
            ) from err
        series = pd.Series(text.to_pylist(), dtype="string", name=name)
        if spec.na_values:
            series = series.mask(series.isin(spec.na_values))
        columns[name] = series
    return pd.DataFrame(columns)


def read_table(path: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Read CSV (plain, gzip, zip) or Parquet into all-text columns with missing cells as NA."""
    spec = expand_preset(spec)
    if Path(path).stat().st_size == 0:
        raise DataValidationError(f"{label}: the file is empty; expected a CSV with a header row")
    fmt = detect_format(path)
    if fmt == "csv" and str(path).lower().endswith(".parquet"):
        raise DataValidationError(f"{label}: named .parquet but is not a Parquet file")
    frame = (
        _read_parquet(path, label, spec) if fmt == "parquet" else _read_csv(path, fmt, label, spec)
    )
    if frame.empty:
        raise DataValidationError(f"{label}: header only, no data rows")
    return frame


# ----------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ResolvedSpec:
    """Every decision about the table, inferred or declared, frozen and JSON-able for the cache."""

    target: str
    task: Literal["classification", "regression"]
    task_reason: str
    key: str
    id_column: str | None
    numeric: list[str]
    zscore: list[str]
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    classes: list[str]
    missing_policy: dict[str, str]
    dropped: dict[str, str]
    scope: Literal["fold", "global"]
    group_column: str | None
    loss: str
    n_rows: int
    excluded_target_rows: int
    preset: str | None = None
    id_dtype: Literal["int64", "string"] = "string"
    warnings: list[str] = field(default_factory=list)

    def features(self) -> list[str]:
        """Numeric columns, then each categorical column's one-hot columns in vocabulary order."""
        dummies = [f"{c}_{v}" for c in self.categorical for v in self.vocabularies[c]]
        return [*self.numeric, *dummies]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for the cache's metadata and the run report)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedSpec:
        """Rebuild from `to_dict()` output (after a JSON round trip)."""
        return cls(**data)


def declared_spec(resolved: ResolvedSpec, base: DataSpec) -> DataSpec:
    """The spec that declares everything `resolved` decided: save it, edit it, pass it back."""
    if resolved.preset is not None:
        return base
    return base.model_copy(
        update={
            "preset": None,
            "target": resolved.target,
            "task": resolved.task,
            "id_column": resolved.id_column,
            "categorical": list(resolved.categorical),
            "numeric": list(resolved.numeric),
            "drop": [c for c in resolved.dropped if c not in (resolved.id_column,)],
            "zscore": list(resolved.zscore),
            "missing": dict(resolved.missing_policy),
            "preprocess_scope": resolved.scope,
            "group_column": resolved.group_column,
        }
    )


def _normalise(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Strip surrounding whitespace from names and cells (blank becomes missing); count changes."""
    out = {}
    changed: dict[str, int] = {}
    for name in frame.columns:
        raw = frame[name].astype("string")
        stripped = raw.str.strip()
        n = int((stripped != raw).fillna(False).sum())
        if n:
            changed[str(name)] = n
        out[str(name).strip()] = stripped.mask(stripped == "")
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame))), changed


def _numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse text as float64 (NaN for missing); also return where a present cell is not a number."""
    parsed = pd.to_numeric(series, errors="coerce")
    values = parsed.to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(values) & series.notna().to_numpy()
    return values, bad


def _is_integer_text(series: pd.Series) -> bool:
    """Whether every present cell is written as an integer (so it can stay exact)."""
    present = series.dropna()
    return bool(present.str.fullmatch(r"[+-]?\d+").all()) if len(present) else False


def _fits_int64(series: pd.Series) -> bool:
    """Integer text within int64, so the id can be stored as today's int64 column exactly."""
    if not _is_integer_text(series):
        return False
    values = [int(v) for v in series.dropna()]
    return all(-(2**63) <= v < 2**63 for v in values)


def _class_text(value: float) -> str:
    """A numeric class label as text: integers without '.0', other numbers round-trip exact."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _missing_rows(series: pd.Series) -> np.ndarray:
    return np.flatnonzero(series.isna().to_numpy())


class _Resolver:
    """One resolution pass: the checks in the order a user would want to fix them."""

    def __init__(self, frame: pd.DataFrame, spec: DataSpec, label: str, warn: Warn) -> None:
        self.preset = spec.active_preset
        self.spec = expand_preset(spec)
        self.label = label
        self.notes: list[str] = []
        self._warn = warn
        self.frame, self.stripped = _normalise(frame)
        self.columns = list(self.frame.columns)
        renamed = [str(c) for c in frame.columns if str(c) != str(c).strip()]
        if renamed:
            self.warn(f"{label}: stripped surrounding whitespace from column name(s) {renamed}")

    def warn(self, message: str) -> None:
        self.notes.append(message)
        self._warn(message)

    def fail(self, message: str) -> DataValidationError:
        return DataValidationError(f"{self.label}: {message}")

    # -- declared names
    def check_declared(self) -> None:
        s = self.spec
        declared: list[tuple[str, str]] = [("target", s.target or "")]
        declared += [("id_column", s.id_column)] if s.id_column else []
        declared += [("group_column", s.group_column)] if s.group_column else []
        declared += [("categorical", c) for c in s.categorical]
        declared += [("numeric", c) for c in s.numeric]
        declared += [("drop", c) for c in s.drop]
        declared += [("zscore", c) for c in s.zscore or []]
        declared += [("missing", c) for c in s.missing]
        if s.target not in self.columns:
            raise self.fail(f"target column {s.target!r} not found; found columns {self.columns}")
        absent = [(k, c) for k, c in declared if c not in self.columns]
        if absent:
            what = ", ".join(f"{c!r} ({k})" for k, c in absent)
            raise self.fail(f"declared column(s) {what} not found; found columns {self.columns}")
        roles: dict[str, str] = {}
        for kind, name in declared:
            if kind in ("zscore", "missing"):
                continue
            if name in roles and roles[name] != kind:
                raise self.fail(
                    f"column {name!r} is declared both as {roles[name]} and as {kind}; "
                    "give each column one role"
                )
            roles[name] = kind
        if s.id_column is None and ROW_KEY in self.columns and ROW_KEY not in s.drop:
            raise self.fail(
                f"column {ROW_KEY!r} clashes with the row-number key used when there is no "
                "id column; declare it as the id column or drop it"
            )

    def check_cell_length(self, names: list[str]) -> None:
        limit = self.spec.max_cell_chars
        for name in names:
            lengths = self.frame[name].str.len().fillna(0).to_numpy()
            long = np.flatnonzero(lengths > limit)
            if len(long):
                pos = int(long[0])
                value = str(self.frame[name].iloc[pos])
                raise self.fail(
                    f"column {name!r} {row_label(pos)} has a cell of {len(value)} characters "
                    f"(starting {value[:40]!r}); at most {limit} are allowed "
                    "(max_cell_chars)"
                )

    # -- target
    def resolve_target(self) -> tuple[str, str, list[str], np.ndarray]:
        """Task, its reason, class order; also the mask of rows kept (target present)."""
        name = self.spec.target or ""
        target = self.frame[name]
        missing = _missing_rows(target)
        keep = target.notna().to_numpy()
        if len(missing) == len(target):
            raise self.fail(f"target column {name!r} is empty in every row")
        if len(missing):
            self.warn(
                f"{self.label}: {len(missing)} row(s) have no value in target column {name!r} and "
                f"are left out: {_rows_text(missing)}"
            )
        present = target[keep]
        values, bad = _numbers(present)
        numeric = not bad.any()
        positions = np.flatnonzero(keep)
        task, reason = self.task_of(name, numeric, values)
        if task == "regression":
            if not numeric:
                pos = int(positions[np.flatnonzero(bad)[0]])
                raise self.fail(
                    f"target column {name!r} {row_label(pos)} is {target.iloc[pos]!r}; "
                    "regression needs a number in every row"
                )
            self.check_finite(name, values, positions)
            return task, reason, [], keep
        if numeric:
            self.check_finite(name, values, positions)
            classes = [_class_text(v) for v in np.unique(values)]
        else:
            classes = sorted(present.unique().tolist())
            self.warn_case_twins(name, classes)
        if len(classes) < 2:
            raise self.fail(
                f"target column {name!r} has a single class {classes}; need at least 2 to classify"
            )
        return task, reason, classes, keep

    def task_of(self, name: str, numeric: bool, values: np.ndarray) -> tuple[str, str]:
        """The task, declared or inferred, and why: text or few integers are classes."""
        if self.spec.task != "auto":
            return self.spec.task, "declared"
        if not numeric:
            return "classification", f"inferred: target {name!r} is text"
        distinct = len(np.unique(values))
        integer = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
        if integer and distinct <= MAX_CLASSES_INFERRED:
            return "classification", (
                f"inferred: integer target with {distinct} distinct values "
                f"(<= {MAX_CLASSES_INFERRED})"
            )
        return "regression", "inferred: numeric target"

    def warn_case_twins(self, name: str, classes: list[str]) -> None:
        """Classes that differ only by case are kept apart, but the user should hear of it."""
        folded: dict[str, list[str]] = {}
        for c in classes:
            folded.setdefault(c.casefold(), []).append(c)
        for group in folded.values():
            if len(group) > 1:
                self.warn(
                    f"{self.label}: target column {name!r} has classes that differ only by "
                    f"case: {group}; they are kept apart"
                )

    def check_finite(self, name: str, values: np.ndarray, positions: np.ndarray) -> None:
        """Infinite numbers (inf, 1e400) would train on garbage: refuse them, naming rows."""
        infinite = np.flatnonzero(np.isinf(values))
        if len(infinite):
            raise self.fail(
                f"column {name!r} has non-finite numbers (inf, -inf or beyond float range) at "
                f"{_rows_text(positions[infinite])}; expected finite numbers"
            )


def resolve_spec(frame: pd.DataFrame, spec: DataSpec, label: str, warn: Warn) -> ResolvedSpec:
    """Decide every column's role and type from the declared spec plus the data, or refuse."""
    r = _Stages(frame, spec, label, warn)
    s = r.spec
    r.check_declared()
    special = [c for c in (s.target, s.id_column, s.group_column) if c]
    # roles: declared first, then inferred (the preset declares everything and ignores extras)
    dropped = r.declared_drops(special)
    candidates = [c for c in r.columns if c not in special and c not in dropped]
    r.check_cell_length([*special, *candidates])

    task, reason, classes, keep = r.resolve_target()
    positions = np.flatnonzero(keep)  # file positions of the rows kept
    kept = r.frame[keep].reset_index(drop=True)
    id_dtype = r.check_keys(kept, positions)
    numeric, categorical, parsed = r.split_types(kept, positions, candidates)
    r.drop_constant_numbers(numeric, parsed, dropped)
    r.report_stripped([s.target or "", *categorical])
    policies = r.missing_policies(kept, positions, numeric, categorical, special)
    vocabularies = r.vocabularies(kept, categorical, policies, dropped)
    zscore = r.zscore_columns(numeric, categorical)
    r.check_one_hot_names(categorical, vocabularies, dropped)
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
        n_rows=int(keep.sum()),
        excluded_target_rows=int((~keep).sum()),
        preset=r.preset,
        id_dtype=id_dtype,
        warnings=list(r.notes),
    )


class _Stages(_Resolver):
    """resolve_spec's stages, in the order a user would want to fix what they find."""

    def declared_drops(self, special: list[str]) -> dict[str, str]:
        """Columns dropped by declaration (or, for the preset, by not being in its schema)."""
        s = self.spec
        dropped: dict[str, str] = {c: "declared in drop" for c in s.drop}
        if self.preset is not None:
            known = {*special, *s.categorical, *s.numeric}
            extra = [c for c in self.columns if c not in known]
            if extra:
                self.warn(f"{self.label}: ignoring unknown column(s) {extra}")
            dropped.update({c: f"not in the {self.preset} schema" for c in extra})
        return dropped

    def check_keys(self, kept: pd.DataFrame, positions: np.ndarray) -> Literal["int64", "string"]:
        """Ids present and unique, groups present; ids stay int64 only when exact."""
        s = self.spec
        if s.group_column:
            groups = kept[s.group_column]
            if groups.isna().any():
                pos = int(positions[_missing_rows(groups)[0]])
                raise self.fail(
                    f"group column {s.group_column!r} {row_label(pos)} is empty; "
                    "groups are required"
                )
        if not s.id_column:
            return "string"
        ids = kept[s.id_column]
        if ids.isna().any():
            pos = int(positions[_missing_rows(ids)[0]])
            raise self.fail(
                f"id column {s.id_column!r} {row_label(pos)} is empty; every row needs an id"
            )
        dup = ids.duplicated(keep=False).to_numpy()
        if dup.any():
            first = int(np.flatnonzero(dup)[0])
            twins = np.flatnonzero((ids == ids.iloc[first]).to_numpy())[:2]
            raise self.fail(
                f"id column {s.id_column!r} value {ids.iloc[first]!r} is duplicated "
                f"({', '.join(row_label(int(positions[p])) for p in twins)}); ids must be unique"
            )
        return "int64" if _fits_int64(ids) else "string"

    def split_types(
        self, kept: pd.DataFrame, positions: np.ndarray, candidates: list[str]
    ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
        """Numeric and categorical feature columns (declared, else inferred), numbers parsed."""
        s = self.spec
        numeric: list[str] = []
        categorical: list[str] = []
        parsed: dict[str, np.ndarray] = {}
        # file order, except the preset: its declared order is today's feature order
        order = [*s.numeric, *s.categorical] if self.preset is not None else candidates
        for name in order:
            column = kept[name]
            if column.isna().all():
                raise self.fail(f"column {name!r} is empty in every row; drop it or fill it in")
            if name in s.categorical:
                categorical.append(name)
                continue
            values, bad = _numbers(column)
            if name in s.numeric and bad.any():
                pos = int(positions[np.flatnonzero(bad)[0]])
                raise self.fail(
                    f"column {name!r} {row_label(pos)} has non-numeric value "
                    f"{column.iloc[np.flatnonzero(bad)[0]]!r}; expected a number"
                )
            if bad.any():
                categorical.append(name)
                continue
            self.check_finite(name, values, positions)
            numeric.append(name)
            parsed[name] = values
        return numeric, categorical, parsed

    def drop_constant_numbers(
        self, numeric: list[str], parsed: dict[str, np.ndarray], dropped: dict[str, str]
    ) -> None:
        """Constant numeric columns carry nothing and would divide by zero when scaled."""
        for name in list(numeric):
            present = parsed[name][~np.isnan(parsed[name])]
            if present.min() == present.max():
                numeric.remove(name)
                dropped[name] = f"constant (every value is {_class_text(present[0])})"
                self.warn(
                    f"{self.label}: dropping column {name!r}: it is constant ({present[0]:g})"
                )

    def report_stripped(self, columns: list[str]) -> None:
        """Labels and categories: say how many cells lost surrounding whitespace."""
        stripped = {c: n for c, n in self.stripped.items() if c in columns}
        if stripped:
            self.warn(
                f"{self.label}: stripped surrounding whitespace from {sum(stripped.values())} "
                f"cell(s) ({', '.join(f'{c!r}: {n}' for c, n in stripped.items())})"
            )

    def missing_policies(
        self,
        kept: pd.DataFrame,
        positions: np.ndarray,
        numeric: list[str],
        categorical: list[str],
        special: list[str],
    ) -> dict[str, str]:
        """Each feature column's missing-value policy, checked against its kind and its gaps."""
        s = self.spec
        not_features = [c for c in s.missing if c in special]
        if not_features:
            raise self.fail(
                f"missing-value policy given for {not_features}, which is the target, id or "
                "group column; policies apply to feature columns only"
            )
        policies = {name: s.missing.get(name, s.numeric_missing) for name in numeric}
        policies.update({name: s.missing.get(name, s.categorical_missing) for name in categorical})
        for name, policy in policies.items():
            allowed = ("median", "error") if name in numeric else ("missing", "error")
            if policy not in allowed:
                kind = "numeric" if name in numeric else "categorical"
                raise self.fail(
                    f"column {name!r} is {kind}; missing-value policy {policy!r} does not apply "
                    f"(use one of {list(allowed)})"
                )
            holes = _missing_rows(kept[name])
            if policy == "error" and len(holes):
                raise self.fail(
                    f"column {name!r} {row_label(int(positions[holes[0]]))} is empty; "
                    "its missing-value policy is 'error'"
                )
        return policies

    def vocabularies(
        self,
        kept: pd.DataFrame,
        categorical: list[str],
        policies: dict[str, str],
        dropped: dict[str, str],
    ) -> dict[str, list[str]]:
        """Each categorical column's levels; identifiers and constants dropped, giants refused."""
        vocabularies: dict[str, list[str]] = {}
        for name in list(categorical):
            column = kept[name]
            levels = self.levels(name, column)
            if levels is None or (len(levels) < 2 and self.preset is None):
                why = "identifier" if levels is None else "constant"
                categorical.remove(name)
                del policies[name]
                if why == "constant":
                    dropped[name] = f"constant (every value is {levels[0]!r})"
                    self.warn(f"{self.label}: dropping column {name!r}: it is constant")
                else:
                    dropped[name] = f"text with {column.nunique()} distinct values"
                continue
            if policies[name] == "missing" and column.isna().any():
                if MISSING_LEVEL in levels:
                    self.warn(
                        f"{self.label}: column {name!r} already has a value {MISSING_LEVEL!r}; "
                        "its empty cells join that level"
                    )
                levels = sorted({*levels, MISSING_LEVEL})
            vocabularies[name] = levels
        return vocabularies

    def levels(self, name: str, column: pd.Series) -> list[str] | None:
        """The sorted levels; None for text that looks like an identifier (dropped)."""
        s = self.spec
        levels = sorted(column.dropna().unique().tolist())
        n_present = int(column.notna().sum())
        if (
            name not in s.categorical
            and len(levels) > FREE_TEXT_MIN_LEVELS
            and len(levels) > DISTINCT_SHARE_DROPPED * n_present
        ):
            self.warn(
                f"{self.label}: dropping column {name!r}: {len(levels)} distinct values in "
                f"{n_present} rows looks like an identifier or free text"
            )
            return None
        if len(levels) <= s.max_categories:
            return levels
        raise self.fail(
            f"column {name!r} has {len(levels)} distinct values, more than max_categories="
            f"{s.max_categories}; use --drop {name} or, if it holds numbers, --numeric {name}"
        )

    def zscore_columns(self, numeric: list[str], categorical: list[str]) -> list[str]:
        """The declared subset to z-score, or every numeric column."""
        s = self.spec
        if s.scaling == "none":
            return []
        if s.zscore is None:
            return list(numeric)
        wrong = [c for c in s.zscore if c in categorical]
        if wrong:
            raise self.fail(
                f"zscore column(s) {wrong} are categorical; only numbers can be z-scored"
            )
        return [c for c in numeric if c in s.zscore]

    def check_one_hot_names(
        self, categorical: list[str], vocabularies: dict[str, list[str]], dropped: dict[str, str]
    ) -> None:
        """One-hot names must not collide with real columns or with each other."""
        owners = {
            c: f"column {c!r}" for c in self.columns if c not in categorical and c not in dropped
        }
        for name in categorical:
            for value in vocabularies[name]:
                dummy = f"{name}_{value}"
                if dummy in owners:
                    raise self.fail(
                        f"one-hot column {dummy!r} for column {name!r} value {value!r} "
                        f"collides with {owners[dummy]}; rename one of them or --drop one"
                    )
                owners[dummy] = f"the one-hot column of column {name!r} value {value!r}"


def _key_column(kept: pd.DataFrame, positions: np.ndarray, resolved: ResolvedSpec) -> Any:
    """The id exactly as written (int64 when it fits, else text), or the file row number."""
    if resolved.id_column is None:
        return positions.astype("int64")
    if resolved.id_dtype == "int64":
        return np.array([int(v) for v in kept[resolved.id_column]], dtype="int64")
    return kept[resolved.id_column].astype("string")


def _target_column(
    target: pd.Series, positions: np.ndarray, resolved: ResolvedSpec, label: str
) -> Any:
    """Regression targets as float64; class labels as the canonical text of resolve_spec."""
    values, bad = _numbers(target)
    if resolved.task == "regression":
        if bad.any():
            pos = int(positions[np.flatnonzero(bad)[0]])
            raise DataValidationError(
                f"{label}: target column {resolved.target!r} {row_label(pos)} is not a number"
            )
        return values
    if not bad.any():  # numeric labels: the same canonical text as resolve_spec's classes
        return pd.Series([_class_text(v) for v in values], dtype="string")
    return target.astype("string")


def typed_table(frame: pd.DataFrame, resolved: ResolvedSpec, label: str) -> pd.DataFrame:
    """The validated table to cache: key, target, numbers as float64, categories as text."""
    clean, _ = _normalise(frame)
    missing_cols = [
        c
        for c in (resolved.target, resolved.id_column, resolved.group_column,
                  *resolved.numeric, *resolved.categorical)
        if c and c not in clean.columns
    ]  # fmt: skip
    if missing_cols:
        raise DataValidationError(
            f"{label}: column(s) {missing_cols} not found; found columns {list(clean.columns)}"
        )
    keep = clean[resolved.target].notna().to_numpy()
    positions = np.flatnonzero(keep)
    kept = clean[keep].reset_index(drop=True)
    out: dict[str, Any] = {resolved.key: _key_column(kept, positions, resolved)}
    out[resolved.target] = _target_column(kept[resolved.target], positions, resolved, label)
    for name in resolved.numeric:
        values, bad = _numbers(kept[name])
        if bad.any():
            pos = int(positions[np.flatnonzero(bad)[0]])
            raise DataValidationError(
                f"{label}: column {name!r} {row_label(pos)} has non-numeric value "
                f"{kept[name].iloc[int(np.flatnonzero(bad)[0])]!r}; expected a number"
            )
        out[name] = values
    for name in resolved.categorical:
        column = kept[name].astype("string")
        if resolved.missing_policy.get(name) == "missing":
            column = column.fillna(MISSING_LEVEL)
        out[name] = column
    if resolved.group_column:
        out[resolved.group_column] = kept[resolved.group_column].astype("string")
    return pd.DataFrame(out)


def target_labels(table: pd.DataFrame, resolved: ResolvedSpec) -> np.ndarray | None:
    """The class label of each row, for stratified splits (None for regression)."""
    if resolved.task != "classification":
        return None
    return table[resolved.target].astype(str).to_numpy()


__all__ = [
    "DataSpec",
    "ResolvedSpec",
    "declared_spec",
    "detect_format",
    "expand_preset",
    "preset_spec",
    "read_table",
    "resolve_spec",
    "row_label",
    "sniff_delimiter",
    "target_labels",
    "typed_table",
]
