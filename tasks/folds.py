"""Plan the k folds once, upstream, so every fold task (and every config) sees the same split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from prefect import task

from tasks.clean import CleanedData
from tasks.config import stable_hash
from tasks.data.cells import fits_int64
from tasks.errors import DataValidationError
from tasks.logs import run_logger

Splitter = Literal["kfold", "stratified", "group", "repeated"]


@dataclass(frozen=True)
class FoldSpec:
    """One fold: its 1-based number (within its repeat) and its test rows in the cleaned table."""

    index: int
    n_folds: int
    n_rows: int
    test_positions: np.ndarray
    repeat: int = 0  # 0 when not repeated; 1..R for repeated k-fold

    def train_positions(self) -> np.ndarray:
        """Every row not in this fold's test set."""
        mask = np.ones(self.n_rows, dtype=bool)
        mask[self.test_positions] = False
        return np.flatnonzero(mask)

    def assignment_hash(self) -> str:
        """Identifies the row assignment, for the fold's cache key (unchanged by `repeat`)."""
        return stable_hash([self.n_rows, self.test_positions.tolist()], 16)

    @property
    def label(self) -> str:
        """The task-run name in the UI: fold-3, fold-2.3 (fold 3 of repeat 2), full (a refit)."""
        if self.index == 0:
            return "full"  # index 0, no test rows: the refit on every row (`full_fold`)
        return f"fold-{self.repeat}.{self.index}" if self.repeat else f"fold-{self.index}"


def full_fold(n_rows: int, n_folds: int) -> FoldSpec:
    """The refit as a fold: number 0, every row trains, none is tested (label 'full').

    The same task, cache key, retries and runner as a fold, so it is cached and retried
    exactly like one.
    """
    return FoldSpec(0, n_folds, n_rows, np.empty(0, dtype=np.int64))


def _check_classes(labels: np.ndarray, n_folds: int) -> None:
    """Stratification needs every class in every fold: refuse a class rarer than the folds."""
    values, counts = np.unique(labels, return_counts=True)
    rare = [(str(v), int(c)) for v, c in zip(values, counts) if c < n_folds]
    if rare:
        raise DataValidationError(
            f"stratified {n_folds}-fold needs every class at least {n_folds} times; "
            + ", ".join(f"class {v!r} has {c}" for v, c in rare)
        )


def split_folds(
    n_rows: int,
    n_folds: int,
    shuffle: bool,
    seed: int,
    labels: np.ndarray | None = None,
    splitter: Splitter | None = None,
    groups: np.ndarray | None = None,
    repeats: int = 1,
    group_column: str = "group",
) -> list[FoldSpec]:
    """Plan the folds (KFold, StratifiedKFold, GroupKFold or repeated), checked to partition rows.

    `splitter=None` keeps the original behaviour: stratified when labels are given, else KFold.
    Repeated k-fold always shuffles (with `seed`), stratified when labels are given.
    """
    if splitter is None:
        splitter = "stratified" if labels is not None else "kfold"
    if n_rows < n_folds:
        raise DataValidationError(f"{n_rows} rows cannot be split into {n_folds} folds")
    if splitter == "repeated":
        return _repeated_folds(n_rows, n_folds, seed, labels, repeats)
    test_sets = _test_sets(n_rows, n_folds, shuffle, seed, labels, splitter, groups, group_column)
    folds = [FoldSpec(i, n_folds, n_rows, test) for i, test in enumerate(test_sets, start=1)]
    check_partition([f.test_positions for f in folds], n_rows)
    if splitter == "group":
        check_groups_intact([f.test_positions for f in folds], groups, group_column)
    return folds


def _test_sets(
    n_rows: int,
    n_folds: int,
    shuffle: bool,
    seed: int,
    labels: np.ndarray | None,
    splitter: Splitter,
    groups: np.ndarray | None,
    group_column: str,
) -> list[np.ndarray]:
    """Each fold's test rows from scikit-learn's KFold, StratifiedKFold or GroupKFold."""
    from sklearn import model_selection as ms  # not needed by fold workers

    state = seed if shuffle else None
    x = np.zeros(n_rows)
    if splitter == "stratified":
        if labels is None:
            raise ValueError("stratified splitting needs labels")
        _check_classes(labels, n_folds)
        splits = ms.StratifiedKFold(n_folds, shuffle=shuffle, random_state=state).split(x, labels)
    elif splitter == "kfold":
        splits = ms.KFold(n_folds, shuffle=shuffle, random_state=state).split(x)
    elif splitter == "group":
        if groups is None:
            raise ValueError("group splitting needs groups")
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise DataValidationError(
                f"group column {group_column!r} has {n_groups} distinct group(s); "
                f"{n_folds}-fold group splitting needs at least {n_folds}"
            )
        splits = _group_kfold(n_folds, shuffle, seed).split(x, groups=groups)
    else:
        raise ValueError(f"unknown splitter {splitter!r}")
    return [np.asarray(test, dtype=np.int64) for _, test in splits]


