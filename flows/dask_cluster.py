"""Dask task runners for the fold fan-out: a local cluster, one worker per GPU, or the user's own.

- `dask_address` set: connect to that scheduler (a cluster the user started and owns).
- `gpus` set: one single-threaded worker process per GPU, each declaring the resource
  `GPU=1` and seeing only its own device (`CUDA_VISIBLE_DEVICES`); `dask_cuda.LocalCUDACluster`
  when installed, else a `SpecCluster` of `Nanny` workers. `flows.execution.fold_execution`
  wraps the fold map in `gpu_resource_annotation()` so each fold task asks for `GPU: 1`, and
  Dask never runs two folds on one GPU.
- otherwise: a `LocalCluster` of `workers` worker processes, one Dask thread each (TensorFlow's
  own thread budget comes from `FoldRuntime.threads`).

Everything listens on 127.0.0.1 only and starts no dashboard. Worker processes are spawned from
this process and inherit its environment, `PREFECT_API_URL` included (`flows.local_api` sets it
before any worker starts), even when the cluster starts before the API answers
(`flows.execution.fold_execution` starts local clusters early). Local workers import TensorFlow
in a preload (`warm_up_preload`) before they join the cluster, so folds start training at once.

Build runners from `address` or `cluster_class`, never `cluster=`: Prefect runs a flow on
`task_runner.duplicate()`, which drops the cluster object (a new default `LocalCluster` starts
instead), and a flow holding a live cluster cannot be pickled for the workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import dask
import distributed
from prefect_dask import DaskTaskRunner

from flows.worker import threads_per_worker
from tasks.config import ExecutionConfig
from tasks.devices import check_devices

GPU_RESOURCE = "GPU"
LOOPBACK = "127.0.0.1"
SCHEDULER_HTTP = f"{LOOPBACK}:0"


def warm_up_preload(threads: int, gpu: int | None) -> str:
    """A worker preload (script text) importing TensorFlow as the worker's folds would.

    It runs while the worker starts, before it joins the cluster: folds then start training at
    once, and no task is unpickled beside the import (which would race it for modules). The
    worker also ends when the process that holds its nanny ends, however that one died.
    """
    return (
        "from flows.lifetime import exit_with_parent\nexit_with_parent()\n"  # no orphans
        f"from flows.worker import warm_tensorflow\nwarm_tensorflow({threads}, {gpu!r})\n"
    )


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """`LocalCluster` arguments for `workers` single-threaded worker processes on loopback."""
    return {
        "preload": [warm_up_preload(threads_per_worker(workers), None)],
        "n_workers": max(1, workers),
        "threads_per_worker": 1,
        "processes": True,
        "host": LOOPBACK,
        "dashboard_address": None,
        # The scheduler's HTTP server (health/metrics routes) starts even without a dashboard;
        # keep it on loopback and a free port instead of 8787, which another cluster may hold.
        "scheduler_kwargs": {"dashboard_address": SCHEDULER_HTTP},
    }


def gpu_worker_specs(gpus: Sequence[int], threads: int | None = None) -> dict[str, dict[str, Any]]:
    """One Nanny-managed worker per GPU id: 1 thread, resource GPU=1, only that GPU visible.

    With `threads` (TensorFlow's budget per fold), each worker imports TensorFlow as it starts.
    """
    preload = {"preload": [warm_up_preload(threads, 0)]} if threads else {}
    return {
        f"gpu-{gpu}": {
            "cls": distributed.Nanny,
            "options": {
                "nthreads": 1,
                "resources": {GPU_RESOURCE: 1},
                "env": {"CUDA_VISIBLE_DEVICES": str(gpu)},
                "host": LOOPBACK,
                **preload,
            },
        }
        for gpu in check_devices(gpus)
    }


def gpu_cluster(
    gpus: Sequence[int], threads: int | None = None, **kwargs: Any
) -> distributed.deploy.Cluster:
    """A local cluster with one worker per GPU, each owning exactly one device.

    `dask_cuda.LocalCUDACluster` when it is installed (it also pins CPU affinity; each worker
    sees its own GPU first in a rotated `CUDA_VISIBLE_DEVICES`, so `FoldRuntime.gpu=0` picks
    it); otherwise a `SpecCluster` of Nanny workers with `CUDA_VISIBLE_DEVICES=<id>` each.
    `threads`: the fallback's workers import TensorFlow with it as they start (see
    `gpu_worker_specs`); `dask_cuda`'s workers import it with their first fold (not warmed:
    untested here). Extra keyword arguments go to the cluster class.
    """
    ids = check_devices(gpus)
    if not ids:
        raise ValueError("gpu_cluster needs at least one GPU id")
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None  # noqa: N806
    if LocalCUDACluster is not None:
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=",".join(map(str, ids)),
            threads_per_worker=1,
            resources={GPU_RESOURCE: 1},
            host=LOOPBACK,
            dashboard_address=None,
            **kwargs,
        )
    scheduler = {
        "cls": distributed.Scheduler,
        "options": {"host": LOOPBACK, "dashboard": False, "dashboard_address": SCHEDULER_HTTP},
    }
    return distributed.SpecCluster(
        workers=gpu_worker_specs(ids, threads), scheduler=scheduler, name="foldflow-gpus", **kwargs
    )


def dask_task_runner(execution: ExecutionConfig, workers: int) -> DaskTaskRunner:
    """The Dask runner the execution config asks for (see the module docstring)."""
    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    if execution.gpus:
        return DaskTaskRunner(
            cluster_class=gpu_cluster,
            cluster_kwargs={
                "gpus": check_devices(execution.gpus), "threads": threads_per_worker(workers)
            },
        )
    return DaskTaskRunner(
        cluster_class=distributed.LocalCluster, cluster_kwargs=local_cluster_kwargs(workers)
    )


@contextlib.contextmanager
def gpu_resource_annotation(enabled: bool = True, gpus_per_task: int = 1) -> Iterator[None]:
    """Make every Dask task submitted inside ask for `GPU: gpus_per_task` (no-op if disabled).

    Works through Prefect's `task.map(...)`/`.submit(...)` on a `DaskTaskRunner`: Prefect
    submits from the calling thread, and `distributed.Client` merges `dask.get_annotations()`
    (a context variable) into each submission. Tasks then wait for a worker that declares the
    resource, so on a cluster whose workers declare none they never start: only enable it for
    clusters with GPU workers (see `cluster_gpu_slots`).
    """
    if not enabled:
        yield
        return
    with dask.annotate(resources={GPU_RESOURCE: gpus_per_task}):
        yield


def cluster_gpu_slots(client: distributed.Client) -> int:
    """How many `GPU` resource units the cluster's workers declare in total."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return int(sum(w.get("resources", {}).get(GPU_RESOURCE, 0) for w in workers.values()))


def check_gpu_workers(client: distributed.Client) -> None:
    """Fail at once when no worker declares a GPU: folds asking for one would wait forever."""
    if cluster_gpu_slots(client) < 1:
        raise RuntimeError(
            f"--gpus was given but no worker of the Dask cluster at {client.scheduler.address} "
            f"declares a {GPU_RESOURCE!r} resource, so no fold could start; start one worker "
            f"per GPU with `dask worker <scheduler> --nthreads 1 --resources {GPU_RESOURCE}=1` "
            "(and CUDA_VISIBLE_DEVICES=<id>), or `dask cuda worker <scheduler> --resources "
            f"{GPU_RESOURCE}=1`"
        )
