"""The fold model and its fast training loop, without Prefect."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.clean import clean_to_parquet
from tasks.config import BUNDLED_DATA, FoldRuntime, ModelConfig
from tasks.dataspec import DataSpec
from tasks.folds import split_folds
from tasks.train import build_model, epochs_per_call, fold_cache_key, keras_session, train_fold


@pytest.mark.parametrize(
    ("epochs", "log_every", "validate_every", "expected"),
    [(500, 50, 0, 50), (500, 30, 0, 25), (3, 50, 0, 3), (101, 50, 0, 1), (500, 50, 20, 20)],
)
def test_epochs_per_call_divides_everything(epochs, log_every, validate_every, expected):
    span = epochs_per_call(epochs, log_every, validate_every)
    assert span == expected
    assert epochs % span == 0 and span <= log_every
    assert not validate_every or validate_every % span == 0


@pytest.mark.parametrize(
    ("changes", "activity", "kernel", "dropouts"),
    [
        ({}, 2, 0, 0),  # the notebook: L1 activity on both hidden layers
        ({"regularizer": "l2", "regularizer_on": "kernel"}, 0, 2, 0),
        ({"regularizer": "none", "dropout": 0.5}, 0, 0, 2),
        ({"regularizer": "l1_l2", "hidden_units": [8, 8, 8]}, 3, 0, 0),
    ],
)
def test_build_model_follows_the_config(changes, activity, kernel, dropouts):
    import keras

    model = build_model(47, 7, ModelConfig(**changes), seed=1)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert sum(layer.activity_regularizer is not None for layer in dense) == activity
    assert sum(layer.kernel_regularizer is not None for layer in dense) == kernel
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == dropouts
    assert dense[-1].units == 7 and dense[-1].activation.__name__ == "softmax"
    if not changes:
        assert [d.units for d in dense] == [50, 25, 7]
        assert model.count_params() == (47 * 50 + 50) + (50 * 25 + 25) + (25 * 7 + 7)


def test_fold_training_is_seeded_and_chunking_does_not_change_it(tmp_path):
    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp_path), DataSpec())
    fold = split_folds(data.n_rows, 5, True, 42)[1]
    model = ModelConfig(epochs=4)
    a = train_fold.fn(data, fold, model, 42, FoldRuntime(log_every=4, progress_artifacts=False))
    b = train_fold.fn(data, fold, model, 42, FoldRuntime(log_every=1, progress_artifacts=False))
    c = train_fold.fn(data, fold, model, 43, FoldRuntime(log_every=4, progress_artifacts=False))
    np.testing.assert_array_equal(a.predictions, b.predictions)  # 1 call vs 4 calls
    assert not np.array_equal(a.predictions, c.predictions)  # the seed matters
    np.testing.assert_allclose(a.predictions.sum(axis=1), 1.0)
    np.testing.assert_array_equal(a.test_positions, fold.test_positions)
    # every epoch's loss is recorded, however many epochs one graph call trains
    assert a.history["epoch"] == b.history["epoch"] == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-6)
    assert 0 <= a.run.scores["accuracy"] <= 1 and a.fold == 2


def test_layer_names_do_not_depend_on_what_keras_built_before():
    """Automatic names come from a counter another thread's `clear_session` can reset mid-build."""
    import keras

    def names():
        return [layer.name for layer in build_model(9, 3, ModelConfig(), seed=1).layers]

    keras.layers.Dense(1), keras.layers.Dense(1)  # the process's counter moves on
    before = names()
    keras.backend.clear_session()  # ... and goes back to zero
    assert before == names() == ["hidden_1", "hidden_2", "output"]


def test_keras_is_reset_only_when_no_other_fold_of_the_process_is_training():
    import keras

    with keras_session(1):
        assert keras.layers.Dense(1).name == "dense"  # the last fold's names are gone
        with keras_session(2):  # a second fold, on another thread of the same process
            assert keras.layers.Dense(1).name == "dense_1"  # the first's state is untouched
    with keras_session(3):
        assert keras.layers.Dense(1).name == "dense"


