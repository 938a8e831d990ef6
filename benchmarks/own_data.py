"""Your own data, measured: foldflow's OOF score next to linear baselines on the same folds.

    python -m benchmarks.own_data [--epochs 500] [--folds 5] [--patience 20]

Rows: the bundled jh-simple data under the preset's `global` preprocessing and under `fold`
scope (fitted on each fold's training rows), then scikit-learn's bundled iris, wine, breast
cancer (classification, schema inferred) and diabetes (regression), and diabetes again with
early stopping (`--early-stopping PATIENCE`). Two baselines: foldflow's own (the run's
`linear_baseline`: LogisticRegression / Ridge after foldflow's preprocessing, on the run's
folds) and, independently, a StandardScaler + LogisticRegression / Ridge pipeline inside
`cross_val_predict` on the same shuffled k folds. Prints a markdown table of measured figures.
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
    parser.add_argument("--patience", type=int, default=20, help="early stopping's patience")
    parser.add_argument("--only", default="", help="comma-separated table names to run")
    args = parser.parse_args()

    from flows.worker import configure_process

    configure_process()
    from flows.cross_validate import cross_validate
    from tasks.config import BUNDLED_DATA, CVConfig, ModelConfig
    from tasks.data.spec import DataSpec

    root = Path(tempfile.mkdtemp(prefix="foldflow-own-data-"))
    runs: list[tuple[str, Path, DataSpec, str, list[str], int]] = [
        ("jh-simple (preset, global scope)", BUNDLED_DATA, DataSpec(), "product", ["job", "area"],
         0),
        ("jh-simple (fold scope)", BUNDLED_DATA, DataSpec(preprocess_scope="fold"), "product",
         ["job", "area"], 0),
    ]  # fmt: skip
    for name, (path, target) in sklearn_tables(root).items():
        runs.append((name, path, DataSpec(target=target), target, [], 0))
        if name == "diabetes":
            runs.append((name, path, DataSpec(target=target), target, [], args.patience))

    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        runs = [run for run in runs if run[0] in wanted or run[0].split(" (")[0] in wanted]
    print(f"epochs {args.epochs}, {args.folds} folds, seed {SEED}; baselines on the same folds\n")
    print("| data | rows | task | classes / target std | early stopping | epochs per fold "
          "| foldflow OOF | foldflow's linear baseline | scikit-learn baseline | foldflow s |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for i, (name, path, spec, target, categorical, patience) in enumerate(runs):
        config = CVConfig(
            source=str(path),
            data=spec,
            folds=args.folds,
            seed=SEED,
            model=ModelConfig(epochs=args.epochs, early_stopping=patience),
            output_dir=str(root / f"out-{i}"),
            cache_dir=str(root / "cache"),
        )
        started = time.perf_counter()
        metrics = cross_validate(config)["metrics"]
        seconds = time.perf_counter() - started
        task = metrics["task"]
        base = baseline(Path(path), target, task, args.folds, categorical)
        linear = metrics["linear_baseline"]["scores"]
        if task == "classification":
            spread = str(len(metrics["classes"]))
            ours = f"accuracy {metrics['final_accuracy']:.4f}"
            theirs = f"accuracy {linear['accuracy']:.4f}"
            if len(metrics["classes"]) == 2:  # ROC-AUC where it is the usual score
                ours += f", ROC-AUC {metrics['roc_auc']:.4f}"
                theirs += f", ROC-AUC {linear['roc_auc']:.4f}"
            independent = f"accuracy {base:.4f}"
        else:
            y = pd.read_csv(path)[target]
            spread = f"{y.std(ddof=0):.1f}"
            ours = f"RMSE {metrics['rmse']:.4f} (R² {metrics['r2']:.3f})"
            theirs = f"RMSE {linear['rmse']:.4f} (R² {linear['r2']:.3f})"
            independent = f"RMSE {base:.4f}"
        used = [f["epochs"] for f in metrics["folds"]]
        epochs = f"{min(used)}–{max(used)}" if min(used) != max(used) else str(used[0])
        stopping = f"patience {patience}" if patience else "off"
        print(
            f"| {name} | {metrics['n_rows']} | {task} | {spread} | {stopping} | {epochs} "
            f"| {ours} | {theirs} | {independent} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
