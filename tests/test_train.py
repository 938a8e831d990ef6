"""The train-fold task: seeded, thread-safe and keyed by what determines its result; the loop."""

from __future__ import annotations

import hashlib

import numpy as np

from tasks.clean import clean_to_parquet
from tasks.config import BUNDLED_DATA, FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.folds import split_folds
from tasks.model import build_model
from tasks.train import fold_cache_key, train_fold


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

    # Pinned: users' cached folds must keep hitting; a change must bump TRAINING_CODE_VERSION.
    assert key() == "fold-1-37126fc5e47fb844df9c1a13bdad8621"
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


def test_a_fold_on_a_reused_trainer_equals_the_fold_on_a_fresh_one(tmp_path):
    """A warm worker's compiled loop, after other folds and models, gives a cold worker's result."""
    import tasks.trainer_pool as pool

    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp_path), DataSpec())
    folds = split_folds(data.n_rows, 5, True, 42)
    runtime = FoldRuntime(log_every=3, progress_artifacts=False)
    for model in (ModelConfig(epochs=6), ModelConfig(epochs=6, dropout=0.2)):  # XLA, and not
        pool._IDLE.clear()
        warm = [train_fold.fn(data, fold, model, 42, runtime) for fold in folds[:3]]
        assert any(len(idle) for idle in pool._IDLE.values())  # the loop was kept
        for i in (1, 2):  # folds 2 and 3 ran on fold 1's trainer
            pool._IDLE.clear()
            cold = train_fold.fn(data, folds[i], model, 42, runtime)
            np.testing.assert_array_equal(warm[i].predictions, cold.predictions)
            assert warm[i].history["loss"] == cold.history["loss"]
