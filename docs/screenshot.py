"""Take the README's screenshots of the Prefect UI with headless Chromium.

Starts a throwaway `prefect server` (UI on, temporary PREFECT_HOME, 127.0.0.1), runs
`foldflow run --epochs 20` against it, and photographs the UI's page of that flow run:

    .venv/bin/python docs/screenshot.py            # writes docs/*.png
    .venv/bin/python docs/screenshot.py --help

Needs Debian's `chromium` (`sudo apt-get install -y chromium`). Stops every process it
started, also when something fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = PROJECT_ROOT / "docs"

# What is photographed: file name -> (which page, window size). Pages: the cross-validate run,
# its `train-folds` subflow run (the fold task runs), and two of the join's artifacts. (The
# run page's `?tab=Artifacts` / `?tab=Task+Runs` are not honoured on a fresh load: those tabs
# are hidden until the run has loaded, and the page falls back to Logs.)
PAGES = {
    "flow-run.png": ("run", "1600,1000"),
    "flow-run-folds.png": ("folds", "1600,1000"),
    "artifact-cv-summary.png": ("artifact:cv-summary", "1600,1500"),
    "artifact-fold-results.png": ("artifact:fold-results", "1600,650"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def stop(proc: subprocess.Popen) -> None:
    """End a process started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"prefect server not healthy after {timeout_s:.0f} s")


def _post(api_url: str, path: str, body: dict) -> list[dict]:
    reply = httpx.post(f"{api_url}/{path}", json=body, timeout=10)
    reply.raise_for_status()
    found = reply.json()
    if not found:
        raise SystemExit(f"nothing matches {path} {body}")
    return found


def page_paths(api_url: str) -> dict[str, str]:
    """UI paths of the newest cross-validate run, its train-folds subflow and its artifacts."""
    run = _post(
        api_url, "flow_runs/filter",
        {"flow_runs": {"parent_task_run_id": {"is_null_": True}}, "sort": "START_TIME_DESC",
         "limit": 1},
    )[0]  # fmt: skip
    folds = _post(
        api_url, "flow_runs/filter",
        {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}, "sort": "START_TIME_DESC",
         "limit": 1},
    )[0]  # fmt: skip
    paths = {"run": f"runs/flow-run/{run['id']}", "folds": f"runs/flow-run/{folds['id']}"}
    artifacts = _post(
        api_url, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    for artifact in artifacts:
        if artifact.get("key"):
            paths[f"artifact:{artifact['key']}"] = f"artifacts/artifact/{artifact['id']}"
    return paths


def screenshot(chromium: str, url: str, out: Path, budget_ms: int, size: str, tmp: Path) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={size}", f"--virtual-time-budget={budget_ms}",
        f"--screenshot={out}", url,
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, start_new_session=True
    )
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")
    print(f"wrote {out.relative_to(PROJECT_ROOT)} <- {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the run shown")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--budget-ms", type=int, default=20000, help="Chromium virtual time")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    args = parser.parse_args()

    chromium = find_chromium()
    if chromium is None:
        print(
            "Chromium is missing. On Debian/Ubuntu: sudo apt-get update && "
            "sudo apt-get install -y chromium",
            file=sys.stderr,
        )
        return 2

    port = args.port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    tmp = Path(tempfile.mkdtemp(prefix="foldflow-screenshot-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_API_URL=api_url,
        PREFECT_UI_API_URL=api_url,  # else the UI calls port 4200, whatever --port says
        PREFECT_UI_ENABLED="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=(tmp / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(api_url, server)
        print(f"prefect server (UI) at http://127.0.0.1:{port}")
        run = subprocess.run(
            [str(BIN / "foldflow"), "run", "--epochs", str(args.epochs),
             "--cache-dir", str(tmp / "cache"), "--output-dir", str(tmp / "output")],
            env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"foldflow run failed with code {run.returncode}")
        paths = page_paths(api_url)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, (page, size) in PAGES.items():
            if page not in paths:
                raise SystemExit(f"the run has no {page} (found: {sorted(paths)})")
            url = f"http://127.0.0.1:{port}/{paths[page]}"
            screenshot(chromium, url, args.out_dir / name, args.budget_ms, size, tmp)
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
