"""Fit one fold's network and predict its test rows: pure maths, no Prefect, no files."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.config import ModelConfig
from tasks.errors import PermanentError
from tasks.fold_cards import worker_label
from tasks.loop import GraphTrainer, epoch_batches
from tasks.metrics import FoldRun
from tasks.model import REGRESSION_LOSSES, build_model, infer, model_to_bytes
from tasks.preprocess import decode_regression, encode_target, fit_preprocessor, transform
from tasks.progress import ProgressReporter
from tasks.trainer_pool import borrowed_trainer, trainer_key

if TYPE_CHECKING:  # typing only: tasks.folds defines Prefect tasks, which a fit does not need
    from tasks.data.spec import ResolvedSpec
    from tasks.folds import FoldSpec


@dataclass(frozen=True)
class FoldResult:
    """What the join needs from a fold, small enough to persist and ship between processes."""

    fold: int
    test_ids: np.ndarray  # the key of each test row (id column, or file row number)
    test_positions: np.ndarray
    # classification: (rows, classes) probabilities; regression: (rows,) in the target's units
    predictions: np.ndarray
    run: FoldRun  # scores, final loss, timing, worker, device, attempt
    history: dict[str, list[float]] = field(default_factory=dict)
    repeat: int = 0
    # The trained network as the bytes of a .keras file and the preprocessing it was fitted
    # with (JSON-able): persisted with the result, so a cached fold brings its model back.
    model_bytes: bytes = b""
    preprocess: dict[str, Any] = field(default_factory=dict)


class NonFiniteError(PermanentError):
    """Training diverged (loss or predictions NaN/inf): retrying the same maths cannot help."""


def prepare_fold(
    table: pd.DataFrame, spec: ResolvedSpec, train_positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features and encoded target of every row, preprocessing fitted where the spec says.

    `fold` scope fits medians, z-scores and the regression target's scale on this fold's
    training rows only (like a scikit-learn Pipeline inside cross_val_predict); `global`
    fits them on the whole table, as the notebook did.
    """
    fit_rows = train_positions if spec.scope == "fold" else None
    params = fit_preprocessor(table, spec, fit_rows)
    x = transform(table, spec, params)
    y = encode_target(table, spec, params)
    return x, (y if y.ndim == 2 else y[:, None]), params


@dataclass(frozen=True)
class PreparedFold:
    """A fold ready to fit: what scikit-learn's `_fit_and_predict` gets (X, y, splits)."""

    fold: FoldSpec
    spec: ResolvedSpec
    x: np.ndarray  # every row's features
    y: np.ndarray  # every row's target: one-hot classes, or (rows, 1) z-scored values
    keys: np.ndarray  # every row's key (id column, or file row number)
    train: np.ndarray  # positions of the training rows
    params: dict[str, Any]  # the preprocessing fitted (persisted; decodes regression)

    @property
    def test(self) -> np.ndarray:
        """Positions of the test rows (none for the refit on all rows)."""
        return self.fold.test_positions

    @classmethod
    def of(cls, table: pd.DataFrame, spec: ResolvedSpec, fold: FoldSpec) -> PreparedFold:
        """Preprocess the cleaned table for this fold (fitted on its training rows, by scope)."""
        train = fold.train_positions()
        x, y, params = prepare_fold(table, spec, train)
        return cls(fold, spec, x, y, table[spec.key].to_numpy(), train, params)

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and target of these rows."""
        return self.x[positions], self.y[positions]


@dataclass(frozen=True)
class FitSettings:
    """How a fold is fitted beside its model config, and what its run record says about where."""

    seed: int  # the fold's own seed (fold_seed): initialisers and per-epoch shuffles
    span: int  # epochs per graph call (epochs_per_call)
    progress: ProgressReporter
    validate_every: int = 0  # score the test rows every N epochs (0: never), for curves
    jit: bool = False  # XLA-compile the loop (uses_xla)
    device: str = "CPU"  # recorded in the fold's run
    attempt: int = 1  # recorded in the fold's run


def epochs_per_call(epochs: int, log_every: int, validate_every: int = 0, patience: int = 0) -> int:
    """How many epochs one graph call trains (see tasks/loop.py).

    Many epochs per call remove per-call overhead without changing the maths: the data is
    still reshuffled every epoch. The span divides the epochs and the validation interval,
    and is at most the logging interval so progress keeps flowing, and at most the early
    stopping patience: early stopping looks at the validation loss once per call.
    """
    limit = math.gcd(epochs, validate_every) if validate_every else epochs
    most = min(log_every, patience) if patience else log_every
    return max(d for d in range(1, min(limit, max(1, most)) + 1) if limit % d == 0)


def validation_split(
    train: np.ndarray, fraction: float, seed: int, label: str = "fold"
) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows to watch) for early stopping: a part of the TRAINING rows only.

    Drawn from the fold's own seed (its own stream, apart from the epoch shuffles), so the
    same fold holds out the same rows on every run; the test rows are never among them.
    """
    n_val = max(1, round(fraction * len(train)))
    if n_val >= len(train):
        raise PermanentError(
            f"{label}: {len(train)} training rows leave none to fit beside a validation part "
            f"of {fraction:g} (--validation-fraction) for early stopping"
        )
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    return np.sort(train[order[n_val:]]), np.sort(train[order[:n_val]])


