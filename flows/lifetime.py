"""Process lifetimes: children that die with their parent, clean-up of children, a fast exit.

A light module (standard library and psutil only): the CLI, every fold worker and the local
API server import it before anything heavy.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

_IMPORTED = time.monotonic()
PARENT_POLL_S = 0.5


def exit_with_parent(on_exit: Callable[[], None] | None = None, parent: int | None = None) -> None:
    """End this process soon after its parent dies (whatever killed it: SIGKILL included).

    A daemon thread polls the parent pid: when the parent is gone the process is re-parented,
    `getppid()` changes, and this process runs `on_exit` and ends instead of working on for
    nobody. The one parent watch of foldflow: fold workers and the local API server use it.
    """
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        if on_exit is not None:
            on_exit()
        os._exit(1)

    threading.Thread(target=watch, name="foldflow-parent-watch", daemon=True).start()


def skip_teardown_at_exit() -> None:
    """End the process without TensorFlow's slow C++ teardown once everything is flushed.

    Registered before Prefect's own exit handlers exist, so it runs after them (atexit is
    last-in, first-out): logs and results are flushed first, then ~1.5 s of teardown that the
    parent would otherwise wait for is skipped.
    """
    atexit.register(os._exit, 0)


def child_processes() -> list[Any]:
    """Every living descendant of this process (workers, clusters, the API server)."""
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def is_resource_tracker(proc: Any) -> bool:
    """Whether a process is a multiprocessing resource tracker (it must outlive its parent)."""
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone or unreadable: not one to spare
        return False


def stop_child_processes(grace_s: float = 2.0, keep: set[int] | None = None) -> None:
    """Terminate this process's descendants (except `keep`), then kill what is still alive.

    Resource trackers are spared: one ends by itself once its parent and the workers are
    gone, unlinking the semaphores still registered; killed, it would leave them in /dev/shm.
    """
    import psutil

    victims = [
        p for p in child_processes() if p.pid not in (keep or set()) and not is_resource_tracker(p)
    ]
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


def seconds_since_start() -> float:
    """Seconds since this process started (what `time` reports), not since some later import."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no process facts: from this module's import
        return time.monotonic() - _IMPORTED
