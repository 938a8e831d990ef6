"""Progress rate limiting, fault-spec parsing and the markdown summary."""

from __future__ import annotations

import json
import re

import pytest

from tasks.faults import parse_fail_folds
from tasks.metrics import RunMetrics
from tasks.progress import RateLimiter, progress_description, progress_key
from tasks.report import render_summary


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_reports_first_last_and_every_n_but_not_too_often():
    clock = FakeClock()
    limiter = RateLimiter(every=10, total=100, min_seconds=1.0, clock=clock)
    emitted = []
    for epoch in range(1, 101):
        clock.now += 0.25  # 4 epochs per second: every 10 epochs is 2.5 s apart
        if limiter.due(epoch):
            emitted.append(epoch)
    assert emitted == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    fast = RateLimiter(every=1, total=1000, min_seconds=1.0, clock=clock)
    count = 0
    for epoch in range(1, 1001):
        clock.now += 0.01  # 100 epochs per second -> at most ~1 report per second
        count += fast.due(epoch)
    assert count <= 12


def test_progress_cards_carry_the_fold_in_their_key_and_the_numbers_in_their_text():
    text = progress_description("fold-2.3", 250, 500)
    assert text == "fold 2.3 · 250/500 epochs · 50 %"  # what the UI's artifact card shows
    assert progress_key("fold-2.3") == "fold-2-3"  # what the terminal matches (a valid key)
    assert progress_key("fold-4") == "fold-4"


def test_fail_fold_spec_parsing():
    assert parse_fail_folds("") == {}
    assert parse_fail_folds("3") == {3: "always"}
    assert parse_fail_folds("3:1, 5:kill") == {3: 1, 5: "kill"}
    with pytest.raises(ValueError, match="FOLDFLOW_FAIL_FOLDS"):
        parse_fail_folds("x")


@pytest.mark.slow  # a whole-flow run (19 s)
def test_summary_numbers_match_metrics_json(tmp_path):
    from flows.cross_validate import cross_validate
    from tasks.config import CVConfig, ExecutionConfig, ModelConfig

    cfg = CVConfig(
        model=ModelConfig(epochs=2),
        folds=3,
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        execution=ExecutionConfig(runner="thread", workers=1),
    )
    result = cross_validate(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    text = render_summary(RunMetrics.model_validate(metrics), result["paths"])
    assert f"**{metrics['final_accuracy']:.4f}**" in text
    assert f"{metrics['mean_accuracy']:.4f} ± {metrics['std_accuracy']:.4f}" in text
    for fold in metrics["folds"]:
        assert re.search(rf"\| {fold['label']} \| {fold['scores']['accuracy']:.4f} \|", text)
    for cls, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        assert f"| **{cls}** | " + " | ".join(map(str, row)) + " |" in text
    for cls, scores in metrics["per_class"].items():
        assert f"| {cls} | {scores['precision']:.4f} | {scores['recall']:.4f} |" in text
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
