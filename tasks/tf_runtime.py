"""TensorFlow and Keras set-up per process: one configured import, quiet C++, seeded sessions."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from tasks.config import FoldRuntime, ModelConfig
from tasks.logs import run_logger


def uses_xla(model: ModelConfig, runtime: FoldRuntime) -> bool:
    """XLA unless the model has dropout: XLA's CPU random-number ops made it ~7x slower."""
    return runtime.xla and not model.dropout


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
    import keras  # noqa: F401 - imported with TensorFlow, so that its objects are frozen too

    freeze_long_lived()
    return tf


def freeze_long_lived() -> None:
    """Keep what is alive now (the modules just imported) out of the cyclic collector's scans.

    Keras's `clear_session`, run before every fold, calls `gc.collect()`, which walked
    TensorFlow's and Keras's ~0.5 million objects: 0.4-0.5 s a fold here. Frozen, they are
    skipped; garbage made later is still collected.
    """
    gc.collect()
    gc.freeze()


def device_label(gpu: int | None, gpu_visible: bool) -> str:
    """'GPU:<physical id>' (from this worker's CUDA_VISIBLE_DEVICES) or 'CPU'."""
    if gpu is None or not gpu_visible:
        return "CPU"
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return f"GPU:{visible[gpu].strip()}" if gpu < len(visible) else f"GPU:{gpu}"


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
