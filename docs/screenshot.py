"""Take the docs' screenshots of the Prefect UI with headless Chromium, driven by Selenium.

Starts a throwaway `prefect server` (UI on, temporary PREFECT_HOME, 127.0.0.1) and photographs
what a user of foldflow looks at:

- `run-live.png`, `run-live-progress.png`: a `foldflow run` **while it trains** — the run's
  graph with its fold task runs, then its Artifacts tab with each fold's progress card (the
  folds not started yet say "queued");
- `artifact-pictures.png`, `artifact-cv-summary.png`, `artifact-fold-results.png`,
  `artifact-oof-table.png`: a finished run's artifacts (notebook settings, 500 epochs):
  learning curves and confusion matrix inline, the summary, the per-fold table, the OOF
  preview; `run-finished-artifacts.png`, its Artifacts tab (the score on `cv-summary`'s card);
- `run-failed.png`, `run-failed-logs.png`, `run-failed-artifacts.png`: a run whose fold 3
  fails (injected), with the failed fold red, the end of its logs with the fold's error and
  the run's message, and its Artifacts tab (the reason on the `failed-folds` card);
- `runs-list.png`: the Runs list, each run's tags (`failed-fold-3`, the score's `acc-…`);
- `tune-live.png`, `tune-live-artifacts.png`, `artifact-trials.png` (`--parts tune`): a
  `foldflow tune` while it searches (its `trial-<n>.fold-<k>` task runs, its live
  `tune-progress` and `trials` cards), then its finished `trials` table.

    .venv/bin/python docs/screenshot.py            # writes docs/*.png
    .venv/bin/python docs/screenshot.py --help

Needs Debian's `chromium` and `chromium-driver` (`sudo apt-get install -y chromium
chromium-driver`) and Selenium (`pip install -c constraints.txt -e ".[docs]"`). Stops every
process it started, also when something fails.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = PROJECT_ROOT / "docs"
LIVE_EPOCHS = 4000  # long enough (~8 s a fold here) to photograph folds mid-training
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(every_s)
    raise SystemExit(f"gave up after {timeout_s:.0f} s waiting for {what}")


class Api:
    """The few REST reads the screenshots need (flow runs, task runs, artifacts)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        reply = httpx.post(f"{self.url}/{path}", json=body, timeout=10)
        reply.raise_for_status()
        return reply.json()

    def newest_run(self) -> dict[str, Any] | None:
        found = self.post("flow_runs/filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": 1})
        return found[0] if found else None

    def run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/flow_runs/{run_id}", timeout=10).json()

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        return self.post("task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self.post("artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})


class Browser:
    """One headless Chromium window, reused for every page."""

    def __init__(self, ui: str, tmp: Path, size: tuple[int, int] = (1600, 1000)) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        options = Options()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp)}")
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.ui = ui

    def open(self, path: str, settle_s: float = 6.0) -> None:
        self.driver.get(f"{self.ui}/{path}")
        time.sleep(settle_s)  # the UI renders after its API calls; nothing to wait on in the DOM

    def click_tab(self, name: str, settle_s: float = 3.0) -> None:
        from selenium.webdriver.common.by import By

        tab = wait_for(
            f"the {name!r} tab",
            lambda: [e for e in self.driver.find_elements(By.XPATH, f"//*[text()='{name}']")
                     if e.is_displayed()],  # fmt: skip
            30,
        )[0]
        tab.click()
        time.sleep(settle_s)

    def scroll_to_end(self, settle_s: float = 2.0) -> None:
        """Scroll every scrollable box to its end (the UI scrolls an inner box, not the page)."""
        self.driver.execute_script(
            "for (const e of document.querySelectorAll('*')) {"
            " if (e.scrollHeight > e.clientHeight + 10) e.scrollTop = e.scrollHeight; }"
        )
        time.sleep(settle_s)

    def shoot(self, out: Path, height: int | None = None) -> None:
        if height:
            self.driver.set_window_size(1600, height)
        self.driver.save_screenshot(str(out))
        print(f"wrote {out} <- {self.driver.current_url}")
        if height:
            self.driver.set_window_size(1600, 1000)

    def close(self) -> None:
        self.driver.quit()


