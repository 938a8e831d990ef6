"""Process set-up, in one place: quiet libraries, the shared API server, fast exit.

Called explicitly — by the CLI before anything heavy is imported, and by every fold worker
process as its initialiser — instead of happening as a side effect of importing a module.
A light module: the CLI imports it before Prefect's and TensorFlow's heavy imports.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_IMPORTED = time.monotonic()

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
PARENT_POLL_S = 0.5


def configure_process(quiet_console: bool = False) -> None:
    """Set the environment this process and the workers it starts inherit.

    `quiet_console` keeps Prefect's INFO lines for the UI only (the terminal shows progress
    bars and warnings); worker processes read it from the environment they inherit.
    """
    for name, value in {**QUIET_ENVIRONMENT, **API_PATIENCE}.items():
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


def exit_with_parent(on_exit: Callable[[], None] | None = None) -> None:
    """End this process soon after its parent dies (whatever killed it: SIGKILL included).

    A daemon thread polls the parent pid: when the parent is gone the process is re-parented,
    `getppid()` changes, and this process ends instead of working on for nobody.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        if on_exit is not None:
            on_exit()
        os._exit(1)

    threading.Thread(target=watch, name="foldflow-parent-watch", daemon=True).start()


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


def share_ephemeral_api() -> None:
    """Point worker processes at this process's API instead of each starting its own.

    In Prefect's ephemeral mode every new process would start a private API server on the
    same SQLite file (slow, and 'database is locked'); exporting the running one's URL makes
    workers report to the API the flow itself uses. A no-op when an API URL is configured.
    """
    if not api_is_temporary():
        return
    server = tied_api_server()
    if not server.running:
        server.start()
    os.environ["PREFECT_API_URL"] = server.api_url


@contextlib.contextmanager
def api_shared_with_workers() -> Iterator[None]:
    """Inside: tasks sent to worker processes carry this process's API URL in their settings.

    Prefect serialises the *settings* of the submitting context with each task and a worker
    applies them over its environment, so exporting `PREFECT_API_URL` alone is not enough:
    with the ephemeral-mode settings (no URL) every worker would still start its own API
    server (~5 s each, and a second database). A no-op when an API URL is configured.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not api_is_temporary():
        yield
        return
    share_ephemeral_api()
    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        yield


def api_is_temporary() -> bool:
    """Whether this run starts Prefect's temporary API server (no `PREFECT_API_URL` set)."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


def start_api_in_background() -> threading.Thread:
    """Boot the API server while the caller goes on importing (they overlap on two cores)."""
    if api_is_temporary():
        # Import the server module here, before the caller's imports compete for the GIL,
        # so the server process starts as early as possible.
        tied_api_server()
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


def tied_api_server() -> Any:
    """Prefect's temporary API server, started so that it never outlives this process.

    It runs in its own session (a Ctrl-C in the terminal reaches foldflow, which then reports
    the run's end to this still-running API before stopping it) and exits by itself if this
    process dies without stopping it (`python -m flows.process --api-for PID ...`).
    """
    return _tied_server_class()()


@functools.cache
def _tied_server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class TiedASGIServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            with _patched_popen():
                return super()._run_uvicorn_command()

    return TiedASGIServer


class _patched_popen:  # noqa: N801 - a context manager used like a function
    """Inside: Popen of `python -m uvicorn ...` becomes the tied launcher in a new session."""

    def __enter__(self) -> None:
        self._real = subprocess.Popen
        parent, real = os.getpid(), self._real

        def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
            if args[1:3] == ["-m", "uvicorn"]:
                args = [args[0], "-m", "flows.process", "--api-for", str(parent), *args[3:]]
                kwargs["start_new_session"] = True
            return real(args, **kwargs)

        subprocess.Popen = popen  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        subprocess.Popen = self._real  # type: ignore[misc]


def child_processes() -> list[Any]:
    """Every living descendant of this process (workers, clusters, the API server)."""
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def stop_child_processes(grace_s: float = 2.0, keep: set[int] | None = None) -> None:
    """Terminate this process's descendants (except `keep`), then kill what is still alive."""
    import psutil

    victims = [p for p in child_processes() if p.pid not in (keep or set())]
    for proc in victims:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(victims, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


def api_server_pids() -> set[int]:
    """Pids of the temporary API server this process started (and its children), if any."""
    from prefect.server.api.server import SubprocessASGIServer

    pids: set[int] = set()
    for server in list(SubprocessASGIServer._instances.values()):
        proc = getattr(server, "server_process", None)
        if proc is not None and proc.poll() is None:
            pids.add(proc.pid)
    return pids


@contextlib.contextmanager
def stop_on_signals(what: str = "run") -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM stops the run within seconds, leaving nothing running.

    The handler stops the worker processes first (no fold trains on), marks the flow run and
    its unfinished task runs in the API while it is still there, stops the temporary API
    server, says how to resume and exits 130 (SIGINT) or 143 (SIGTERM). Completed folds are
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
        stop_child_processes(keep=api_server_pids())
        if flow_run_id is not None:
            marker = threading.Thread(target=_mark_stopped, args=(flow_run_id, name), daemon=True)
            marker.start()
            marker.join(timeout=5)  # a lost API must not hold the exit up
        stop_child_processes()
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _current_flow_run_id() -> Any:
    """The flow run this (main) thread is running, if any."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.id if context and context.flow_run else None


def _mark_stopped(flow_run_id: Any, signal_name: str) -> None:
    """Record in the API that the run was stopped: unfinished task runs Crashed, run Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled, Crashed

    message = f"stopped by {signal_name}; rerun to resume (finished folds are reused)"
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            for run in runs:
                if run.state is not None and not run.state.is_final():
                    client.set_task_run_state(run.id, Crashed(message=message), force=True)
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
    except Exception:  # noqa: BLE001 - best effort: the API may be gone
        pass


API_POLL_S = 5.0


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
    health; once it has failed for `patience_s` the workers are stopped, the message names the
    API, and the process exits: no state can be recorded in an API that is gone.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        import httpx

        answered = time.monotonic()
        while not done.wait(poll_s):
            try:
                httpx.get(f"{url}/health", timeout=min(10.0, patience_s)).raise_for_status()
                answered = time.monotonic()
            except httpx.HTTPError:
                if time.monotonic() - answered >= patience_s and not done.is_set():
                    sys.stderr.write("\n" + api_lost_message(url, patience_s) + "\n")
                    sys.stderr.flush()
                    stop_child_processes()
                    os._exit(1)

    threading.Thread(target=watch, name="foldflow-api-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _serve_api_for(parent: int, uvicorn_args: list[str]) -> None:
    """Run uvicorn (Prefect's temporary API) until it is stopped or `parent` dies."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down cleanly on SIGTERM
        time.sleep(5)
        os._exit(1)

    threading.Thread(target=watch, name="foldflow-parent-watch", daemon=True).start()
    from uvicorn.main import main as uvicorn_main

    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn_main()


if __name__ == "__main__" and sys.argv[1:2] == ["--api-for"]:
    _serve_api_for(int(sys.argv[2]), sys.argv[3:])
