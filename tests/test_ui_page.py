"""What the Prefect UI shows of a run, read in headless Chromium from a real `prefect server`.

Two `foldflow run`s (3 folds, one worker thread): the first with fold 3 failing, the same
command again then retrains fold 3 only. The test reads the pages' text as a person sees it:
queued folds' cards before they start, the failed fold's reason and `folds-done` on the
failed run's Artifacts grid, its `failed-fold-3` tag on the Runs list, and the finished
run's score on its `cv-summary` card and its fold cards' titles and numbers. Needs Debian's
`chromium` and `chromium-driver` and Selenium (the docs extra); skipped where they are absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip("needs chromium and chromium-driver (apt-get install)", allow_module_level=True)
pytest.importorskip("selenium")

from docs.screenshot import (  # noqa: E402 - after the skips: it needs Selenium to be useful
    BIN,
    PROJECT_ROOT,
    Api,
    Browser,
    free_port,
    server_env,
    stop,
    wait_for,
)

EPOCHS = "300"  # a few seconds a fold: long enough to see fold 3 queued behind folds 1 and 2


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A real `prefect server` with its UI, and one Chromium; yields (api, browser, env, tmp)."""
    tmp = tmp_path_factory.mktemp("ui")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = server_env(tmp, api_url)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    browser = None
    try:
        wait_for("prefect server", lambda: httpx.get(f"{api_url}/health", timeout=2).is_success,
                 180)  # fmt: skip
        browser = Browser(f"http://127.0.0.1:{port}", Path(tempfile.mkdtemp(dir=tmp)))
        yield Api(api_url), browser, env, tmp
    finally:
        if browser is not None:
            browser.close()
        stop(server)


def run(env: dict[str, str], tmp: Path, *extra: str, **more_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "foldflow"), "run", "--no-progress", "--runner", "thread", "--workers", "1",
         "--folds", "3", "--epochs", EPOCHS, "--retries", "0",
         "--cache-dir", str(tmp / "cache"), "--output-dir", str(tmp / "output"), *extra],
        env={**env, **more_env}, cwd=PROJECT_ROOT, start_new_session=True,
        stdout=(tmp / "run.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def page_text(browser: Browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.driver.find_element(By.TAG_NAME, "body").text


def artifacts_tab(browser: Browser, run_id: str, shot: Path, *needles: str) -> str:
    """The run's Artifacts tab as text, once it shows every needle (or after 60 s)."""
    browser.open(f"runs/flow-run/{run_id}")
    browser.click_tab("Artifacts")
    deadline = time.monotonic() + 60
    while not all(n in (text := page_text(browser)) for n in needles):
        if time.monotonic() > deadline:
            break
        time.sleep(2)  # the UI renders a card's description after its API calls
    browser.shoot(shot, 1600)
    return text


def test_the_run_pages_show_queued_folds_the_failure_reason_and_the_score(ui):
    api, browser, env, tmp = ui
    shots = tmp / "shots"
    shots.mkdir()
    before = (api.newest_run() or {}).get("id")
    proc = run(env, tmp, FOLDFLOW_FAIL_FOLDS="3")
    try:
        failed = wait_for("the run", lambda: (r := api.newest_run()) and r["id"] != before and r,
                          240)  # fmt: skip

        def queued() -> bool:
            cards = {a["key"]: a for a in api.artifacts(failed["id"])}
            return "queued" in (cards.get("fold-3", {}).get("description") or "") and any(
                "epochs" in (cards.get(k, {}).get("description") or "") for k in ("fold-1",)
            )

        wait_for("fold 1 training, fold 3 queued", queued, 300)
        text = artifacts_tab(browser, failed["id"], shots / "live.png", "fold 3 · queued")
        assert "fold 3 · queued" in text, text  # queued from the start, titled by its key
        assert "fold-3" in text and "fold-2" in text, text
        code = proc.wait(600)
    finally:
        stop(proc)
    assert code != 0, (tmp / "run.log").read_text()[-3000:]

    wait_for("the failed-folds card", lambda: any(
        a["key"] == "failed-folds" for a in api.artifacts(failed["id"])), 60)  # fmt: skip
    reason = "fold 3 failed after 1 attempt: InjectedFault"
    text = artifacts_tab(browser, failed["id"], shots / "failed.png", reason)
    assert reason in text, text  # the failed-folds card's text starts with the reason
    assert "2 of 3 folds done, 1 failed" in text, text
    browser.open("runs")
    browser.shoot(shots / "runs.png")
    assert "failed-fold-3" in page_text(browser)

    # The same command again: folds 1 and 2 come from the cache, fold 3 trains.
    assert run(env, tmp).wait(600) == 0, (tmp / "run.log").read_text()[-3000:]
    done = api.newest_run()
    metrics = json.loads((tmp / "output" / "metrics.json").read_text())
    score = f"OOF accuracy {metrics['final_accuracy']:.4f} · 3 folds · "
    text = artifacts_tab(browser, done["id"], shots / "finished.png", score)
    assert score in text, text  # cv-summary's card carries the score
    assert f"fold 3 · {EPOCHS}/{EPOCHS} epochs · 100 % · worker " in text, text
    assert "fold 1 · done (cached" in text, text
    assert "3 of 3 folds done" in text, text
    browser.open("runs")
    assert f"acc-{metrics['final_accuracy']:.3f}" in page_text(browser)
