"""Pick the Prefect task runner that trains folds: threads, worker processes or Dask."""

from __future__ import annotations

import atexit
import os

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.api import share_ephemeral_api
from tasks.config import ExecutionConfig
from tasks.train import FoldRuntime


def _skip_teardown_at_exit() -> None:
    """Pool-worker initializer: end the process without TensorFlow's slow teardown.

    Registered before Prefect's own exit handlers exist, so it runs after them (atexit is
    last-in, first-out): logs and results are flushed first, then ~1.5 s of C++ teardown that
    the flow would otherwise wait for when the pool shuts down is skipped.
    """
    atexit.register(os._exit, 0)


def threads_per_worker(workers: int) -> int:
    """Split the cores evenly so N workers never oversubscribe the machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def fold_runtime(execution: ExecutionConfig, workers: int, gpu: int | None = None) -> FoldRuntime:
    """The per-fold runtime settings that follow from the execution config."""
    return FoldRuntime(
        threads=threads_per_worker(workers),
        gpu=gpu,
        xla=execution.xla,
        log_every=execution.log_every,
        validate_every=execution.validate_every,
    )


def make_task_runner(execution: ExecutionConfig, workers: int) -> TaskRunner:
    """A task runner for `workers` concurrent folds, as the execution config asks."""
    if execution.runner == "dask" or execution.dask_address or execution.gpus:
        # GPUs: one Dask worker per GPU, GPU=1 resource each; a process pool cannot pin folds
        # to GPUs (its processes pick tasks at random and keep the first GPU they import).
        from flows.dask_cluster import dask_task_runner

        share_ephemeral_api()
        return dask_task_runner(execution, workers)
    if execution.runner == "thread" or workers == 1:
        return ThreadPoolTaskRunner(max_workers=workers)
    share_ephemeral_api()
    return ProcessPoolTaskRunner(max_workers=workers, initializer=_skip_teardown_at_exit)
