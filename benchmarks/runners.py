"""Wall time of the same 5-fold run on each task runner, in one run of this script.

    python -m benchmarks.runners [--epochs 500] [--folds 5] [-- more foldflow options]

Runs `foldflow run` (a fresh process and an empty cache each time, so every fold trains) with
`--workers 1`, `--workers 2` (worker processes), `--runner thread --workers 2` (two threads
of the flow's process) and `--runner dask --workers 2` (a local Dask cluster), checks that the
four OOF tables are identical, and prints the speed-ups.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

VARIANTS = {
    "--workers 1": ["--workers", "1"],
    "--workers 2": ["--workers", "2"],
    "--runner thread --workers 2": ["--runner", "thread", "--workers", "2"],
    "--runner dask --workers 2": ["--runner", "dask", "--workers", "2"],
}


def time_run(options: list[str], epochs: int, folds: int, root: Path) -> tuple[float, Path]:
    """Wall seconds of one `foldflow run` process, and its output folder."""
    out, cache = root / "out", root / "cache"
    command = [
        str(Path(sys.executable).with_name("foldflow")), "run", "--no-progress",
        "--epochs", str(epochs), "--folds", str(folds),
        "--output-dir", str(out), "--cache-dir", str(cache), *options,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started, out


def main() -> None:
    """Time each runner, compare their OOF tables, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="more `foldflow run` options, after --")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="foldflow-runners-"))
    try:
        times, tables = {}, {}
        for name, options in VARIANTS.items():
            folder = root / name.replace(" ", "")
            seconds, out = time_run([*options, *args.extra], args.epochs, args.folds, folder)
            times[name] = seconds
            tables[name] = pd.read_parquet(out / "oof_predictions.parquet")
            print(f"{name:<28} {seconds:6.1f} s", flush=True)
        first = next(iter(tables.values()))
        same = all(table.equals(first) for table in tables.values())
        base = times["--workers 1"]
        print(f"OOF tables identical across runners: {same}")
        for name, seconds in times.items():
            print(f"speed-up vs --workers 1, {name:<28} {base / seconds:4.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
