"""`foldflow inspect` prints the whole run config: `run --config` of it reproduces the run (same
fold cache keys, same OOF table), and the same rows as Parquet share the CSV's folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import datasets

from flows.cli import build_parser, main
from flows.cli_options import config_from_args
from flows.cross_validate import cross_validate
from tasks.clean import clean_to_parquet
from tasks.config import CVConfig
from tasks.folds import plan_folds
from tasks.train import fold_cache_key
from tests.prefect_runs import fold_states

pytestmark = pytest.mark.slow  # a small training, then two cached runs, through the real flow


def user_table(tmp_path: Path) -> tuple[Path, Path]:
    """A diabetes sample with an `id`, integer patient groups and a few gaps, as CSV and Parquet."""
    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame.iloc[:120].copy()
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    frame["patient_group"] = np.arange(len(frame)) % 12
    frame.loc[[3, 50], "bmi"] = np.nan
    csv, parquet = tmp_path / "diabetes.csv", tmp_path / "diabetes.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return csv, parquet


def options(source: Path, tmp_path: Path, out: str) -> list[str]:
    return [
        "--source", str(source), "--target", "target", "--group-column", "patient_group",
        "--splitter", "group", "--folds", "3", "--epochs", "3", "--runner", "thread",
        "--workers", "1", "--retries", "0", "--cache-dir", str(tmp_path / "cache"),
        "--output-dir", str(tmp_path / out),
    ]  # fmt: skip


def fold_keys(config: CVConfig) -> list[str]:
    """Each fold's cache key, as the train-fold task computes it."""
    data = clean_to_parquet.fn(config.source, "0" * 64, config.cache_dir, config.data)
    folds = plan_folds.fn(data, config.folds, config.shuffle, config.seed, config.splitter)
    params = {"data": data, "model": config.model, "seed": config.seed}
    return [fold_cache_key(None, {**params, "fold": fold}) for fold in folds]


def test_inspect_round_trips_the_whole_run(tmp_path, capsys):
    csv, parquet = user_table(tmp_path)
    assert main(["inspect", *options(csv, tmp_path, "out-a")]) == 0
    printed = capsys.readouterr().out
    saved = yaml.safe_load(printed)
    # every setting of the run is in the file, not only the data spec
    assert saved["splitter"] == "group" and saved["folds"] == 3
    assert saved["model"]["epochs"] == 3 and saved["execution"]["runner"] == "thread"
    assert saved["data"]["group_column"] == "patient_group" and saved["data"]["id_column"] == "id"
    assert "patient_group" not in saved["data"]["numeric"] and "id" not in saved["data"]["numeric"]

    given = config_from_args(build_parser().parse_args(["run", *options(csv, tmp_path, "out-a")]))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(printed)
    args = build_parser().parse_args(["run", "--config", str(spec_file)])
    reloaded = config_from_args(args)
    assert reloaded.model_dump(exclude={"data"}) == given.model_dump(exclude={"data"})
    assert fold_keys(reloaded) == fold_keys(given)

    # the first run trains; the saved spec's run finds every fold cached: the same table
    first = cross_validate(given)
    state = cross_validate(
        reloaded.model_copy(update={"output_dir": str(tmp_path / "out-b")}), return_state=True
    )
    assert set(fold_states(state.state_details.flow_run_id).values()) == {"Cached"}
    second = state.result()
    a = pd.read_parquet(tmp_path / "out-a" / "oof_predictions.parquet")
    b = pd.read_parquet(tmp_path / "out-b" / "oof_predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert a["id"].tolist() == list(range(1, 121))
    # the missing-value report: the 2 blank bmi cells, filled with each fold's training median
    written = json.loads((tmp_path / "out-a" / "metrics.json").read_text())
    bmi = written["data"]["missing_filled"]["bmi"]
    assert (bmi["cells"], bmi["with"], sorted(written["data"]["missing_filled"])) == (
        2, "median", ["bmi"]
    )
    rows = pd.read_csv(csv).set_index("id").loc[a["id"]]
    for k in (1, 2, 3):
        training = rows["bmi"].to_numpy()[a["fold"].to_numpy() != k]
        assert bmi["folds"][f"fold-{k}"] == pd.Series(training).median()
    assert first["metrics"]["rmse"] == second["metrics"]["rmse"]
    # no group has rows in two folds
    groups = pd.read_parquet(tmp_path / "out-a" / "oof_predictions.parquet")
    table = pd.read_csv(csv).set_index("id").loc[groups["id"], "patient_group"].to_numpy()
    assert (pd.Series(groups["fold"].to_numpy()).groupby(table).nunique() == 1).all()

    # the same rows as Parquet: the same cleaned content, so every fold comes from the cache
    as_parquet = given.model_copy(
        update={"source": str(parquet), "output_dir": str(tmp_path / "out-c")}
    )
    state = cross_validate(as_parquet, return_state=True)
    assert set(fold_states(state.state_details.flow_run_id).values()) == {"Cached"}
    c = pd.read_parquet(tmp_path / "out-c" / "oof_predictions.parquet")
    pd.testing.assert_frame_equal(a, c)
