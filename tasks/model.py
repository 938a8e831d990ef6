"""The fold's Keras network: built from the config with seeded initialisers, saved as bytes."""

from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import ModelConfig

REGRESSION_LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}


def build_model(
    n_features: int, n_classes: int, cfg: ModelConfig, seed: int, loss: str = ""
) -> Any:
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


def count_parameters(n_features: int, n_outputs: int, hidden_units: list[int]) -> int:
    """The network's weights and biases, counted without building it (to size its files)."""
    widths = [n_features, *hidden_units, n_outputs]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def infer(net: Any, x: np.ndarray) -> np.ndarray:
    """The network's outputs computed in float64, so a row's value does not hang on its batch.

    A float32 CPU matrix product rounds a row differently depending on where it falls in the
    batch (measured on AVX2: 2 of 147 rows, 1 ulp), so a fold's test rows scored alone and the
    same rows scored among others would differ; in float64 that difference is ~1e-17.
    """
    with _WIDE_LOCK:  # one float64 twin per architecture, shared by a process's folds
        wide = _float64_twin(net)
        wide.set_weights([w.astype(np.float64) for w in net.get_weights()])
        return np.asarray(wide(np.asarray(x, dtype=np.float64), training=False), dtype=np.float64)


_WIDE_LOCK = threading.Lock()
_WIDE_NETS: OrderedDict[str, Any] = OrderedDict()
MAX_WIDE_NETS = 8  # architectures kept per process (a tune run's trials differ)


def _float64_twin(net: Any) -> Any:
    """A float64 clone of the network's architecture, built once per process and reused:
    cloning cost ~0.2 s a fold, more than scoring its rows; every weight is set per call."""
    import keras

    key = architecture_key(net)
    if key in _WIDE_NETS:
        _WIDE_NETS.move_to_end(key)
        return _WIDE_NETS[key]

    def widened(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    wide = keras.models.clone_model(net, clone_function=widened)
    _WIDE_NETS[key] = wide
    while len(_WIDE_NETS) > MAX_WIDE_NETS:
        _WIDE_NETS.popitem(last=False)
    return wide


def architecture_key(net: Any) -> str:
    """The network's layers and settings, and its weights' shapes: what its outputs depend on
    beside the weights. Names, seeds and initialisers differ from fold to fold and do not."""

    def unnamed(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: unnamed(v) for k, v in value.items()
                if k not in ("name", "seed") and not k.endswith("_initializer")
            }  # fmt: skip
        if isinstance(value, list | tuple):
            return [unnamed(v) for v in value]
        return value

    return json.dumps(
        [unnamed(net.get_config()), [tuple(w.shape) for w in net.weights]],
        sort_keys=True, default=str,
    )  # fmt: skip


def model_to_bytes(net: Any) -> bytes:
    """The network as a .keras file's bytes (weights + architecture, no pickles), to persist."""
    with tempfile.TemporaryDirectory(prefix="foldflow-model-") as folder:
        path = Path(folder) / "model.keras"
        net.save(path)
        return path.read_bytes()
