"""A linear baseline beside every run: scikit-learn on the run's own folds and preprocessing.

LogisticRegression (classification) or Ridge (regression) in a scikit-learn `Pipeline` whose
first step is foldflow's own preprocessing (tasks/preprocess.py), fitted on each fold's
training rows (or, for `global` scope, on every row, as the network's is), scored out of
fold by `cross_val_predict` on the very folds the network used. It costs seconds, and says
at once whether the network earns its cost.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tasks.clean import CleanedData, load_table
from tasks.data.spec import ResolvedSpec
from tasks.folds import FoldSpec
from tasks.logs import run_logger
from tasks.metrics import LinearBaseline
from tasks.preprocess import fit_preprocessor, transform
from tasks.scores import probability_scores, value_scores


class FoldPreprocessor(TransformerMixin, BaseEstimator):
    """foldflow's preprocessing as a scikit-learn step: fitted on the rows `fit` is given.

    `params` (fitted elsewhere) are used as they are: the `global` scope's, fitted on all rows.
    """

    def __init__(self, spec: ResolvedSpec, params: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.params = params

    def fit(self, X: pd.DataFrame, y: Any = None) -> FoldPreprocessor:  # noqa: N803, ARG002
        """Learn fills and scales from these rows (unless fixed `params` were given)."""
        self.params_ = self.params or fit_preprocessor(X, self.spec, None)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803 - sklearn's name
        """The same float features the network gets."""
        return transform(X, self.spec, self.params_)


def baseline_pipeline(table: pd.DataFrame, spec: ResolvedSpec) -> Pipeline:
    """Preprocessing, a scaler, then a linear model with scikit-learn's default strength.

    The scaler (fitted on the same training rows) matters where the spec leaves columns
    unscaled (the jh-simple preset scales five): lbfgs on raw incomes needs hundreds of
    iterations where it needs tens on scaled ones, and the baseline must cost seconds.
    """
    params = fit_preprocessor(table, spec, None) if spec.scope == "global" else None
    linear = LogisticRegression(max_iter=300) if spec.task == "classification" else Ridge()
    return Pipeline([("preprocess", FoldPreprocessor(spec, params)),
                     ("scale", StandardScaler()), ("linear", linear)])  # fmt: skip


def linear_baseline_scores(
    table: pd.DataFrame, spec: ResolvedSpec, folds: list[FoldSpec]
) -> LinearBaseline:
    """The linear model's OOF scores over the first repeat's folds (each row predicted once)."""
    started = time.perf_counter()
    first = [f for f in folds if f.repeat in (0, 1)]
    splits = [(f.train_positions(), f.test_positions) for f in first]
    pipeline = baseline_pipeline(table, spec)
    # One BLAS thread: on a table this small OpenBLAS's threads cost more than they save
    # (3.5 s against 0.3 s on 2 cores, 2000 rows) and spin against the training folds.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # lbfgs stopping at max_iter is still a fair baseline; the log should not fill up
        warnings.simplefilter("ignore", ConvergenceWarning)
        if spec.task == "classification":
            truth = pd.Categorical(
                table[spec.target].astype("string"), categories=spec.classes
            ).codes.astype(np.int64)
            probs = cross_val_predict(pipeline, table, truth, cv=splits, method="predict_proba")
            scores = probability_scores(truth, probs, len(spec.classes))
        else:
            truth = table[spec.target].to_numpy(dtype="float64")
            pred = cross_val_predict(pipeline, table, truth, cv=splits)
            scores = value_scores(truth, pred)
    return LinearBaseline(
        model=type(pipeline.named_steps["linear"]).__name__,
        scores=scores,
        seconds=round(time.perf_counter() - started, 3),
    )


@task(name="linear-baseline", task_run_name="linear-baseline", cache_policy=NO_CACHE)
def linear_baseline(data: CleanedData, folds: list[FoldSpec]) -> LinearBaseline | None:
    """Fit the linear baseline on the run's folds (seconds; runs while the folds train).

    A baseline that cannot be fitted is a warning, not a failed run: it is a comparison.
    """
    try:
        result = linear_baseline_scores(load_table(data), data.spec, folds)
    except Exception as err:  # noqa: BLE001 - said in the log; the network's run goes on
        run_logger().warning("linear baseline not fitted: %s: %s", type(err).__name__, err)
        return None
    run_logger().info(
        "linear baseline (%s, same folds): OOF %s, %.1f s",
        result.model, result.headline, result.seconds,
    )  # fmt: skip
    return result
