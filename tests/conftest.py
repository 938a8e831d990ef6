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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Keep the session's exit status for pytest_unconfigure's hard exit."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once the report is out, as `foldflow` itself ends (flows/cli.py).

    The interpreter's own shutdown then runs exit handlers and joins threads of the libraries
    that ran in this process (Prefect's batched log and event senders, TensorFlow's teardown);
    after the temporary API server has stopped, one of them once kept a finished session
    (474 passed) alive until its 50-minute timeout. Threads still alive are named on stderr so
    that a lingering one stays visible.
    """
    import sys
    import threading

    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    lingering = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]  # fmt: skip
    if lingering:
        print(f"threads still alive at exit: {', '.join(lingering)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
