"""`--validate-every` on every task: regression curves, code errors never retried, cached curves."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from prefect.states import Failed
from sklearn import datasets

from tasks.clean import clean_to_parquet
from tasks.config import FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.errors import DataValidationError, TransientError, retry_unless_permanent
from tasks.folds import split_folds
from tasks.progress import ProgressReporter, folds_with_other_curves, warn_cached_curves
from tasks.train import train_fold


def test_a_regression_validation_records_loss_and_rmse():
    progress = ProgressReporter(1, 4, 2, logging.getLogger("test"), artifacts=False)
    progress.record_validation(2, {"val_loss": 0.5, "val_rmse": 40.0})
    progress.record_validation(4, {"val_loss": 0.25, "val_rmse": 30.0})
    assert progress.validation_history == {
        "val_epoch": [2.0, 4.0], "val_loss": [0.5, 0.25], "val_rmse": [40.0, 30.0],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (KeyError("val_accuracy"), False),  # a bug of ours: the same inputs raise it again
        (TypeError("bad call"), False),
        (AttributeError("x"), False),
        (IndexError("y"), False),
        (DataValidationError("column 'a' row 3"), False),
        (TransientError("injected"), True),
        (ConnectionError("reset"), True),
        (OSError("disk"), True),
        (RuntimeError("a worker died"), True),
    ],
)
def test_code_errors_are_permanent_and_bad_luck_is_retried(error, retried):
    assert retry_unless_permanent(None, None, Failed(data=error)) is retried


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diabetes")
    path = tmp / "diabetes.csv"
    datasets.load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return clean_to_parquet.fn(str(path), sha, str(tmp / "cache"), DataSpec(target="target"))


@pytest.mark.slow  # one real regression fold, 4 epochs (~5 s)
def test_a_regression_fold_validates_with_rmse_in_the_targets_units(diabetes):
    fold = split_folds(diabetes.n_rows, 3, True, 42)[0]
    runtime = FoldRuntime(log_every=2, validate_every=2, progress_artifacts=False)
    result = train_fold.fn(diabetes, fold, ModelConfig(epochs=4), 42, runtime)
    history = result.history
    assert history["val_epoch"] == [2.0, 4.0] and "val_accuracy" not in history
    std = result.preprocess["target"]["std"]
    np.testing.assert_allclose(history["val_rmse"], np.sqrt(history["val_loss"]) * std)
    # the last validation scored the very network whose predictions the fold returns
    assert history["val_rmse"][-1] == pytest.approx(result.run.scores["rmse"], rel=1e-4)
    assert folds_with_other_curves([result], 2) == []
    # the same result, come back from the cache for a run that asks for other curves
    assert folds_with_other_curves([result], 0) == ["fold-1"]
    assert folds_with_other_curves([result], 1) == ["fold-1"]
    logger = logging.getLogger("test-cached-curves")
    assert warn_cached_curves([result], 1, logger) == ["fold-1"]
