"""`foldflow serve --flow predict` against a real `prefect server` (see tests/test_served.py)."""

from __future__ import annotations

import sys
import time

import pandas as pd
import pytest
from prefect.deployments import run_deployment

from flows.cross_validate import cross_validate
from tasks.config import CVConfig, ExecutionConfig, ModelConfig
from tests.test_served import api, server, wait_final, wait_idle  # noqa: F401 - `server` fixture

pytestmark = pytest.mark.timeout(400)
pytestmark = [pytestmark, pytest.mark.slow]  # a served Prefect server and worker


def test_served_predict_deployment_scores_a_csv(server, tmp_path, bundled_csv):  # noqa: F811
    launcher, url = server
    cross_validate(
        CVConfig(
            folds=3,
            model=ModelConfig(epochs=2),
            output_dir=str(tmp_path / "out"),
            cache_dir=str(tmp_path / "cache"),
            execution=ExecutionConfig(runner="thread", workers=1),
            fold_retries=0,
        )
    )
    serve = launcher.start(
        "serve-predict",
        [sys.executable, "-m", "flows.cli", "serve", "--flow", "predict", "--name", "test"],
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    try:
        deadline = time.monotonic() + 90
        while "being served" not in serve.log_path.read_text(errors="replace"):
            if not serve.alive() or time.monotonic() > deadline:
                pytest.fail(f"foldflow serve --flow predict did not start\n{serve.tail()}")
            time.sleep(0.25)
        config = {
            "model": str(tmp_path / "out" / "model"),
            "source": str(bundled_csv),
            "output": str(tmp_path / "served.parquet"),
            "cache_dir": str(tmp_path / "cache"),
        }
        with api(url) as client:
            deployment = client.read_deployment_by_name("predict/test")
            assert deployment.schedules == []
            flow_run = run_deployment("predict/test", parameters={"config": config}, timeout=0)
            run = wait_final(client, flow_run.id, launcher, serve)
            assert run.state.is_completed(), f"{run.state!r}\n{launcher.logs()}"
        wait_idle(serve)
    finally:
        serve.stop()
    out = pd.read_parquet(tmp_path / "served.parquet")
    assert len(out) == 2000 and {"id", "predicted", "spread"} <= set(out.columns)