def _repeated_folds(
    n_rows: int, n_folds: int, seed: int, labels: np.ndarray | None, repeats: int
) -> list[FoldSpec]:
    """Repeated (stratified when labels are given) k-fold, a checked partition per repeat."""
    from sklearn import model_selection as ms

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if labels is not None:
        _check_classes(labels, n_folds)
        kind = ms.RepeatedStratifiedKFold
    else:
        kind = ms.RepeatedKFold
    repeated = kind(n_splits=n_folds, n_repeats=repeats, random_state=seed)
    splits = repeated.split(np.zeros(n_rows), labels)
    tests = [np.asarray(test, dtype=np.int64) for _, test in splits]
    folds = [
        FoldSpec(i % n_folds + 1, n_folds, n_rows, test, repeat=i // n_folds + 1)
        for i, test in enumerate(tests)
    ]
    for r in range(repeats):
        check_partition([f.test_positions for f in folds if f.repeat == r + 1], n_rows)
    return folds


def _group_kfold(n_folds: int, shuffle: bool, seed: int):
    """GroupKFold, shuffled by seed where this scikit-learn supports it (1.6+), else fixed."""
    import inspect

    from sklearn.model_selection import GroupKFold

    if shuffle and "shuffle" in inspect.signature(GroupKFold).parameters:
        return GroupKFold(n_folds, shuffle=True, random_state=seed)
    return GroupKFold(n_folds)


def group_values(column: pd.Series) -> np.ndarray:
    """Groups as the column reads: integers as int64, other numbers as float64, else text.

    GroupKFold shuffles the *sorted* distinct groups, so integer groups sorted as text
    ("10" < "2") would give other folds than scikit-learn's on the same column.
    """
    text = column.astype("string")
    if fits_int64(text):
        return np.array([int(v) for v in text], dtype=np.int64)
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64)
    return text.astype(str).to_numpy()


def check_partition(test_sets: list[np.ndarray], n_rows: int) -> None:
    """Every row in exactly one test set, or a clear error."""
    counts = np.bincount(np.concatenate(test_sets), minlength=n_rows) if test_sets else None
    if counts is None or len(counts) != n_rows or not (counts == 1).all():
        raise ValueError(f"fold test sets are not a partition of {n_rows} rows")


def check_groups_intact(
    test_sets: list[np.ndarray], groups: np.ndarray, group_column: str = "group"
) -> None:
    """No group may have rows in two test sets (that would leak the group into training)."""
    fold_of = np.empty(len(groups), dtype=np.int64)
    for i, test in enumerate(test_sets):
        fold_of[test] = i
    per_group = pd.DataFrame({"g": np.asarray(groups), "f": fold_of}).groupby("g")["f"].nunique()
    split = per_group[per_group > 1]
    if len(split):
        raise ValueError(
            f"group column {group_column!r}: group {split.index[0]!r} is split across folds"
        )


def classes_unseen_in_training(
    folds: list[FoldSpec], labels: np.ndarray
) -> list[tuple[str, str, int]]:
    """(class, fold label, test rows) for each class a fold tests but never trains on."""
    found = []
    for fold in folds:
        seen = set(np.unique(labels[fold.train_positions()]).tolist())
        tested, counts = np.unique(labels[fold.test_positions], return_counts=True)
        found += [(str(c), fold.label, int(n)) for c, n in zip(tested, counts) if c not in seen]
    return found


def warn_unseen_classes(folds: list[FoldSpec], labels: np.ndarray, where: str) -> None:
    """A fold's model scores a class it never saw as some other class: say so, and what helps."""
    for cls, label, n in classes_unseen_in_training(folds, labels):
        run_logger().warning(
            "%s: class %r is only in the test rows of %s (%d row(s)), so %s's model never saw it "
            "in training and scores it as another class; use --splitter stratified (every class "
            "needs at least %d rows) or drop the class's rows",
            where, cls, label, n, label, folds[0].n_folds,
        )  # fmt: skip


@task(name="plan-folds", task_run_name="plan-folds")
def plan_folds(
    data: CleanedData,
    n_folds: int,
    shuffle: bool,
    seed: int,
    splitter: Splitter = "kfold",
    repeats: int = 1,
    source: str | None = None,
) -> list[FoldSpec]:
    """Compute the split once so folds are identical across runs, runners and configs."""
    spec = data.spec
    needs_labels = splitter == "stratified" or bool(spec.classes)  # classes: checked below
    columns = [spec.target] if needs_labels else []
    if splitter == "group" and spec.group_column:
        columns.append(spec.group_column)
    table = pd.read_parquet(data.path, columns=columns) if columns else None
    labels = table[spec.target].astype(str).to_numpy() if needs_labels else None
    if splitter == "stratified" and not spec.classes:
        raise DataValidationError(
            f"{source or data.path}: splitter 'stratified' needs a classification target; "
            f"{spec.target!r} is a regression target"
        )
    groups = (
        group_values(table[spec.group_column])
        if splitter == "group" and spec.group_column
        else None
    )
    try:
        folds = split_folds(
            data.n_rows, n_folds, shuffle, seed, labels, splitter, groups, repeats,
            spec.group_column or "group",
        )  # fmt: skip
    except DataValidationError as err:
        raise DataValidationError(f"{source or data.path}: {err}") from err
    if labels is not None:
        warn_unseen_classes(folds, labels, source or data.path)
    return folds
