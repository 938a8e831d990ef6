"""Logging that goes to the Prefect UI inside a run and to plain logging outside one."""

from __future__ import annotations

import logging
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger(name: str = "foldflow") -> Any:
    """The Prefect run logger when inside a flow/task run, else a standard logger (for `.fn`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)


def send_queued_logs(timeout_s: float = 5.0) -> None:
    """Send the log lines queued for the API now, not at the next batch, so the UI has them.

    Prefect sends logs in batches every couple of seconds; a run can reach its final state
    before the last batch, and its page then lacks lines. Harmless without an API.
    """
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - the lines still go at the next batch or at exit
        logging.getLogger("foldflow").debug("could not send queued log lines", exc_info=True)


def current_attempt() -> tuple[int, int]:
    """(this attempt, attempts allowed) of the running task; (1, 1) outside Prefect."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return 1, 1
    retries = ctx.task.retries or 0
    return max(1, ctx.task_run.run_count or 1), retries + 1
