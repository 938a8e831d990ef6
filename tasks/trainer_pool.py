"""Compiled fold loops kept per worker process: a warm worker compiles once, not per fold."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tasks.loop import GraphTrainer

MAX_SHAPES = 8  # architectures x row shapes kept; a tune's trials each bring their own

_LOCK = threading.Lock()
_IDLE: OrderedDict[str, list[GraphTrainer]] = OrderedDict()


def trainer_key(model: dict[str, Any], x: np.ndarray, y: np.ndarray, jit: bool) -> str:
    """What the traced loop depends on: the network's settings and the rows' shapes and dtypes."""
    return json.dumps(
        [model, x.shape, str(x.dtype), y.shape, str(y.dtype), jit], sort_keys=True, default=str
    )


@contextmanager
def borrowed_trainer(
    tf: Any, key: str, template: Callable[[], Any], net: Any, x: np.ndarray, y: np.ndarray,
    jit: bool,
) -> Iterator[GraphTrainer]:  # fmt: skip
    """A trainer loaded with `net` and (x, y): an idle one of this key, or a new one.

    A fold on another thread of the process gets its own; trainers go back when the fold ends
    (the oldest keys are dropped beyond MAX_SHAPES).
    """
    with _LOCK:
        idle = _IDLE.get(key)
        trainer = idle.pop() if idle else None
    if trainer is None:
        trainer = GraphTrainer(tf, template(), x, y, jit=jit)
    trainer.load(net, x, y)
    try:
        yield trainer
    finally:
        trainer.net = trainer.model  # drop the fold's network
        with _LOCK:
            _IDLE.setdefault(key, []).append(trainer)
            _IDLE.move_to_end(key)
            while len(_IDLE) > MAX_SHAPES:
                _IDLE.popitem(last=False)
