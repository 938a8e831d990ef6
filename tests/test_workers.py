"""The warm pool for real: a LocalCluster of Nanny workers that outlive runs (flows/workers.py).

Real Dask, real Keras training with a few epochs, real Prefect API (the session's), and the
`foldflow workers` CLI in subprocesses. Folds trained on warm workers that trained other folds
before must give the OOF tables of cold runs (a process pool started for the run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed
import pandas as pd
import psutil
import pytest

from flows.cross_validate import cross_validate
from flows.workers import WarmPool, read_state, state_path, with_pool
from tasks.config import BUNDLED_DATA, CVConfig, ExecutionConfig, ModelConfig, PoolConfig
from tasks.faults import FAIL_FOLDS_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # Dask, training, CLI; slow machines

ROOT = Path(__file__).resolve().parents[1]
COLD = ExecutionConfig(runner="process", workers=2)


def config(tmp: Path, name: str, **changes) -> CVConfig:
    """A small run with its own cache and output folders."""
    base = {
        "source": str(BUNDLED_DATA), "folds": 3, "model": ModelConfig(epochs=3),
        "output_dir": str(tmp / name / "out"), "cache_dir": str(tmp / name / "cache"),
        "execution": COLD,
    }  # fmt: skip
    return CVConfig(**{**base, **changes})


def oof(run: CVConfig) -> pd.DataFrame:
    return pd.read_parquet(Path(run.output_dir) / "oof_predictions.parquet")


def fold_pids(run: CVConfig) -> set[int]:
    """Which processes trained the folds (metrics.json names them host:pid)."""
    metrics = json.loads((Path(run.output_dir) / "metrics.json").read_text())
    return {int(fold["worker"].rsplit(":", 1)[1]) for fold in metrics["folds"]}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """One warm pool of 2 workers for the module's tests."""
    with WarmPool(PoolConfig(workers=2, cache_dir=str(tmp_path_factory.mktemp("pool")))) as warm:
        yield warm


def test_consecutive_runs_on_a_warm_pool_equal_cold_runs_a_failed_run_between(
    pool, tmp_path, monkeypatch
):
    """Three consecutive runs on the same workers: settings A, a run that fails (a fold raises,
    no retries), settings B. A and B give the OOF tables of cold runs (their own process
    pools), exactly: neither the folds trained before nor the failure changed a number."""
    first = {"model": ModelConfig(epochs=3)}
    second = {"model": ModelConfig(epochs=4, hidden_units=[20], activation="tanh"), "seed": 7}
    warm_a = with_pool(config(tmp_path, "warm-a", **first), pool.pool, pool.address)
    assert warm_a.execution.dask_address == pool.address and warm_a.execution.workers == 2
    cross_validate(warm_a)

    monkeypatch.setenv(FAIL_FOLDS_ENV, "2")  # the flow reads its fault plan as it starts
    failing = with_pool(config(tmp_path, "failing", fold_retries=0), pool.pool, pool.address)
    state = cross_validate(failing, return_state=True)
    assert state.is_failed() and "fold 2" in (state.message or ""), state.message
    monkeypatch.delenv(FAIL_FOLDS_ENV)

    warm_b = with_pool(config(tmp_path, "warm-b", **second), pool.pool, pool.address)
    cross_validate(warm_b)
    pids = set(pool.worker_pids().values())
    assert fold_pids(warm_a) <= pids and fold_pids(warm_b) <= pids
    assert fold_pids(warm_a) & fold_pids(warm_b)  # a worker trained folds of both runs

    for warm, (name, changes) in ((warm_a, ("cold-a", first)), (warm_b, ("cold-b", second))):
        cold = config(tmp_path, name, **changes)
        cross_validate(cold)
        assert not fold_pids(cold) & pids  # trained by the run's own process pool
        pd.testing.assert_frame_equal(oof(warm), oof(cold), check_exact=True)
    assert not oof(warm_a).equals(oof(warm_b))  # the settings did differ


def test_a_worker_killed_mid_fold_is_replaced_and_its_fold_reruns(pool, tmp_path):
    """SIGKILL a worker while it trains a fold: its nanny starts a new one, Dask reruns the
    fold, the run completes with the OOF table of an undisturbed run on the same pool."""
    before = pool.worker_pids()
    run = with_pool(config(tmp_path, "killed", folds=2, model=ModelConfig(epochs=400)),
                    pool.pool, pool.address)  # fmt: skip
    states = []
    runner = threading.Thread(target=lambda: states.append(cross_validate(run, return_state=True)))
    runner.start()
    killed = None
    with distributed.Client(pool.address, timeout=30) as client:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and runner.is_alive():
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                time.sleep(0.5)  # the fold is inside its training by now
                killed = before[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
        runner.join(timeout=300)
        assert killed is not None, "no fold was ever seen training"
        client.wait_for_workers(2, timeout=120)
    assert states and states[0].is_completed(), states
    after = pool.worker_pids()
    assert len(after) == 2 and killed not in after.values()
    assert killed not in fold_pids(run)  # the killed worker's fold was trained again elsewhere

    plain = config(tmp_path, "undisturbed", folds=2, model=ModelConfig(epochs=400))
    undisturbed = with_pool(plain, pool.pool, pool.address)
    cross_validate(undisturbed)
    pd.testing.assert_frame_equal(oof(run), oof(undisturbed), check_exact=True)


def workers_cli(*args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "workers", *args],
        cwd=ROOT, env=env, text=True, **popen,
    )  # fmt: skip


def start_pool(cache: Path) -> tuple[subprocess.Popen, str, list[int]]:
    """`foldflow workers start --workers 1`; its process, the address it printed, its workers."""
    proc = workers_cli("start", "--workers", "1", "--cache-dir", str(cache),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    address = proc.stdout.readline().strip()
    assert address.startswith("tcp://127.0.0.1:"), (address, proc.stderr.read())
    with distributed.Client(address, timeout=30) as client:
        pids = list(client.run(os.getpid).values())
    assert len(pids) == 1
    assert json.loads(state_path(str(cache)).read_text())["address"] == address
    return proc, address, pids


def gone(pids: list[int], timeout_s: float = 20) -> bool:
    """Whether every pid has exited within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_workers_cli_start_stop_and_no_orphans_when_the_owner_is_killed(tmp_path):
    cache = tmp_path / "cache"
    owner, address, pids = start_pool(cache)
    try:
        again = workers_cli("start", "--cache-dir", str(cache), stderr=subprocess.PIPE)
        assert again.wait(60) == 1 and "already runs" in again.stderr.read()
        stop = workers_cli("stop", "--cache-dir", str(cache), stderr=subprocess.PIPE)
        assert stop.wait(60) == 0, stop.stderr.read()
        assert owner.wait(30) == 130  # stopped like Ctrl-C: the pool closed itself
        assert gone(pids) and not state_path(str(cache)).exists()
    finally:
        owner.kill()

    owner, address, pids = start_pool(cache)  # a second pool; its owner dies without clean-up
    owner.send_signal(signal.SIGKILL)
    owner.wait(30)
    assert gone(pids), "the pool's worker outlived its owner"
    assert read_state(str(cache)) is None and not state_path(str(cache)).exists()  # stale: gone
    stop = workers_cli("stop", "--cache-dir", str(cache), stderr=subprocess.PIPE)
    assert stop.wait(60) == 1 and "no warm pool" in stop.stderr.read()
