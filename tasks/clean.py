"""Validate the raw table against its DataSpec once, cached as typed Parquet by content and spec.

The cached table holds the key, the target and every feature column in its own type (numbers
as float64 with their gaps, categories as text); medians, z-scores and one-hot columns are
fitted later, on each fold's training rows or on the whole table (`tasks/preprocess.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.config import stable_hash
from tasks.data.features import describe_filled
from tasks.data.read import read_table
from tasks.data.spec import DataSpec, ResolvedSpec
from tasks.data.table import resolve_table
from tasks.logs import run_logger
from tasks.outputs import write_atomic

# Bump when the validation or the cached table's layout changes: every cache is then rebuilt.
# clean-v2: a typed table per (content, DataSpec); preprocessing moved into the fold tasks.
# clean-v3: undeclared text that is nearly all distinct is dropped at any number of levels.
# clean-v4: undeclared date columns are dropped (as dates), not typed as categories or text;
# and the data key is the typed table's content plus the decisions that shape training
# (not the raw bytes and the declared spec), so equal tables share folds; missing-cell counts.
CLEAN_VERSION = "clean-v4"
# ResolvedSpec fields that say why or what was left out, not what trains: not in the data key.
_NOT_IN_DATA_KEY = ("task_reason", "dropped", "warnings")
METADATA_KEY = b"foldflow"


@dataclass(frozen=True)
class CleanedData:
    """A handle to the cleaned table: small enough to pass to every fold and hash cheaply."""

    path: str
    data_key: str
    raw_sha256: str
    n_rows: int
    spec_json: str  # the ResolvedSpec as JSON: hashable, and readable without the table

    @cached_property
    def spec(self) -> ResolvedSpec:
        """Every decision about the table: roles, types, vocabularies, classes, scope."""
        return ResolvedSpec.from_dict(json.loads(self.spec_json))

    @property
    def features(self) -> tuple[str, ...]:
        """The model's input columns, in order."""
        return tuple(self.spec.features())

    @property
    def classes(self) -> tuple[str, ...]:
        """The class labels in output order (empty for regression)."""
        return tuple(self.spec.classes)


def spec_key(spec: DataSpec) -> str:
    """12 hex digits naming the declared spec: a new spec is a new cleaned table."""
    return stable_hash(spec.model_dump(mode="json"), 12)


def cache_path(cache_dir: str, raw_sha256: str, spec: DataSpec) -> Path:
    """Where the cleaned table for this raw content and spec lives."""
    return Path(cache_dir) / "cleaned" / f"{raw_sha256}-{spec_key(spec)}-{CLEAN_VERSION}.parquet"


def content_key(table: pd.DataFrame, resolved: ResolvedSpec) -> str:
    """Name the typed table by its cells and the decisions that shape training, not its file.

    The same rows from a CSV or a Parquet file, or under an inferred spec and the same spec
    declared (`foldflow inspect`), give the same key, so they share cached folds.
    """
    cells = pd.util.hash_pandas_object(table, index=False).to_numpy()
    decisions = {k: v for k, v in resolved.to_dict().items() if k not in _NOT_IN_DATA_KEY}
    payload = {
        "columns": [[str(c), str(t)] for c, t in table.dtypes.items()],
        "cells": hashlib.sha256(cells.tobytes()).hexdigest(),
        "spec": decisions,
    }
    return f"{stable_hash(payload, 32)}-{CLEAN_VERSION}"


def _handle(path: Path, raw_sha256: str, meta: dict[str, Any]) -> CleanedData:
    return CleanedData(
        path=str(path),
        data_key=meta["data_key"],
        raw_sha256=raw_sha256,
        n_rows=int(meta["n_rows"]),
        spec_json=json.dumps(meta["spec"], sort_keys=True),
    )


def _read_cached(path: Path) -> dict[str, Any] | None:
    """The metadata of a cached file, if it is a complete Parquet file written by this version."""
    if not path.exists():
        return None
    try:
        meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
        table = pq.read_table(path)  # reads every page: a truncated file fails here
        if meta["clean_version"] != CLEAN_VERSION or table.num_rows != meta["n_rows"]:
            return None
    except Exception:  # noqa: BLE001 - any damage means "rebuild", the reason is logged
        return None
    return meta


def describe_spec(spec: ResolvedSpec) -> list[str]:
    """The resolved spec in a few lines, for the log and the UI."""
    lines = [
        f"task: {spec.task} ({spec.task_reason}); target {spec.target!r}",
        f"key: {spec.key!r}; preprocessing fitted "
        + ("on each fold's training rows (fold scope)" if spec.scope == "fold"
           else "on the whole table (global scope, as the notebook)"),
        f"numeric: {spec.numeric} (z-scored: {spec.zscore})",
        f"categorical: {spec.categorical}",
    ]
    if spec.group_column:
        lines.append(f"group column: {spec.group_column!r} (a group's rows share a fold; "
                     "never a feature)")  # fmt: skip
    if spec.classes:
        lines.append(f"classes: {spec.classes}")
    if spec.dropped:
        lines.append("dropped: " + "; ".join(f"{c} ({why})" for c, why in spec.dropped.items()))
    filled = describe_filled(spec.missing_filled)
    if filled:
        lines.append(filled)
    if spec.excluded_target_rows:
        lines.append(f"rows without a target, left out: {spec.excluded_target_rows}")
    return lines


def publish_spec(spec: ResolvedSpec, source: str) -> None:
    """A `data-spec` markdown artifact: what foldflow decided about the table, and why."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return
    body = "\n".join(f"- {line}" for line in describe_spec(spec))
    create_markdown_artifact(
        markdown=f"# Data spec of `{source}`\n\n{body}\n", key="data-spec", description="Data spec"
    )


@task(name="clean", task_run_name="clean", retries=0)
def clean_to_parquet(
    raw_path: str, raw_sha256: str, cache_dir: str, spec: DataSpec, source: str | None = None
) -> CleanedData:
    """Validate once per distinct (content, spec); later runs reuse the cached Parquet file."""
    logger = run_logger()
    downloads = Path(cache_dir.removeprefix("file://")).expanduser().resolve() / "downloads"
    fetched = Path(raw_path).resolve().is_relative_to(downloads)  # a local file is read in place
    label = f"{source} (downloaded to {raw_path})" if fetched and source else source or raw_path
    target = cache_path(cache_dir, raw_sha256, spec)
    meta = _read_cached(target)
    if meta is not None:
        logger.info("Reusing cleaned data %s (raw sha256 %s)", target, raw_sha256[:12])
    else:
        if target.exists():
            logger.warning("Cached file %s is unreadable or stale; rebuilding it", target)
        frame = read_table(raw_path, label, spec)
        resolved, table_df = resolve_table(frame, spec, label, logger.warning)
        meta = {
            "clean_version": CLEAN_VERSION,
            "raw_sha256": raw_sha256,
            "n_rows": len(table_df),
            "spec": resolved.to_dict(),
            "data_key": content_key(table_df, resolved),
        }
        table = pa.Table.from_pandas(table_df, preserve_index=False)
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
        write_atomic(target, lambda tmp: pq.write_table(table, tmp))
        logger.info("Cleaned %s: %d rows -> %s", label, len(table_df), target)
    data = _handle(target, raw_sha256, meta)
    for line in describe_spec(data.spec):
        logger.info("data spec: %s", line)
    publish_spec(data.spec, source or raw_path)
    return data


def load_table(data: CleanedData) -> pd.DataFrame:
    """The cleaned table, in file order (one read per worker: see tasks/train.py)."""
    return pd.read_parquet(data.path)
