"""A terminal progress display for `foldflow run`, fed by the run's Prefect progress artifacts."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FOLD_PROGRESS = re.compile(r"^fold (\d+)(\S*): \d+ of (\d+) epochs")  # tasks/progress.py


def quiet_console_logs() -> None:
    """Keep Prefect's log lines for the UI and show only warnings in the terminal."""
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"  # worker processes
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.setLevel(logging.WARNING)


def read_fold_progress(since: datetime) -> dict[str, tuple[float, int]]:
    """{fold label: (percent, total epochs)} from progress artifacts created since `since`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=200,
        )
    found: dict[str, tuple[float, int]] = {}
    for art in artifacts:
        match = FOLD_PROGRESS.match(art.description or "")
        if not match or art.created is None or art.created < since:
            continue
        label = f"fold {match.group(1)}{match.group(2)}"
        found.setdefault(label, (float(art.data or 0.0), int(match.group(3))))
    return found


def run_with_progress(run: Callable[[], Any], folds: int, poll_s: float = 1.0) -> Any:
    """Run `run()` in this (main) thread while a rich display in another shows each fold.

    The run keeps the main thread so that signals reach it (see flows/process.py).
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
                for label, (percent, total) in sorted(seen.items()):
                    if label not in bars:
                        bars[label] = progress.add_task(label, total=total)
                    progress.update(bars[label], completed=round(total * percent / 100))
                progress.update(overall, completed=sum(p >= 100 for p, _ in seen.values()))
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
