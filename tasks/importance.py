"""Which features matter: permutation importance on the out-of-fold predictions.

Each fold's own model scores its own test rows (rows it never trained on) with one input
column shuffled at a time (scikit-learn's `permutation_importance`); the importance of a
column is how much the run's headline score worsens: accuracy lost, or RMSE gained, in the
target's units. Reported as mean ± std over the folds. Bounded: at most `MAX_ROWS` test rows
and `REPEATS` shuffles per fold and column, so it costs folds × columns × REPEATS forward
passes of a small network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.base import BaseEstimator
from sklearn.inspection import permutation_importance

from tasks.clean import CleanedData, load_table
from tasks.data.spec import ResolvedSpec
from tasks.fit import FoldResult
from tasks.logs import run_logger
from tasks.outputs import staged_files
from tasks.preprocess import decode_regression, transform

IMPORTANCE_CSV, IMPORTANCE_PNG = "feature_importance.csv", "feature_importance.png"
REPEATS = 3  # shuffles per fold and column
MAX_ROWS = 2000  # test rows scored per fold, drawn with the run's seed


class FoldModel(BaseEstimator):
    """A trained fold (its network and fitted preprocessing) as an already-fitted estimator."""

    def __init__(self, net: Any, spec: ResolvedSpec, params: dict[str, Any]) -> None:
        self.net, self.spec, self.params = net, spec, params

    def fit(self, X: Any, y: Any = None) -> FoldModel:  # noqa: N803, ARG002 - sklearn's API
        """Already fitted by its fold: nothing to learn here."""
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803 - sklearn's name
        """Class probabilities (rows, classes), or values in the target's units."""
        raw = np.asarray(self.net(transform(X, self.spec, self.params), training=False))
        if self.spec.task == "regression":
            return decode_regression(raw[:, 0], self.params)
        return raw


def _headline(estimator: FoldModel, X: pd.DataFrame, y: np.ndarray) -> float:  # noqa: N803
    """Higher is better: accuracy, or minus the RMSE."""
    pred = estimator.predict(X)
    if estimator.spec.task == "regression":
        return -float(np.sqrt(np.mean((pred - y) ** 2)))
    return float(np.mean(pred.argmax(axis=1) == y))


def _load(model_bytes: bytes) -> Any:
    import keras

    with tempfile.TemporaryDirectory(prefix="foldflow-importance-") as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(model_bytes)
        return keras.saving.load_model(path, compile=False)


def importance_table(
    table: pd.DataFrame, spec: ResolvedSpec, results: list[FoldResult], seed: int
) -> pd.DataFrame:
    """Per input column: mean and std over folds of the score lost when it is shuffled."""
    columns = [*spec.numeric, *spec.categorical]
    if spec.task == "regression":
        truth = table[spec.target].to_numpy(dtype="float64")
    else:
        truth = pd.Categorical(table[spec.target].astype("string"), categories=spec.classes).codes
    per_fold = []
    for res in sorted(results, key=lambda r: (r.repeat, r.fold)):
        if not len(res.test_positions):
            continue
        rows = table.iloc[np.asarray(res.test_positions)]
        found = permutation_importance(
            FoldModel(_load(res.model_bytes), spec, res.preprocess),
            rows[columns], truth[np.asarray(res.test_positions)], scoring=_headline,
            n_repeats=REPEATS, random_state=seed + res.fold,
            max_samples=min(1.0, MAX_ROWS / len(rows)),
        )  # fmt: skip
        per_fold.append(found.importances_mean)
    scores = np.array(per_fold)
    out = pd.DataFrame(
        {
            "feature": columns,
            "importance_mean": scores.mean(axis=0),
            "importance_std": scores.std(axis=0),
            "folds": len(per_fold),
            "score": "rmse increase" if spec.task == "regression" else "accuracy decrease",
        }
    )
    return out.sort_values("importance_mean", ascending=False, kind="stable").reset_index(drop=True)


def plot_importance(frame: pd.DataFrame, path: Path) -> None:
    """Horizontal bars, most important on top, ± std over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = frame.head(30).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(shown) + 1)), dpi=100)
    ax.barh(shown["feature"], shown["importance_mean"], xerr=shown["importance_std"], capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel=f"{frame['score'].iloc[0]} when shuffled (mean ± std over folds)",
           title="Permutation importance (out of fold)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


@task(name="feature-importance", task_run_name="feature-importance", cache_policy=NO_CACHE)
def feature_importance(
    data: CleanedData, results: list[FoldResult], output_dir: str, seed: int
) -> dict[str, str]:
    """feature_importance.csv and .png (written atomically) and a table artifact."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    from tasks.tf_runtime import import_tensorflow, keras_session

    import_tensorflow(1, None, run_logger())
    with keras_session(seed):
        frame = importance_table(load_table(data), data.spec, results, seed)
    paths = {name: Path(output_dir) / name for name in (IMPORTANCE_CSV, IMPORTANCE_PNG)}
    with staged_files(*paths.values()) as (csv, png):
        frame.to_csv(csv, index=False)
        plot_importance(frame, png)
    if TaskRunContext.get() is not None:
        create_table_artifact(
            table=frame.round(6).to_dict("records"), key="feature-importance",
            description="Permutation importance on the OOF rows (mean ± std over folds)",
        )  # fmt: skip
    top = ", ".join(f"{r.feature} {r.importance_mean:.4f}" for r in frame.head(3).itertuples())
    run_logger().info("permutation importance (%s): %s", frame["score"].iloc[0], top)
    return {name: str(path) for name, path in paths.items()}
