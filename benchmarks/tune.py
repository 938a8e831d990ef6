"""Measure `foldflow tune` with and without fold-level pruning, in one run, on the bundled data.

Every search uses the same settings and sampler seed (default: 5 folds x 100 epochs, 30 trials,
2 workers, 2 trials in flight, no holdout) and gets its own empty cache, so none reuses
another's folds. `--keep 30,50` (the default) runs one pruned search per share of trials the
pruner keeps.
Printed per search: fold trainings run (a fold result written to the cache), wall time of the
flow, the best cross-validated score, trials per minute, and the Optuna storage time per trial
(ask, report, should_prune, set_user_attr and tell, summed; the default journal file, or
`--storage sqlite` for Optuna's SQLite database). Then, per pruned search, the fraction of
fold trainings pruning saved and the gap to the unpruned best score, against the issue's
targets (>= 40 % saved, best within 0.005).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SAVED = 0.40  # issue 22: pruning saves at least 40 % of fold trainings
TARGET_GAP = 0.005  # issue 22: with a best score within 0.005 of no pruning


def search(work: Path, keep: float | None, args: argparse.Namespace) -> dict[str, Any]:
    """One search in its own cache and output folders; what it did and how long it took."""
    from flows.tune import tune
    from tasks.config import CVConfig, ExecutionConfig, ModelConfig
    from tasks.tune_config import TuneConfig

    name = f"keep {keep:g}%" if keep else "unpruned"
    cache = work / name.replace(" ", "-").replace("%", "") / "cache"
    config = TuneConfig(
        cv=CVConfig(
            folds=args.folds,
            model=ModelConfig(epochs=args.epochs),
            execution=ExecutionConfig(workers=args.workers),
            output_dir=str(cache.parent / "out"),
            cache_dir=str(cache),
        ),
        trials=args.trials,
        parallel_trials=args.parallel_trials,
        prune=keep is not None,
        prune_keep=keep or 50,
        storage=f"sqlite:///{cache / 'optuna.db'}" if args.storage == "sqlite" else None,
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
    parser.add_argument("--parallel-trials", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the sampler seed of every search")
    parser.add_argument("--keep", default="30,50", help="pruned searches: percent of trials kept")
    parser.add_argument("--storage", choices=["journal", "sqlite"], default="journal")
    args = parser.parse_args(argv)

    from flows.local_api import api_for_run, wait_for_api
    from flows.worker import configure_process
    from tasks.tune_config import MAXIMISED

    configure_process()
    with tempfile.TemporaryDirectory(prefix="foldflow-bench-tune-") as tmp, api_for_run():
        wait_for_api()
        keeps = [float(k) for k in args.keep.split(",")]
        runs = [search(Path(tmp), keep, args) for keep in (None, *keeps)]
    full = runs[0]
    print(f"\nfoldflow tune: bundled data, {args.folds} folds x {args.epochs} epochs, "
          f"{args.trials} trials, sampler seed {args.seed}, {args.workers} workers, "
          f"{args.parallel_trials} trials in flight, {args.storage} storage")  # fmt: skip
    print(f"{'search':>10}  {'fold trainings':>14}  {'wall s':>7}  {'best CV':>8}  "
          f"{'trials/min':>10}  {'storage ms/trial':>16}  states")  # fmt: skip
    for run in runs:
        states = ", ".join(f"{n} {s.lower()}" for s, n in run["trials"].items())
        print(f"{run['name']:>10}  {run['trained']:>14}  {run['wall']:>7.1f}  "
              f"{run['cv_score']:>8.4f}  {60 * args.trials / run['wall']:>10.2f}  "
              f"{run['storage_ms_per_trial']:>16.1f}  {states}")  # fmt: skip
    print()
    for pruned in runs[1:]:
        saved = 1 - pruned["trained"] / full["trained"]
        gap = full["cv_score"] - pruned["cv_score"]  # > 0: pruning lost that much
        if pruned["metric"] not in MAXIMISED:
            gap = -gap
        print(f"{pruned['name']}: fold trainings saved {saved:.0%} (target >= "
              f"{TARGET_SAVED:.0%}: {'met' if saved >= TARGET_SAVED else 'NOT met'}); best CV "
              f"{gap:+.4f} below unpruned (target <= {TARGET_GAP}: "
              f"{'met' if gap <= TARGET_GAP else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
