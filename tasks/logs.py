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
