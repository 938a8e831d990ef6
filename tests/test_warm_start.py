"""Fold workers get ready ahead of their folds (`flows.execution.fold_execution`): a local
Dask cluster's workers spawn (and import TensorFlow) while the API server boots and the data
is downloaded and cleaned, and folds that train in the CLI's own process get TensorFlow
imported while the API server boots.

Real runs, no mocks: a sampler notes when each child process of the run first appears (by
this test's own clock, so a late sample can only make the check harder to pass), and the
processes that trained the folds (metrics.json names them) must have existed before the
step that precedes the fan-out finished (in-process flow), or before the flow run even
began (the CLI, whose cluster starts while its local API server boots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.cross_validate import cross_validate
from tasks.config import BUNDLED_DATA, CVConfig, ExecutionConfig, ModelConfig

ROOT = Path(__file__).resolve().parents[1]


class FirstSeen(threading.Thread):
    """When each descendant of a process was first seen alive (time.time())."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.seen: dict[int, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            now = time.time()
            try:
                children = psutil.Process(self.pid).children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                self.seen.setdefault(child.pid, now)
            self._done.wait(0.02)

    def stop(self) -> None:
        self._done.set()
        self.join()


def fold_workers(out: Path) -> set[int]:
    """The pids of the processes that trained the folds, from metrics.json ('host:pid')."""
    metrics = json.loads((out / "metrics.json").read_text())
    return {int(fold["worker"].rsplit(":", 1)[1]) for fold in metrics["folds"]}


def task_runs_by_name(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name: run for run in runs}


@pytest.mark.slow  # a whole-flow run or the CLI in a subprocess (18-25 s)
def test_flow_starts_its_fold_workers_before_the_data_is_ready(tmp_path):
    sampler = FirstSeen(os.getpid())
    sampler.start()
    config = CVConfig(
        source=str(BUNDLED_DATA),
        folds=2,
        model=ModelConfig(epochs=2),
        execution=ExecutionConfig(runner="dask", workers=2),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        fold_retries=0,
    )
    try:
        state = cross_validate(config, return_state=True)
    finally:
        sampler.stop()
    assert state.is_completed(), state.message
    workers = fold_workers(tmp_path / "out")
    assert len(workers) == 2 and os.getpid() not in workers
    runs = task_runs_by_name(state.state_details.flow_run_id)
    planned = runs["check-output-dir"].end_time.timestamp()  # the fan-out starts after it
    folds_started = min(runs[f"fold-{k}"].start_time.timestamp() for k in (1, 2))
    for pid in workers:
        assert sampler.seen[pid] < planned < folds_started, (pid, sampler.seen, planned)


def cli_run_watched(
    tmp_path: Path, workers: int, watcher: type, runner: str = "process"
) -> tuple[int, float, Any]:
    """`foldflow run` (2 folds, 2 epochs) in a subprocess watched by `watcher(pid)` meanwhile.

    Returns the CLI's pid, when its "Beginning flow run" line arrived, and the watcher.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--no-progress", "--folds", "2",
         "--epochs", "2", "--workers", str(workers), "--runner", runner,
         "--output-dir", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watching = watcher(proc.pid)
    watching.start()
    arrived: list[tuple[float, str]] = []
    for line in proc.stdout:
        arrived.append((time.time(), line))
    code = proc.wait(timeout=120)
    watching.stop()
    text = "".join(line for _, line in arrived)
    assert code == 0, text[-3000:]
    began = next(at for at, line in arrived if "Beginning flow run" in line)
    return proc.pid, began, watching


@pytest.mark.slow  # a whole-flow run or the CLI in a subprocess (18-25 s)
def test_cli_starts_its_dask_workers_while_the_api_server_boots(tmp_path):
    _, began, sampler = cli_run_watched(tmp_path, 2, FirstSeen, runner="dask")
    workers = fold_workers(tmp_path / "out")
    assert len(workers) == 2
    for pid in workers:
        assert sampler.seen[pid] < began, (pid, sampler.seen, began)
    assert not pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet").empty


class TensorFlowLoaded(threading.Thread):
    """When TensorFlow's shared library first appeared in a process's memory (time.time())."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.at: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while self.at is None and not self._done.is_set():
            now = time.time()
            try:
                maps = Path(f"/proc/{self.pid}/maps").read_text()
            except OSError:
                maps = ""
            if "libtensorflow" in maps:
                self.at = now
            self._done.wait(0.02)

    def stop(self) -> None:
        self._done.set()
        self.join()


@pytest.mark.slow  # a whole-flow run or the CLI in a subprocess (18-25 s)
def test_cli_with_one_worker_imports_tensorflow_while_the_api_server_boots(tmp_path):
    """With `--workers 1` the folds train in the CLI's own process: no workers to start ahead,
    but TensorFlow is imported there while the temporary server boots, before the flow run."""
    pid, began, loaded = cli_run_watched(tmp_path, 1, TensorFlowLoaded)
    assert fold_workers(tmp_path / "out") == {pid}  # the folds did train in the CLI's process
    assert loaded.at is not None and loaded.at < began, (loaded.at, began)


def test_a_fold_worker_loads_neither_scikit_learn_nor_scipy():
    """What a fold worker imports (its initialiser, the task, its arguments) leaves them out.

    They cost ~0.7 s of CPU per worker start, competing with the server's boot and the clean
    step for the same cores, and no fold uses them (the join scores in the flow process).
    """
    probe = (
        "import sys, prefect.task_engine, prefect.task_runners, flows.worker, tasks.train, "
        "tasks.clean, tasks.folds, tasks.config; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
