"""Plan the k folds once, upstream, so every fold task (and every config) sees the same split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prefect import task

from tasks.clean import TARGET, CleanedData
from tasks.config import stable_hash
from tasks.errors import DataValidationError


@dataclass(frozen=True)
class FoldSpec:
    """One fold: its 1-based number and the positions of its test rows in the cleaned table."""

    index: int
    n_folds: int
    n_rows: int
    test_positions: np.ndarray

    def train_positions(self) -> np.ndarray:
        """Every row not in this fold's test set."""
        mask = np.ones(self.n_rows, dtype=bool)
        mask[self.test_positions] = False
        return np.flatnonzero(mask)

    def assignment_hash(self) -> str:
        """Identifies the row assignment, for the fold's cache key."""
        return stable_hash([self.n_rows, self.test_positions.tolist()], 16)

    @property
    def name(self) -> str:
        """The task-run name shown in the UI."""
        return f"fold-{self.index}"


def split_folds(
    n_rows: int, n_folds: int, shuffle: bool, seed: int, labels: np.ndarray | None = None
) -> list[FoldSpec]:
    """KFold (or StratifiedKFold when labels are given), checked to be a partition of the rows."""
    from sklearn.model_selection import KFold, StratifiedKFold  # not needed by fold workers

    if n_rows < n_folds:
        raise DataValidationError(f"{n_rows} rows cannot be split into {n_folds} folds")
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        rare = [(str(v), int(c)) for v, c in zip(values, counts) if c < n_folds]
        if rare:
            raise DataValidationError(
                f"stratified {n_folds}-fold needs every class at least {n_folds} times; "
                + ", ".join(f"class {v!r} has {c}" for v, c in rare)
            )
        splitter = StratifiedKFold(n_folds, shuffle=shuffle, random_state=seed if shuffle else None)
        splits = splitter.split(np.zeros(n_rows), labels)
    else:
        splitter = KFold(n_folds, shuffle=shuffle, random_state=seed if shuffle else None)
        splits = splitter.split(np.zeros(n_rows))
    folds = [
        FoldSpec(i, n_folds, n_rows, np.asarray(test, dtype=np.int64))
        for i, (_, test) in enumerate(splits, start=1)
    ]
    check_partition([f.test_positions for f in folds], n_rows)
    return folds


def check_partition(test_sets: list[np.ndarray], n_rows: int) -> None:
    """Every row in exactly one test set, or a clear error."""
    counts = np.bincount(np.concatenate(test_sets), minlength=n_rows) if test_sets else None
    if counts is None or len(counts) != n_rows or not (counts == 1).all():
        raise ValueError(f"fold test sets are not a partition of {n_rows} rows")


@task(name="plan-folds", task_run_name="plan-folds")
def plan_folds(
    data: CleanedData,
    n_folds: int,
    shuffle: bool,
    seed: int,
    stratified: bool = False,
    source: str | None = None,
) -> list[FoldSpec]:
    """Compute the split once so folds are identical across runs, runners and configs."""
    labels = None
    if stratified:
        labels = pd.read_parquet(data.path, columns=[TARGET])[TARGET].to_numpy()
    try:
        return split_folds(data.n_rows, n_folds, shuffle, seed, labels)
    except DataValidationError as err:
        raise DataValidationError(f"{source or data.path}: {err}") from err
