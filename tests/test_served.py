"""End to end as users operate foldflow: a real `prefect server`, a real `foldflow serve`.

Every process here is a real subprocess (server, serve, the serve's flow-run processes and their
fold workers, the `prefect` CLI), talking to a server on a free 127.0.0.1 port with its own
temporary PREFECT_HOME, not to the session's test harness. Every process started is stopped at
the end, whole process tree included, whether the tests pass or not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.faults import FAIL_FOLDS_ENV
from tests.prefect_runs import fold_states, settled_fold_runs

pytestmark = pytest.mark.timeout(400)
pytestmark = [pytestmark, pytest.mark.slow]  # served Prefect server and workers (27-47 s each)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's `prefect` and `foldflow` scripts
DEPLOYMENT = "cross-validate/test"
CRON = "0 3 * * *"
FOLDS = {f"fold-{i}" for i in range(1, 6)}
RUN_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A command in its own session, logging to a file; `stop` ends its whole process tree."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log_path = name, log
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} ({self.log_path}), last {chars} chars ---\n{text[-chars:]}"

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM to its process group, then SIGKILL to whatever of its tree is left."""
        try:
            tree = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _, still = psutil.wait_procs(tree, timeout=5)
        for proc in still:  # e.g. children that started their own session
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._log.close()


