"""Read back what a flow run did from the Prefect API: which folds trained, which were cached."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)


def fold_states(flow_run_id: UUID) -> dict[str, str]:
    """{'fold-1': 'Completed' | 'Cached' | 'Failed' | ..., ...} for a cross-validate run."""
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        ids = [flow_run_id, *(child.id for child in children)]
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
        )
    latest = {}  # a retried flow run has one task run per fold and attempt: keep the newest
    for run in sorted(runs, key=lambda r: r.created):
        if run.name.startswith("fold-"):
            latest[run.name] = run.state.name
    return latest


def trained(states: dict[str, str]) -> set[str]:
    """Folds that really trained in the run (not served from the cache)."""
    return {name for name, state in states.items() if state == "Completed"}
