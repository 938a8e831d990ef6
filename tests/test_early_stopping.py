"""Early stopping per fold: a validation part of the training rows only, the best weights kept."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.clean import CleanedData, clean_to_parquet
from tasks.config import CVConfig, FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.fit import epochs_per_call, validation_split
from tasks.folds import split_folds
from tasks.join import fold_metrics
from tasks.train import fold_cache_key, fold_seed, train_fold


@pytest.mark.parametrize("seed", [42, 7])
def test_the_validation_part_is_training_rows_only_and_reproducible(seed):
    for fold in split_folds(203, 5, True, seed):
        train = fold.train_positions()
        fit, watched = validation_split(train, 0.1, fold_seed(seed, fold.index))
        assert len(watched) == round(0.1 * len(train)) and len(fit) + len(watched) == len(train)
        assert not set(watched) & set(fold.test_positions)  # never a test row
        assert set(fit) | set(watched) == set(train) and not set(fit) & set(watched)
        again = validation_split(train, 0.1, fold_seed(seed, fold.index))
        np.testing.assert_array_equal(again[1], watched)  # the same rows on every run
        other = validation_split(train, 0.1, fold_seed(seed + 1, fold.index))
        assert not np.array_equal(other[1], watched)


def test_early_stopping_is_in_the_cache_key_only_when_on():
    data = CleanedData("/x.parquet", "sha-clean-v1", "sha", 100, "{}")
    base = dict(data=data, fold=split_folds(100, 5, True, 42)[0], seed=42, runtime=FoldRuntime())

    def key(model: ModelConfig) -> str:
        return fold_cache_key(None, {**base, "model": model})

    assert CVConfig().model.early_stopping == 0  # off by default: jh-simple's folds unchanged
    assert key(ModelConfig()) == key(ModelConfig(validation_fraction=0.3))  # unused when off
    keys = {key(ModelConfig()), key(ModelConfig(early_stopping=5)),
            key(ModelConfig(early_stopping=6)),
            key(ModelConfig(early_stopping=5, validation_fraction=0.3))}  # fmt: skip
    assert len(keys) == 4
    assert epochs_per_call(500, 50, 0, 20) == 20 and epochs_per_call(500, 50, 0, 7) == 5


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    """A table a network can only memorise: 5 features of noise and a target of noise."""
    tmp = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(150, 5)), columns=[f"x{i}" for i in range(5)])
    frame["y"] = rng.normal(size=150)
    path = tmp / "noise.csv"
    frame.to_csv(path, index=False)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = DataSpec(target="y", task="regression")
    return clean_to_parquet.fn(str(path), sha, str(tmp / "cache"), spec)


@pytest.mark.slow  # two real trainings of one fold (~10 s)
def test_a_fold_that_overfits_stops_and_keeps_its_best_weights(noise):
    fold = split_folds(noise.n_rows, 3, True, 42)[0]
    runtime = FoldRuntime(progress_artifacts=False)
    model = ModelConfig(hidden_units=[64, 64], regularizer="none", epochs=300, early_stopping=10)
    stopped = train_fold.fn(noise, fold, model, 42, runtime)
    history = stopped.history
    best = int(history["best_epoch"][0])
    assert stopped.run.epochs < 300 and stopped.run.epochs - best >= 10
    assert len(history["loss"]) == stopped.run.epochs  # the learning curve ends where it stopped
    assert history["stop_epoch"][-1] == stopped.run.epochs
    assert min(history["stop_loss"]) == history["stop_loss"][history["stop_epoch"].index(best)]
    row = fold_metrics(stopped, fold.label)
    assert (row.epochs, row.best_epoch) == (stopped.run.epochs, best)  # metrics.json's fold row
    # The weights kept are those of the best epoch: the same fold trained just that far
    # (same validation part, same shuffles) predicts exactly the same.
    upto = train_fold.fn(noise, fold, model.model_copy(update={"epochs": best}), 42, runtime)
    assert upto.run.epochs == best and upto.history["best_epoch"] == [float(best)]
    np.testing.assert_array_equal(upto.predictions, stopped.predictions)
