"""The one Prefect API a run's processes share (a light module: the CLI imports it first)."""

import os
import threading

from prefect.settings import PREFECT_API_URL


def share_ephemeral_api() -> None:
    """Point worker processes at this process's API instead of each starting its own.

    In Prefect's ephemeral mode every new process would start a private API server on the
    same SQLite file (slow, and 'database is locked'); exporting the running one's URL makes
    workers report to the API the flow itself uses.
    """
    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if not server.running:
        server.start()
    os.environ["PREFECT_API_URL"] = server.api_url


def start_api_in_background() -> threading.Thread:
    """Boot the API server while the caller goes on importing (they overlap on two cores)."""
    if not PREFECT_API_URL.value():
        # Import the server module here, before the caller's imports compete for the GIL,
        # so the server process starts as early as possible.
        from prefect.server.api.server import SubprocessASGIServer  # noqa: F401
    thread = threading.Thread(target=share_ephemeral_api, name="foldflow-api", daemon=True)
    thread.start()
    return thread
