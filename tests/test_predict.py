"""`foldflow predict`: a real bundle (3 folds + refit, 2 epochs), real files, real Keras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cross_validate import cross_validate
from flows.predict import predict
from tasks.bundle import BundleError, load_bundle
from tasks.config import CVConfig, ExecutionConfig, ModelConfig, PredictConfig
from tasks.errors import DataValidationError
from tasks.predict import predict_with

pytestmark = pytest.mark.slow  # every test needs a trained bundle (a flow run with --refit)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = list("abcdefg")


@pytest.fixture(scope="module")
def trained(prefect_api, tmp_path_factory) -> Path:  # noqa: ARG001 - needs the session's API
    """One jh-simple run with --refit; tests copy its bundle before changing anything."""
    out = tmp_path_factory.mktemp("trained")
    cross_validate(
        CVConfig(
            folds=3,
            model=ModelConfig(epochs=2),
            output_dir=str(out / "out"),
            cache_dir=str(out / "cache"),
            execution=ExecutionConfig(runner="thread", workers=1),
            fold_retries=0,
            refit=True,
        )
    )
    return out / "out"


def run_predict(
    tmp_path: Path, model: Path, source: Path, use: str = "ensemble", **changes
) -> dict:
    return predict(
        PredictConfig(
            model=str(model),
            source=str(source),
            output=str(tmp_path / changes.pop("output", "predictions.parquet")),
            use=use,
            cache_dir=str(tmp_path / "cache"),
            **changes,
        )
    )


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "new.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def raw(bundled_csv) -> pd.DataFrame:
    return pd.read_csv(bundled_csv, dtype=str, keep_default_na=False)


def test_ensemble_is_the_mean_of_the_fold_models_with_their_spread(tmp_path, trained, raw):
    source = write_csv(tmp_path, raw.drop(columns=["product"]).head(300))
    result = run_predict(tmp_path, trained / "model", source)
    assert result["metrics"] is None and result["warnings"] == []  # no target: fine
    assert result["models"] == ["fold-1", "fold-2", "fold-3"]
    out = pd.read_parquet(result["output"])
    assert list(out.columns) == ["id", "predicted", *[f"p_{c}" for c in CLASSES], "spread"]
    assert out["id"].tolist() == raw["id"].astype(int).head(300).tolist()

    bundle = load_bundle(str(trained / "model"))
    from tasks.predict import read_new_rows

    rows = read_new_rows.fn(str(source), "new.csv", bundle)
    each = np.stack([predict_with(bundle, f"fold-{k}", rows.table) for k in (1, 2, 3)])
    mean = each.mean(axis=0)
    np.testing.assert_allclose(out[[f"p_{c}" for c in CLASSES]], mean, rtol=0, atol=1e-12)
    winner = mean.argmax(axis=1)
    assert (out["predicted"] == np.array(CLASSES)[winner]).all()
    spread = each[:, np.arange(len(winner)), winner].std(axis=0)
    np.testing.assert_allclose(out["spread"], spread, rtol=0, atol=1e-12)
    assert (out["spread"] > 0).any()


def test_fold_2_scores_its_own_test_rows_as_the_run_did(tmp_path, trained, bundled_csv):
    result = run_predict(tmp_path, trained / "model", bundled_csv, use="fold-2")
    assert result["models"] == ["fold-2"] and result["metrics"]["n"] == 2000
    out = pd.read_parquet(result["output"]).set_index("id")
    assert "spread" not in out
    oof = pd.read_parquet(trained / "oof_predictions.parquet")
    rows = oof[oof["fold"] == 2].set_index("id")
    probs = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(out.loc[rows.index, probs], rows[probs], rtol=0, atol=1e-6)
    assert result["metrics"]["accuracy"] == pytest.approx((out["predicted"] == oof.set_index(
        "id"
    ).loc[out.index, "product"]).mean())  # fmt: skip


def test_cli_predicts_with_the_full_model(tmp_path, trained, bundled_csv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    output = tmp_path / "full.csv"
    command = [
        sys.executable, "-m", "flows.cli", "predict", "--model", str(trained / "model"),
        "--source", str(bundled_csv), "--output", str(output), "--use", "full",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "scored 2000 rows with full" in done.stdout
    assert "against the 2000 given targets: accuracy" in done.stdout
    out = pd.read_csv(output)
    assert list(out.columns) == ["id", "predicted", *[f"p_{c}" for c in CLASSES]]
    np.testing.assert_allclose(out[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-9)


def copy_bundle(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "model", tmp_path / "model"))


def test_an_incomplete_bundle_is_refused_naming_the_file(tmp_path, trained, bundled_csv):
    bundle = copy_bundle(trained, tmp_path)
    (bundle / "fold-2.keras").unlink()
    with pytest.raises(BundleError, match=r"incomplete: fold-2.keras is missing"):
        run_predict(tmp_path, bundle, bundled_csv)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"incomplete: manifest.json is missing"):
        run_predict(tmp_path, bundle, bundled_csv)
    assert not (tmp_path / "predictions.parquet").exists()


def test_an_altered_file_is_refused_naming_it(tmp_path, trained, bundled_csv):
    bundle = copy_bundle(trained, tmp_path)
    params = json.loads((bundle / "preprocess.json").read_text())
    params["numeric"]["income"]["mean"] += 1.0
    (bundle / "preprocess.json").write_text(json.dumps(params, indent=2) + "\n")
    with pytest.raises(BundleError, match=r"preprocess.json does not match manifest.json"):
        run_predict(tmp_path, bundle, bundled_csv)


def test_a_model_the_bundle_lacks_is_refused(tmp_path, trained, bundled_csv):
    with pytest.raises(BundleError, match=r"has no fold-7; it has \['fold-1', 'fold-2'"):
        run_predict(tmp_path, trained / "model", bundled_csv, use="fold-7")


def test_a_missing_feature_column_is_named(tmp_path, trained, raw):
    source = write_csv(tmp_path, raw.drop(columns=["income"]))
    with pytest.raises(DataValidationError, match=r"new.csv: feature column\(s\) \['income'\]"):
        run_predict(tmp_path, trained / "model", source)


def test_unseen_categories_and_extra_columns_warn_and_still_score(tmp_path, trained, raw):
    changed = raw.assign(job="zz", area="q", colour="red").head(50)
    source = write_csv(tmp_path, changed)
    result = run_predict(tmp_path, trained / "model", source)
    warnings = "\n".join(result["warnings"])
    assert "column(s) ['colour'] are not in the model's spec; ignored" in warnings
    assert "column 'job': 50 of 50 row(s) hold a category not seen in training" in warnings
    assert "column 'area': 50 of 50 row(s)" in warnings
    out = pd.read_parquet(result["output"])
    assert len(out) == 50 and np.isfinite(out[[f"p_{c}" for c in CLASSES]].to_numpy()).all()


def test_an_empty_source_is_refused(tmp_path, trained, raw):
    header_only = write_csv(tmp_path, raw.head(0), "header.csv")
    with pytest.raises(DataValidationError, match=r"header.csv: header only, no data rows"):
        run_predict(tmp_path, trained / "model", header_only)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"empty.csv: the file is empty"):
        run_predict(tmp_path, trained / "model", empty)
    assert not (tmp_path / "predictions.parquet").exists()


def test_kept_columns_are_copied_next_to_the_key(tmp_path, trained, raw):
    from flows.cli import build_parser
    from flows.cli_options import PREDICT_SECTIONS, config_from_args

    args = build_parser().parse_args(["predict", "--keep", "colour,job", "--keep-all"])
    parsed = config_from_args(args, PREDICT_SECTIONS, PredictConfig)
    assert parsed.keep == ["colour", "job"] and parsed.keep_all is True

    new = raw.assign(colour=[f"c{i}" for i in range(len(raw))]).head(40)
    source = write_csv(tmp_path, new)
    plain = pd.read_parquet(run_predict(tmp_path, trained / "model", source)["output"])
    kept = pd.read_parquet(
        run_predict(tmp_path, trained / "model", source, keep=["colour", "job"])["output"]
    )
    assert list(kept.columns) == ["id", "colour", "job", *plain.columns[1:]]
    assert kept["colour"].tolist() == new["colour"].tolist()  # row for row, as in the file
    assert kept["job"].tolist() == new["job"].tolist()
    pd.testing.assert_frame_equal(kept.drop(columns=["colour", "job"]), plain)
    every = pd.read_csv(
        run_predict(tmp_path, trained / "model", source, keep_all=True, output="all.csv")["output"],
        dtype=str, keep_default_na=False,
    )  # fmt: skip
    inputs = [c for c in new.columns if c != "id"]
    assert list(every.columns) == ["id", *inputs, *plain.columns[1:]]
    pd.testing.assert_frame_equal(every[inputs], new[inputs].reset_index(drop=True))


def test_a_kept_column_that_is_missing_or_clashes_is_named(tmp_path, trained, raw):
    source = write_csv(tmp_path, raw.head(20))
    missing = r"new.csv: column\(s\) \['hue'\] given in --keep not found"
    with pytest.raises(DataValidationError, match=missing):
        run_predict(tmp_path, trained / "model", source, keep=["job", "hue"])
    clashing = write_csv(tmp_path, raw.head(20).assign(predicted="x"), "clash.csv")
    with pytest.raises(DataValidationError, match=r"kept column\(s\) \['predicted'\] have the"):
        run_predict(tmp_path, trained / "model", clashing, keep_all=True)
    assert not (tmp_path / "predictions.parquet").exists()
