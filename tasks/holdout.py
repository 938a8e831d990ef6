"""The holdout of a search: rows set aside before any trial, for one honest score at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from prefect import task

from tasks.clean import CleanedData
from tasks.config import stable_hash
from tasks.errors import DataValidationError
from tasks.folds import FoldSpec
from tasks.outputs import write_atomic


@dataclass(frozen=True)
class HoldoutSplit:
    """The search's own table (the rows trials see) and the holdout as a fold of the full table.

    `final` tests on the holdout rows and trains on every other row: the best config refit on
    the search rows and scored once on rows the search never saw.
    """

    search: CleanedData
    final: FoldSpec

    @property
    def holdout_positions(self) -> np.ndarray:
        """Positions of the holdout rows in the full cleaned table."""
        return self.final.test_positions


def holdout_positions(
    n_rows: int, fraction: float, seed: int, labels: np.ndarray | None
) -> np.ndarray:
    """Sorted positions of the holdout rows: stratified by class when labels are given."""
    from sklearn.model_selection import train_test_split

    try:
        _, held = train_test_split(
            np.arange(n_rows), test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError as err:  # e.g. a class with a single row cannot be stratified
        raise DataValidationError(f"a {fraction:g} holdout cannot be split off: {err}") from err
    return np.sort(np.asarray(held, dtype=np.int64))


@task(name="split-holdout", task_run_name="split-holdout")
def split_holdout(data: CleanedData, fraction: float, seed: int, n_folds: int) -> HoldoutSplit:
    """Set the holdout aside; the search rows become their own cleaned table (cached by key)."""
    spec = data.spec
    table = pq.read_table(data.path)
    labels = None
    if spec.task == "classification":
        labels = np.asarray(table.column(spec.target).to_pylist(), dtype=str)
    held = holdout_positions(data.n_rows, fraction, seed, labels)
    keep = np.setdiff1d(np.arange(data.n_rows), held)
    if len(keep) < n_folds:
        raise DataValidationError(
            f"{len(keep)} search rows after a {fraction:g} holdout cannot be split into "
            f"{n_folds} folds"
        )
    tag = stable_hash([data.data_key, fraction, seed], 12)
    path = data.path.removesuffix(".parquet") + f"-search-{tag}.parquet"
    search = table.take(keep)
    write_atomic(Path(path), lambda tmp: pq.write_table(search, tmp))
    handle = CleanedData(
        path=path,
        data_key=f"{data.data_key}-search-{tag}",
        raw_sha256=data.raw_sha256,
        n_rows=len(keep),
        spec_json=data.spec_json,
    )
    return HoldoutSplit(search=handle, final=FoldSpec(1, 1, data.n_rows, held))

