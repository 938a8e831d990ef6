"""Dask runs for real: GPU resource limits through Prefect's `.map`, and the whole flow end to end.

No GPU exists here: the "GPU" is a Dask worker resource, exactly what real GPU workers declare.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import dask
import pandas as pd
import pytest
from distributed import LocalCluster, get_worker
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from flows.dask_cluster import (
    cluster_gpu_slots,
    dask_task_runner,
    gpu_resource_annotation,
    gpu_worker_specs,
    local_cluster_kwargs,
)
from flows.execution import FoldExecution, gpu_annotation, make_task_runner
from tasks.config import BUNDLED_DATA, CVConfig, ExecutionConfig, ModelConfig
from tasks.devices import max_overlap

MARKER = "FOLDFLOW_DASK_TEST_MARKER"


@task(name="hold-a-slot")
def hold_a_slot(i: int, seconds: float) -> dict:
    """Stand in for a fold: note where and when it ran."""
    started = time.time()
    time.sleep(seconds)
    return {
        "i": i,
        "worker": get_worker().address,
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "marker": os.environ.get(MARKER),
    }


@flow(name="slots", validate_parameters=False)
def slots(n: int, seconds: float, annotate: bool) -> tuple[list[dict], int]:
    with gpu_resource_annotation(enabled=annotate):
        futures = hold_a_slot.map(range(n), seconds)
    records = [f.result() for f in futures]
    # the runner the flow really uses (a duplicate of the one it was given)
    return records, cluster_gpu_slots(FlowRunContext.get().task_runner.client)


def _run(runner: DaskTaskRunner, n: int, seconds: float, annotate: bool) -> tuple:
    """Run the flow; return its records, the cluster's GPU slots and the API's task runs."""
    state = slots.with_options(task_runner=runner)(n, seconds, annotate, return_state=True)
    records, gpu_slots = state.result()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return records, gpu_slots, task_runs


def _peak_per_worker(records: list[dict]) -> dict:
    return max_overlap((r["worker"], r["started"], r["finished"]) for r in records)


def test_local_cluster_kwargs_are_loopback_processes_one_thread():
    kwargs = local_cluster_kwargs(3)
    assert kwargs["n_workers"] == 3 and kwargs["threads_per_worker"] == 1
    assert kwargs["processes"] is True and kwargs["host"] == "127.0.0.1"
    assert kwargs["dashboard_address"] is None
    runner = dask_task_runner(ExecutionConfig(runner="dask"), 3)
    assert runner.cluster_kwargs == kwargs


def test_existing_cluster_address_is_used_as_is():
    runner = dask_task_runner(ExecutionConfig(runner="dask", dask_address="tcp://10.0.0.5:8786"), 4)
    assert runner.address == "tcp://10.0.0.5:8786"
    assert runner.cluster_kwargs == {}


def test_gpu_worker_specs_one_worker_per_gpu():
    specs = gpu_worker_specs([2, 0])
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["2", "0"]
    assert all(s["options"]["resources"] == {"GPU": 1} for s in specs.values())
    assert all(s["options"]["nthreads"] == 1 for s in specs.values())
    with pytest.raises(ValueError, match="more than once"):
        gpu_worker_specs([1, 1])


def _in_process_cluster(**resources: int) -> LocalCluster:
    return LocalCluster(
        processes=False,
        n_workers=1,
        threads_per_worker=1,
        resources=resources or None,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


def test_gpu_annotation_asks_for_a_gpu_whenever_gpus_are_given():
    """--gpus means Dask whatever the runner says: every fold task asks for one GPU."""
    for execution in (ExecutionConfig(runner="process"), ExecutionConfig(runner="dask")):
        with gpu_annotation(execution):
            assert dask.get_annotations() == {}
    for runner in ("process", "thread", "dask"):
        execution = ExecutionConfig(runner=runner, gpus=[0])
        assert execution.uses_dask()
        assert isinstance(make_task_runner(execution, 1), DaskTaskRunner)
        with gpu_annotation(execution):
            assert dask.get_annotations() == {"resources": {"GPU": 1}}
    assert dask.get_annotations() == {}


def test_fold_execution_refuses_a_cluster_without_gpu_workers():
    """An existing cluster whose workers declare no GPU would leave every fold waiting."""
    with _in_process_cluster() as cluster:
        execution = ExecutionConfig(dask_address=cluster.scheduler_address, gpus=[0, 1])
        started = FoldExecution(execution, 2)
        try:
            with pytest.raises(RuntimeError, match="declares a 'GPU' resource"):
                started.runner  # noqa: B018 - the property checks the cluster's workers
        finally:
            started.close()


@pytest.mark.slow  # a Dask cluster of worker processes (19-114 s)
def test_gpu_annotation_survives_prefect_map_one_task_per_worker(monkeypatch):
    """Two workers with 2 threads and GPU=1 each: annotated tasks never share a worker."""
    monkeypatch.setenv(MARKER, "inherited")  # before the worker processes are spawned
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        resources={"GPU": 1},
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        # by address: Prefect runs a flow on `task_runner.duplicate()`, which drops `cluster=`
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        # control first (it also warms the workers' Prefect import): without the annotation
        # the two threads of a worker run tasks side by side
        control, _, _ = _run(runner, 6, 1.0, annotate=False)
        limited, gpu_slots, task_runs = _run(runner, 6, 0.5, annotate=True)

    assert max(_peak_per_worker(control).values()) == 2
    assert _peak_per_worker(limited) == {w: 1 for w in _peak_per_worker(limited)}
    assert len({r["worker"] for r in limited}) == 2
    assert sorted(r["i"] for r in limited) == list(range(6))
    assert gpu_slots == 2
    # worker processes inherit the flow process's environment, and report to its API
    assert {r["marker"] for r in control + limited} == {"inherited"}
    assert len({r["pid"] for r in limited} - {os.getpid()}) == 2
    assert sorted(t.state.type.value for t in task_runs) == ["COMPLETED"] * 6


@pytest.mark.slow  # a Dask cluster of worker processes (19-114 s)
def test_gpu_cluster_without_dask_cuda_gives_each_worker_one_device(monkeypatch):
    """The SpecCluster fallback: one single-threaded worker per id, each seeing only its id."""
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # as without dask_cuda: import fails
    runner = dask_task_runner(ExecutionConfig(runner="dask", gpus=[3, 5]), 2)
    records, gpu_slots, task_runs = _run(runner, 4, 0.3, annotate=True)

    assert gpu_slots == 2
    assert {r["cuda_visible_devices"] for r in records} == {"3", "5"}
    by_worker = {}
    for r in records:
        by_worker.setdefault(r["worker"], set()).add(r["cuda_visible_devices"])
    assert all(len(ids) == 1 for ids in by_worker.values())  # a worker keeps its one GPU
    assert set(_peak_per_worker(records).values()) == {1}
    assert len(task_runs) == 4


def _cross_validate(
    tmp_path: Path, name: str, execution: ExecutionConfig, folds: int = 5
) -> tuple[Path, dict]:
    from flows.cross_validate import cross_validate

    config = CVConfig(
        source=str(BUNDLED_DATA),
        folds=folds,
        model=ModelConfig(epochs=3),
        execution=execution,
        output_dir=str(tmp_path / name / "out"),
        cache_dir=str(tmp_path / name / "cache"),
    )
    cross_validate(config)
    out = tmp_path / name / "out"
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # a Dask cluster of worker processes (19-114 s)
def test_dask_flow_end_to_end_equals_process_runner(tmp_path):
    """A real 2-process LocalCluster trains the folds; its OOF table equals the default runner's."""
    dask_out, dask_metrics = _cross_validate(
        tmp_path, "dask", ExecutionConfig(runner="dask", workers=2)
    )
    proc_out, proc_metrics = _cross_validate(
        tmp_path, "process", ExecutionConfig(runner="process", workers=2)
    )

    pd.testing.assert_frame_equal(
        pd.read_parquet(dask_out / "oof_predictions.parquet"),
        pd.read_parquet(proc_out / "oof_predictions.parquet"),
        check_exact=True,
    )
    for metrics in (dask_metrics, proc_metrics):
        assert len(metrics["folds"]) == 5 and not metrics["failed_folds"]
        assert len({f["worker"] for f in metrics["folds"]}) >= 2
        assert all(f["attempt"] == 1 for f in metrics["folds"])
    here = f":{os.getpid()}"
    assert not any(f["worker"].endswith(here) for f in dask_metrics["folds"])
    assert [f["scores"] for f in dask_metrics["folds"]] == [
        f["scores"] for f in proc_metrics["folds"]
    ]


@pytest.mark.slow  # a Dask cluster of worker processes (19-114 s)
def test_flow_with_gpus_runs_one_fold_per_gpu_worker(tmp_path):
    """--gpus builds one Dask worker per (fake) GPU id; folds request GPU=1 and all complete."""
    out, metrics = _cross_validate(
        tmp_path, "gpus", ExecutionConfig(runner="process", gpus=[3, 5]), folds=3
    )
    folds = metrics["folds"]
    assert len(folds) == 3 and not metrics["failed_folds"]
    assert len({f["worker"] for f in folds}) == 2
    assert {f["device"] for f in folds} == {"CPU"}  # no real GPU here: TensorFlow sees none
    assert (out / "oof_predictions.parquet").exists()
