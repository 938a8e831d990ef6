"""Your own data, measured: foldflow's OOF score next to a scikit-learn baseline on the same folds.

    python -m benchmarks.own_data [--epochs 500] [--folds 5]

Rows: the bundled jh-simple data under the preset's `global` preprocessing and under `fold`
scope (fitted on each fold's training rows), then scikit-learn's bundled iris, wine, breast
cancer (classification, schema inferred) and diabetes (regression). Baselines: a
StandardScaler + LogisticRegression / Ridge pipeline inside `cross_val_predict`, on the very
same folds. Prints a markdown table of measured figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn import metrics as skm
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SEED = 42


def sklearn_tables(root: Path) -> dict[str, tuple[Path, str]]:
    """scikit-learn's bundled tables written as CSV files, with their target columns."""
    out = {}
    iris = datasets.load_iris(as_frame=True).frame
    iris["species"] = iris.pop("target").map({0: "setosa", 1: "versicolor", 2: "virginica"})
    for name, frame, target in (
        ("iris", iris, "species"),
        ("wine", datasets.load_wine(as_frame=True).frame, "target"),
        ("breast cancer", datasets.load_breast_cancer(as_frame=True).frame, "target"),
        ("diabetes", datasets.load_diabetes(as_frame=True, scaled=False).frame, "target"),
    ):
        path = root / f"{name.replace(' ', '_')}.csv"
        frame.to_csv(path, index=False)
        out[name] = (path, target)
    return out


def baseline(path: Path, target: str, task: str, folds: int, categorical: list[str]) -> float:
    """A scaled linear model in a Pipeline, on the same shuffled k folds foldflow uses."""
    frame = pd.read_csv(path, na_values=["NA", "?"])
    y = frame.pop(target)
    frame = frame.drop(columns=[c for c in ("id",) if c in frame.columns])
    numeric = [c for c in frame.columns if c not in categorical]
    frame[numeric] = frame[numeric].fillna(frame[numeric].median())
    prep = make_column_transformer(
        (StandardScaler(), numeric),
        (OneHotEncoder(handle_unknown="ignore"), categorical),
    )
    model = LogisticRegression(max_iter=2000) if task == "classification" else Ridge()
    cv = KFold(folds, shuffle=True, random_state=SEED)
    pred = cross_val_predict(make_pipeline(prep, model), frame, y.astype(str) if task ==
                             "classification" else y, cv=cv)  # fmt: skip
    if task == "classification":
        return float(skm.accuracy_score(y.astype(str), pred))
    return float(np.sqrt(skm.mean_squared_error(y, pred)))


def main() -> None:
    """Run every table through foldflow and the baseline; print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    from flows.worker import configure_process

    configure_process()
    from flows.cross_validate import cross_validate
    from tasks.config import BUNDLED_DATA, CVConfig, ModelConfig
    from tasks.data.spec import DataSpec

    root = Path(tempfile.mkdtemp(prefix="foldflow-own-data-"))
    runs: list[tuple[str, Path, DataSpec, str, list[str]]] = [
        ("jh-simple (preset, global scope)", BUNDLED_DATA, DataSpec(), "product", ["job", "area"]),
        ("jh-simple (fold scope)", BUNDLED_DATA, DataSpec(preprocess_scope="fold"), "product",
         ["job", "area"]),
    ]  # fmt: skip
    for name, (path, target) in sklearn_tables(root).items():
        runs.append((name, path, DataSpec(target=target), target, []))

    print(f"epochs {args.epochs}, {args.folds} folds, seed {SEED}; baseline on the same folds\n")
    print("| data | rows | task | classes / target std | foldflow OOF | scikit-learn baseline "
          "| foldflow s |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for i, (name, path, spec, target, categorical) in enumerate(runs):
        config = CVConfig(
            source=str(path),
            data=spec,
            folds=args.folds,
            seed=SEED,
            model=ModelConfig(epochs=args.epochs),
            output_dir=str(root / f"out-{i}"),
            cache_dir=str(root / "cache"),
        )
        started = time.perf_counter()
        metrics = cross_validate(config)["metrics"]
        seconds = time.perf_counter() - started
        task = metrics["task"]
        base = baseline(Path(path), target, task, args.folds, categorical)
        if task == "classification":
            spread, ours, theirs = str(len(metrics["classes"])), metrics["final_accuracy"], base
            unit = "accuracy"
        else:
            y = pd.read_csv(path)[target]
            spread, ours, theirs = f"{y.std(ddof=0):.1f}", metrics["rmse"], base
            unit = "RMSE"
        print(
            f"| {name} | {metrics['n_rows']} | {task} | {spread} | {unit} {ours:.4f} "
            f"| {unit} {theirs:.4f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
