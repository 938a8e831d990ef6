"""Measure `foldflow tune` with and without fold-level pruning, in one run, on the bundled data.

Both searches use the same settings and sampler seed (default: 5 folds x 100 epochs, 30 trials,
2 workers, no holdout) and each gets its own empty cache, so neither reuses the other's folds.
Printed per search: fold trainings run (a fold result written to the cache), wall time of the
flow, the best cross-validated score, trials per minute, and the Optuna storage time per trial
(SQLite: ask, report, should_prune, set_user_attr and tell, summed). Then the fraction of fold
trainings pruning saved and the gap between the two best scores, against the issue's targets
(>= 40 % saved, best within 0.005).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SAVED = 0.40  # issue 22: pruning saves at least 40 % of fold trainings
TARGET_GAP = 0.005  # issue 22: with a best score within 0.005 of no pruning


def search(work: Path, prune: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One search in its own cache and output folders; what it did and how long it took."""
    from flows.tune import tune
    from tasks.config import CVConfig, ExecutionConfig, ModelConfig
    from tasks.tune_config import TuneConfig

    name = "pruned" if prune else "unpruned"
    cache = work / name / "cache"
    config = TuneConfig(
        cv=CVConfig(
            folds=args.folds,
            model=ModelConfig(epochs=args.epochs),
            execution=ExecutionConfig(workers=args.workers),
            output_dir=str(work / name / "out"),
            cache_dir=str(cache),
        ),
        trials=args.trials,
        prune=prune,
        holdout=0,
        sampler_seed=args.seed,
    )
    started = time.perf_counter()
    result = tune(config)
    wall = time.perf_counter() - started
    trained = len(list((cache / "folds").iterdir()))
    return {"name": name, "wall": wall, "trained": trained, **result}


def main(argv: list[str] | None = None) -> int:
    """Run both searches and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the sampler seed of both searches")
    args = parser.parse_args(argv)

    from flows.local_api import api_for_run, wait_for_api
    from flows.worker import configure_process

    configure_process()
    with tempfile.TemporaryDirectory(prefix="foldflow-bench-tune-") as tmp, api_for_run():
        wait_for_api()
        runs = [search(Path(tmp), prune, args) for prune in (False, True)]
    full, pruned = runs
    print(f"\nfoldflow tune: bundled data, {args.folds} folds x {args.epochs} epochs, "
          f"{args.trials} trials, sampler seed {args.seed}, {args.workers} workers")  # fmt: skip
    print(f"{'search':>9}  {'fold trainings':>14}  {'wall s':>7}  {'best CV':>8}  "
          f"{'trials/min':>10}  {'storage ms/trial':>16}  states")  # fmt: skip
    for run in runs:
        states = ", ".join(f"{n} {s.lower()}" for s, n in run["trials"].items())
        print(f"{run['name']:>9}  {run['trained']:>14}  {run['wall']:>7.1f}  "
              f"{run['cv_score']:>8.4f}  {60 * args.trials / run['wall']:>10.2f}  "
              f"{run['storage_ms_per_trial']:>16.1f}  {states}")  # fmt: skip
    saved = 1 - pruned["trained"] / full["trained"]
    gap = abs(full["cv_score"] - pruned["cv_score"])
    print(f"\nfold trainings saved by pruning: {saved:.0%} (target >= {TARGET_SAVED:.0%}: "
          f"{'met' if saved >= TARGET_SAVED else 'NOT met'})")  # fmt: skip
    print(f"best CV score gap: {gap:.4f} (target <= {TARGET_GAP}: "
          f"{'met' if gap <= TARGET_GAP else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
