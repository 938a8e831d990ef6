"""The T81-558 5.3 notebook's sequential k-fold loop, re-implemented as the benchmark's baseline.

Same cleaning (the notebook's cells, `benchmarks/notebook_cleaning.py`), same split
(KFold, shuffle, random_state = seed, 42 in the notebook), same network, and the same slow
training call: `model.fit` on NumPy arrays with `validation_data` every epoch, batch 32, folds
one after another in one process. The only departures are ones that cannot change its speed or
maths: per-fold seeds so runs are repeatable, `keras.Input` instead of the deprecated
`input_dim=`, `predict(verbose=0)`, and the pooled accuracy computed by row position (the
notebook's final table concatenates predictions in fold order next to rows in file order).
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.time()  # before the heavy imports: they are part of the notebook's cost

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter logs only; no effect on speed

import keras  # noqa: E402  (the notebook imports tensorflow.keras, i.e. this Keras 3)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from keras import regularizers  # noqa: E402
from keras.layers import Dense  # noqa: E402
from keras.models import Sequential  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

_BORROWED = time.time()
# foldflow's config module (for the bundled file's path) is not the notebook's own cost:
# timed apart so the benchmark can leave it out of the notebook's wall time.
from benchmarks.notebook_cleaning import notebook_clean  # noqa: E402
from tasks.config import BUNDLED_DATA  # noqa: E402

IMPORTS_DONE = time.time()
BORROWED_IMPORT_SECONDS = IMPORTS_DONE - _BORROWED


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def load_notebook_xy(source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The notebook's x and one-hot y, cleaned by the notebook's own cells."""
    df, features = notebook_clean(source)
    x = df[features].values.astype("float64")  # like the notebook's df[x_columns].values
    dummies = pd.get_dummies(df["product"])  # classification, columns sorted by class
    y = dummies.values.astype("float32")
    return x, y, [str(c) for c in dummies.columns]


def run_loop(x: np.ndarray, y: np.ndarray, folds: int, epochs: int, seed: int) -> dict[str, Any]:
    """The notebook's cell 3: one fresh model per fold, trained and scored in sequence."""
    kf = KFold(folds, shuffle=True, random_state=seed)
    oof_pred = np.full(len(x), -1, dtype=np.int64)
    fold_accuracy: list[float] = []
    fold_seconds: list[float] = []
    for fold, (train, test) in enumerate(kf.split(x), start=1):
        started = time.time()
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
        keras.utils.set_random_seed(seed * 1000 + fold)  # same per-fold seed as foldflow

        model = Sequential()
        model.add(keras.Input(shape=(x.shape[1],)))
        model.add(Dense(50, activation="relu", activity_regularizer=regularizers.l1(1e-4)))
        model.add(Dense(25, activation="relu", activity_regularizer=regularizers.l1(1e-4)))
        model.add(Dense(y.shape[1], activation="softmax"))
        model.compile(loss="categorical_crossentropy", optimizer="adam")
        model.fit(x_train, y_train, validation_data=(x_test, y_test), verbose=0, epochs=epochs)

        pred = np.argmax(model.predict(x_test, verbose=0), axis=1)
        oof_pred[test] = pred  # by position: row i's prediction lands on row i
        score = float(metrics.accuracy_score(np.argmax(y_test, axis=1), pred))
        fold_accuracy.append(score)
        fold_seconds.append(time.time() - started)
        print(f"Fold #{fold}: accuracy {score:.4f} ({fold_seconds[-1]:.1f} s)", flush=True)

    final = float(metrics.accuracy_score(np.argmax(y, axis=1), oof_pred))
    print(f"Final score (accuracy): {final:.4f}", flush=True)
    return {
        "fold_accuracy": fold_accuracy,
        "fold_seconds": fold_seconds,
        "final_accuracy": final,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the loop and write its timings, accuracies and peak memory as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebook_loop", description=__doc__)
    parser.add_argument("--epochs", type=int, default=500, help="default: 500 (the notebook)")
    parser.add_argument("--folds", type=int, default=5, help="default: 5 (the notebook)")
    parser.add_argument("--seed", type=int, default=42, help="KFold random_state and fold seeds")
    parser.add_argument("--source", default=str(BUNDLED_DATA), help="CSV path")
    parser.add_argument("--json", dest="json_path", help="write the figures here")
    args = parser.parse_args(argv)

    x, y, classes = load_notebook_xy(args.source)
    loop_started = time.time()
    result = run_loop(x, y, args.folds, args.epochs, args.seed)
    done = time.time()
    report = {
        "epochs": args.epochs,
        "folds": args.folds,
        "seed": args.seed,
        "source": args.source,
        "n_rows": int(len(x)),
        "n_features": int(x.shape[1]),
        "classes": classes,
        **result,
        "import_seconds": IMPORTS_DONE - PROCESS_STARTED,
        "borrowed_import_seconds": BORROWED_IMPORT_SECONDS,
        "loop_seconds": done - loop_started,
        "wall_seconds": done - PROCESS_STARTED,
        "peak_rss_mb": peak_rss_mb(),
        "pid": os.getpid(),
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wall {report['wall_seconds']:.1f} s (loop {report['loop_seconds']:.1f} s), "
        f"peak RSS {report['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
