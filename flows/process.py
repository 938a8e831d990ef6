"""Process set-up, in one place: quiet libraries, the shared API server, fast exit.

Called explicitly — by the CLI before anything heavy is imported, and by every fold worker
process as its initialiser — instead of happening as a side effect of importing a module.
A light module: the CLI imports it before Prefect's and TensorFlow's heavy imports.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

_IMPORTED = time.monotonic()

# TensorFlow's C++ info/warning lines (oneDNN, CUDA probing) and Prefect's telemetry (which
# cannot reach the internet from most clusters) are noise in a run's terminal and log.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def configure_process(quiet_console: bool = False) -> None:
    """Set the environment this process and the workers it starts inherit.

    `quiet_console` keeps Prefect's INFO lines for the UI only (the terminal shows progress
    bars and warnings); worker processes read it from the environment they inherit.
    """
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if quiet_console:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"


def skip_teardown_at_exit() -> None:
    """End the process without TensorFlow's slow C++ teardown once everything is flushed.

    Registered before Prefect's own exit handlers exist, so it runs after them (atexit is
    last-in, first-out): logs and results are flushed first, then ~1.5 s of teardown that the
    parent would otherwise wait for is skipped.
    """
    atexit.register(os._exit, 0)


def init_fold_worker() -> None:
    """Initialiser of every fold worker process of a process pool."""
    configure_process()
    skip_teardown_at_exit()


def share_ephemeral_api() -> None:
    """Point worker processes at this process's API instead of each starting its own.

    In Prefect's ephemeral mode every new process would start a private API server on the
    same SQLite file (slow, and 'database is locked'); exporting the running one's URL makes
    workers report to the API the flow itself uses. A no-op when an API URL is configured.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if not server.running:
        server.start()
    os.environ["PREFECT_API_URL"] = server.api_url


def start_api_in_background() -> threading.Thread:
    """Boot the API server while the caller goes on importing (they overlap on two cores)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Import the server module here, before the caller's imports compete for the GIL,
        # so the server process starts as early as possible.
        from prefect.server.api.server import SubprocessASGIServer  # noqa: F401
    thread = threading.Thread(target=share_ephemeral_api, name="foldflow-api", daemon=True)
    thread.start()
    return thread


def seconds_since_start() -> float:
    """Seconds since this process started (what `time` reports), not since some later import."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            booted_for = float(uptime.read().split()[0])
        return booted_for - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):  # not Linux: from this module's import
        return time.monotonic() - _IMPORTED
