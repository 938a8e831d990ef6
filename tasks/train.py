"""Train one fold of the notebook's Keras MLP, fast and seeded, and return its test predictions."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from tasks.clean import CleanedData, load_table
from tasks.config import TRAINING_CODE_VERSION, FoldRuntime, ModelConfig, stable_hash
from tasks.dataspec import ResolvedSpec
from tasks.errors import PermanentError, retry_unless_permanent
from tasks.faults import maybe_inject_fault
from tasks.folds import FoldSpec
from tasks.logs import current_attempt, run_logger
from tasks.loop import GraphTrainer, epoch_batches
from tasks.metrics import FoldRun
from tasks.preprocess import decode_regression, encode_target, fit_preprocessor, transform
from tasks.progress import ProgressReporter


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


def fold_results_storage(cache_dir: str) -> Any:
    """Where fold results persist: a local folder, or any fsspec URL all workers can reach."""
    if "://" in cache_dir and not cache_dir.startswith("file://"):
        from prefect.filesystems import RemoteFileSystem

        return RemoteFileSystem(basepath=f"{cache_dir.rstrip('/')}/folds")
    return Path(cache_dir.removeprefix("file://")).expanduser().resolve() / "folds"


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible seed per fold."""
    return seed * 1000 + fold


def uses_xla(model: ModelConfig, runtime: FoldRuntime) -> bool:
    """XLA unless the model has dropout: XLA's CPU random-number ops made it ~7x slower."""
    return runtime.xla and not model.dropout


def fold_cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    """Key a fold's result by what determines it (data, rows, model, seed, code), not the run."""
    data: CleanedData = parameters["data"]
    fold: FoldSpec = parameters["fold"]
    model: ModelConfig = parameters["model"]
    payload = {
        "data": data.data_key,
        "fold": fold.index,
        "rows": fold.assignment_hash(),
        "model": model.effective(),
        "seed": parameters["seed"],
        # XLA's fusion changes float rounding, so it is part of what determines the result.
        "xla": uses_xla(model, parameters.get("runtime", FoldRuntime())),
        "code": TRAINING_CODE_VERSION,
    }
    return f"fold-{fold.index}-{stable_hash(payload, 32)}"


@contextlib.contextmanager
def native_stderr_to(logger: Any) -> Iterator[None]:
    """Send what C++ libraries write to stderr (fd 2) to the log at debug level meanwhile.

    TensorFlow's import and device probing print oneDNN, CUDA and absl notices straight to
    fd 2, past Python's logging, where they scramble the terminal's progress display.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                logger.debug("native library output:\n%s", text)


_IMPORT_LOCK = threading.Lock()


def import_tensorflow(threads: int, gpu: int | None, logger: Any = None) -> Any:
    """Import TensorFlow once per worker with its thread budget and at most one visible GPU.

    Thread-safe: a fold on another thread of the process waits until the first import is
    configured (threads, devices, determinism) instead of training on a half-set-up runtime.
    """
    with _IMPORT_LOCK:
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            return tf
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
        with native_stderr_to(logger or run_logger()):
            return _first_import(threads, gpu)


def _first_import(threads: int, gpu: int | None) -> Any:
    """The first import: threads, the visible GPU, determinism, a quiet Python logger."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # e.g. tf.function retracing notes: not the user's concern
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # runtime already initialised by someone else in this process
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if gpu is None or not gpus:
            tf.config.set_visible_devices([], "GPU")
        else:
            # Workers that own one GPU see it as their first device (CUDA_VISIBLE_DEVICES).
            chosen = gpus[gpu] if gpu < len(gpus) and len(gpus) > 1 else gpus[0]
            tf.config.set_visible_devices([chosen], "GPU")
            tf.config.experimental.set_memory_growth(chosen, True)
    except RuntimeError:
        pass
    tf.config.experimental.enable_op_determinism()
    return tf


def epochs_per_call(epochs: int, log_every: int, validate_every: int = 0) -> int:
    """How many epochs one graph call trains (see tasks/loop.py).

    Many epochs per call remove per-call overhead without changing the maths: the data is
    still reshuffled every epoch. The span divides the epochs and the validation interval,
    and is at most the logging interval so progress keeps flowing.
    """
    limit = math.gcd(epochs, validate_every) if validate_every else epochs
    return max(d for d in range(1, min(limit, max(1, log_every)) + 1) if limit % d == 0)


def device_label(gpu: int | None, gpu_visible: bool) -> str:
    """'GPU:<physical id>' (from this worker's CUDA_VISIBLE_DEVICES) or 'CPU'."""
    if gpu is None or not gpu_visible:
        return "CPU"
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return f"GPU:{visible[gpu].strip()}" if gpu < len(visible) else f"GPU:{gpu}"


