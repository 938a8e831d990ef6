"""Shared fixtures: one real Prefect API for the session, and small data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("FOLDFLOW_FAIL_FOLDS", None)


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """A temporary Prefect server for the whole session (real API, throwaway database)."""
    from prefect.testing.utilities import prefect_test_harness

    # A loaded machine means a later start, not a failed session.
    with prefect_test_harness(server_startup_timeout=600):
        yield


@pytest.fixture(scope="session")
def bundled_csv() -> Path:
    """The bundled stand-in data set."""
    from tasks.config import BUNDLED_DATA

    return BUNDLED_DATA
