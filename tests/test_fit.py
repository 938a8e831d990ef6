"""Fitting one fold without Prefect: the graph loop's epoch spans, and the task's very numbers."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import numpy as np
import pytest

from tasks.clean import clean_to_parquet, load_table
from tasks.config import BUNDLED_DATA, FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.fit import FitSettings, PreparedFold, epochs_per_call, fit_and_predict
from tasks.folds import split_folds
from tasks.progress import ProgressReporter
from tasks.tf_runtime import import_tensorflow, keras_session
from tasks.train import fold_seed, train_fold


@pytest.mark.parametrize(
    ("epochs", "log_every", "validate_every", "expected"),
    [(500, 50, 0, 50), (500, 30, 0, 25), (3, 50, 0, 3), (101, 50, 0, 1), (500, 50, 20, 20)],
)
def test_epochs_per_call_divides_everything(epochs, log_every, validate_every, expected):
    span = epochs_per_call(epochs, log_every, validate_every)
    assert span == expected
    assert epochs % span == 0 and span <= log_every
    assert not validate_every or validate_every % span == 0


def test_fit_and_predict_needs_no_prefect():
    """The fit is plain maths on arrays: importing it loads neither Prefect nor TensorFlow."""
    probe = "import sys, tasks.fit; print(*sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert not {"prefect", "tensorflow", "keras"} & set(done.stdout.split()), done.stderr


@pytest.mark.slow  # a real training, compared with the task's (16 s)
def test_fit_and_predict_alone_gives_the_tasks_numbers(tmp_path):
    """The task only wraps the fit: called directly, with its validation, it returns the same."""
    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp_path), DataSpec())
    fold = split_folds(data.n_rows, 5, True, 42)[2]
    model = ModelConfig(epochs=4)
    runtime = FoldRuntime(log_every=2, validate_every=2, progress_artifacts=False)
    by_task = train_fold.fn(data, fold, model, 7, runtime)

    logger = logging.getLogger("test")
    tf = import_tensorflow(1, None, logger)
    with keras_session(fold_seed(7, fold.index)):
        prepared = PreparedFold.of(load_table(data), data.spec, fold)
        progress = ProgressReporter(fold.index, model.epochs, 2, logger, artifacts=False)
        how = FitSettings(fold_seed(7, fold.index), 2, progress, validate_every=2, jit=True)
        direct = fit_and_predict(tf, prepared, model, how)
    np.testing.assert_array_equal(direct.predictions, by_task.predictions)
    np.testing.assert_array_equal(direct.test_ids, by_task.test_ids)
    assert direct.history == by_task.history and direct.history["val_epoch"] == [2.0, 4.0]
    assert direct.run.scores == by_task.run.scores and direct.preprocess == by_task.preprocess