class Launcher:
    """Starts processes against one server and remembers them, so all can be stopped."""

    def __init__(self, root: Path, api_url: str | None = None) -> None:
        self.root, self.api_url = root, api_url
        self.procs: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        # No PREFECT_* or fault settings from the caller's shell: only what is set here.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PREFECT_") and k != FAIL_FOLDS_ENV
        }
        env.update(
            PREFECT_HOME=str(self.root / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        if self.api_url:
            env["PREFECT_API_URL"] = self.api_url
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], **env: str) -> Proc:
        proc = Proc(name, args, self.env(**env), self.root / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(proc.tail() for proc in self.procs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` on a free port; yields (launcher, API URL)."""
    root = tmp_path_factory.mktemp("served")
    launcher = Launcher(root)
    port = free_port()
    try:
        proc = launcher.start(
            "server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        )
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not come up\n{proc.tail()}")
            time.sleep(0.5)
        launcher.api_url = url
        yield launcher, url
    finally:
        launcher.stop_all()


@contextmanager
def serving(launcher: Launcher, name: str, **env: str):
    """`foldflow serve` (2 epochs, 2 workers) until the block ends; yields the process."""
    out = launcher.root / name
    proc = launcher.start(
        name,
        [
            str(BIN / "foldflow"), "serve", "--name", "test", "--cron", CRON,
            "--epochs", "2", "--workers", "2",
            "--cache-dir", str(out / "cache"), "--output-dir", str(out / "output"),
        ],
        PREFECT_RUNNER_POLL_FREQUENCY="1",  # pick runs up within a second, not ten
        **env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "being served" not in proc.log_path.read_text(errors="replace"):
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"foldflow serve did not start\n{proc.tail()}")
            time.sleep(0.25)
        yield proc
        wait_idle(proc)
    finally:
        proc.stop()


def wait_idle(serve: Proc, timeout_s: float = 30) -> None:
    """Wait until the serve process has no flow-run process left.

    A run's state turns final a moment before its process exits; stopping serve in that
    moment makes the runner cancel the run on its way out ("Runner is shutting down").
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            children = psutil.Process(serve.popen.pid).children()
        except psutil.NoSuchProcess:
            return
        running = []
        for child in children:
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    running.append(child)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        if not running:
            return
        time.sleep(0.25)


@contextmanager
def api(url: str):
    """The Prefect client of this test, pointed at the test's own server."""
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            yield client


def wait_final(client, flow_run_id: UUID, launcher: Launcher, serve: Proc) -> Any:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        if not serve.alive():
            pytest.fail(f"foldflow serve exited during run {flow_run_id}\n{launcher.logs()}")
        if time.monotonic() > deadline:
            pytest.fail(
                f"run {flow_run_id} still {run.state.name if run.state else None} after "
                f"{RUN_TIMEOUT_S} s\n{launcher.logs()}"
            )
        time.sleep(1)


def fold_task_runs(client, flow_run_id: UUID) -> list[Any]:
    """Every fold task run of a run, of all its attempts, oldest first, in its final state."""
    runs = settled_fold_runs(client, flow_run_id)
    return sorted(runs, key=lambda r: r.expected_start_time or r.created)


def subflow_runs(client, flow_run_id: UUID) -> list[Any]:
    """Flow runs nested in a run (foldflow makes none: the folds are the run's own tasks)."""
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )


def run_log_messages(client, flow_run_id: UUID) -> list[str]:
    """Every log line of a flow run, as its Logs tab shows them."""
    return [
        log.message
        for log in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    ]


def progress_values(client, flow_run_id: UUID) -> dict[str, float]:
    """{progress card key (fold-1, ..., folds-done): current value} of a run."""
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=["progress"]),
        )
    )
    values = {}
    for artifact in found:
        values[artifact.key] = float(artifact.data or 0.0)
    return values


def artifacts_by_key(client, flow_run_id: UUID) -> dict[str, Any]:
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {a.key: a for a in found if a.key}


def test_served_deployment_runs_with_fold_tasks_and_artifacts(server):
    launcher, url = server
    with serving(launcher, "serve-ok") as serve, api(url) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        crons = [s.schedule.cron for s in deployment.schedules]
        assert crons == [CRON], deployment.schedules
        assert all(s.active for s in deployment.schedules)
        assert deployment.parameters["config"]["model"]["epochs"] == 2

        flow_run = run_deployment(DEPLOYMENT, timeout=0)
        run = wait_final(client, flow_run.id, launcher, serve)
        assert run.state.is_completed(), f"{run.state!r}\n{launcher.logs()}"

        folds = fold_task_runs(client, run.id)
        assert sorted(r.name for r in folds) == sorted(FOLDS)
        assert {r.state.name for r in folds} == {"Completed"}
        assert fold_states(run.id) == dict.fromkeys(FOLDS, "Completed")
        # The folds are on the run's own page: its task runs and its logs, no nested run.
        assert {r.flow_run_id for r in folds} == {run.id}
        assert subflow_runs(client, run.id) == []
        fold_lines = [m for m in run_log_messages(client, run.id) if " epoch 2/2: loss " in m]
        assert sorted(m.split()[0] for m in fold_lines) == sorted(FOLDS), fold_lines

        # The join runs in the parent flow run, so its artifacts belong to it.
        artifacts = artifacts_by_key(client, run.id)
        assert {"fold-results", "cv-summary"} <= set(artifacts), sorted(artifacts)
        table = artifacts["fold-results"].data
        rows = json.loads(table) if isinstance(table, str) else table
        assert [row["fold"] for row in rows] == sorted(FOLDS)
        assert all(0 <= row["accuracy"] <= 1 for row in rows), rows

        metrics_path = launcher.root / "serve-ok" / "output" / "metrics.json"
        metrics = json.loads(metrics_path.read_text())
        assert [row["accuracy"] for row in rows] == [
            round(f["scores"]["accuracy"], 4) for f in metrics["folds"]
        ]
        assert f"{metrics['final_accuracy']:.4f}" in artifacts["cv-summary"].data
        assert metrics["run"]["config"]["model"]["epochs"] == 2

    with api(url) as client:  # stopping serve left the finished run as it was
        assert client.read_flow_run(run.id).state.is_completed()


def test_failed_deployment_run_is_retried_and_retrains_only_the_failed_fold(server, tmp_path):
    launcher, url = server
    config = {
        "model": {"epochs": 2},
        # Threads: the same retry semantics as processes, without another ~15 s of worker
        # start-up per run (the first test runs the process pool).
        "execution": {"runner": "thread", "workers": 2},
        "fold_retries": 0,
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "output"),
    }
    with api(url) as client:
        with serving(launcher, "serve-faulty", **{FAIL_FOLDS_ENV: "3"}) as serve:
            flow_run = run_deployment(DEPLOYMENT, parameters={"config": config}, timeout=0)
            wait_final(client, flow_run.id, launcher, serve)
        failed = client.read_flow_run(flow_run.id)  # as left once that serve stopped
        assert failed.state.is_failed(), f"{failed.state!r}\n{launcher.logs()}"
        assert "fold 3" in (failed.state.message or ""), failed.state.message
        assert "failed-fold-3" in failed.tags, failed.tags  # what the Runs list shows
        first = {r.name: r for r in fold_task_runs(client, failed.id)}
        assert {n: r.state.name for n, r in first.items()} == {
            **dict.fromkeys(FOLDS - {"fold-3"}, "Completed"),
            "fold-3": "Failed",
        }, "\n".join([*(f"{n}: {r.state!r}" for n, r in first.items()), launcher.logs()])
        assert not (tmp_path / "output" / "metrics.json").exists()

        # The same flow run again, on a serve process without the fault.
        with serving(launcher, "serve-fixed") as serve:
            retry = subprocess.run(
                [str(BIN / "prefect"), "flow-run", "retry", str(failed.id)],
                cwd=PROJECT_ROOT,
                env=launcher.env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert retry.returncode == 0, retry.stdout + retry.stderr
            wait_final(client, failed.id, launcher, serve)
        retried = client.read_flow_run(failed.id)
        assert retried.state.is_completed(), f"{retried.state!r}\n{launcher.logs()}"
        assert retried.run_count == 2

        # The retry made new fold task runs (in the same flow run) and left the
        # first attempt's as they were: folds that had completed are Cached, fold 3 trained.
        runs = fold_task_runs(client, failed.id)
        again = [r for r in runs if r.id not in {x.id for x in first.values()}]
        assert sorted(r.name for r in again) == sorted(FOLDS), [r.name for r in runs]
        assert {r.name: r.state.name for r in again} == {
            **dict.fromkeys(FOLDS - {"fold-3"}, "Cached"),
            "fold-3": "Completed",
        }
        assert {r.id: r.state.name for r in runs if r.id in {x.id for x in first.values()}} == {
            r.id: r.state.name for r in first.values()
        }
        # The run's page no longer shows the first attempt's failure as current.
        failed_folds = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["failed-folds"]),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[failed.id])),
            sort=ArtifactSort.CREATED_DESC,
        )  # fmt: skip
        # One failed-folds card: the retry's replaced the first attempt's, whose reason it keeps.
        assert len(failed_folds) == 1, failed_folds
        assert "no failed folds" in json.dumps(failed_folds[0].data), failed_folds[0].data
        assert failed_folds[0].description.startswith(
            "No failed folds (attempt 2; before: fold 3 failed after 1 attempt: InjectedFault"
        ), failed_folds[0].description
        # The Runs list: the failure's tag is gone, the score's is there.
        assert "failed-fold-3" not in retried.tags, retried.tags
        assert [t for t in retried.tags if t.startswith("acc-")], retried.tags

    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    by_fold = {f["fold"]: f for f in metrics["folds"]}
    assert sorted(by_fold) == [1, 2, 3, 4, 5]
    # Folds 1, 2, 4, 5 are the first attempt's results (its flow-run process), fold 3 the retry's.
    assert by_fold[3]["worker"] not in {by_fold[i]["worker"] for i in (1, 2, 4, 5)}


def test_progress_cards_move_through_intermediate_values_during_a_run(server, tmp_path):
    """Polled during a run long enough to see it, every fold's card shows a value 0 < v < 100."""
    launcher, url = server
    config = {
        "model": {"epochs": 3000},
        "folds": 2,
        "execution": {"runner": "thread", "workers": 2},
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "output"),
    }
    seen: dict[str, set[float]] = {}
    with api(url) as client, serving(launcher, "serve-progress") as serve:
        flow_run = run_deployment(DEPLOYMENT, parameters={"config": config}, timeout=0)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, value in progress_values(client, flow_run.id).items():
                seen.setdefault(name, set()).add(value)
            run = client.read_flow_run(flow_run.id)
            if run.state is not None and run.state.is_final():
                break
            time.sleep(0.3)
        run = wait_final(client, flow_run.id, launcher, serve)
        assert run.state.is_completed(), f"{run.state!r}\n{launcher.logs()}"
        final = progress_values(client, flow_run.id)
    assert final == {"fold-1": 100.0, "fold-2": 100.0, "folds-done": 100.0}, final
    for fold in ("fold-1", "fold-2"):
        between = sorted(v for v in seen.get(fold, ()) if 0 < v < 100)
        assert between, f"{fold}: only {sorted(seen.get(fold, ()))} seen while it trained"


def test_served_deployment_with_warm_workers_sends_every_run_there(server, tmp_path):
    """`foldflow serve --warm-workers 2`: the deployment's runs carry the pool's address, two
    runs (different settings) train on the same two warm workers, children of the serve
    process, and those workers end when the serve process does."""
    launcher, url = server
    proc = launcher.start(
        "serve-warm",
        [str(BIN / "foldflow"), "serve", "--name", "warm", "--cron", "", "--epochs", "2",
         "--warm-workers", "2", "--cache-dir", str(tmp_path / "cache"),
         "--output-dir", str(tmp_path / "out-1")],
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "being served" not in proc.log_path.read_text(errors="replace"):
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"foldflow serve --warm-workers did not start\n{proc.tail()}")
            time.sleep(0.25)
        with api(url) as client:
            config = client.read_deployment_by_name("cross-validate/warm").parameters["config"]
            address = config["execution"]["dask_address"]
            assert address.startswith("tcp://127.0.0.1:"), config["execution"]
            assert config["execution"]["workers"] == 2
            second = {**config, "model": {**config["model"], "epochs": 3},
                      "output_dir": str(tmp_path / "out-2")}  # fmt: skip
            for parameters in ({}, {"config": second}):
                flow_run = run_deployment("cross-validate/warm", parameters=parameters, timeout=0)
                run = wait_final(client, flow_run.id, launcher, proc)
                assert run.state.is_completed(), f"{run.state!r}\n{launcher.logs()}"
        pids = []
        for out in ("out-1", "out-2"):
            metrics = json.loads((tmp_path / out / "metrics.json").read_text())
            pids.append({int(f["worker"].rsplit(":", 1)[1]) for f in metrics["folds"]})
        assert pids[1] == pids[0] and len(pids[0]) == 2, pids  # the same warm workers
        assert [m["run"]["config"]["model"]["epochs"] for m in (
            json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("out-1", "out-2")
        )] == [2, 3]  # fmt: skip
        serve_children = {p.pid for p in psutil.Process(proc.popen.pid).children()}
        assert pids[0] <= serve_children

        proc.popen.terminate()  # the serve process alone, not its process group
        proc.popen.wait(60)
        deadline = time.monotonic() + 20
        while any(psutil.pid_exists(p) for p in pids[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(psutil.pid_exists(p) for p in pids[0]), "warm workers outlived serve"
    finally:
        proc.stop()
