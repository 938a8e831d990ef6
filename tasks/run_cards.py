"""One artifact per key and flow run: what a run's Artifacts tab shows is its current state.

The UI's Artifacts tab lists every artifact of a run, every version of a key included, in
the order of their (random) ids; so a retried run would show its first attempt's
`failed-folds` beside the retry's, told apart only by time. Progress cards are therefore
updated in place, and any other keyed artifact is written as a new version of its key, after
which this run's earlier versions of that key are deleted. Outside a flow run: a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID


def this_flow_run_id() -> UUID | None:
    """The flow run this code runs for (from a flow, a task, or a fold worker), if any."""
    from prefect.runtime import flow_run

    return UUID(flow_run.id) if flow_run.id else None


def run_artifacts(key: str | list[str], flow_run_id: UUID | None = None) -> list[Any]:
    """This flow run's artifacts with `key` (or any of these keys), newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    run_id = flow_run_id or this_flow_run_id()
    if run_id is None:
        return []
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key] if isinstance(key, str) else key),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            ),
            sort=ArtifactSort.CREATED_DESC,
        )


def create_run_artifact(key: str, kind: str, data: Any, description: str) -> Any:
    """An artifact of the flow run itself, even when a task makes it: the Artifacts tab shows
    it in its first section ("Flow run"), beside `folds-done`, above the task runs' ones."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    artifact = ArtifactCreate(
        key=key, type=kind, data=data, description=description, flow_run_id=this_flow_run_id()
    )
    with get_client(sync_client=True) as client:
        return client.create_artifact(artifact).id


def table_data(rows: list[dict[str, Any]]) -> str:
    """A table artifact's data: JSON rows, NaN as null (JSON has no NaN)."""
    import json
    import math

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value

    return json.dumps([{k: clean(v) for k, v in row.items()} for row in rows])


def replace_artifact(key: str, create: Callable[[list[Any]], Any]) -> Any:
    """`create(earlier)` a new version of `key`, then delete this run's `earlier` versions."""
    from prefect.client.orchestration import get_client

    earlier = run_artifacts(key)
    created = create(earlier)
    if earlier:
        with get_client(sync_client=True) as client:
            for old in earlier:
                client.delete_artifact(old.id)
    return created


def progress_card(key: str, percent: float | None, description: str) -> Any:
    """This run's progress card `key`: the existing one updated, or a new one.

    `percent=None` keeps the card's value (0 for a new card): a failed fold stays where it was.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    found = [a for a in run_artifacts(key) if a.type == "progress"]
    if found:
        value = float(found[0].data or 0.0) if percent is None else percent
        update_progress_artifact(found[0].id, value, description=description)
        return found[0].id
    return create_progress_artifact(percent or 0.0, key=key, description=description)
