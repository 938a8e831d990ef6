"""A terminal progress display for `foldflow run`, fed by the run's Prefect progress artifacts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def read_fold_progress(since: datetime) -> dict[str, float]:
    """{fold progress-card key: percent} of the progress cards created since `since`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=200,
        )
    found: dict[str, float] = {}
    for art in artifacts:
        if art.key and art.key.startswith("fold-") and art.created and art.created >= since:
            found.setdefault(art.key, float(art.data or 0.0))
    return found


def run_with_progress(
    run: Callable[[], Any], folds: int, epochs: int, poll_s: float = 1.0
) -> Any:
    """Run `run()` in this (main) thread while a rich display in another shows each fold.

    The run keeps the main thread so that signals reach it (see flows/stops.py).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    since = datetime.now(UTC)
    finished = threading.Event()
    columns = (TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn())

    def display() -> None:
        with Progress(*columns, transient=False) as progress:
            overall = progress.add_task("folds done", total=folds)
            bars: dict[str, Any] = {}
            while not finished.wait(poll_s):
                try:
                    seen = read_fold_progress(since)
                except Exception:  # noqa: BLE001 - the display must never break the run
                    continue
                for key, percent in sorted(seen.items()):
                    if key not in bars:
                        bars[key] = progress.add_task(key.replace("-", " ", 1), total=epochs)
                    progress.update(bars[key], completed=round(epochs * percent / 100))
                progress.update(overall, completed=sum(p >= 100 for p in seen.values()))
            if succeeded.is_set():
                progress.update(overall, completed=folds)  # cached folds report no epochs

    succeeded = threading.Event()
    shower = threading.Thread(target=display, name="foldflow-progress", daemon=True)
    shower.start()
    try:
        value = run()
        succeeded.set()
        return value
    finally:
        finished.set()
        shower.join(timeout=10)
