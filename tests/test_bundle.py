"""The model bundle: real runs (few epochs), real .keras files, the saved models' predictions."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cross_validate import cross_validate
from flows.predict import predict
from tasks.config import CVConfig, ExecutionConfig, ModelConfig, PredictConfig
from tasks.data.spec import DataSpec

pytestmark = pytest.mark.slow  # every test trains through the flow (20-36 s each)


def run_cv(tmp_path: Path, name: str = "out", **overrides) -> Path:
    """A small cross-validation run (3 folds, 3 epochs, in-process); returns its output folder."""
    base = dict(
        folds=3,
        model=ModelConfig(epochs=3),
        output_dir=str(tmp_path / name),
        cache_dir=str(tmp_path / "cache"),
        execution=ExecutionConfig(runner="thread", workers=1),
        fold_retries=0,
    )
    cross_validate(CVConfig(**{**base, **overrides}))
    return tmp_path / name


def predict_to_frame(tmp_path: Path, model: Path, source: Path, use: str) -> pd.DataFrame:
    config = PredictConfig(
        model=str(model),
        source=str(source),
        output=str(tmp_path / f"pred-{use}.parquet"),
        use=use,
        cache_dir=str(tmp_path / "cache"),
    )
    return pd.read_parquet(predict(config)["output"])


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def wine_csv(tmp_path) -> Path:
    from sklearn.datasets import load_wine

    path = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    return path


@pytest.fixture
def diabetes_csv(tmp_path) -> Path:
    from sklearn.datasets import load_diabetes

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case", ["jh-simple", "wine", "diabetes"])
def test_each_fold_model_reproduces_its_oof_rows(case, tmp_path, bundled_csv, request):
    """fold-k.keras + its preprocess JSON, fed the raw file, give fold k's OOF values (<= 1e-6)."""
    if case == "jh-simple":
        source, data = bundled_csv, DataSpec()
    else:
        source, data = request.getfixturevalue(f"{case}_csv"), DataSpec(target="target")
    out = run_cv(tmp_path, source=str(source), data=data)
    bundle = out / "model"
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    key = metrics["key"]

    scope_files = (
        {"preprocess.json"}
        if case == "jh-simple"
        else {"preprocess-1.json", "preprocess-2.json", "preprocess-3.json"}
    )
    assert {p.name for p in bundle.iterdir()} == {
        "fold-1.keras", "fold-2.keras", "fold-3.keras", "spec.yaml", "manifest.json",
        *scope_files,
    }  # fmt: skip
    assert set(manifest["files"]) == {p.name for p in bundle.iterdir()} - {"manifest.json"}
    assert manifest["files"] == {
        k: v for k, v in checksums(bundle).items() if k != "manifest.json"
    }
    assert [f["scores"] for f in manifest["folds"]] == [f["scores"] for f in metrics["folds"]]
    assert manifest["data_sha256"] == metrics["data_sha256"]
    assert manifest["config_hash"] == metrics["run"]["config_hash"]
    assert set(manifest["versions"]) == {"tensorflow", "keras", "numpy", "pandas", "foldflow"}
    assert all((bundle / f"fold-{k}.keras").stat().st_size < 200_000 for k in (1, 2, 3))

    regression = case == "diabetes"
    value_columns = ["predicted"] if regression else [c for c in oof if c.startswith("p_")]
    for k in (1, 2, 3):
        predicted = predict_to_frame(tmp_path, bundle, source, f"fold-{k}").set_index(key)
        rows = oof[oof["fold"] == k].set_index(key)
        mine = predicted.loc[rows.index]
        np.testing.assert_allclose(
            mine[value_columns].to_numpy(float), rows[value_columns].to_numpy(float),
            rtol=0, atol=1e-6,
        )  # fmt: skip
        if not regression:
            assert (mine["predicted"] == rows["predicted"]).all()


def test_a_cached_rerun_writes_an_identical_bundle(tmp_path, bundled_csv):
    out = run_cv(tmp_path, refit=True)
    bundle = out / "model"
    assert {"full.keras", "preprocess-full.json"} <= {p.name for p in bundle.iterdir()}
    first = checksums(bundle)
    before = predict_to_frame(tmp_path, bundle, bundled_csv, "ensemble")
    full_before = predict_to_frame(tmp_path, bundle, bundled_csv, "full")

    run_cv(tmp_path, refit=True)  # every fold and the refit come back from the cache
    # A retrained model would differ: a .keras file records when it was saved.
    assert checksums(bundle) == first
    assert not [p for p in out.iterdir() if p.name.startswith(".model")]  # no staging left
    pd.testing.assert_frame_equal(
        predict_to_frame(tmp_path, bundle, bundled_csv, "ensemble"), before
    )
    pd.testing.assert_frame_equal(
        predict_to_frame(tmp_path, bundle, bundled_csv, "full"), full_before
    )


