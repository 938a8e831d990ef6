"""Permutation importance on the OOF rows: each fold's model on its own test rows."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.clean import clean_to_parquet
from tasks.config import FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.folds import split_folds
from tasks.importance import IMPORTANCE_CSV, IMPORTANCE_PNG, feature_importance
from tasks.train import train_fold


@pytest.mark.slow  # three real folds of 20 epochs (~15 s)
def test_the_column_the_target_depends_on_matters_most(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"signal": rng.normal(size=240), "noise": rng.normal(size=240),
                          "colour": rng.choice(["red", "blue"], 240)})  # fmt: skip
    frame["y"] = 3 * frame["signal"] + 0.1 * rng.normal(size=240)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(path), sha, str(tmp_path / "cache"), DataSpec(target="y"))
    model, runtime = ModelConfig(epochs=20), FoldRuntime(progress_artifacts=False)
    results = [train_fold.fn(data, f, model, 42, runtime) for f in split_folds(240, 3, True, 42)]

    paths = feature_importance.fn(data, results, str(tmp_path / "out"), 42)
    table = pd.read_csv(paths[IMPORTANCE_CSV])
    assert table["feature"].tolist()[0] == "signal"
    assert set(table["feature"]) == {"signal", "noise", "colour"}
    assert (table["folds"] == 3).all() and (table["score"] == "rmse increase").all()
    by = table.set_index("feature")
    # shuffling the signal costs about its whole spread in RMSE; the noise costs little
    assert by.loc["signal", "importance_mean"] > 1.0 > 5 * abs(by.loc["noise", "importance_mean"])
    assert by.loc["signal", "importance_std"] > 0
    assert (tmp_path / "out" / IMPORTANCE_PNG).read_bytes()[:4] == b"\x89PNG"
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    again = pd.read_csv(
        feature_importance.fn(data, results, str(tmp_path / "o2"), 42)[IMPORTANCE_CSV]
    )
    pd.testing.assert_frame_equal(again, table)  # seeded: the same shuffles every time
