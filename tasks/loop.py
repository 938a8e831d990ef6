"""The fold's training loop, run inside one TensorFlow graph (optionally XLA-compiled).

`model.fit` pays framework overhead on every step: a `tf.data` iterator call, callbacks and
an executor dispatch per op, ~0.17 ms a step against a few microseconds of arithmetic. This
loop runs the very same Keras step — `model(x, training=True)`, `model.compute_loss`, the
optimizer's `apply` — over batches gathered in-graph from per-epoch permutations, many epochs
per call. Fed the same batches, it produces bit-identical weights to `fit` (checked in
tests/test_train.py); only the loop around the step is ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def epoch_batches(
    n_rows: int, batch_size: int, epochs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of every batch of `epochs` epochs, reshuffled each epoch like `fit`.

    Returns (full, tail): full[e, i] is the i-th full batch of epoch e; tail[e] is epoch e's
    short last batch (width n_rows % batch_size, possibly 0).
    """
    perms = np.stack([rng.permutation(n_rows) for _ in range(epochs)]).astype(np.int32)
    cut = (n_rows // batch_size) * batch_size
    full = perms[:, :cut].reshape(epochs, n_rows // batch_size, batch_size)
    return full, perms[:, cut:]


class GraphTrainer:
    """Trains networks of one architecture on rows of one shape, `epochs` epochs per call.

    The loop is traced (and XLA-compiled) once, over a template network and data variables;
    each fold then `load`s its own network's initial state, a fresh optimizer and its rows, so
    a worker that trained a fold before compiles nothing (~2 s a fold on 2 cores).
    """

    def __init__(self, tf: Any, template: Any, x: np.ndarray, y: np.ndarray, jit: bool) -> None:
        self.model, self.net = template, template  # loaded with its own state and (x, y)
        template.optimizer.build(template.trainable_variables)
        self._fresh_optimizer = [v.numpy() for v in template.optimizer.variables]
        data_x, data_y = tf.Variable(x, trainable=False), tf.Variable(y, trainable=False)
        self._data = (data_x, data_y)
        variables = template.trainable_variables

        def step(rows: Any) -> Any:
            xb, yb = tf.gather(data_x, rows), tf.gather(data_y, rows)
            with tf.GradientTape() as tape:
                pred = template(xb, training=True)
                loss = template.compute_loss(x=xb, y=yb, y_pred=pred, training=True)
            template.optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        @tf.function(jit_compile=jit)
        def run(full: Any, tail: Any) -> Any:
            epochs, steps = tf.shape(full)[0], tf.shape(full)[1]
            # static: the batch layout never changes between calls (fewer rows than one batch
            # leave no full batch, and XLA cannot even compile a slice of an empty axis)
            has_full, has_tail = full.shape[1] != 0, tail.shape[1] != 0
            batches = tf.cast(steps + (1 if has_tail else 0), tf.float32)

            def epoch(e: Any, losses: Any) -> tuple[Any, Any]:
                def batch(i: Any, t: Any) -> tuple[Any, Any]:
                    return i + 1, t + step(full[e, i])

                total = tf.constant(0.0)
                if has_full:
                    _, total = tf.while_loop(lambda i, _: i < steps, batch, (0, total))
                if has_tail:
                    total += step(tail[e])
                return e + 1, losses.write(e, total / batches)

            per_epoch = tf.TensorArray(tf.float32, size=epochs)
            _, per_epoch = tf.while_loop(lambda e, _: e < epochs, epoch, (0, per_epoch))
            return per_epoch.stack()

        self._run = run

    def load(self, net: Any, x: np.ndarray, y: np.ndarray) -> None:
        """Start a fold: `net`'s initial weights and seeds, a fresh optimizer, these rows."""
        for mine, theirs in zip(self.model.variables, net.variables, strict=True):
            mine.assign(theirs)
        for variable, fresh in zip(self.model.optimizer.variables, self._fresh_optimizer,
                                   strict=True):  # fmt: skip
            variable.assign(fresh)
        self._data[0].assign(x)
        self._data[1].assign(y)
        self.net = net

    def train(self, full: np.ndarray, tail: np.ndarray) -> list[float]:
        """Run these epochs' batches; each epoch's mean batch loss (with penalties), as `fit`.

        The loaded network gets the weights after every call (early stopping and the
        validation curves read them there).
        """
        losses = [float(v) for v in np.asarray(self._run(full, tail))]
        if self.net is not self.model:
            for theirs, mine in zip(self.net.variables, self.model.variables, strict=True):
                theirs.assign(mine)
        return losses
