"""Fold planning: the notebook's KFold, always a partition, refused when impossible."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tasks.errors import DataValidationError
from tasks.folds import check_partition, split_folds


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
