"""Scale benchmark: the same 5-fold run on synthetic tables of 2 000, 20 000 and 200 000 rows.

    python -m benchmarks.scale [--sizes 2000,20000,200000] [--epochs 100] [--json FILE]

For each size: the stand-in table at that size (`data/make_standin.py --rows N`, fixed seed),
a notebook-style `model.fit` on one fold (timed; stopped after `--fit-budget` seconds and
extrapolated from the epochs it ran, which the output says), then `foldflow run` with
`--workers 1` and with `--workers 2`, each in a fresh process with empty cache and output
folders and its own PREFECT_HOME (so the local API server's database can be measured),
whose empty database is created beforehand, untimed, as every run after a machine's first
finds it. It prints per-fold training time, end-to-end time, the clean step, the Parquet
size, the database size, the peak RSS of every process, the growth between sizes and which
of issue 13's targets were met. The last line is `scale: <2-worker end-to-end seconds>` at
200 000 rows (at the largest size given, when 200 000 is not among them).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    SAMPLE_EVERY_S,
    child_env,
    classify,
    fail,
    foldflow_command,
    keep_or_remove,
    machine_line,
    run_measured,
)
from tasks.config import PROJECT_ROOT

DEFAULT_SIZES = (2_000, 20_000, 200_000)
REFERENCE_ROWS = 200_000  # where the targets are judged, and what the last line reports
DEFAULT_EPOCHS = 100
FOLDS = 5
SEED = 42  # KFold random_state and per-fold Keras seeds, as in `make bench`
DATA_SEED = 5583  # data/make_standin.py's default seed: 2 000 rows = the bundled file
BATCH = 32
FIT_BUDGET_S = 60.0
TARGET_FIT_SPEEDUP = 5.0
TARGET_WORKER_SPEEDUP = 1.6
TARGET_WORKER_RSS_MB = 2048.0
LINEAR_SLACK = 1.10  # "no worse than linear": a 10x bigger job may take at most 11x as long
LINE = "-" * 78


def epochs_reason(epochs: int, largest: int) -> str:
    """Why this many epochs: enough steps that training dominates, few enough to finish soon."""
    steps = FOLDS * (-(-largest * (FOLDS - 1) // FOLDS // BATCH)) * epochs
    work = f"{epochs} epochs at every size: {steps:,} optimizer steps over the {FOLDS} folds at "
    work += f"{largest:,} rows"
    if epochs != DEFAULT_EPOCHS:
        return work + f" (set by --epochs: a functional look; report the default {DEFAULT_EPOCHS})"
    return work + (
        ". Chosen so that training, not the fixed costs of a run (Prefect, worker start-up), "
        "dominates at the largest size, while it still takes a few minutes on 2 cores: at "
        "the README's ~1 s per 25,000-step fold, 5 folds of 160,000 training rows take about "
        "1.5-2 min on one core. The notebook-style fit (~40x slower per step, README) is run "
        "for at most --fit-budget s per size and extrapolated; the output says where."
    )


def make_table(rows: int, work: Path) -> Path:
    """The stand-in table at `rows` rows (same schema and proportions, fixed seed)."""
    out = work / f"standin-{rows}.csv"
    subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "data" / "make_standin.py"), "--rows", str(rows),
         "--seed", str(DATA_SEED), "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------- notebook-style fit, one fold


def fit_one_fold(source: str, epochs: int, budget_s: float, seed: int) -> dict[str, Any]:
    """Fold 1 of the notebook's loop (benchmarks/notebook_loop.py), timed epoch by epoch.

    Same cleaning, split, network and call (`fit` on NumPy arrays with `validation_data`,
    batch 32); it stops after the epoch that crosses `budget_s`, and the full run's time is
    then the first epoch (tracing included) plus the mean later epoch times the rest.
    """
    import keras
    from keras import regularizers
    from keras.layers import Dense
    from sklearn.model_selection import KFold

    from benchmarks.notebook_loop import load_notebook_xy, peak_rss_mb

    x, y, _ = load_notebook_xy(source)
    train, test = next(KFold(FOLDS, shuffle=True, random_state=seed).split(x))
    keras.utils.set_random_seed(seed * 1000 + 1)
    model = keras.models.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            Dense(50, activation="relu", activity_regularizer=regularizers.l1(1e-4)),
            Dense(25, activation="relu", activity_regularizer=regularizers.l1(1e-4)),
            Dense(y.shape[1], activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    clock = epoch_clock(budget_s)
    started = time.perf_counter()
    model.fit(x[train], y[train], validation_data=(x[test], y[test]), verbose=0,
              epochs=epochs, batch_size=BATCH, callbacks=[clock])  # fmt: skip
    measured = time.perf_counter() - started
    ran = len(clock.seconds)
    rest = statistics.fmean(clock.seconds[1:]) if ran > 1 else clock.seconds[0]
    estimate = measured if ran == epochs else clock.seconds[0] + rest * (epochs - 1)
    accuracy = float((model.predict(x[test], verbose=0).argmax(1) == y[test].argmax(1)).mean())
    return {
        "rows": int(len(x)), "train_rows": int(len(train)), "epochs": epochs,
        "epochs_measured": ran, "measured_seconds": measured, "fold_seconds": estimate,
        "extrapolated": ran < epochs, "accuracy_at_stop": accuracy, "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip


def epoch_clock(budget_s: float) -> Any:
    """A Keras callback that keeps each epoch's wall time and stops once the budget is spent."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._t0 = self._begun = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:  # noqa: ARG002
            self._begun = time.perf_counter()
            self._t0 = self._t0 or self._begun

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # noqa: ARG002
            now = time.perf_counter()
            self.seconds.append(now - self._begun)
            if now - self._t0 >= budget_s:
                self.model.stop_training = True

    return EpochClock()


