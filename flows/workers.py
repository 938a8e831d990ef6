"""A warm pool: fold workers that import TensorFlow once and outlive the runs they train for.

Every run otherwise spawns its fold workers anew, and each pays TensorFlow's import (~4 s
here) again. A `WarmPool` is a local Dask cluster (`distributed.LocalCluster`, or one worker
per GPU) whose Nanny-managed workers import TensorFlow with the folds' thread budget as they
start (`flows.dask_cluster.warm_up_preload`) and then wait for folds; runs reach it through
`execution.dask_address`, as they reach any Dask cluster. Between folds `keras_session`
(tasks/tf_runtime.py) clears Keras's state and reseeds, so a fold trained on a worker that
trained others gives the same numbers as on a fresh one. A worker that dies (or passes its
memory limit) is restarted by its nanny, preload included, and Dask reruns its fold elsewhere.

The pool lives in the process that starts it (`foldflow workers start`, `foldflow serve
--warm-workers N`): the scheduler runs there, and each worker ends when that process ends
(`exit_with_parent`, even after a SIGKILL). `foldflow workers start` records its pid and
address in `<cache_dir>/workers/pool.json`, so that `foldflow workers stop` can end it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flows.worker import threads_per_worker
from tasks.config import CVConfig, PoolConfig

STATE_FILE = Path("workers") / "pool.json"
# What a fold task (and a run's plan) needs on a worker besides TensorFlow: imported as a warm
# worker starts, so that even the first run finds it there (a per-run cluster imports it later).
FOLD_IMPORTS = (
    "import prefect.task_engine\nimport prefect_dask.client\nimport tasks.train\n"
    "import sklearn.model_selection\n"  # a run's plan_folds (FoldExecution.call)
    "from tasks.tf_runtime import freeze_long_lived\nfreeze_long_lived()\n"  # these modules too
)
STOP_TIMEOUT_S = 30.0
LOST_WORKER_TIMEOUT = "300s"  # how long a restarted worker may take to rejoin


@dataclass(frozen=True)
class PoolState:
    """What the state file says about a running pool."""

    pid: int
    address: str
    workers: int
    threads: int
    gpus: list[int] | None = None


def state_path(cache_dir: str) -> Path:
    """The pool's state file under a local cache folder."""
    if "://" in cache_dir and not cache_dir.startswith("file://"):
        raise ValueError(
            f"cache_dir {cache_dir!r}: the warm pool keeps its state file in a local folder; "
            "pass a local --cache-dir to `foldflow workers`"
        )
    return Path(cache_dir.removeprefix("file://")).expanduser().resolve() / STATE_FILE


def pool_threads(pool: PoolConfig) -> int:
    """TensorFlow threads per warm worker: the share a run with as many workers would use."""
    return threads_per_worker(pool.resolved_workers())


def start_cluster(pool: PoolConfig) -> Any:
    """The pool's cluster, its workers started with TensorFlow imported (blocks until then)."""
    import dask
    import distributed

    from flows.dask_cluster import gpu_cluster, local_cluster_kwargs

    # A worker its nanny restarts imports TensorFlow again before it rejoins: on a busy 2-core
    # machine that took longer than Dask's 15 s, after which the cluster closed the nanny and
    # the pool stayed a worker short. Read when a worker is lost: set for this process.
    dask.config.set({"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT})
    threads = pool_threads(pool)
    if pool.gpus:
        return gpu_cluster(pool.gpus, threads, memory_limit=pool.memory_limit)
    kwargs = local_cluster_kwargs(pool.resolved_workers())
    kwargs["preload"] = [preload + FOLD_IMPORTS for preload in kwargs["preload"]]
    return distributed.LocalCluster(name="foldflow-warm", memory_limit=pool.memory_limit, **kwargs)


def run_settings(pool: PoolConfig, address: str) -> dict[str, Any]:
    """The `execution` settings that send a run's folds to this pool, with its thread budget."""
    return {
        "runner": "dask",
        "dask_address": address,
        "workers": pool.resolved_workers(),
        "gpus": pool.gpus,
    }


def with_pool(config: CVConfig, pool: PoolConfig, address: str) -> CVConfig:
    """A run config whose folds train on the pool at `address`."""
    execution = {**config.execution.model_dump(), **run_settings(pool, address)}
    return config.model_copy(update={"execution": type(config.execution)(**execution)})


class WarmPool(contextlib.AbstractContextManager["WarmPool"]):
    """A started pool (see the module docstring); leaving the block stops it."""

    def __init__(self, pool: PoolConfig, record: bool = False) -> None:
        self.pool = pool
        self.cluster = start_cluster(pool)
        self.address: str = self.cluster.scheduler_address
        self.state = PoolState(
            pid=os.getpid(), address=self.address, workers=pool.resolved_workers(),
            threads=pool_threads(pool), gpus=pool.gpus,
        )  # fmt: skip
        self.path = state_path(pool.cache_dir) if record else None
        if self.path is not None:
            write_state(self.path, self.state)

    def worker_pids(self) -> dict[str, int]:
        """{worker address: pid} of the pool's live workers."""
        import distributed

        with distributed.Client(self.address, timeout=30) as client:
            return client.run(os.getpid)

    def close(self) -> None:
        """Stop the workers and the scheduler; forget the state file."""
        try:
            self.cluster.close()
        finally:
            if self.path is not None:
                remove_state(self.path, os.getpid())

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_state(path: Path, state: PoolState) -> None:
    """Write the state file whole (temp then rename), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(json.dumps(asdict(state)) + "\n")
    temp.replace(path)


def remove_state(path: Path, pid: int) -> None:
    """Remove the state file if it still names this pool (a newer pool keeps its own)."""
    with contextlib.suppress(FileNotFoundError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (not a zombie)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_state(cache_dir: str) -> PoolState | None:
    """The running pool recorded under `cache_dir`, or None (a stale file is removed)."""
    path = state_path(cache_dir)
    try:
        data = json.loads(path.read_text())
        state = PoolState(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a warm pool state file ({err}); remove it") from err
    if not alive(state.pid):
        remove_state(path, state.pid)
        return None
    return state


def stop_pool(cache_dir: str, timeout_s: float = STOP_TIMEOUT_S) -> PoolState | None:
    """Ask the pool recorded under `cache_dir` to stop (SIGTERM) and wait until it has."""
    state = read_state(cache_dir)
    if state is None:
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(state.pid):
        if time.monotonic() > deadline:
            os.kill(state.pid, signal.SIGKILL)  # its workers follow it (exit_with_parent)
            break
        time.sleep(0.1)
    remove_state(state_path(cache_dir), state.pid)
    return state


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM ends the block as Ctrl-C does, so the pool's clean-up runs."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
