"""The whole DAG on the bundled data: real Prefect API, real Parquet, real Keras (few epochs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.cross_validate import cross_validate
from tasks.config import CVConfig, ExecutionConfig, ModelConfig


def small_config(tmp_path, **overrides) -> CVConfig:
    base = dict(
        model=ModelConfig(epochs=3),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        execution=ExecutionConfig(workers=2),
        fold_retries=0,
    )
    return CVConfig(**{**base, **overrides})


def fold_epoch_lines(flow_run_id, epochs: int) -> list[str]:
    """The folds' last-epoch log lines the API holds for a flow run (its Logs tab)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return sorted(
        log.message.split()[0] for log in logs if f" epoch {epochs}/{epochs}:" in log.message
    )


@pytest.mark.slow  # whole-flow run
def test_flow_writes_an_aligned_oof_table(tmp_path, bundled_csv):
    state = cross_validate(small_config(tmp_path), return_state=True)
    # Read at once: every fold's last line reached the API before the run ended, though
    # its workers' lines travel through Prefect's batched log sender.
    assert fold_epoch_lines(state.state_details.flow_run_id, 3) == [
        f"fold-{k}" for k in range(1, 6)
    ]
    result = state.result()
    table = pd.read_parquet(tmp_path / "out" / "oof_predictions.parquet")
    raw = pd.read_csv(bundled_csv, dtype={"product": str})
    assert len(table) == len(raw) == 2000
    assert table["id"].is_unique and table["id"].is_monotonic_increasing
    truth = raw.set_index("id")["product"]
    assert (table["product"].to_numpy() == truth.loc[table["id"]].to_numpy()).all()
    assert sorted(table["fold"].unique()) == [1, 2, 3, 4, 5]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["final_accuracy"] == pytest.approx(table["correct"].mean())
    assert metrics == result["metrics"]
    assert len(metrics["fold_accuracy"]) == 5
    probs = table[[f"p_{c}" for c in metrics["classes"]]]
    assert (probs.idxmax(axis=1).str[2:] == table["predicted"]).all()
    assert len({f["worker"] for f in metrics["folds"]}) == 2  # two worker processes
    assert metrics["data_sha256"] and metrics["run"]["config"]["model"]["epochs"] == 3


@pytest.mark.slow  # whole-flow run
def test_a_failed_fold_fails_the_flow_and_names_the_fold(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "2")
    config = small_config(tmp_path, execution=ExecutionConfig(runner="thread", workers=1))
    state = cross_validate(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("fold 2 failed after 1 attempt: InjectedFault")
    with pytest.raises(Exception, match=r"fold 2 failed after 1 attempt: InjectedFault"):
        state.result()
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow  # CLI in subprocesses
def test_cli_runs_two_folds_at_once_on_one_local_api(tmp_path):
    """The default runner, no PREFECT_API_URL: one local API for the run, folds overlap."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    foldflow = Path(sys.executable).with_name("foldflow")
    command = [
        str(foldflow), "run", "--no-progress", "--workers", "2", "--epochs", "300",
        "--no-xla", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    # one local API server for the run; no process fell back to Prefect's temporary server
    assert log.count("a local Prefect API at http://127.0.0.1:") == 1
    assert "temporary server" not in log and "View at" not in log
    for trouble in ("database is locked", "Traceback", "| ERROR"):
        assert trouble not in log
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    spans = [(f["started_at"], f["finished_at"]) for f in metrics["folds"]]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2  # two folds trained at the same time, never more than the 2 workers
    assert len({f["worker"] for f in metrics["folds"]}) == 2


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--hidden", "0"], "model.hidden_units.0"),
        (["--hidden=-5"], "model.hidden_units.0"),
        (["--l1", "inf"], "model.l1"),
        (["--l2", "nan"], "model.l2"),
        (["--epochs", "0"], "model.epochs"),
        (["--api-lost-after-s", "1"], "execution.api_lost_after_s"),
    ],
)
def test_impossible_settings_are_refused_before_anything_runs(tmp_path, capsys, options, field):
    """Refused by the config (one clear error naming the field), not by Keras in every fold."""
    from flows.cli import main

    out = tmp_path / "out"
    code = main(["run", *options, "--output-dir", str(out), "--cache-dir", str(tmp_path / "c")])
    assert code != 0
    assert field in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_a_slow_machine_starts_the_local_api_later_never_twice_or_not_at_all(tmp_path):
    """Two CPU hogs on the cores and Prefect's ephemeral start-up timeout at 1 s (which made
    Prefect's temporary server fail or start twice): the run still starts once and finishes."""
    import os
    import subprocess
    import sys

    hog = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(hog) for _ in range(os.cpu_count() or 2)]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env["PREFECT_HOME"] = str(tmp_path / "home")
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "1"
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", "--no-progress", "--folds", "2",
             "--epochs", "2", "--workers", "1", "--output-dir", str(tmp_path / "out"),
             "--cache-dir", str(tmp_path / "c")],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        for hog in hogs:
            hog.kill()
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert log.count("a local Prefect API at http://127.0.0.1:") == 1
    for trouble in ("Timed out", "address already in use", "Traceback", "temporary server"):
        assert trouble not in log, log[-3000:]
    assert (tmp_path / "out" / "metrics.json").exists()
