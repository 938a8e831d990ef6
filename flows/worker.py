"""A process that trains folds: its environment, its thread budget, TensorFlow imported ahead.

Called explicitly — by the CLI before anything heavy is imported, and by every fold worker
process as its initialiser — instead of happening as a side effect of importing a module.
A light module: the CLI imports it before Prefect's and TensorFlow's heavy imports.
"""

from __future__ import annotations

import os
import signal

from flows.lifetime import exit_with_parent, skip_teardown_at_exit

# TensorFlow's C++ info/warning lines (oneDNN, CUDA probing) and Prefect's telemetry (which
# cannot reach the internet from most clusters) are noise in a run's terminal and log.
# DO_NOT_TRACK=1 also keeps Prefect's first-run telemetry notice off the terminal; set
# DO_NOT_TRACK=0 yourself to opt back in.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
# A lost or silent API must fail a run in bounded time, not after minutes of retries: each
# request gives up after 15 s and is retried twice (Prefect's defaults: 60 s, 5 retries).
# Set these Prefect settings yourself to choose other bounds; foldflow only fills them in.
API_PATIENCE = {
    "PREFECT_API_REQUEST_TIMEOUT": "15",
    "PREFECT_CLIENT_MAX_RETRIES": "2",
}


def configure_process(quiet_console: bool = False) -> None:
    """Set the environment this process and the workers it starts inherit.

    `quiet_console` keeps Prefect's INFO lines for the UI only (the terminal shows progress
    bars and warnings); worker processes read it from the environment they inherit.
    """
    for name, value in {**QUIET_ENVIRONMENT, **API_PATIENCE}.items():
        os.environ.setdefault(name, value)
    if quiet_console:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"


def threads_per_worker(workers: int) -> int:
    """Split the cores evenly so N workers never oversubscribe the machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def init_fold_worker(threads: int | None = None, gpu: int | None = None) -> None:
    """Initialiser of every fold worker process of a process pool.

    With `threads`, the worker also imports TensorFlow here, as its folds would (same thread
    budget, same device), so that the import overlaps the flow's own start-up instead of
    delaying its first fold. The parent watch starts first: a parent that dies meanwhile
    still takes the worker with it.
    """
    configure_process()
    exit_with_parent()
    skip_teardown_at_exit()
    # Ctrl-C reaches the whole process group: the main process stops the run (and this worker)
    # and records its folds Cancelled; the worker's own handling would record them Crashed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from flows.console import quiet_console  # Prefect is imported here already

    quiet_console()
    if threads is not None:
        warm_tensorflow(threads, gpu)


def warm_tensorflow(threads: int, gpu: int | None = None) -> int:
    """Import TensorFlow now, exactly as a fold would, so the fold trains at once; the pid.

    Failing is harmless: the fold imports it again and reports the error where it belongs.
    """
    import logging

    logger = logging.getLogger("foldflow.worker")
    try:
        from tasks.tf_runtime import import_tensorflow

        import_tensorflow(threads, gpu, logger)
    except Exception:  # noqa: BLE001 - see the docstring
        logger.debug("TensorFlow warm-up import failed; a fold will retry it", exc_info=True)
    return os.getpid()
