"""What a run's page says without a click, read back from a real Prefect API (issue 21).

The failed run's tags, `failed-folds` card, `folds-done` and fold cards; the finished run's
score in its `cv-summary` card, its tag and its log's last foldflow line. The pure text
functions are checked on their own first.
"""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from tasks.fold_cards import ended_text, queued_text, running_text
from tasks.metrics import FailedFold, RunMetrics
from tasks.report import failure_line, failures_description, one_line_summary, score_tag


def test_fold_card_texts_start_with_the_fold_and_carry_the_numbers():
    text = running_text("fold-3", 2250, 3000, worker="vm:301", device="CPU", loss=0.01234)
    assert text == "fold 3 · 2250/3000 epochs · 75 % · worker vm:301 (CPU) · loss 0.0123"
    assert queued_text("fold-2.5") == "fold 2.5 · queued"
    assert ended_text("fold-4", "Cached").startswith("fold 4 · done (cached")
    assert ended_text("fold-4", "Failed").startswith("fold 4 · failed")
    assert ended_text("fold-4", "Completed") is None  # the fold's own last update stays


def test_failed_folds_description_starts_with_the_reason_and_a_retry_says_what_was_before():
    failed = [FailedFold(fold=3, label="fold-3", error="failed after 1 attempt: InjectedFault: x")]
    first = failures_description(failed, attempt=1)
    assert first == "fold 3 failed after 1 attempt: InjectedFault: x"
    assert failures_description([], 1) == "No failed folds"
    assert failures_description([], 2, first) == f"No failed folds (attempt 2; before: {first})"
    long = [FailedFold(fold=1, label="fold-1", error="e" * 1000)]
    assert len(failure_line(long)) == 300


def _metrics(**scores) -> RunMetrics:
    fold = {"scores": {}, "final_loss": 0.1, "epochs": 2, "train_seconds": 1.0,
            "started_at": 0.0, "finished_at": 1.0, "worker": "h:1", "device": "CPU",
            "attempt": 1, "fold": 1, "label": "fold-1", "n_test": 10}  # fmt: skip
    return RunMetrics(task="classification", target="y", key="id", n_rows=50, n_scored=50,
                      partial=False, folds=[fold] * 5, **scores)  # fmt: skip


def test_one_line_summary_and_score_tag():
    metrics = _metrics(final_accuracy=0.628, mean_accuracy=0.62804, std_accuracy=0.01404)
    assert one_line_summary(metrics) == "OOF accuracy 0.6280 · 5 folds · 0.6280 ± 0.0140"
    assert score_tag(metrics) == "acc-0.628"
    regression = _metrics(rmse=55.8912, r2=0.4712, mean_rmse=56.01, std_rmse=3.21)
    regression.task = "regression"
    assert one_line_summary(regression).startswith("RMSE 55.89 · R² 0.47 · 5 folds")
    assert score_tag(regression) == "rmse-55.89"


def _config(tmp_path, **changes):
    from tasks.config import CVConfig, ExecutionConfig, ModelConfig

    return CVConfig(
        model=ModelConfig(epochs=2), folds=3, fold_retries=0,
        output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
        execution=ExecutionConfig(runner="thread", workers=1), **changes,
    )  # fmt: skip


def _page(flow_run_id: UUID) -> tuple[list[str], dict[str, list], list[str]]:
    """The run's tags, its artifacts by key (every version) and its log lines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort

    from tasks.logs import send_queued_logs

    send_queued_logs()  # the run's last lines may still wait in Prefect's log batch
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
        # Newest first: a page of the server's default size (200) would stop before the end.
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
            limit=200,
            sort=LogSort.TIMESTAMP_DESC,
        )
    by_key: dict[str, list] = {}
    for artifact in artifacts:
        by_key.setdefault(artifact.key, []).append(artifact)
    return run.tags, by_key, [log.message for log in sorted(logs, key=lambda r: r.timestamp)]


@pytest.mark.slow  # two whole-flow runs (2 epochs, 3 folds)
def test_the_run_page_says_why_a_run_failed_and_what_a_run_scored(tmp_path, monkeypatch):
    from prefect.logging import get_logger

    from flows.cross_validate import cross_validate
    from tasks.faults import FAIL_FOLDS_ENV

    monkeypatch.setenv(FAIL_FOLDS_ENV, "3")  # fold 3 fails on every attempt
    state = cross_validate(_config(tmp_path), return_state=True)
    assert state.is_failed()
    tags, cards, _ = _page(state.state_details.flow_run_id)
    assert "failed-fold-3" in tags and not {t for t in tags if t.startswith("acc-")}, tags
    assert len(cards["failed-folds"]) == 1, cards["failed-folds"]
    assert cards["failed-folds"][0].description.startswith(
        "fold 3 failed after 1 attempt: InjectedFault"
    ), cards["failed-folds"][0].description
    assert [c.description for c in cards["folds-done"]] == ["2 of 3 folds done, 1 failed"]
    assert cards["fold-3"][0].description.startswith("fold 3 · failed")
    for label in ("fold-1", "fold-2"):
        (card,) = cards[label]  # the card queued before the fan-out, updated by the fold
        assert card.description.startswith(f"{label.replace('-', ' ')} · 2/2 epochs · 100 % · "
                                           "worker "), card.description  # fmt: skip
        assert float(card.data) == 100.0

    monkeypatch.delenv(FAIL_FOLDS_ENV)
    get_logger().info("the same run without the fault")
    state = cross_validate(_config(tmp_path), return_state=True)
    assert state.is_completed()
    tags, cards, lines = _page(state.state_details.flow_run_id)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    summary = one_line_summary(RunMetrics.model_validate(metrics))
    assert summary.startswith(f"OOF accuracy {metrics['final_accuracy']:.4f} · 3 folds · ")
    assert f"acc-{metrics['final_accuracy']:.3f}" in tags, tags
    assert [c.description for c in cards["cv-summary"]] == [summary]
    assert [c.description for c in cards["failed-folds"]] == ["No failed folds"]
    assert [c.description for c in cards["folds-done"]] == ["3 of 3 folds done"]
    # Folds 1 and 2 come from the cache of the failed run: their cards say so.
    assert cards["fold-1"][0].description.startswith("fold 1 · done (cached")
    assert cards["fold-3"][0].description.startswith("fold 3 · 2/2 epochs · 100 %")
    ours = [line for line in lines if not line.startswith("Finished in state")]
    assert ours[-1] == summary, lines[-5:]
    assert state.message == summary  # Prefect's last line: "Finished in state Completed('…')"
    assert state.result()["metrics"]["final_accuracy"] == metrics["final_accuracy"]


def test_the_printed_ui_link_says_when_there_is_no_ui_or_it_calls_another_api():
    from flows.naming import where_to_watch

    api = "http://127.0.0.1:4300/api"
    page = "http://127.0.0.1:4300/runs/flow-run/1"
    assert where_to_watch(page, api, api) == page
    wrong = where_to_watch(page, "http://127.0.0.1:4200/api", api)
    assert wrong.startswith(page) and "make server PORT=" in wrong and "4200" in wrong
    assert "serves none" in where_to_watch(None, None, api)
    assert "make server" in where_to_watch(page, None, api)  # PREFECT_UI_ENABLED=false
