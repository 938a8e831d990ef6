"""How a run stops early: Ctrl-C or SIGTERM, and a Prefect API that stopped answering.

Either way nothing keeps running: the fold workers are stopped first, what can still be
recorded in the API is recorded, and the process exits with a code that says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flows.lifetime import stop_child_processes
from flows.local_api import local_api_booting, local_api_pid

API_POLL_S = 5.0
TRACKER_WARNINGS = "ignore::UserWarning:multiprocessing.resource_tracker"
RECORD_TIMEOUT_S = 5.0  # a lost or slow API must not hold the exit up longer than this


@contextlib.contextmanager
def stop_on_signals(what: str = "run") -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM stops the run within seconds, leaving nothing running.

    The handler stops the worker processes first (no fold trains on), marks the flow run and
    its unfinished task runs in the API while it is still there, stops the local API server,
    says how to resume and exits 130 (SIGINT) or 143 (SIGTERM). Completed folds are
    persisted, so running the same command again retrains only the unfinished ones.
    """

    def handler(signum: int, _frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        name = signal.Signals(signum).name
        if sys.stderr.isatty():
            sys.stderr.write("\x1b[?25h")  # the progress display hides the cursor
        sys.stderr.write(
            f"\nfoldflow: {name}: stopping the {what}. Run the same command again to resume: "
            "folds that finished are reused.\n"
        )
        sys.stderr.flush()
        flow_run_id = _current_flow_run_id()
        api = local_api_pid()
        stop_child_processes(keep=set() if api is None else {api})
        if flow_run_id is not None:
            _bounded(_mark_stopped, flow_run_id, name)
        stop_child_processes()
        os._exit(128 + signum)

    handler.stops_foldflow = True  # type: ignore[attr-defined] - see reclaim_sigterm
    # The run's multiprocessing resource tracker outlives a stop and unlinks the semaphores the
    # killed workers left (flows.lifetime spares it); its report of them is expected, not news.
    # Set before the tracker starts, which reads warning filters from the environment.
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), TRACKER_WARNINGS) if w
    )
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def reclaim_sigterm() -> None:
    """Inside a flow run started by the CLI: SIGTERM stops it as Ctrl-C does.

    Prefect's flow engine puts its own SIGTERM handler in place while a flow runs; it would
    record the run as Crashed and leave the folds Running. Where `stop_on_signals` handles
    Ctrl-C (a CLI run), its handler takes SIGTERM back; the engine restores the CLI's handler
    when the flow ends. Elsewhere (a served run, whose runner cancels by SIGTERM) nothing
    changes.
    """
    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "stops_foldflow", False):
        with contextlib.suppress(ValueError):  # signals can be set in the main thread only
            signal.signal(signal.SIGTERM, handler)


def _bounded(work: Callable[..., None], *args: Any) -> None:
    """Run `work` in a daemon thread and wait for it at most RECORD_TIMEOUT_S."""
    thread = threading.Thread(target=work, args=args, daemon=True)
    thread.start()
    thread.join(timeout=RECORD_TIMEOUT_S)


def _current_flow_run_id() -> Any:
    """The flow run this (main) thread is running, if any."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.id if context and context.flow_run else None


def _mark_stopped(flow_run_id: Any, signal_name: str) -> None:
    """Record in the API that the run was stopped: it and its unfinished task runs Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled

    message = f"stopped by {signal_name}; rerun to resume (finished folds are reused)"
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            for run in runs:
                if run.state is not None and not run.state.is_final():
                    client.set_task_run_state(run.id, Cancelled(message=message), force=True)
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
    except Exception:  # noqa: BLE001 - best effort: the API may be gone
        pass


def api_lost_message(url: str, patience_s: float) -> str:
    """What the user reads when the API went away mid-run: which API, and how to resume."""
    return (
        f"foldflow: the Prefect API at {url} has not answered for {patience_s:.0f} s; stopping "
        "the run. Folds that finished are persisted: run the same command again when the API "
        "is back, and only the unfinished folds train."
    )


@contextlib.contextmanager
def stop_when_api_lost(patience_s: float, poll_s: float = API_POLL_S) -> Iterator[None]:
    """Inside: if the Prefect API stops answering for `patience_s`, end the run (exit code 1).

    While folds train, nothing else talks to the API for minutes, so a server that died (or
    hangs) would only be noticed when the last fold finishes. A daemon thread polls the API's
    health endpoint (one bounded request each, no client retries); once it has failed for
    `patience_s` the workers are stopped, the message names the API, and the process exits:
    no state can be recorded in an API that is gone.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        import httpx

        # A local API still booting has not been lost: patience counts from its first answer.
        answered = None if local_api_booting() else time.monotonic()
        while not done.wait(poll_s):
            try:
                httpx.get(f"{url}/health", timeout=min(10.0, patience_s)).raise_for_status()
                answered = time.monotonic()
            except httpx.HTTPError:
                lost = answered is not None and time.monotonic() - answered >= patience_s
                if lost and not done.is_set():
                    sys.stderr.write("\n" + api_lost_message(url, patience_s) + "\n")
                    sys.stderr.flush()
                    stop_child_processes()
                    os._exit(1)

    threading.Thread(target=watch, name="foldflow-api-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()