def measure_fit(csv: Path, epochs: int, budget_s: float, work: Path) -> dict[str, Any]:
    """`fit_one_fold` in a fresh process (its TensorFlow import is not this one's)."""
    out = work / f"fit-{csv.stem}.json"
    cmd = [sys.executable, "-m", "benchmarks.scale", "--measure-fit", str(csv), "--epochs",
           str(epochs), "--fit-budget", str(budget_s), "--json", str(out)]  # fmt: skip
    measured = run_measured(cmd, work / f"fit-{csv.stem}.log", child_env())
    if measured.returncode != 0:
        fail("the notebook-style fit", measured)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- foldflow runs


def prefect_db_bytes(home: Path) -> int:
    """The local API server's SQLite database under PREFECT_HOME (with its WAL and SHM files)."""
    return sum(p.stat().st_size for p in home.glob("prefect.db*") if p.is_file())


def task_seconds(home: Path, name: str) -> float | None:
    """A task run's start-to-end seconds, read from the run's own Prefect database."""
    try:
        with sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT start_time, end_time FROM task_run WHERE name = ? ORDER BY created DESC",
                (name,),
            ).fetchone()
    except sqlite3.Error:
        return None
    if not row or None in row:
        return None
    start, end = (datetime.fromisoformat(str(value)) for value in row)
    return (end - start).total_seconds()


