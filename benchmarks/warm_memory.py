"""Memory of a warm pool's workers across many consecutive runs: does it stay bounded?

    python -m benchmarks.warm_memory [--runs 20] [--workers 2] [--epochs 100] [--folds 5]

Starts a warm pool (flows/workers.py) and foldflow's local API, runs `cross_validate` on the
pool `--runs` times one after another (fresh output folder each, `refresh` so every fold
trains), and prints the resident memory (RSS) of each worker when the pool is ready and after
each run, then the growth of the last run against the ready pool and against the first run
(issue 23: growth < 10 %). A worker the nanny replaced would show as a new pid.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from flows.local_api import api_for_run, wait_for_api
from flows.worker import configure_process
from tasks.config import BUNDLED_DATA

TARGET_GROWTH = 0.10


def rss_mb(pids: dict[str, int]) -> dict[int, float]:
    """RSS in MiB of each worker pid."""
    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids.values()}


def main(argv: list[str] | None = None) -> int:
    """Run, measure, print; exit 1 if the growth is over the target."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_memory", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    configure_process(quiet_console=True)
    work = Path(tempfile.mkdtemp(prefix="foldflow-warm-memory-"))
    try:
        with api_for_run():
            from flows.cross_validate import cross_validate
            from flows.workers import WarmPool, with_pool
            from tasks.config import CVConfig, ModelConfig, PoolConfig

            wait_for_api()
            with WarmPool(PoolConfig(workers=args.workers, cache_dir=str(work))) as pool:
                pids = pool.worker_pids()
                rows = [("pool ready", rss_mb(pids), 0.0)]
                for n in range(1, args.runs + 1):
                    config = CVConfig(
                        source=str(BUNDLED_DATA), folds=args.folds,
                        model=ModelConfig(epochs=args.epochs), refresh=True,
                        cache_dir=str(work / "cache"), output_dir=str(work / f"out-{n}"),
                    )  # fmt: skip
                    started = time.perf_counter()
                    cross_validate(with_pool(config, pool.pool, pool.address))
                    seconds = time.perf_counter() - started
                    now = pool.worker_pids()
                    if now != pids:
                        print(f"run {n}: workers changed {sorted(pids.values())} -> "
                              f"{sorted(now.values())} (a nanny restart)")  # fmt: skip
                        pids = now
                    rows.append((f"after run {n}", rss_mb(pids), seconds))
                    print(f"run {n:>2}: {seconds:5.1f} s, RSS "
                          + ", ".join(f"{mb:.0f}" for mb in rows[-1][1].values()) + " MiB",
                          flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = [sum(r[1].values()) for r in rows]
    vs_ready = total[-1] / total[0] - 1
    vs_first = total[-1] / total[1] - 1
    print(f"\nall workers, MiB: ready {total[0]:.0f}, after run 1 {total[1]:.0f}, after run "
          f"{args.runs} {total[-1]:.0f} (max {max(total):.0f})")  # fmt: skip
    print(f"growth after {args.runs} runs: {100 * vs_ready:+.1f} % against the ready pool, "
          f"{100 * vs_first:+.1f} % against the first run (target < {100 * TARGET_GROWTH:.0f} %)")
    met = vs_ready < TARGET_GROWTH
    print(f"-> {'MET' if met else 'NOT MET'} (against the ready pool)")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
