"""The fold fan-out and fan-in, in one place: which runner, which resources, what came back.

`run_folds` starts a task runner for this run's folds (threads, worker processes or Dask, as
`ExecutionConfig` says), maps `train_fold` over the folds *inside the calling flow run* (so
every fold task run, its logs and its state are on that run's own page in the UI), shows
folds done as a progress artifact, and returns each fold's result or a `FoldFailure`.
With `refit`, one more `train_fold` run trains the model on every row (`full_fold`): the same
task, cache key, retries and runner as a fold, so it is cached and retried exactly like one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import unmapped
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.process import (
    api_server_pids,
    api_shared_with_workers,
    init_fold_worker,
    stop_child_processes,
)
from tasks.clean import CleanedData
from tasks.config import CVConfig, ExecutionConfig, FoldRuntime, ModelConfig
from tasks.errors import describe_failure, retry_options
from tasks.faults import fault_plan_from_env
from tasks.folds import FoldSpec
from tasks.train import FoldResult, fold_results_storage, train_fold

REFIT = "full"  # run_folds' key for the refit's outcome (a one-item list)


def full_fold(n_rows: int, n_folds: int) -> FoldSpec:
    """The refit as a fold: number 0, every row trains, none is tested (label 'full')."""
    return FoldSpec(0, n_folds, n_rows, np.empty(0, dtype=np.int64))


@dataclass(frozen=True)
class FoldFailure:
    """Why a fold has no result: its final state, how many attempts it had, and the error."""

    fold: int
    state: str
    attempts: int
    error: str

    def describe(self) -> str:
        """One line for logs, errors and the UI."""
        plural = "" if self.attempts == 1 else "s"
        verb = "failed" if self.state == "Failed" else f"failed ({self.state})"
        return f"{verb} after {self.attempts} attempt{plural}: {self.error}"


def threads_per_worker(workers: int) -> int:
    """Split the cores evenly so N workers never oversubscribe the machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def make_task_runner(execution: ExecutionConfig, workers: int) -> TaskRunner:
    """A task runner for `workers` concurrent folds, as the execution config asks."""
    if execution.uses_dask():
        # GPUs: one Dask worker per GPU, GPU=1 resource each; a process pool cannot pin folds
        # to GPUs (its processes pick tasks at random and keep the first GPU they import).
        from flows.dask_cluster import dask_task_runner

        return dask_task_runner(execution, workers)
    if execution.runner == "thread" or workers == 1:
        return ThreadPoolTaskRunner(max_workers=workers)
    return ProcessPoolTaskRunner(max_workers=workers, initializer=init_fold_worker)


@contextlib.contextmanager
def fold_resources(execution: ExecutionConfig, runner: Any) -> Iterator[None]:
    """Wrap the fold map: with GPUs (always on Dask), each fold task asks for one `GPU`.

    On a cluster whose workers declare no `GPU` resource (e.g. an existing cluster started
    without `--resources GPU=1`) the folds would wait forever, so that fails at once with
    what to do instead.
    """
    if not (execution.gpus and execution.uses_dask()):
        yield
        return
    from flows.dask_cluster import check_gpu_workers, gpu_resource_annotation

    client = getattr(runner, "client", None)
    if client is not None:
        check_gpu_workers(client)
    with gpu_resource_annotation():
        yield


def collect_outcome(future: Any, fold: int) -> FoldResult | FoldFailure:
    """A fold future's result, or a FoldFailure saying which attempt failed and why."""
    future.wait()  # sets the future's final state locally; the API may still lag behind
    state = future.state
    if state.is_completed():
        return state.result()
    try:
        error = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - e.g. never ran: the executor's error tells why
        wrapped = getattr(future, "wrapped_future", None)
        error = (wrapped.exception(timeout=0) if wrapped and wrapped.done() else None) or err
    attempts = 1
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            attempts = client.read_task_run(future.task_run_id).run_count or 1
    except Exception:  # noqa: BLE001 - the count is a courtesy; the error itself matters
        pass
    reason = describe_failure(error) if isinstance(error, BaseException) else str(state.message)
    return FoldFailure(
        fold=fold, state=state.name or state.type.value, attempts=attempts, error=reason
    )


def track_folds_done(futures: list[Any]) -> None:
    """Wait for the fold futures, showing folds done / total as a progress artifact."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed

    total = len(futures)
    artifact = create_progress_artifact(0.0, key="folds-done", description=f"folds done / {total}")
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(artifact, 100.0 * done / total)


def run_folds(
    data: CleanedData,
    folds: list[FoldSpec],
    config: CVConfig,
    models: Mapping[str, ModelConfig] | None = None,
    refit: bool = False,
) -> dict[str, list[FoldResult | FoldFailure]]:
    """Train every (model, fold) on the configured runner; outcomes per model, in fold order.

    `models` maps a name to a model (default: the config's model under the name ""); a named
    model's fold task runs are called `fold-<k>-<name>`. With `refit` (one model only), the
    config's model is also trained on every row: its outcome is under the key REFIT.
    """
    models = models or {"": config.model}
    if refit and len(models) != 1:
        raise ValueError("refit trains one model on all rows; it needs exactly one model")
    execution = config.execution
    workers = execution.resolved_workers(len(folds) * len(models))
    runtime = FoldRuntime.from_execution(
        execution, threads_per_worker(workers), fault_plan_from_env()
    )
    fold_task = train_fold.with_options(
        refresh_cache=config.refresh,
        result_storage=fold_results_storage(config.cache_dir),
        **retry_options(config.fold_retries, config.fold_retry_delay_s),
    )
    in_workers = execution.uses_dask() or (execution.runner == "process" and workers > 1)
    jobs = [(name, model, folds, "{fold.label}" + (f"-{name}" if name else ""))
            for name, model in models.items()]  # fmt: skip
    if refit:  # one more "fold": every row for training, no test rows
        jobs.append((REFIT, next(iter(models.values())), [full_fold(data.n_rows, folds[0].n_folds)],
                     REFIT))  # fmt: skip
    futures: dict[str, list[Any]] = {}
    shared_api = api_shared_with_workers() if in_workers else contextlib.nullcontext()
    with (
        shared_api,  # worker processes must report to this run's API
        make_task_runner(execution, workers) as runner,
        fold_resources(execution, runner),
    ):
        try:
            for name, model, planned, run_name in jobs:
                futures[name] = list(
                    runner.map(
                        fold_task.with_options(task_run_name=run_name),
                        {
                            "data": unmapped(data),
                            "fold": planned,
                            "model": unmapped(model),
                            "seed": unmapped(config.seed),
                            "runtime": unmapped(runtime),
                        },
                    )
                )
            track_folds_done([future for group in futures.values() for future in group])
            return {
                name: [collect_outcome(f, spec.index) for f, spec in zip(futures[name], planned)]
                for name, _, planned, _ in jobs
            }
        except BaseException as stop:
            if not isinstance(stop, Exception):  # Ctrl-C, SIGTERM: never wait for running folds
                stop_child_processes(keep=api_server_pids())
            raise
