"""Fold planning: the notebook's KFold, always a partition, refused when impossible."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tasks.errors import DataValidationError
from tasks.folds import FoldSpec, check_partition, split_folds


def test_folds_equal_the_notebooks_kfold():
    folds = split_folds(2000, 5, shuffle=True, seed=42)
    expected = [test for _, test in KFold(5, shuffle=True, random_state=42).split(np.zeros(2000))]
    assert [f.index for f in folds] == [1, 2, 3, 4, 5]
    for fold, test in zip(folds, expected):
        np.testing.assert_array_equal(fold.test_positions, test)
        assert len(np.intersect1d(fold.train_positions(), test)) == 0
        assert len(fold.train_positions()) + len(test) == 2000


def test_same_seed_same_folds_other_seed_other_folds():
    a, b = split_folds(100, 5, True, 7), split_folds(100, 5, True, 7)
    c = split_folds(100, 5, True, 8)
    assert [f.assignment_hash() for f in a] == [f.assignment_hash() for f in b]
    assert [f.assignment_hash() for f in a] != [f.assignment_hash() for f in c]


def test_stratified_keeps_class_balance_and_rejects_rare_classes():
    labels = np.array(["a"] * 50 + ["b"] * 50)
    for fold in split_folds(100, 5, True, 1, labels):
        assert (labels[fold.test_positions] == "a").sum() == 10
    with pytest.raises(DataValidationError, match="class 'g' has 3"):
        split_folds(100, 5, True, 1, np.array(["a"] * 97 + ["g"] * 3))


def test_fewer_rows_than_folds_is_refused():
    with pytest.raises(DataValidationError, match="3 rows cannot be split into 5 folds"):
        split_folds(3, 5, True, 1)


def test_check_partition_refuses_overlap_and_gaps():
    check_partition([np.array([0, 1]), np.array([2])], 3)
    with pytest.raises(ValueError):
        check_partition([np.array([0, 1]), np.array([1, 2])], 3)
    with pytest.raises(ValueError):
        check_partition([np.array([0])], 3)


def test_group_folds_keep_each_group_in_one_fold():
    groups = np.repeat(np.arange(23), np.arange(23) % 4 + 1)  # uneven group sizes
    folds = split_folds(len(groups), 5, True, 3, splitter="group", groups=groups)
    check_partition([f.test_positions for f in folds], len(groups))
    for fold in folds:
        inside = set(groups[fold.test_positions])
        assert not inside & set(groups[fold.train_positions()])
    assert [f.label for f in folds] == [f"fold-{i}" for i in range(1, 6)]


def test_group_folds_need_enough_groups():
    with pytest.raises(DataValidationError, match="group column 'patient' has 3 distinct"):
        split_folds(30, 5, True, 1, splitter="group", groups=np.arange(30) % 3,
                    group_column="patient")  # fmt: skip


def test_repeated_folds_partition_each_repeat_and_differ_across_repeats():
    folds = split_folds(60, 4, True, 11, splitter="repeated", repeats=3)
    assert [f.label for f in folds[3:6]] == ["fold-1.4", "fold-2.1", "fold-2.2"]
    assert [(f.repeat, f.index) for f in folds][-1] == (3, 4)
    for r in (1, 2, 3):
        check_partition([f.test_positions for f in folds if f.repeat == r], 60)
    hashes = [f.assignment_hash() for f in folds]
    assert len(set(hashes)) == len(hashes)
    again = split_folds(60, 4, True, 11, splitter="repeated", repeats=3)
    assert [f.assignment_hash() for f in again] == hashes
    other = split_folds(60, 4, True, 12, splitter="repeated", repeats=3)
    assert [f.assignment_hash() for f in other] != hashes


def test_repeated_stratified_keeps_balance_and_hash_ignores_repeat():
    labels = np.array(["a"] * 40 + ["b"] * 20)
    folds = split_folds(60, 4, True, 5, labels, splitter="repeated", repeats=2)
    for fold in folds:
        assert (labels[fold.test_positions] == "a").sum() == 10
    plain = split_folds(100, 5, True, 7)
    assert all(f.repeat == 0 and f.label == f"fold-{f.index}" for f in plain)
    moved = FoldSpec(1, 5, 100, plain[0].test_positions, repeat=2)
    assert moved.assignment_hash() == plain[0].assignment_hash()