FRESH_PROCESS = r"""
import json, sys
import numpy as np
import keras

bundle, csv_path, out = sys.argv[1:4]
params = json.load(open(f"{bundle}/preprocess-1.json"))
assert not params["vocabularies"], "this reader handles numeric features only"
header = open(csv_path).readline().strip().split(",")
table = np.genfromtxt(csv_path, delimiter=",", skip_header=1)
columns = []
for name, p in params["numeric"].items():
    values = table[:, header.index(name)]
    if p["fill"] is not None:
        values = np.where(np.isnan(values), p["fill"], values)
    if p["mean"] is not None:
        values = (values - p["mean"]) / p["scale"]
    columns.append(values)
x = np.stack(columns, axis=1).astype(np.float32)
net = keras.saving.load_model(f"{bundle}/fold-1.keras", compile=False)
raw = np.asarray(net(x, training=False), dtype=np.float64)
np.save(out, raw / raw.sum(axis=1, keepdims=True))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tasks", "flows", "prefect")))
"""


def test_the_bundle_loads_in_a_fresh_process_with_keras_numpy_json_only(tmp_path, wine_csv):
    out = run_cv(tmp_path, source=str(wine_csv), data=DataSpec(target="target"))
    bundle = out / "model"
    assert not [p for p in bundle.iterdir() if p.suffix not in (".keras", ".json", ".yaml")]
    done = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, str(bundle), str(wine_csv), "p.npy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # no foldflow or Prefect module loaded
    probs = np.load(tmp_path / "p.npy")
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    rows = oof[oof["fold"] == 1]
    classes = [c for c in oof if c.startswith("p_")]
    np.testing.assert_allclose(
        probs[rows["row"].to_numpy()], rows[classes].to_numpy(float), rtol=0, atol=1e-6
    )


def test_repeated_folds_are_named_by_repeat_and_the_ensemble_spreads(tmp_path, diabetes_csv):
    out = run_cv(
        tmp_path, source=str(diabetes_csv), data=DataSpec(target="target"), folds=2,
        splitter="repeated", repeats=2,
    )  # fmt: skip
    bundle = out / "model"
    names = {p.name for p in bundle.iterdir()}
    for label in ("1.1", "1.2", "2.1", "2.2"):
        assert {f"fold-{label}.keras", f"preprocess-{label}.json"} <= names
    ensemble = predict_to_frame(tmp_path, bundle, diabetes_csv, "ensemble")
    assert list(ensemble.columns) == ["row", "predicted", "spread"]
    assert len(ensemble) == 442 and (ensemble["spread"] > 0).all()
    one = predict_to_frame(tmp_path, bundle, diabetes_csv, "fold-2.1").set_index("row")
    by_repeat = pd.read_parquet(out / "oof_predictions_by_repeat.parquet")
    rows = by_repeat[(by_repeat["repeat"] == 2) & (by_repeat["fold"] == 1)].set_index("row")
    np.testing.assert_allclose(
        one.loc[rows.index, "predicted"], rows["predicted"], rtol=0, atol=1e-6
    )


def test_a_failed_refit_fails_the_run_and_keeps_the_earlier_bundle(tmp_path, monkeypatch):
    out = run_cv(tmp_path, refit=True)
    first = checksums(out / "model")
    monkeypatch.setenv("FOLDFLOW_FAIL_FOLDS", "0")  # fold 0 is the refit ("full")
    config = CVConfig(
        folds=3, model=ModelConfig(epochs=4), output_dir=str(out), refit=True,
        cache_dir=str(tmp_path / "cache"), execution=ExecutionConfig(runner="thread", workers=1),
        fold_retries=0,
    )  # fmt: skip
    state = cross_validate(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("full (the refit on all rows) failed after 1 attempt")
    assert "the model bundle is unchanged" in state.message
    assert checksums(out / "model") == first  # still the 3-epoch models
    assert json.loads((out / "metrics.json").read_text())["run"]["config"]["model"]["epochs"] == 4
    assert not [p for p in out.iterdir() if p.name.startswith(".model")]