REGRESSION_LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}


def build_model(n_features: int, n_classes: int, cfg: ModelConfig, seed: int, loss: str = ""):
    """The notebook's network, generalised to the config's layers and penalties.

    `n_classes` softmax outputs with categorical cross-entropy; `n_classes=0` is regression:
    one linear output trained with `loss` (mse, mae or huber) on the z-scored target.

    Every random initialiser gets an explicit seed: the global RNGs are shared with Prefect's
    own threads, which would make training depend on what else ran in the process.
    """
    import keras

    seeds = iter(range(seed, seed + 1000))

    def init():
        return keras.initializers.GlorotUniform(seed=next(seeds))

    def penalty():
        if cfg.regularizer == "l1":
            return keras.regularizers.L1(cfg.l1)
        if cfg.regularizer == "l2":
            return keras.regularizers.L2(cfg.l2)
        if cfg.regularizer == "l1_l2":
            return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)
        return None

    # Explicit layer names: Keras's automatic ones come from a per-process counter that
    # `clear_session` resets, so a fold building its model while another thread of the same
    # process starts its own would get "dense" twice and fail.
    on_activity = cfg.regularizer_on == "activity"
    layers: list[Any] = [keras.Input(shape=(n_features,), name="features")]
    for depth, units in enumerate(cfg.hidden_units, start=1):
        layers.append(
            keras.layers.Dense(
                units,
                activation=cfg.activation,
                kernel_initializer=init(),
                activity_regularizer=penalty() if on_activity else None,
                kernel_regularizer=None if on_activity else penalty(),
                name=f"hidden_{depth}",
            )
        )
        if cfg.dropout:
            layers.append(
                keras.layers.Dropout(cfg.dropout, seed=next(seeds), name=f"dropout_{depth}")
            )
    if n_classes:
        head = keras.layers.Dense(
            n_classes, activation="softmax", kernel_initializer=init(), name="output"
        )
    else:
        head = keras.layers.Dense(1, kernel_initializer=init(), name="output")
    layers.append(head)
    model = keras.Sequential(layers, name="foldflow_mlp")
    optimizer = keras.optimizers.get(cfg.optimizer)
    if cfg.learning_rate is not None:
        optimizer.learning_rate = cfg.learning_rate
    model.compile(
        loss="categorical_crossentropy" if n_classes else REGRESSION_LOSSES[loss or "mse"],
        optimizer=optimizer,
    )
    return model


def model_to_bytes(net: Any) -> bytes:
    """The network as a .keras file's bytes (weights + architecture, no pickles), to persist."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="foldflow-model-") as folder:
        path = Path(folder) / "model.keras"
        net.save(path)
        return path.read_bytes()


def score_test_fold(model: Any, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """The test fold's loss (and accuracy) mid-training (opt-in `--validate-every`), for curves."""
    out = np.asarray(model(x_test, training=False))
    if y_test.shape[1] == 1:  # regression: mean squared error on the z-scored target
        return {"val_loss": float(((out - y_test) ** 2).mean())}
    probs = np.clip(out, 1e-7, 1.0)
    return {
        "val_loss": float(-(y_test * np.log(probs)).sum(axis=1).mean()),
        "val_accuracy": float((probs.argmax(1) == y_test.argmax(1)).mean()),
    }


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


class NonFiniteError(PermanentError):
    """Training diverged (loss or predictions NaN/inf): retrying the same maths cannot help."""


_SESSION_LOCK = threading.Lock()
_FOLDS_TRAINING = 0  # folds training in this process now (more than one with threads)


@contextlib.contextmanager
def keras_session(seed: int) -> Iterator[None]:
    """Seed Keras for one fold; free the last fold's graphs only when no other fold is training.

    `clear_session` replaces Keras's per-process state, so calling it while another thread
    of this process builds or trains a model would pull that state from under it.
    """
    import keras

    global _FOLDS_TRAINING
    with _SESSION_LOCK:
        if _FOLDS_TRAINING == 0:
            keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        _FOLDS_TRAINING += 1
    try:
        yield
    finally:
        with _SESSION_LOCK:
            _FOLDS_TRAINING -= 1


@lru_cache(maxsize=4)
def _cached_table(data: CleanedData) -> pd.DataFrame:
    """Read the cleaned table once per worker process, however many folds it trains."""
    return load_table(data)


