"""What early stopping costs the in-graph loop: one fold's seconds per epoch, with and without.

    python -m benchmarks.early_stopping_cost [--epochs 500] [--patience 20]

One fold of the bundled data (jh-simple preset), trained three ways in one process: early
stopping off; on with the patience given (the loop trains `patience`-epoch calls and scores
the validation part after each); and on with a patience equal to the epochs (never stops:
all the epochs, a check per call). Each way runs twice and the faster run is kept, because
the first pays for tracing the graph.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile

from tasks.clean import clean_to_parquet
from tasks.config import BUNDLED_DATA, FoldRuntime, ModelConfig
from tasks.data.spec import DataSpec
from tasks.folds import split_folds
from tasks.train import train_fold


def main() -> None:
    """Print seconds per epoch of each way, as a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--patience", type=int, default=20)
    args = parser.parse_args()
    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, tempfile.mkdtemp(), DataSpec())
    fold = split_folds(data.n_rows, 5, True, 42)[0]
    runtime = FoldRuntime(progress_artifacts=False)
    print(f"one fold of {data.n_rows} rows, {args.epochs} epochs, XLA as default\n")
    print("| early stopping | epochs trained | train s | ms per epoch |")
    print("|---|---:|---:|---:|")
    ways = [("off", 0), (f"patience {args.patience}", args.patience),
            (f"patience {args.epochs} (checks, never stops)", args.epochs)]  # fmt: skip
    for label, patience in ways:
        model = ModelConfig(epochs=args.epochs, early_stopping=patience)
        runs = [train_fold.fn(data, fold, model, 42, runtime).run for _ in range(2)]
        best = min(runs, key=lambda run: run.train_seconds / run.epochs)
        per_epoch = 1000 * best.train_seconds / best.epochs
        print(f"| {label} | {best.epochs} | {best.train_seconds:.2f} | {per_epoch:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
