"""Read back what a flow run did from the Prefect API: which tasks ran, which folds were cached."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

SETTLE_S = 30.0  # how long a task run's final state may take to reach the API's database


def _task_runs(client, flow_run_id: UUID) -> list:
    """Every task run of a flow run and of its child flow runs (a subflow's tasks too)."""
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )
    ids = [flow_run_id, *(child.id for child in children)]
    return client.read_task_runs(
        task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
    )


def _is_fold(run) -> bool:
    return run.name.startswith("fold-")


def settled_task_runs(
    client,
    flow_run_id: UUID,
    settle_s: float = SETTLE_S,
    keep: Callable[[Any], bool] = lambda _run: True,
    present: Iterable[str] = (),
) -> list:
    """The task runs `keep` selects of a finished flow run, once each has its final state.

    Prefect 3 records task-run states from events, after the fact (the server's task-run
    recorder), so right after a flow run ends its tasks' last states may still be on the way,
    and a task run may not be there at all yet: `present` names task runs to wait for too.
    After `settle_s` they are returned as they are, so a run stuck unfinished (or missing)
    fails the caller's check.
    """
    wanted = set(present)
    deadline = time.monotonic() + settle_s
    while True:
        runs = [run for run in _task_runs(client, flow_run_id) if keep(run)]
        final = all(run.state is not None and run.state.is_final() for run in runs)
        if final and wanted <= {run.name for run in runs}:
            return runs
        if time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def settled_fold_runs(client, flow_run_id: UUID, settle_s: float = SETTLE_S) -> list:
    """The fold task runs of a finished flow run, once each has its final state in the API."""
    return settled_task_runs(client, flow_run_id, settle_s, keep=_is_fold)


def fold_states(flow_run_id: UUID, settle_s: float = SETTLE_S) -> dict[str, str]:
    """{'fold-1': 'Completed' | 'Cached' | 'Failed' | ..., ...} for a cross-validate run.

    A run whose worker was killed leaves that fold Running for good: pass a short `settle_s`.
    """
    with get_client(sync_client=True) as client:
        runs = settled_fold_runs(client, flow_run_id, settle_s)
    latest = {}  # a retried flow run has one task run per fold and attempt: keep the newest
    for run in sorted(runs, key=lambda r: r.created):
        latest[run.name] = run.state.name if run.state else "?"
    return latest


def trained(states: dict[str, str]) -> set[str]:
    """Folds that really trained in the run (not served from the cache)."""
    return {name for name, state in states.items() if state == "Completed"}
