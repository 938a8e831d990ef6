"""foldflow's local Prefect API: a child process on 127.0.0.1 when no API is configured.

It serves Prefect's own app factory (`prefect.server.api.server.create_app`, ephemeral: no UI,
only the services a run needs) with uvicorn, on a socket this process binds first (so no port
is raced for and none is taken twice), in its own session (a Ctrl-C in the terminal reaches
foldflow, which records the run's end in this still-running API before stopping it), and it
exits by itself if its parent dies. Its URL is exported as `PREFECT_API_URL` before the run
starts, so the flow, its fold workers and their tasks all report to this one API; nothing
runs in Prefect's ephemeral mode. A slow machine only makes it answer later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO

LOOPBACK = "127.0.0.1"
# A generous bound: the server only needs CPU to boot, and a loaded machine must mean a later
# start, not a failed one. A server that exits early fails at once (with its last output).
STARTUP_TIMEOUT_S = 300.0
HEALTH_POLL_S = 0.1

_running: LocalAPIServer | None = None


class LocalAPIServer:
    """A Prefect API server child process serving on a socket bound by its parent."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind((LOOPBACK, 0))
        self.socket.listen(128)
        self.socket.set_inheritable(True)
        self.url = f"http://{LOOPBACK}:{self.socket.getsockname()[1]}/api"
        self._output: IO[bytes] = tempfile.TemporaryFile()
        self.ready = False
        fd = self.socket.fileno()
        self._answer, answer = os.pipe()  # the child says here whether it serves
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.local_api", str(fd), str(answer), str(os.getpid())],
            pass_fds=(fd, answer),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(answer)

    def needed(self) -> bool:
        """Whether the child serves: False when Prefect's settings (a profile, a prefect.toml,
        a .env file) name an API after all; the child then exits without serving."""
        with os.fdopen(self._answer) as answer:
            said = answer.read().strip()  # written as soon as it has read Prefect's settings
        if said not in ("serving", "configured"):
            self.process.wait(timeout=30)
            raise RuntimeError(
                f"foldflow's local Prefect API server exited with code "
                f"{self.process.returncode} before it started: {self.output_tail()}"
            )
        return said == "serving"

    @property
    def pid(self) -> int:
        """The server process's pid (kept alive while a stopped run is being recorded)."""
        return self.process.pid

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Return once the API answers its health check; fail if the server exits or hangs."""
        import httpx

        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"foldflow's local Prefect API server exited with code "
                        f"{self.process.returncode} before it answered: {self.output_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        self.ready = True
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(HEALTH_POLL_S)
        raise RuntimeError(
            f"foldflow's local Prefect API server at {self.url} did not answer within "
            f"{timeout_s:.0f} s: {self.output_tail()}"
        )

    def output_tail(self, chars: int = 2000) -> str:
        """The end of what the server printed, for an error message."""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")[-chars:].strip() or "(no output)"

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server (uvicorn shuts down cleanly on SIGTERM), then kill it if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket.close()
        self._output.close()


def local_api_booting() -> bool:
    """Whether the local API server this process started has not answered yet."""
    return _running is not None and not _running.ready


def local_api_pid() -> int | None:
    """The pid of the local API server this process started, if one is running."""
    return _running.pid if _running is not None else None


@contextlib.contextmanager
def api_for_run(announce: Callable[[str], None] | None = None) -> Iterator[str | None]:
    """Inside: a Prefect API for this process and its children; yields the local one's URL.

    With an API configured (`PREFECT_API_URL`, a Prefect profile or settings file) nothing
    is started. Else the local server starts, and its URL is exported before Prefect is
    imported here, so that every thread and process of the run sees it in Prefect's settings.
    The caller overlaps its imports with the server's boot and calls `wait_for_api()`.
    """
    global _running
    if "PREFECT_API_URL" in os.environ:
        yield None
        return
    if "prefect" in sys.modules:  # its settings are loaded: they can no longer change
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise RuntimeError(
                "Prefect was imported before foldflow could start its local API: set "
                "PREFECT_API_URL (e.g. to a `make server`) before running foldflow from Python"
            )
        yield None
        return
    server = LocalAPIServer()
    if not server.needed():
        server.stop()
        yield None
        return
    _running = server
    os.environ["PREFECT_API_URL"] = server.url
    os.environ["PREFECT_UI_URL"] = ""  # the local server serves no UI: no "View at" link
    if announce is not None:
        announce(f"foldflow: no PREFECT_API_URL set; a local Prefect API at {server.url}")
    try:
        yield server.url
    finally:
        send_queued_records()
        _running = None
        for name in ("PREFECT_API_URL", "PREFECT_UI_URL"):
            os.environ.pop(name, None)
        server.stop()


def send_queued_records(timeout_s: float = 5.0) -> None:
    """Send the log lines and events still queued for the API, while it is still there."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - best effort: the run's outcome is already decided
            pass


def wait_for_api() -> None:
    """Block until the local API server (if this process started one) answers."""
    if _running is not None:
        _running.wait_ready()


def _serve(fd: int, answer: int, parent: int) -> None:
    """The server process: says whether it is needed, then serves Prefect's API app on the
    inherited socket until it is stopped or its parent dies."""
    from flows.lifetime import exit_with_parent

    def shut_down() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down cleanly on SIGTERM
        time.sleep(5)

    exit_with_parent(shut_down, parent)
    from prefect.settings import PREFECT_API_URL

    configured = bool(PREFECT_API_URL.value())
    with os.fdopen(answer, "w") as said:
        said.write("configured" if configured else "serving")
    if configured:
        return
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)
    uvicorn.run(app, fd=fd, log_level="error", lifespan="on")


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
