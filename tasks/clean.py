"""Clean the raw CSV exactly as the T81-558 5.3 notebook does, cached as Parquet by content."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.errors import DataValidationError
from tasks.logs import run_logger
from tasks.outputs import write_atomic

# Bump when the cleaning below changes: every cached Parquet file is then rebuilt.
CLEAN_VERSION = "clean-v1"

ID, TARGET = "id", "product"
CATEGORICAL = ("job", "area")
NUMERIC = (
    "income", "aspect", "subscriptions", "dist_healthy", "save_rate",
    "dist_unhealthy", "age", "pop_dense", "retail_dense", "crime",
)  # fmt: skip
ZSCORED = ("income", "aspect", "save_rate", "age", "subscriptions")
REQUIRED = (ID, *CATEGORICAL, *NUMERIC, TARGET)
NA_VALUES = ["NA", "?"]
METADATA_KEY = b"foldflow"


@dataclass(frozen=True)
class CleanedData:
    """A handle to the cleaned table: small enough to pass to every fold and hash cheaply."""

    path: str
    data_key: str
    raw_sha256: str
    n_rows: int
    features: tuple[str, ...]
    classes: tuple[str, ...]
    reused: bool = False


def read_raw_csv(path: str, label: str | None = None) -> pd.DataFrame:
    """Read the CSV as the notebook does; parser failures become errors naming the file."""
    label = label or path
    try:
        frame = pd.read_csv(
            path,
            na_values=NA_VALUES,
            dtype={ID: "string", "job": "string", "area": "string", TARGET: "string"},
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            f"{label}: the file is empty; expected a CSV with a header row"
        ) from None
    except UnicodeDecodeError:
        blob = Path(path).read_bytes()  # pandas reports offsets within its read chunk
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError as err:
            line = blob.count(b"\n", 0, err.start) + 1
            raise DataValidationError(
                f"{label}: not valid UTF-8 at byte {err.start} (line {line}, "
                f"{blob[err.start : err.start + 1]!r}); save the file as UTF-8"
            ) from None
        raise
    except pd.errors.ParserError as err:
        raise DataValidationError(f"{label}: malformed CSV: {err}") from err
    return frame


def _row_label(frame: pd.DataFrame, position: int) -> str:
    """Name a row the way a user finds it in the file: data row and line number."""
    return f"row {position + 1} (line {position + 2})"


def validate_raw(frame: pd.DataFrame, path: str, logger=None) -> pd.DataFrame:
    """Check the schema before cleaning so a bad file fails with the column and row at fault."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{path}: missing required column(s) {missing}; found {list(frame.columns)}"
        )
    extra = [c for c in frame.columns if c not in REQUIRED]
    if extra and logger is not None:
        logger.warning("%s: ignoring unknown column(s) %s", path, extra)
    if frame.empty:
        raise DataValidationError(f"{path}: header only, no data rows")

    out = frame[list(REQUIRED)].copy()
    for column in (ID, *NUMERIC):
        raw = out[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = numbers.isna() & raw.notna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataValidationError(
                f"{path}: column {column!r} {_row_label(out, pos)} has non-numeric value "
                f"{raw.iloc[pos]!r}; expected a number"
            )
        if column != "income" and numbers.isna().any():
            pos = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise DataValidationError(
                f"{path}: column {column!r} {_row_label(out, pos)} is empty; "
                "only 'income' may have missing values"
            )
        out[column] = numbers.astype("float64")

    ids = out[ID]
    if (ids != ids.round()).any():
        pos = int(np.flatnonzero((ids != ids.round()).to_numpy())[0])
        raise DataValidationError(
            f"{path}: column 'id' {_row_label(out, pos)} is {ids.iloc[pos]}; expected an integer"
        )
    out[ID] = ids.astype("int64")
    duplicated = out[ID].duplicated(keep=False)
    if duplicated.any():
        positions = np.flatnonzero(duplicated.to_numpy())[:2]
        raise DataValidationError(
            f"{path}: column 'id' value {out[ID].iloc[positions[0]]} is duplicated "
            f"({', '.join(_row_label(out, int(p)) for p in positions)}); ids must be unique"
        )

    target = out[TARGET]
    if target.isna().any():
        pos = int(np.flatnonzero(target.isna().to_numpy())[0])
        raise DataValidationError(
            f"{path}: column {TARGET!r} {_row_label(out, pos)} is empty; every row needs a label"
        )
    classes = sorted(target.unique())
    if len(classes) < 2:
        raise DataValidationError(
            f"{path}: column {TARGET!r} has a single class {classes}; need at least 2 to classify"
        )
    if out["income"].isna().all():
        raise DataValidationError(f"{path}: column 'income' is empty in every row")
    return out


def clean_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The notebook's cleaning, step for step; returns (table, feature columns, classes)."""
    from scipy.stats import zscore  # imported here: fold workers never clean

    df = frame.copy()
    for column in CATEGORICAL:
        dummies = pd.get_dummies(df[column], prefix=column, dtype="float64")
        df = pd.concat([df, dummies], axis=1).drop(columns=column)
    df["income"] = df["income"].fillna(df["income"].median())
    for column in ZSCORED:
        df[column] = zscore(df[column].to_numpy(dtype="float64"))  # population std, ddof=0
    features = [c for c in df.columns if c not in (ID, TARGET)]
    classes = sorted(df[TARGET].unique())
    return df[[ID, TARGET, *features]], features, classes


def cache_path(cache_dir: str, raw_sha256: str) -> Path:
    """Where the cleaned table for this raw content lives."""
    return Path(cache_dir) / "cleaned" / f"{raw_sha256}-{CLEAN_VERSION}.parquet"


def _read_cached(path: Path, raw_sha256: str) -> CleanedData | None:
    """Trust a cached file only if it is a readable Parquet file written by this version."""
    if not path.exists():
        return None
    try:
        meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
        table = pq.read_table(path)  # reads every page: a truncated file fails here
        if meta["clean_version"] != CLEAN_VERSION or table.num_rows != meta["n_rows"]:
            return None
    except Exception:  # noqa: BLE001 - any damage means "rebuild", the reason is logged
        return None
    return CleanedData(
        path=str(path),
        data_key=f"{raw_sha256}-{CLEAN_VERSION}",
        raw_sha256=raw_sha256,
        n_rows=meta["n_rows"],
        features=tuple(meta["features"]),
        classes=tuple(meta["classes"]),
        reused=True,
    )


@task(name="clean", task_run_name="clean", retries=0)
def clean_to_parquet(
    raw_path: str, raw_sha256: str, cache_dir: str, source: str | None = None
) -> CleanedData:
    """Clean once per distinct raw content; later runs reuse the cached Parquet file."""
    logger = run_logger()
    target = cache_path(cache_dir, raw_sha256)
    cached = _read_cached(target, raw_sha256)
    if cached is not None:
        logger.info("Reusing cleaned data %s (raw sha256 %s)", target, raw_sha256[:12])
        return cached
    if target.exists():
        logger.warning("Cached file %s is unreadable or stale; rebuilding it", target)

    label = raw_path if source in (None, raw_path) else f"{source} (downloaded to {raw_path})"
    frame = validate_raw(read_raw_csv(raw_path, label), label, logger)
    table_df, features, classes = clean_frame(frame)
    table = pa.Table.from_pandas(table_df, preserve_index=False)
    meta = {
        "clean_version": CLEAN_VERSION,
        "raw_sha256": raw_sha256,
        "n_rows": len(table_df),
        "features": features,
        "classes": classes,
    }
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    write_atomic(target, lambda tmp: pq.write_table(table, tmp))
    logger.info(
        "Cleaned %s: %d rows, %d features, %d classes -> %s",
        raw_path, len(table_df), len(features), len(classes), target,
    )  # fmt: skip
    return CleanedData(
        path=str(target),
        data_key=f"{raw_sha256}-{CLEAN_VERSION}",
        raw_sha256=raw_sha256,
        n_rows=len(table_df),
        features=tuple(features),
        classes=tuple(classes),
    )


def load_xy(data: CleanedData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the cleaned table into (ids, x float32, y one-hot float32) in file order."""
    frame = pd.read_parquet(data.path)
    x = frame[list(data.features)].to_numpy(dtype="float32")
    labels = pd.Categorical(frame[TARGET], categories=list(data.classes))
    y = np.eye(len(data.classes), dtype="float32")[labels.codes]
    return frame[ID].to_numpy(dtype="int64"), x, y