def fold_progress(api: Api, run_id: str) -> list[float]:
    """Current values of the run's per-fold progress cards."""
    return [
        float(a["data"] or 0)
        for a in api.artifacts(run_id)
        if a["type"] == "progress" and (a.get("description") or "").startswith("fold ")
    ]


def mid_training(api: Api, run_id: str) -> bool:
    """Two folds running and at least one progress card strictly between 0 and 100 %."""
    running = [t for t in api.task_runs(run_id)
               if t["name"].startswith("fold-") and t["state_type"] == "RUNNING"]  # fmt: skip
    return len(running) >= 2 and any(0 < v < 100 for v in fold_progress(api, run_id))


def foldflow(env: dict[str, str], work: Path, *options: str) -> subprocess.Popen:
    """`foldflow run` on the bundled data, its own cache and output folders."""
    return subprocess.Popen(
        [str(BIN / "foldflow"), "run", "--no-progress", "--cache-dir", str(work / "cache"),
         "--output-dir", str(work / "output"), *options],
        env=env, cwd=PROJECT_ROOT, start_new_session=True,
        stdout=(work / "run.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def live_run(api: Api, browser: Browser, env: dict[str, str], tmp: Path, out: Path) -> None:
    """(a) a run while it trains: its graph, then its progress cards."""
    work = tmp / "live"
    work.mkdir()
    before = (api.newest_run() or {}).get("id")
    proc = foldflow(env, work, "--epochs", str(LIVE_EPOCHS))
    try:
        run = wait_for("the live run", lambda: (r := api.newest_run()) and r["id"] != before and r,
                       120)  # fmt: skip
        wait_for("two folds mid-training", lambda: mid_training(api, run["id"]), 240)
        browser.open(f"runs/flow-run/{run['id']}")
        browser.shoot(out / "run-live.png")
        browser.click_tab("Artifacts")
        browser.scroll_to_end()
        browser.shoot(out / "run-live-progress.png")
    finally:
        stop(proc)


def finished_run(api: Api, browser: Browser, env: dict[str, str], tmp: Path, out: Path) -> None:
    """(c) the artifacts of a finished run with the notebook's settings (500 epochs)."""
    work = tmp / "finished"
    work.mkdir()
    if foldflow(env, work).wait(600) != 0:
        raise SystemExit(f"the run failed: {(work / 'run.log').read_text()[-2000:]}")
    run = api.newest_run()
    by_key = {a["key"]: a for a in api.artifacts(run["id"]) if a.get("key")}
    for key, name, height in (
        ("cv-pictures", "artifact-pictures.png", 1750),
        ("cv-summary", "artifact-cv-summary.png", 1500),
        ("fold-results", "artifact-fold-results.png", 650),
        ("oof-table", "artifact-oof-table.png", 900),
    ):
        if key not in by_key:
            raise SystemExit(f"the run has no {key} artifact (found: {sorted(by_key)})")
        browser.open(f"artifacts/artifact/{by_key[key]['id']}")
        browser.shoot(out / name, height)
    browser.open(f"runs/flow-run/{run['id']}")
    browser.click_tab("Artifacts")
    browser.shoot(out / "run-finished-artifacts.png", 1300)


def failed_run(api: Api, browser: Browser, env: dict[str, str], tmp: Path, out: Path) -> None:
    """(b) a run whose fold 3 fails on every attempt: red fold, readable state message."""
    work = tmp / "failed"
    work.mkdir()
    proc = foldflow({**env, "FOLDFLOW_FAIL_FOLDS": "3"}, work, "--epochs", "200", "--retries", "0")
    code = proc.wait(600)
    if code == 0:
        raise SystemExit("the run with an injected fold failure succeeded")
    run = api.newest_run()
    print(f"failed run {run['name']}: {run['state']['message']}")
    browser.open(f"runs/flow-run/{run['id']}")
    browser.shoot(out / "run-failed.png")
    # The run's last log lines: the failed fold's error and the run's final message.
    browser.scroll_to_end()
    browser.shoot(out / "run-failed-logs.png")
    browser.open(f"runs/flow-run/{run['id']}")
    browser.click_tab("Artifacts")
    browser.shoot(out / "run-failed-artifacts.png", 1300)
    browser.open("runs")
    browser.shoot(out / "runs-list.png")  # 1000 px: the runs below the chart


def tune_run(api: Api, browser: Browser, env: dict[str, str], tmp: Path, out: Path) -> None:
    """(d) a tune while it searches, then its trials table once it is done."""
    work = tmp / "tune"
    work.mkdir()
    before = (api.newest_run() or {}).get("id")
    proc = subprocess.Popen(
        [str(BIN / "foldflow"), "tune", "--trials", "8", "--folds", "3", "--epochs", "150",
         "--holdout", "0", "--parallel-trials", "2", "--prune-startup-trials", "2",
         "--cache-dir", str(work / "cache"), "--output-dir", str(work / "output")],
        env=env, cwd=PROJECT_ROOT, start_new_session=True,
        stdout=(work / "tune.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        run = wait_for("the tune run", lambda: (r := api.newest_run()) and r["id"] != before and r,
                       120)  # fmt: skip

        def trials_ended() -> int:
            return sum(t["name"].startswith("trial-") and t["state_type"] == "COMPLETED"
                       for t in api.task_runs(run["id"]))  # fmt: skip

        wait_for("a few trials' folds", lambda: trials_ended() >= 9, 600)
        browser.open(f"runs/flow-run/{run['id']}")
        browser.shoot(out / "tune-live.png")
        browser.click_tab("Artifacts")
        browser.shoot(out / "tune-live-artifacts.png", 1300)
        if proc.wait(900) != 0:
            raise SystemExit(f"the tune failed: {(work / 'tune.log').read_text()[-2000:]}")
        trials = [a for a in api.artifacts(run["id"]) if a.get("key") == "trials"]
        newest = max(trials, key=lambda a: a["created"])
        browser.open(f"artifacts/artifact/{newest['id']}")
        browser.shoot(out / "artifact-trials.png", 1100)
    finally:
        stop(proc)


def server_env(tmp: Path, api_url: str) -> dict[str, str]:
    """A Prefect environment of its own: throwaway home, this server, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop("FOLDFLOW_FAIL_FOLDS", None)
    env.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_API_URL=api_url,
        PREFECT_UI_API_URL=api_url,  # else the UI calls port 4200, whatever --port says
        PREFECT_UI_ENABLED="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def main() -> int:
    """Start a server, make the runs, photograph them, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    parser.add_argument("--parts", default="live,finished,failed,tune", help="which to take")
    args = parser.parse_args()
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        print("Needs Chromium and ChromeDriver: sudo apt-get install -y chromium chromium-driver",
              file=sys.stderr)  # fmt: skip
        return 2

    port = args.port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    tmp = Path(tempfile.mkdtemp(prefix="foldflow-screenshot-"))
    env = server_env(tmp, api_url)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    browser = None
    try:
        api = Api(api_url)
        wait_for("prefect server", lambda: httpx.get(f"{api_url}/health", timeout=2).is_success,
                 300)  # fmt: skip - a loaded machine boots it slowly
        print(f"prefect server (UI) at http://127.0.0.1:{port}")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        browser = Browser(f"http://127.0.0.1:{port}", tmp)
        parts = {"live": live_run, "finished": finished_run, "failed": failed_run,
                 "tune": tune_run}  # fmt: skip
        for part in args.parts.split(","):
            parts[part](api, browser, env, tmp, args.out_dir)
    finally:
        if browser is not None:
            browser.close()
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
