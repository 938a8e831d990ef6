"""Where a run's fold tasks train: one context manager hands the flow a ready task runner.

`fold_execution(config)` picks the runner the execution config asks for (threads, worker
processes or Dask) and gets it ready while the run downloads and cleans: a local Dask
cluster starts in the background (its workers import TensorFlow before they join), folds that
train in this process get TensorFlow imported now, and a process pool's workers import it in
their initialiser as the folds arrive. It makes each fold ask for a GPU when there are GPUs,
stops the run if the Prefect API goes away while folds train, and on the way out closes the
runner and sends the folds' last log lines. `collect_outcomes` waits for the fold futures and
turns each into a `FoldResult` or a `FailedFold`. The flows map the fold task themselves.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import Task

from flows.lifetime import stop_child_processes
from flows.local_api import local_api_pid
from flows.stops import reclaim_sigterm, stop_when_api_lost
from flows.worker import init_fold_worker, threads_per_worker, warm_tensorflow
from tasks.config import CVConfig, ExecutionConfig, FoldRuntime
from tasks.errors import describe_failure, retry_options
from tasks.faults import fault_plan_from_env
from tasks.folds import FoldSpec
from tasks.logs import send_queued_logs
from tasks.metrics import FailedFold
from tasks.train import FoldResult, fold_results_storage, train_fold


@dataclass(frozen=True)
class FoldOutcomes:
    """What the fan-out brought back: one outcome per planned fold, and the refit's if any."""

    folds: list[FoldResult | FailedFold]
    refit: FoldResult | FailedFold | None = None


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
    return ProcessPoolTaskRunner(
        max_workers=workers, initializer=init_fold_worker, initargs=(threads_per_worker(workers),)
    )