def validation_loss(net: Any, loss: str, x: np.ndarray, y: np.ndarray) -> float:
    """The network's training loss (Keras' own function, no penalties) on these rows."""
    import keras

    return float(np.mean(np.asarray(keras.losses.get(loss)(y, net(x, training=False)))))


def score_test_fold(
    model: Any, x_test: np.ndarray, y_test: np.ndarray, target_std: float = 1.0
) -> dict[str, float]:
    """The test fold's loss and accuracy (or RMSE) mid-training (`--validate-every`), for curves.

    Regression: val_loss is the mean squared error on the z-scored target, val_rmse the RMSE in
    the target's own units (`target_std` undoes the z-score).
    """
    out = np.asarray(model(x_test, training=False))
    if y_test.shape[1] == 1:
        mse = float(((out - y_test) ** 2).mean())
        return {"val_loss": mse, "val_rmse": float(np.sqrt(mse) * target_std)}
    probs = np.clip(out, 1e-7, 1.0)
    return {
        "val_loss": float(-(y_test * np.log(probs)).sum(axis=1).mean()),
        "val_accuracy": float((probs.argmax(1) == y_test.argmax(1)).mean()),
    }


def fold_scores(spec: ResolvedSpec, truth: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy + log-loss (classification) or RMSE + MAE in the target's units (regression)."""
    if spec.task == "regression":
        error = predictions - truth
        return {"rmse": float(np.sqrt((error**2).mean())), "mae": float(np.abs(error).mean())}
    labels = truth.argmax(axis=1)
    eps = np.finfo(predictions.dtype).eps  # clipped like sklearn's log_loss
    picked = np.clip(predictions[np.arange(len(labels)), labels], eps, 1)
    return {
        "accuracy": float((predictions.argmax(axis=1) == labels).mean()),
        "log_loss": float(-np.log(picked).mean()),
    }


def fit_and_predict(
    tf: Any, prepared: PreparedFold, model: ModelConfig, how: FitSettings
) -> FoldResult:
    """Fit the network on the fold's training rows and predict its test rows.

    Shaped like scikit-learn's `_fit_and_predict`, so it can be called and tested without
    Prefect; the caller has imported TensorFlow configured and seeded Keras (tasks/tf_runtime.py).
    """
    fold = prepared.fold
    try:
        net = build_model(
            prepared.x.shape[1], len(prepared.spec.classes), model, how.seed, prepared.spec.loss
        )
    except (ValueError, TypeError) as err:
        raise PermanentError(f"{fold.label}: the model could not be built: {err}") from err
    fit_rows, watched = prepared.train, np.zeros(0, dtype=np.int64)
    if model.early_stopping:
        fit_rows, watched = validation_split(
            prepared.train, model.validation_fraction, how.seed, fold.label
        )
    x_fit, y_fit = prepared.rows(fit_rows)
    n_features, n_classes = prepared.x.shape[1], len(prepared.spec.classes)
    key = trainer_key({**model.effective(), "loss": prepared.spec.loss}, x_fit, y_fit, how.jit)

    def template() -> Any:
        return build_model(n_features, n_classes, model, how.seed, prepared.spec.loss)

    started = time.time()
    with borrowed_trainer(tf, key, template, net, x_fit, y_fit, how.jit) as trainer:
        history = _train(trainer, net, prepared, model, how, len(fit_rows), watched)
    predictions, truth = _predict(net, prepared)
    finished = time.time()
    if not (np.isfinite(predictions).all() and np.isfinite(history["loss"]).all()):
        raise NonFiniteError(
            f"{fold.label}: training diverged (loss {history['loss'][-1]}); its predictions "
            "are not finite. Check the data for extreme values, or lower --learning-rate"
        )
    return FoldResult(
        fold=fold.index,
        test_ids=prepared.keys[prepared.test],
        test_positions=prepared.test,
        predictions=predictions,
        run=FoldRun(
            scores=fold_scores(prepared.spec, truth, predictions) if len(prepared.test) else {},
            final_loss=history["loss"][-1],
            epochs=len(history["loss"]),  # fewer than model.epochs when it stopped early
            train_seconds=round(finished - started, 3),
            started_at=started,
            finished_at=finished,
            worker=worker_label(),
            device=how.device,
            attempt=how.attempt,
        ),
        history=history,
        repeat=fold.repeat,
        model_bytes=model_to_bytes(net),
        preprocess=prepared.params,
    )


def _train(
    trainer: GraphTrainer,
    net: Any,
    prepared: PreparedFold,
    model: ModelConfig,
    how: FitSettings,
    n_fit: int,
    watched: np.ndarray,
) -> dict[str, list[float]]:
    """Every epoch's loss (and the opt-in test-fold scores), `how.span` epochs per graph call.

    With early stopping, the validation part (`watched`, training rows the fit never sees) is
    scored after each call; the fold stops once it has not improved for `early_stopping`
    epochs and gets back the weights of its best call.
    """
    shuffles = np.random.default_rng(how.seed)
    x_test, y_test = prepared.rows(prepared.test)
    validating = bool(how.validate_every and len(prepared.test))
    history: dict[str, list[float]] = {"epoch": [], "loss": []}
    stopper = _EarlyStopper(net, prepared, model, watched) if model.early_stopping else None
    for done in range(how.span, model.epochs + 1, how.span):
        batches = epoch_batches(n_fit, model.batch_size, how.span, shuffles)
        losses = trainer.train(*batches)
        logs = {"loss": losses[-1]}
        if validating and done % how.validate_every == 0:
            std = prepared.params.get("target", {}).get("std", 1.0)
            logs.update(score_test_fold(net, x_test, y_test, std))
            how.progress.record_validation(done, logs)
        history["epoch"].extend(float(e) for e in range(done - how.span + 1, done + 1))
        history["loss"].extend(losses)
        if stopper is not None and stopper.should_stop(done, logs) and done < model.epochs:
            how.progress.stopped_early(done, stopper.best_epoch, stopper.best_loss)
            break
        how.progress.on_epoch(done, logs)
    history.update(how.progress.validation_history)
    if stopper is not None:
        history.update(stopper.restore())
    return history


class _EarlyStopper:
    """Watches the validation part's loss after each graph call and keeps the best weights."""

    def __init__(self, net: Any, prepared: PreparedFold, model: ModelConfig, rows: np.ndarray):
        self.net, self.patience = net, model.early_stopping
        self.loss = "categorical_crossentropy" if prepared.spec.classes else (
            REGRESSION_LOSSES[prepared.spec.loss or "mse"]
        )  # fmt: skip
        self.x, self.y = prepared.rows(rows)
        self.best_loss, self.best_epoch, self.best_weights = math.inf, 0, None
        self.curve: dict[str, list[float]] = {"stop_epoch": [], "stop_loss": []}

    def should_stop(self, epoch: int, logs: dict[str, float]) -> bool:
        """Score the validation part; True once `patience` epochs passed without a better one."""
        loss = validation_loss(self.net, self.loss, self.x, self.y)
        self.curve["stop_epoch"].append(float(epoch))
        self.curve["stop_loss"].append(loss)
        logs["stop_loss"] = loss
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            self.best_weights = self.net.get_weights()
        return epoch - self.best_epoch >= self.patience

    def restore(self) -> dict[str, list[float]]:
        """Put the best weights back; the validation curve and the best epoch, for the history."""
        if self.best_weights is not None:
            self.net.set_weights(self.best_weights)
        return {**self.curve, "best_epoch": [float(self.best_epoch)]}


def _predict(net: Any, prepared: PreparedFold) -> tuple[np.ndarray, np.ndarray]:
    """The test rows' predictions and truth: probabilities, or values in the target's units."""
    spec = prepared.spec
    if not len(prepared.test):  # the refit on all rows ("full"): nothing to test
        empty = np.zeros((0, len(spec.classes)) if spec.classes else 0)
        return empty, empty
    x_test, y_test = prepared.rows(prepared.test)
    raw = infer(net, x_test)  # as `foldflow predict` scores them, whatever the batch
    if spec.task == "regression":
        params = prepared.params
        return decode_regression(raw[:, 0], params), decode_regression(y_test[:, 0], params)
    return raw / raw.sum(axis=1, keepdims=True), y_test  # softmax's rounding -> sums to 1