TWO_THREADS_IMPORT = """
import logging, sys, threading, time
from tasks.train import import_tensorflow
sys.setswitchinterval(1e-5)  # threads take turns often: the second fold runs mid-import
seen = []
def fold():
    tf = import_tensorflow(3, None, logging.getLogger("t"))
    from tensorflow.python.framework import config
    seen.append((config.is_op_determinism_enabled(),
                 tf.config.threading.get_intra_op_parallelism_threads()))
first, second = threading.Thread(target=fold), threading.Thread(target=fold)
first.start()
while "tensorflow" not in sys.modules:  # the first fold is importing TensorFlow
    time.sleep(0.001)
second.start()
first.join(), second.join()
print("after both imports", file=sys.stderr, flush=True)  # fd 2 is the terminal again
assert seen == [(True, 3), (True, 3)], seen
"""


def test_a_second_thread_gets_tensorflow_only_once_it_is_configured():
    """Two folds starting at once on threads: neither may train before determinism is on."""
    done = subprocess.run(
        [sys.executable, "-c", TWO_THREADS_IMPORT],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "after both imports" in done.stderr


def test_folds_trained_at_once_on_threads_equal_folds_trained_one_by_one(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp_path), DataSpec())
    folds = split_folds(data.n_rows, 5, True, 42)[:2]
    model, runtime = ModelConfig(epochs=3), FoldRuntime(threads=1, progress_artifacts=False)

    def train(fold):
        return train_fold.fn(data, fold, model, 42, runtime)

    one_by_one = [train(fold) for fold in folds]
    with ThreadPoolExecutor(max_workers=2) as pool:
        at_once = list(pool.map(train, folds))
    for a, b in zip(one_by_one, at_once, strict=True):
        np.testing.assert_array_equal(a.predictions, b.predictions)


def test_cache_key_depends_on_what_determines_the_result():
    from tasks.clean import CleanedData

    data = CleanedData("/x.parquet", "sha-clean-v1", "sha", 100, "{}")
    folds = split_folds(100, 5, True, 42)
    base = dict(data=data, fold=folds[0], model=ModelConfig(), seed=42, runtime=FoldRuntime())

    def key(**changes):
        return fold_cache_key(None, {**base, **changes})

    assert key() == key(runtime=FoldRuntime(threads=8, log_every=1))  # runtime is irrelevant
    assert key() == key(model=ModelConfig(l2=0.5))  # an unused strength is irrelevant
    others = [
        key(fold=folds[1]),
        key(seed=1),
        key(model=ModelConfig(epochs=499)),
        key(model=ModelConfig(l1=2e-4)),
        key(data=CleanedData("/x.parquet", "other-clean-v1", "other", 100, "{}")),
        key(fold=split_folds(100, 5, True, 7)[0]),
    ]
    assert len({key(), *others}) == 1 + len(others)


def test_graph_loop_matches_keras_fit_on_the_same_batches():
    """The in-graph loop is Keras' own step: fed fit's batches, it ends with fit's weights."""
    import keras
    import tensorflow as tf

    from tasks.loop import GraphTrainer, epoch_batches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5)).astype("float32")  # 90 = 2 full batches of 32 + 26 per epoch
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 90)]
    full, tail = epoch_batches(90, 32, 3, np.random.default_rng(1))
    assert full.shape == (3, 2, 32) and tail.shape == (3, 26)
    for e in range(3):  # each epoch is a permutation: every row exactly once
        assert sorted(np.concatenate([full[e].ravel(), tail[e]])) == list(range(90))
    order = [rows for e in range(3) for rows in (*full[e], tail[e])]

    def fresh():
        keras.backend.clear_session()
        return build_model(5, 3, ModelConfig(hidden_units=[8, 4]), seed=3)

    by_fit = fresh()
    batches = tf.data.Dataset.from_generator(
        lambda: ((x[r], y[r]) for r in order),
        output_signature=(tf.TensorSpec((None, 5)), tf.TensorSpec((None, 3))),
    )
    by_fit.fit(batches, epochs=1, steps_per_epoch=len(order), verbose=0, shuffle=False)
    by_loop = fresh()
    GraphTrainer(tf, by_loop, x, y, jit=False).train(full, tail)
    for a, b in zip(by_fit.trainable_variables, by_loop.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