class FoldExecution:
    """A run's fold runner, entered at once; `runner` waits until it can take the folds."""

    def __init__(self, execution: ExecutionConfig, workers: int) -> None:
        self.execution, self.workers = execution, workers
        self.taken = False  # an inner fold_execution block took it over (and closes it)
        self.runtime = FoldRuntime.from_execution(
            execution, threads_per_worker(workers), fault_plan_from_env()
        )
        self._runner = make_task_runner(execution, workers)
        self._runner.__enter__()
        self._error: BaseException | None = None
        self._starting: threading.Thread | None = None
        if execution.uses_dask():  # a local cluster starts meanwhile; its workers import TF
            self._starting = threading.Thread(target=self._connect, daemon=True)
            self._starting.start()
        elif not execution.starts_workers(workers):  # folds train here: import TF now
            warm_tensorflow(self.runtime.threads, self.runtime.gpu)

    def _connect(self) -> None:
        try:
            self._runner.client  # noqa: B018 - the property starts the cluster and connects
        except BaseException as err:  # noqa: BLE001 - raised where the runner is asked for
            self._error = err

    def call(self, task: Task, parameters: dict[str, Any]) -> Any:
        """A task's result, computed on the fold workers when they are up already (an existing
        Dask cluster, such as a warm pool, which has imported what the task needs; a served
        run's own process would import scikit-learn first), else here."""
        if self.execution.dask_address:
            return self.runner.submit(task, parameters).result()
        return task(**parameters)

    def serves(self, execution: ExecutionConfig, workers: int) -> bool:
        """Whether this runner is the one a block with these settings would start."""
        return (self.execution, self.workers) == (execution, workers)

    @property
    def runner(self) -> TaskRunner:
        """The started runner (a GPU run fails here at once if no worker declares a GPU)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
            if self._error is not None:
                raise self._error
            if self.execution.gpus:
                from flows.dask_cluster import check_gpu_workers

                check_gpu_workers(self._runner.client)
        return self._runner

    def close(self, error: BaseException | None = None) -> None:
        """Close the runner; on Ctrl-C, stop the fold processes first instead of waiting."""
        if self._starting is not None:
            self._starting.join()
        if error is not None and not isinstance(error, Exception):  # Ctrl-C: stop folds now
            api = local_api_pid()
            stop_child_processes(keep=set() if api is None else {api})
        exc = (type(error), error, error.__traceback__) if error else (None, None, None)
        self._runner.__exit__(*exc)


def fold_task(config: CVConfig, name: str = "") -> Task:
    """`train_fold` with the run's retries and fold cache; a named model's runs are fold-k-name."""
    return train_fold.with_options(
        task_run_name="{fold.label}" + (f"-{name}" if name else ""),
        refresh_cache=config.refresh,
        result_storage=fold_results_storage(config.cache_dir),
        **retry_options(config.fold_retries, config.fold_retry_delay_s),
    )


def collect_outcomes(
    futures: list[Any],
    folds: list[FoldSpec],
    refit: Any | None = None,
    once_a_worker_idles: IdleWork | None = None,
) -> FoldOutcomes:
    """Wait for the fold futures (showing folds done) and say what each one brought back."""
    labels = [spec.label for spec in folds] + (["full"] if refit is not None else [])
    track_folds_done([*futures, *([refit] if refit is not None else [])], labels,
                     once_a_worker_idles)  # fmt: skip
    return FoldOutcomes(
        folds=fold_outcomes(futures, folds),
        refit=None if refit is None else outcome(refit, 0, 0, "full"),
    )


def as_inputs(outcomes: list[Any]) -> list[Any]:
    """Fold outcomes as task inputs that Prefect links to the fold runs that made them (the run
    graph's fan-in) without walking every array and loss curve inside: ~0.1 s a task."""
    from prefect.utilities.annotations import opaque

    return [opaque(outcome) for outcome in outcomes]


def fold_outcomes(futures: list[Any], folds: list[FoldSpec]) -> list[FoldResult | FailedFold]:
    """Each planned fold's outcome, in plan order."""
    return [outcome(f, spec.index, spec.repeat, spec.label) for f, spec in zip(futures, folds)]


def outcome(future: Any, fold: int, repeat: int, label: str) -> FoldResult | FailedFold:
    """A fold future's result, or a FailedFold saying after how many attempts and why."""
    future.wait()  # sets the future's final state locally; the API may still lag behind
    state = future.state
    if state.is_completed():
        return state.result()
    try:
        error = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - e.g. never ran: the executor's error tells why
        wrapped = getattr(future, "wrapped_future", None)
        error = (wrapped.exception(timeout=0) if wrapped and wrapped.done() else None) or err
    reason = describe_failure(error) if isinstance(error, BaseException) else str(state.message)
    attempts = attempts_made(future.task_run_id)
    plural = "" if attempts == 1 else "s"
    verb = "failed" if state.name == "Failed" else f"failed ({state.name or state.type.value})"
    return FailedFold(
        fold=fold, repeat=repeat, label=label,
        error=f"{verb} after {attempts} attempt{plural}: {reason}",
    )  # fmt: skip


def attempts_made(task_run_id: Any) -> int:
    """How many times the API says a task run ran (1 if it cannot say)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_task_run(task_run_id).run_count or 1
    except Exception:  # noqa: BLE001 - the count is a courtesy; the error itself matters
        return 1


class IdleWork:
    """The flow's own CPU work during the fan-out (a baseline, the join's imports), started on
    a thread once a worker has no fold left to take: on 2 cores it then uses that worker's
    core instead of slowing two training folds. `wait` returns what it computed."""

    def __init__(self, workers: int, work: Callable[[], Any]) -> None:
        self.workers, self._work = workers, work
        self._thread: threading.Thread | None = None
        self._result: Any = None
        self._error: BaseException | None = None

    def due(self, done: int, total: int) -> bool:
        """Whether fewer folds are unfinished than there are workers: one has none to take."""
        return self._thread is None and total - done < self.workers

    def start(self) -> None:
        """Run the work on a thread, in this flow run's context (its tasks belong to the run)."""
        context = contextvars.copy_context()

        def run() -> None:
            try:
                self._result = context.run(self._work)
            except BaseException as err:  # noqa: BLE001 - raised again by wait()
                self._error = err

        self._thread = threading.Thread(target=run, name="foldflow-idle-work", daemon=True)
        self._thread.start()

    def wait(self) -> Any:
        """The work's result (started now if no worker ever idled, e.g. every fold failed)."""
        if self._thread is None:
            self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def track_folds_done(
    futures: list[Any], labels: list[str] | None = None, idle: IdleWork | None = None
) -> None:
    """Wait for the fold futures, showing folds done (and failed) / total as a progress card.

    With the folds' labels, it also names the folds still waiting, and says on each fold's
    own card when it came from the cache or failed. `idle` starts once a worker idles.
    """
    from prefect.artifacts import update_progress_artifact
    from prefect.futures import as_completed

    from tasks.fold_cards import show_fold_ended
    from tasks.run_cards import progress_card

    total, done, failed = len(futures), 0, 0
    waiting = dict(zip(map(id, futures), labels or []))

    def described() -> str:
        text = f"{done} of {total} folds done" + (f", {failed} failed" if failed else "")
        return text + (f" · waiting: {', '.join(waiting.values())}" if waiting else "")

    artifact = progress_card("folds-done", 0.0, described())  # a retry's resets the run's one
    if idle is not None and idle.due(0, total):
        idle.start()
    for future in as_completed(futures):
        future.wait()  # its final state, known here; the API's copy may still lag behind
        if future.state.is_completed():
            done += 1
        else:
            failed += 1
        label = waiting.pop(id(future), None)
        if idle is not None and idle.due(done + failed, total):
            idle.start()
        update_progress_artifact(artifact, 100.0 * done / total, description=described())
        if label is not None:
            show_fold_ended(label, future.state.name or "")


