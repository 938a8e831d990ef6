"""The fold fan-out and fan-in, in one place: which runner, which resources, what came back.

`run_folds` starts a task runner for this run's folds (threads, worker processes or Dask, as
`ExecutionConfig` says), maps `train_fold` over the folds *inside the calling flow run* (so
every fold task run, its logs and its state are on that run's own page in the UI), shows
folds done as a progress artifact, and returns each fold's result or a `FoldFailure`.
`fold_workers_started` starts that runner's worker processes ahead of the folds (the CLI
while the API server boots, the flow while it downloads and cleans): they spawn and import
TensorFlow meanwhile, and `run_folds` takes the started runner over.
With `refit`, one more `train_fold` run trains the model on every row (`full_fold`): the same
task, cache key, retries and runner as a fold, so it is cached and retried exactly like one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from prefect import unmapped
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.process import (
    api_server_pids,
    api_shared_with_workers,
    init_fold_worker,
    stop_child_processes,
    stop_when_api_lost,
    threads_per_worker,
    warm_tensorflow,
)
from tasks.clean import CleanedData
from tasks.config import CVConfig, ExecutionConfig, FoldRuntime, ModelConfig
from tasks.errors import describe_failure, retry_options
from tasks.faults import fault_plan_from_env
from tasks.folds import FoldSpec
from tasks.logs import send_queued_logs
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


def make_task_runner(execution: ExecutionConfig, workers: int) -> TaskRunner:
    """A task runner for `workers` concurrent folds, as the execution config asks."""
    if execution.uses_dask():
        # GPUs: one Dask worker per GPU, GPU=1 resource each; a process pool cannot pin folds
        # to GPUs (its processes pick tasks at random and keep the first GPU they import).
        from flows.dask_cluster import dask_task_runner

        return dask_task_runner(execution, workers)
    if execution.runner == "thread" or workers == 1:
        return ThreadPoolTaskRunner(max_workers=workers)
    # Each worker imports TensorFlow in its initialiser, with the threads its folds will use.
    return FoldProcessPool(
        max_workers=workers, initializer=init_fold_worker, initargs=(threads_per_worker(workers),)
    )


def starts_worker_processes(execution: ExecutionConfig, workers: int) -> bool:
    """Whether this run's folds go to worker processes it starts itself (pool or local cluster)."""
    if execution.uses_dask():
        return not execution.dask_address
    return execution.runner == "process" and workers > 1


class FoldProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool, with every worker process started as soon as it is entered.

    Python spawns pool processes one per submission, so the pool would start its workers only
    when the folds arrive; one no-op call per worker starts them all at once instead.
    """

    def __enter__(self) -> Self:
        super().__enter__()
        for _ in range(self._max_workers):
            self._executor.submit(os.getpid)
        return self

    def terminate_workers(self) -> None:
        """End the worker processes now, e.g. mid-import when no fold will ever need them."""
        executor = self._executor
        for proc in list(getattr(executor, "_processes", {}).values()) if executor else []:
            if proc.is_alive():
                proc.terminate()


class StartedRunner:
    """A fold runner entered ahead of its folds, so that its workers get ready meanwhile.

    A process pool spawns its workers on entry, each importing TensorFlow in its initialiser;
    a local Dask cluster starts in a background thread (its workers import TensorFlow in a
    preload, `flows.dask_cluster.warm_up_preload`, before they join it).
    """

    def __init__(self, execution: ExecutionConfig, workers: int) -> None:
        self.runner = make_task_runner(execution, workers)
        self.runner.__enter__()
        self.error: BaseException | None = None
        self._starting: threading.Thread | None = None
        if execution.uses_dask():
            self._starting = threading.Thread(
                target=self._start_cluster, name="foldflow-dask-start", daemon=True
            )
            self._starting.start()

    def _start_cluster(self) -> None:
        try:
            self.runner.client  # noqa: B018 - the property starts the cluster and connects
        except BaseException as err:  # noqa: BLE001 - the fan-out starts anew and says why
            self.error = err

    def ready(self) -> bool:
        """Wait until it has started; whether it can take the folds."""
        if self._starting is not None:
            self._starting.join()
        return self.error is None

    def close(self) -> None:
        """Stop it unused, without waiting for workers still importing TensorFlow."""
        self.ready()
        if isinstance(self.runner, FoldProcessPool):
            self.runner.terminate_workers()
        self.runner.__exit__(None, None, None)


_STARTED: dict[str, StartedRunner] = {}  # runners started ahead, by _runner_key


def _runner_key(execution: ExecutionConfig, workers: int) -> str:
    return f"{workers}:{execution.model_dump_json()}"


@contextlib.contextmanager
def fold_workers_started(config: CVConfig) -> Iterator[None]:
    """Inside: the run's fold workers start now, and import TensorFlow while the run goes on.

    `run_folds` takes them over when the folds are planned; workers no fold took (the run
    failed before its folds) are stopped on the way out. A no-op when the folds run in this
    process, on an existing Dask cluster, or when an enclosing block (the CLI's around the
    flow's) already started them. Results do not change: each worker imports TensorFlow with
    the thread budget and device its folds would have used.
    """
    execution = config.execution
    workers = execution.resolved_workers(config.folds * config.repeats)
    key = _runner_key(execution, workers)
    if key in _STARTED or not starts_worker_processes(execution, workers):
        yield
        return
    started = _STARTED[key] = StartedRunner(execution, workers)
    try:
        yield
    finally:
        if _STARTED.get(key) is started:
            del _STARTED[key]
            started.close()


def tensorflow_imported_for_local_folds(config: CVConfig) -> None:
    """Import TensorFlow here now if this process trains the folds itself (threads, 1 worker).

    The CLI calls it while the temporary API server boots, so that the import overlaps the
    boot instead of delaying the first fold; same thread budget as the folds, so no change
    to results. A no-op when the folds go to worker processes or to Dask.
    """
    execution = config.execution
    workers = execution.resolved_workers(config.folds * config.repeats)
    if execution.uses_dask() or starts_worker_processes(execution, workers):
        return
    warm_tensorflow(threads_per_worker(workers))


@contextlib.contextmanager
def fold_runner(execution: ExecutionConfig, workers: int) -> Iterator[TaskRunner]:
    """The fan-out's runner, entered: the one started ahead for it if any, else a new one."""
    started = _STARTED.pop(_runner_key(execution, workers), None)
    if started is not None and not started.ready():
        started.close()  # its cluster failed to start: a new runner raises the error here
        started = None
    if started is None:
        with make_task_runner(execution, workers) as runner:
            yield runner
        return
    runner = started.runner
    try:
        yield runner
    except BaseException as err:
        runner.__exit__(type(err), err, err.__traceback__)
        raise
    runner.__exit__(None, None, None)


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

    def described(done: int) -> str:
        return f"{done} of {total} folds done"

    artifact = create_progress_artifact(0.0, key="folds-done", description=described(0))
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(artifact, 100.0 * done / total, description=described(done))


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
        stop_when_api_lost(execution.api_lost_after_s),
        fold_runner(execution, workers) as runner,
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
            outcomes = {
                name: [collect_outcome(f, spec.index) for f, spec in zip(futures[name], planned)]
                for name, _, planned, _ in jobs
            }
        except BaseException as stop:
            if not isinstance(stop, Exception):  # Ctrl-C, SIGTERM: never wait for running folds
                stop_child_processes(keep=api_server_pids())
            raise
    send_queued_logs()  # the workers' last lines, forwarded here as the runner closed
    return outcomes
