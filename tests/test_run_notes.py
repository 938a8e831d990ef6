"""Small things a run says: distinct names in a comparison, cached folds called cached, where
the data came from, and compare's own output folder in its help."""

from __future__ import annotations

import time

import pytest

from flows.cli import build_parser
from flows.summary import print_summary
from tasks.clean import clean_to_parquet
from tasks.compare import model_labels
from tasks.config import GridEntry, ModelConfig
from tasks.data.spec import DataSpec
from tasks.errors import DataValidationError
from tasks.metrics import FoldMetrics, RunMetrics


@pytest.fixture(scope="module")
def prefect_api():
    """No Prefect server needed (overrides the conftest fixture)."""
    yield


def test_compare_names_different_configurations_differently():
    base = ModelConfig()
    models = {
        "l1-activity": GridEntry(name="l1-activity", changes={"regularizer": "l1"}).resolve(base),
        "short": GridEntry(name="short", changes={"epochs": 30}).resolve(base),
        "wide": GridEntry(name="wide", changes={"hidden_units": [64], "l1": 1e-3}).resolve(base),
        "twin": GridEntry(name="twin", changes={"epochs": 30}).resolve(base),
    }
    labels = model_labels(models, base)
    assert labels["l1-activity"] == "l1-activity-0.0001"
    assert labels["wide"] == "l1-activity-0.001 hidden_units=[64]"
    # two entries with the same model keep their label, told apart by their names
    assert labels["short"] == "l1-activity-0.0001 epochs=30 (short)"
    assert labels["twin"] == "l1-activity-0.0001 epochs=30 (twin)"
    assert len(set(labels.values())) == len(labels)


def fold(label: str, finished_at: float, seconds: float) -> FoldMetrics:
    return FoldMetrics(
        fold=int(label[-1]), label=label, n_test=10, scores={"accuracy": 0.5, "log_loss": 1.0},
        final_loss=1.0, epochs=3, train_seconds=seconds, started_at=finished_at - seconds,
        finished_at=finished_at, worker="host-1", device="cpu", attempt=1,
    )  # fmt: skip


def test_a_cached_fold_is_called_cached_not_timed_again(capsys):
    now = time.time()
    metrics = RunMetrics(
        task="classification", target="y", key="row", n_rows=20, n_scored=20, partial=False,
        folds=[fold("fold-1", now - 3600, 12.5), fold("fold-2", now - 1, 7.25)],
        final_accuracy=0.5, mean_accuracy=0.5, std_accuracy=0.0, log_loss=1.0,
        majority_accuracy=0.5,
    )  # fmt: skip
    print_summary({"metrics": metrics.model_dump(mode="json"), "paths": {}}, seconds=60.0)
    lines = capsys.readouterr().out.splitlines()
    first = next(line for line in lines if line.strip().startswith("fold-1"))
    second = next(line for line in lines if line.strip().startswith("fold-2"))
    assert "cached" in first and "12.5" not in first
    assert "7.2" in second and "cached" not in second
    assert "1 of 2 folds came from the cache" in "\n".join(lines)


def test_a_local_file_is_not_said_to_be_downloaded(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,y\n1,a\n2,b\nnope,a\n")
    spec = DataSpec(target="y", numeric=["x"])
    with pytest.raises(DataValidationError) as err:
        clean_to_parquet.fn(str(path), "ab" * 32, str(tmp_path / "cache"), spec, "t.csv")
    message = str(err.value)
    assert message.startswith("t.csv: column 'x' row 3") and "downloaded" not in message
    copy = tmp_path / "cache" / "downloads" / "t.csv"
    copy.parent.mkdir(parents=True)
    copy.write_text(path.read_text())
    with pytest.raises(DataValidationError, match=r"^https://x/t.csv \(downloaded to .*t.csv\): "):
        clean_to_parquet.fn(str(copy), "ab" * 32, str(tmp_path / "cache"), spec, "https://x/t.csv")


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_compare_help_shows_its_own_output_folder(capsys):
    assert build_parser().parse_args(["compare"]).output_dir is None  # cmd_compare fills it in
    assert "(default: output/compare)" in help_text("compare", capsys)
    assert "(default: output/compare)" not in help_text("run", capsys)