_active: contextvars.ContextVar[FoldExecution | None] = contextvars.ContextVar(
    "foldflow_fold_execution", default=None
)


@contextlib.contextmanager
def fold_execution(config: CVConfig, tasks: int | None = None) -> Iterator[FoldExecution]:
    """Inside: the run's fold runner, its workers starting now (see the module docstring).

    `tasks` is how many fold tasks may run at once (default: the config's folds). A block
    inside another for the same execution takes over the runner the outer one started (the
    CLI's, entered while the API server boots, around the flow's) and closes it as it ends.
    """
    execution = config.execution
    workers = execution.resolved_workers(tasks or config.n_fold_tasks)
    outer = _active.get()
    reused = outer is not None and not outer.taken and outer.serves(execution, workers)
    started = outer if reused else FoldExecution(execution, workers)
    started.taken = started.taken or reused
    token = _active.set(started)
    error: BaseException | None = None
    reclaim_sigterm()  # Prefect's flow engine took it over; a CLI run stops as on Ctrl-C
    try:
        with api_watch(execution), gpu_annotation(execution):
            yield started
    except BaseException as err:
        error = err
        raise
    finally:
        _active.reset(token)
        if reused or not started.taken:
            started.close(error)
            if error is None:
                send_queued_logs()  # the workers' last lines, forwarded as the runner closed


def api_watch(execution: ExecutionConfig) -> contextlib.AbstractContextManager[None]:
    """Inside a flow run, where folds train: stop the run if the API stops answering."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return contextlib.nullcontext()
    return stop_when_api_lost(execution.api_lost_after_s)


@contextlib.contextmanager
def gpu_annotation(execution: ExecutionConfig) -> Iterator[None]:
    """With GPUs (always on Dask), every fold task submitted inside asks for one `GPU`."""
    if not (execution.gpus and execution.uses_dask()):
        yield
        return
    from flows.dask_cluster import gpu_resource_annotation

    with gpu_resource_annotation():
        yield