# Retries come from the run's config (`retry_options`, applied in flows/fanout.py).
@task(
    name="train-fold",
    task_run_name="{fold.label}",
    retry_condition_fn=retry_unless_permanent,
    cache_key_fn=fold_cache_key,
    persist_result=True,
    result_serializer="pickle",
)
def train_fold(
    data: CleanedData,
    fold: FoldSpec,
    model: ModelConfig,
    seed: int,
    runtime: FoldRuntime = FoldRuntime(),
) -> FoldResult:
    """Train one fold independently so folds can run anywhere, be retried and be cached."""
    logger = run_logger()
    attempt, _ = current_attempt()
    maybe_inject_fault(fold.index, attempt, runtime.faults)
    tf = import_tensorflow(runtime.threads, runtime.gpu, logger)
    with keras_session(fold_seed(seed, fold.index)):
        return fit_fold(tf, data, fold, model, seed, runtime, logger, attempt)


def fit_fold(
    tf: Any,
    data: CleanedData,
    fold: FoldSpec,
    model: ModelConfig,
    seed: int,
    runtime: FoldRuntime,
    logger: Any,
    attempt: int,
) -> FoldResult:
    """Fit the preprocessing and the network on the fold's training rows, score its test rows."""
    table, spec = _cached_table(data), data.spec
    train_pos, test_pos = fold.train_positions(), fold.test_positions
    x, y, params = prepare_fold(table, spec, train_pos)
    keys = table[spec.key].to_numpy()
    x_train, y_train, x_test, y_test = x[train_pos], y[train_pos], x[test_pos], y[test_pos]

    span = epochs_per_call(model.epochs, runtime.log_every, runtime.validate_every)
    try:
        net = build_model(
            x.shape[1], len(spec.classes), model, fold_seed(seed, fold.index), spec.loss
        )
    except (ValueError, TypeError) as err:
        raise PermanentError(f"{fold.label}: the model could not be built: {err}") from err
    trainer = GraphTrainer(tf, net, x_train, y_train, jit=uses_xla(model, runtime))
    shuffles = np.random.default_rng(fold_seed(seed, fold.index))
    device = device_label(runtime.gpu, bool(tf.config.get_visible_devices("GPU")))
    progress = ProgressReporter(
        fold=fold.index,
        epochs=model.epochs,
        log_every=runtime.log_every,
        logger=logger,
        artifacts=runtime.progress_artifacts,
        label=fold.label,
    )
    logger.info(
        "%s/%d attempt %d: training on %d rows, testing on %d, %d epochs, %s, %d thread(s)%s",
        fold.label, fold.n_folds, attempt, len(train_pos), len(test_pos),
        model.epochs, device, runtime.threads, ", XLA" if uses_xla(model, runtime) else "",
    )  # fmt: skip
    started = time.time()
    history: dict[str, list[float]] = {"epoch": [], "loss": []}
    for done in range(span, model.epochs + 1, span):
        batches = epoch_batches(len(x_train), model.batch_size, span, shuffles)
        losses = trainer.train(*batches)
        logs = {"loss": losses[-1]}
        if runtime.validate_every and len(test_pos) and done % runtime.validate_every == 0:
            logs.update(score_test_fold(net, x_test, y_test))
            progress.record_validation(done, logs)
        history["epoch"].extend(float(e) for e in range(done - span + 1, done + 1))
        history["loss"].extend(losses)
        progress.on_epoch(done, logs)
    # A direct call, not predict(): no new tf.function (and retracing warning) per fold.
    if not len(test_pos):  # the refit on all rows ("full"): nothing to test
        predictions = truth = np.zeros((0, len(spec.classes)) if spec.classes else 0)
    elif spec.task == "regression":
        raw = np.asarray(net(x_test, training=False), dtype=np.float64)
        predictions = decode_regression(raw[:, 0], params)
        truth = decode_regression(y_test[:, 0], params)
    else:
        raw = np.asarray(net(x_test, training=False), dtype=np.float64)
        predictions = raw / raw.sum(axis=1, keepdims=True)  # float32 softmax -> sums to 1
        truth = y_test
    finished = time.time()
    if not (np.isfinite(predictions).all() and np.isfinite(history["loss"]).all()):
        raise NonFiniteError(
            f"{fold.label}: training diverged (loss {history['loss'][-1]}); its predictions "
            "are not finite. Check the data for extreme values, or lower --learning-rate"
        )
    scores = fold_scores(spec, truth, predictions) if len(test_pos) else {}
    history.update(progress.validation_history)
    logger.info(
        "%s: %s, %.1f s", fold.label,
        ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) or "all rows, none tested",
        finished - started,
    )  # fmt: skip
    return FoldResult(
        fold=fold.index,
        test_ids=keys[test_pos],
        test_positions=test_pos,
        predictions=predictions,
        run=FoldRun(
            scores=scores,
            final_loss=history["loss"][-1],
            epochs=model.epochs,
            train_seconds=round(finished - started, 3),
            started_at=started,
            finished_at=finished,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            device=device,
            attempt=attempt,
        ),
        history=history,
        repeat=fold.repeat,
        model_bytes=model_to_bytes(net),
        preprocess=params,
    )
