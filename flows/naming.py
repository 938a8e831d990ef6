"""What a run is called and tagged in the UI: one name from the start, the same everywhere."""

from __future__ import annotations

from prefect.runtime import flow_run


def short_run_id() -> str:
    """The first 8 hex digits of the running flow run's id: unique per run."""
    return str(flow_run.id or "local").replace("-", "")[:8]


def tag_flow_run(tags: list[str], drop_prefixes: tuple[str, ...] = ()) -> None:
    """Add tags (data hash, runner, model, failed folds, score) to the running flow run, so the
    UI's Runs list says what ran and how it went; tags starting with `drop_prefixes` go first
    (a retry's outcome replaces the attempt before's)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(ctx.flow_run.id).tags or []  # with this run's own adds
        kept = {t for t in current if not (drop_prefixes and t.startswith(drop_prefixes))}
        client.update_flow_run(ctx.flow_run.id, tags=sorted({*kept, *tags}))
