"""Stops when told, leaves nothing running, fails in bounded time when the API goes silent.

Subprocess tests of the real `foldflow run` (process pool, its local API server): a signal
mid-fold, then the exit code, the time it took, the earlier outputs, and that no process of
the run is left.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow  # signals to CLI subprocesses, dying APIs (bounded waits)

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "flows.cli"]


def start_run(tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`foldflow run` as a terminal would start it: its own process group, long folds."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.Popen(
        [*CLI, "run", "--no-progress", "--epochs", "100000", "--folds", "2",
         "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
         *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        env={**base, "PREFECT_HOME": str(tmp_path / "home"), **(env or {})},
    )  # fmt: skip


class Output:
    """Collects a process's output in the background; waits for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not seen in {timeout} s:\n{''.join(self.lines)[-3000:]}")

    @property
    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def is_local_api(cmdline: list[str], main_pid: int) -> bool:
    """Whether a command line is the local API server of the run `main_pid` (flows.local_api)."""
    return cmdline[1:3] == ["-m", "flows.local_api"] and cmdline[-1:] == [str(main_pid)]


def processes_of(main_pid: int, marker: str) -> list[psutil.Process]:
    """Living processes of the run: the main one, its workers, its API server."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        cmd = " ".join(cmdline)
        if proc.pid == main_pid or marker in cmd or is_local_api(cmdline, main_pid):
            found.append(proc)
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def workers_of(main_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(main_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_gone(main_pid: int, marker: str, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = processes_of(main_pid, marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.3)
        left = processes_of(main_pid, marker)
    return left


def semaphores_of(main_pid: int) -> set[str]:
    """The POSIX semaphores (/dev/shm/sem.*) the run's processes have mapped right now."""
    found = set()
    try:
        procs = [psutil.Process(main_pid), *psutil.Process(main_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue
        found.update(re.findall(r"(/dev/shm/sem\.\S+)", maps))
    return found


def states_in_local_api(home: Path) -> tuple[str, dict[str, str]]:
    """The flow run's and its task runs' states, from the local API's database after the run."""
    with sqlite3.connect(home / "prefect.db") as db:
        ((flow_state,),) = db.execute("SELECT state_type FROM flow_run").fetchall()
        tasks = dict(db.execute("SELECT name, state_type FROM task_run").fetchall())
    return flow_state, tasks


def states_in_server(api_url: str) -> tuple[str, dict[str, str]]:
    """The latest flow run's and its task runs' states, as a real server records them."""
    with httpx.Client(base_url=api_url, timeout=10) as client:
        run = client.post("/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1})
        flow_run = run.json()[0]
        tasks = client.post(
            "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}}
        ).json()
    return flow_run["state"]["type"], {t["name"]: t["state"]["type"] for t in tasks}


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """A real `prefect server start` (its own home and database); yields its API URL."""
    from tests.test_served import BIN, Launcher, free_port

    launcher = Launcher(tmp_path_factory.mktemp("server"))
    port = free_port()
    try:
        proc = launcher.start("server", [str(BIN / "prefect"), "server", "start", "--host",
                                         "127.0.0.1", "--port", str(port)])  # fmt: skip
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 300  # a loaded machine starts it slowly
        while not up(url):
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not come up\n{proc.tail()}")
            time.sleep(0.5)
        yield url
    finally:
        launcher.stop_all()


def up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("how", "code", "api"),
    [("group-sigint", 130, "local"), ("sigterm", 143, "local"), ("sigterm", 143, "server")],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-main-process",
         "sigterm-with-a-real-server"],
)  # fmt: skip
def test_a_signal_stops_the_run_within_seconds_and_records_it_cancelled(
    tmp_path, request, how, code, api
):
    earlier = tmp_path / "out" / "metrics.json"
    earlier.parent.mkdir()
    earlier.write_text('{"earlier": true}\n')
    api_url = request.getfixturevalue("real_server") if api == "server" else None
    proc = start_run(tmp_path, env={"PREFECT_API_URL": api_url} if api_url else None)
    out = Output(proc)
    out.wait_for("epoch", timeout=300)  # a fold is training
    time.sleep(2)  # the other fold too, on a busy machine
    assert len(workers_of(proc.pid)) >= 2  # resource tracker, fold workers (, API server)
    semaphores = semaphores_of(proc.pid)
    assert semaphores  # the process pool's queues and locks
    sent = time.monotonic()
    if how == "group-sigint":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == code, out.text[-3000:]
    took = time.monotonic() - sent
    assert took < 15, f"took {took:.1f} s"
    assert "Run the same command again to resume" in out.text
    assert wait_gone(proc.pid, str(tmp_path), timeout=10) == []
    assert earlier.read_text() == '{"earlier": true}\n'
    assert "Traceback" not in out.text and "Warning" not in out.text, out.text[-3000:]
    deadline = time.monotonic() + 10  # the resource tracker unlinks them as it ends
    while (left := {s for s in semaphores if Path(s).exists()}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == set()
    flow_state, tasks = (
        states_in_server(api_url) if api_url else states_in_local_api(tmp_path / "home")
    )
    assert flow_state == "CANCELLED"
    folds = {name: state for name, state in tasks.items() if name.startswith("fold-")}
    assert folds and set(folds.values()) == {"CANCELLED"}, tasks
    assert all(state in ("COMPLETED", "CANCELLED") for state in tasks.values()), tasks


def test_sigkill_leaves_no_orphans(tmp_path):
    proc = start_run(tmp_path)
    out = Output(proc)
    out.wait_for("epoch", timeout=180)
    children = workers_of(proc.pid)
    assert any(is_local_api(c.cmdline(), proc.pid) for c in children)
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], [" ".join(p.cmdline())[:120] for p in alive]


def test_a_silent_api_fails_the_run_in_bounded_time_naming_it(tmp_path):
    """An API that accepts connections and never answers: a clear error, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    started = time.monotonic()
    proc = start_run(
        tmp_path, env={"PREFECT_API_URL": url, "PREFECT_API_REQUEST_TIMEOUT": "2"}
    )
    out = Output(proc)
    try:
        code = proc.wait(timeout=120)
    finally:
        listener.close()
    took = time.monotonic() - started
    assert code == 1, out.text[-3000:]
    assert took < 60, f"took {took:.1f} s"
    assert f"the Prefect API at {url} did not answer" in out.text, out.text[-3000:]
    assert wait_gone(proc.pid, str(tmp_path), timeout=10) == []


def test_an_api_that_dies_mid_run_stops_the_run_in_bounded_time_naming_it(tmp_path):
    """The API server killed while folds train: the run ends soon after, not after the folds."""
    proc = start_run(tmp_path, "--api-lost-after-s", "5")
    out = Output(proc)
    out.wait_for("epoch", timeout=180)  # folds are training, on a 100000-epoch budget
    server = [c for c in workers_of(proc.pid) if is_local_api(c.cmdline(), proc.pid)]
    assert len(server) == 1, [" ".join(c.cmdline())[:120] for c in workers_of(proc.pid)]
    killed = time.monotonic()
    server[0].kill()
    code = proc.wait(timeout=90)
    took = time.monotonic() - killed
    assert code == 1, out.text[-3000:]
    assert took < 30, f"took {took:.1f} s"
    assert re.search(r"the Prefect API at http://127\.0\.0\.1:\d+/api has not answered for 5 s",
                     out.text), out.text[-3000:]  # fmt: skip
    assert "run the same command again" in out.text
    assert wait_gone(proc.pid, str(tmp_path), timeout=10) == []