def foldflow_processes(measured: Any, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process of the run's tree with its role and peak RSS (largest first)."""
    workers = {int(f["worker"].rsplit(":", 1)[1]) for f in metrics["folds"] if ":" in f["worker"]}
    workers.discard(measured.pid)  # --workers 1: the folds train in the flow process itself
    return [
        {
            "pid": pid,
            "role": classify(pid, measured.cmdlines.get(pid, ""), measured.pid, workers),
            "peak_rss_mb": rss,
        }
        for pid, rss in sorted(measured.peak_rss_mb.items(), key=lambda kv: -kv[1])
    ]


def create_prefect_database(env: dict[str, str], log: Path) -> None:
    """Create the empty Prefect database of a fresh PREFECT_HOME, untimed, before its run.

    Every run after a machine's first finds its database; creating one (Prefect's migrations)
    adds about 4 s to a run's start-up here, which is not foldflow's cost per run.
    """
    prefect = str(Path(sys.executable).with_name("prefect"))
    with log.open("w") as out:
        done = subprocess.run([prefect, "server", "database", "upgrade", "-y"], env=env,
                              cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"creating the Prefect database failed; see {log}")


def run_foldflow_at(csv: Path, epochs: int, workers: int, work: Path) -> dict[str, Any]:
    """`foldflow run` on `csv` in a fresh process, cache, output folder and PREFECT_HOME.

    The home's database is created first, untimed; its size after the run is that of an
    empty database plus this one run.
    """
    root = work / f"{csv.stem}-w{workers}"
    home, cache, output = root / "prefect-home", root / "cache", root / "output"
    home.mkdir(parents=True)
    cmd = [*foldflow_command(), "run", "--no-progress", "--source", str(csv),
           "--epochs", str(epochs), "--folds", str(FOLDS), "--seed", str(SEED),
           "--workers", str(workers), "--cache-dir", str(cache), "--output-dir", str(output)]
    env = child_env() | {"PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)  # the local API server, whose database is measured here
    create_prefect_database(env, root / "database.log")
    measured = run_measured(cmd, root / "foldflow.log", env)  # fmt: skip
    if measured.returncode != 0:
        fail(f"foldflow run --workers {workers} on {csv.name}", measured)
    metrics = json.loads((output / "metrics.json").read_text())
    folds = metrics["folds"]
    parquet = sum(p.stat().st_size for p in (cache / "cleaned").glob("*.parquet"))
    return {
        "workers": workers,
        "wall_seconds": measured.wall_seconds,
        "fold_train_seconds": [f["train_seconds"] for f in folds],
        "training_span_seconds": max(f["finished_at"] for f in folds)
        - min(f["started_at"] for f in folds),
        "final_accuracy": metrics["final_accuracy"],
        "clean_seconds": task_seconds(home, "clean"),
        "parquet_bytes": parquet,
        "prefect_db_bytes": prefect_db_bytes(home),
        "processes": foldflow_processes(measured, metrics),
    }


def measure_size(rows: int, epochs: int, budget_s: float, work: Path) -> dict[str, Any]:
    """Everything for one size; progress on one line."""
    print(f"[{rows:,} rows] data ...", end=" ", flush=True)
    csv = make_table(rows, work)
    print(f"{csv.stat().st_size / 2**20:.1f} MB; fit ...", end=" ", flush=True)
    fit = measure_fit(csv, epochs, budget_s, work)
    note = f" (extrapolated from {fit['epochs_measured']})" if fit["extrapolated"] else ""
    print(f"{fit['fold_seconds']:.1f} s/fold{note}; foldflow -w1 ...", end=" ", flush=True)
    one = run_foldflow_at(csv, epochs, 1, work)
    print(f"{one['wall_seconds']:.1f} s; -w2 ...", end=" ", flush=True)
    two = run_foldflow_at(csv, epochs, 2, work)
    print(f"{two['wall_seconds']:.1f} s", flush=True)
    return {"rows": rows, "csv_bytes": csv.stat().st_size, "fit": fit, "w1": one, "w2": two}


# ---------------------------------------------------------------------------------- report


def per_fold(run: dict[str, Any]) -> float:
    """Mean training seconds per fold (FoldRun.train_seconds in metrics.json)."""
    return statistics.fmean(run["fold_train_seconds"])


def fold_worker_rss(run: dict[str, Any]) -> float:
    """The largest peak RSS of a process that trained folds (the flow process with 1 worker)."""
    roles = ("fold worker",) if run["workers"] > 1 else ("flow process (foldflow run)",)
    return max((p["peak_rss_mb"] for p in run["processes"] if p["role"] in roles), default=0.0)


def print_size(size: dict[str, Any]) -> None:
    """One size's figures."""
    fit, one, two = size["fit"], size["w1"], size["w2"]
    print(f"\n{LINE}\n{size['rows']:,} rows ({size['csv_bytes'] / 2**20:.1f} MB CSV)\n{LINE}")
    how = "measured in full"
    if fit["extrapolated"]:
        how = (f"EXTRAPOLATED from {fit['epochs_measured']} measured epochs "
               f"({fit['measured_seconds']:.1f} s)")  # fmt: skip
    print(f"notebook-style fit, one fold ({fit['train_rows']:,} training rows, "
          f"{fit['epochs']} epochs): {fit['fold_seconds']:.1f} s, {how}")  # fmt: skip
    for run in (one, two):
        folds = ", ".join(f"{s:.1f}" for s in run["fold_train_seconds"])
        print(f"foldflow --workers {run['workers']}: end to end {run['wall_seconds']:.1f} s; "
              f"training per fold {per_fold(run):.2f} s ({folds}); first fold start to last "
              f"fold done {run['training_span_seconds']:.1f} s; "
              f"OOF accuracy {run['final_accuracy']:.4f}")  # fmt: skip
    print(f"per-fold training vs fit (--workers 1, same rows and epochs): "
          f"{fit['fold_seconds'] / per_fold(one):.1f}x faster")  # fmt: skip
    print(f"2 workers vs 1, end to end: {one['wall_seconds'] / two['wall_seconds']:.2f}x")
    clean = one["clean_seconds"]
    print(f"clean step: {'?' if clean is None else f'{clean:.2f}'} s; cleaned Parquet "
          f"{one['parquet_bytes'] / 2**20:.2f} MB; Prefect database after the run "
          f"{one['prefect_db_bytes'] / 2**20:.1f} MB (-w1) / "
          f"{two['prefect_db_bytes'] / 2**20:.1f} MB (-w2)")  # fmt: skip
    print(f"peak RSS (sampled every {SAMPLE_EVERY_S} s): notebook-style fit "
          f"{fit['peak_rss_mb']:.0f} MB")  # fmt: skip
    for run in (one, two):
        for proc in run["processes"]:
            label = f"  -w{run['workers']} {proc['role']} [pid {proc['pid']}]"
            print(f"{label[:62]:62}{proc['peak_rss_mb']:>8.0f} MB")


def growth(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Between consecutive sizes: how much the work grew and how much each time grew."""
    pairs = []
    for small, big in zip(sizes, sizes[1:]):
        work = big["rows"] / small["rows"]  # epochs are the same at every size
        pairs.append(
            {
                "from": small["rows"], "to": big["rows"], "work": work,
                "fold_train": per_fold(big["w1"]) / per_fold(small["w1"]),
                "fit": big["fit"]["fold_seconds"] / small["fit"]["fold_seconds"],
                "end_to_end_w1": big["w1"]["wall_seconds"] / small["w1"]["wall_seconds"],
                "end_to_end_w2": big["w2"]["wall_seconds"] / small["w2"]["wall_seconds"],
            }
        )  # fmt: skip
    return pairs


def print_growth(sizes: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """Seconds per million row-epochs at each size, and the ratios between sizes."""
    print(f"\n{LINE}\nGrowth with rows x epochs ({epochs} epochs at every size)\n{LINE}")
    for size in sizes:
        per = 1e6 / (size["rows"] * epochs)
        print(f"{size['rows']:>9,} rows: foldflow training per fold "
              f"{per_fold(size['w1']) * per:.3f} s per M row-epochs; fit "
              f"{size['fit']['fold_seconds'] * per:.3f}; end to end -w1 "
              f"{size['w1']['wall_seconds'] * per:.3f}, -w2 {size['w2']['wall_seconds'] * per:.3f}")
    pairs = growth(sizes)
    for p in pairs:
        print(f"{p['from']:,} -> {p['to']:,} rows: work x{p['work']:.1f}; per-fold training "
              f"x{p['fold_train']:.2f}, fit x{p['fit']:.2f}, end to end x{p['end_to_end_w1']:.2f} "
              f"(-w1) / x{p['end_to_end_w2']:.2f} (-w2)")  # fmt: skip
    return pairs


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def print_targets(sizes: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, bool]:
    """Issue 13's targets, judged at 200 000 rows (or the largest size run)."""
    top = sizes[-1]
    where = f"at {top['rows']:,} rows" + (
        "" if top["rows"] == REFERENCE_ROWS else f" (the issue says {REFERENCE_ROWS:,})"
    )
    fit_speedup = top["fit"]["fold_seconds"] / per_fold(top["w1"])
    workers_speedup = top["w1"]["wall_seconds"] / top["w2"]["wall_seconds"]
    worst_rss = max(fold_worker_rss(s[k]) for s in sizes for k in ("w1", "w2"))
    worst_growth = max((p["fold_train"] / p["work"] for p in pairs), default=0.0)
    worst_e2e = max((p["end_to_end_w2"] / p["work"] for p in pairs), default=0.0)
    met = {
        "fit_speedup": fit_speedup >= TARGET_FIT_SPEEDUP,
        "workers_speedup": workers_speedup >= TARGET_WORKER_SPEEDUP,
        "worker_rss": worst_rss < TARGET_WORKER_RSS_MB,
        "linear_growth": bool(pairs) and max(worst_growth, worst_e2e) <= LINEAR_SLACK,
    }
    print(f"\n{LINE}\nTargets (issue 13)\n{LINE}")
    print(f"per-fold training >= {TARGET_FIT_SPEEDUP:.0f}x faster than fit {where}: "
          f"{fit_speedup:.1f}x -> {verdict(met['fit_speedup'])}")
    print(f"2 workers >= {TARGET_WORKER_SPEEDUP}x faster than 1, end to end, {where}: "
          f"{workers_speedup:.2f}x -> {verdict(met['workers_speedup'])}")
    print(f"peak RSS per fold worker < {TARGET_WORKER_RSS_MB / 1024:.0f} GB (every size): "
          f"largest {worst_rss:.0f} MB -> {verdict(met['worker_rss'])}")
    growth_note = "only one size" if not pairs else (
        f"worst time growth / work growth: per-fold training {worst_growth:.2f}, end to end "
        f"(-w2) {worst_e2e:.2f}; at most {LINEAR_SLACK:.2f} allowed"
    )  # fmt: skip
    print(f"time grows no worse than linearly in rows x epochs: {growth_note} -> "
          f"{verdict(met['linear_growth'])}")  # fmt: skip
    return met


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    sizes = ",".join(map(str, DEFAULT_SIZES))
    parser.add_argument("--sizes", default=sizes, help=f"rows per table (default: {sizes})")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"epochs at every size (default: {DEFAULT_EPOCHS})")  # fmt: skip
    parser.add_argument("--fit-budget", type=float, default=FIT_BUDGET_S,
                        help="seconds of notebook-style fit per size before extrapolating "
                        f"(default: {FIT_BUDGET_S:.0f})")  # fmt: skip
    parser.add_argument("--json", dest="json_path", help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep data, logs and outputs")
    parser.add_argument("--measure-fit", metavar="CSV", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not args.sizes or args.epochs < 1:
        parser.error("--sizes needs at least one size and --epochs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every size, print the figures, the growth and the targets; end with `scale:`."""
    args = parse_args(argv)
    if args.measure_fit:  # the notebook-style fit's own process (see measure_fit)
        report = fit_one_fold(args.measure_fit, args.epochs, args.fit_budget, SEED)
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    print(machine_line())
    print(f"{FOLDS} folds, seed {SEED}, data seed {DATA_SEED}, sizes "
          f"{', '.join(f'{n:,}' for n in args.sizes)}")  # fmt: skip
    print("epochs: " + epochs_reason(args.epochs, args.sizes[-1]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="foldflow-scale-"))
    try:
        sizes = [measure_size(n, args.epochs, args.fit_budget, work) for n in args.sizes]
        for size in sizes:
            print_size(size)
        pairs = print_growth(sizes, args.epochs)
        met = print_targets(sizes, pairs)
        if args.json_path:
            figures = {"machine": machine_line(), "epochs": args.epochs, "folds": FOLDS,
                       "sizes": sizes, "growth": pairs, "targets_met": met}  # fmt: skip
            Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        keep_or_remove(work, args.keep, "data, logs and outputs")
    top = sizes[-1]
    if top["rows"] != REFERENCE_ROWS:
        print(f"(the line below is at {top['rows']:,} rows: {REFERENCE_ROWS:,} was not run)")
    print(f"scale: {top['w2']['wall_seconds']:.1f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
