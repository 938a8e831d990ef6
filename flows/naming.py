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


def where_to_watch(page: str | None, ui_api_url: str | None, api_url: str) -> str:
    """What the terminal says about the run's page: its link, or why there is none.

    `ui_api_url` is the API the server's UI calls (its /ui-settings), None when the server
    serves no UI (foldflow's temporary local API, or PREFECT_UI_ENABLED=false).
    """
    if page is None or ui_api_url is None:
        return (
            f"no Prefect UI at {api_url} (foldflow's temporary local API serves none): to "
            "watch runs in the UI, start `make server` and export PREFECT_API_URL"
        )
    if ui_api_url.rstrip("/") != api_url.rstrip("/"):
        return (
            f"{page} — but that UI calls its API at {ui_api_url}, not {api_url}: restart "
            "the server with `make server PORT=…` (or PREFECT_UI_API_URL set to this API)"
        )
    return page


def announce_run() -> None:
    """Print the run's name (the one the UI shows) and its UI page, from the run's start."""
    import sys

    import httpx
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
    from prefect.utilities.urls import url_for

    name, run_id = flow_run.name, flow_run.id
    api_url, ui_url = PREFECT_API_URL.value() or "", PREFECT_UI_URL.value() or ""
    if not run_id:
        return
    ui_api_url = None
    if ui_url:
        try:
            reply = httpx.get(f"{ui_url.rstrip('/')}/ui-settings", timeout=5)
            ui_api_url = reply.json().get("api_url") if reply.is_success else None
        except (httpx.HTTPError, ValueError):
            ui_api_url = None
    page = url_for("flow-run", obj_id=run_id) if ui_url else None
    print(f"foldflow: run {name}: {where_to_watch(page, ui_api_url, api_url)}",
          file=sys.stderr, flush=True)  # fmt: skip
