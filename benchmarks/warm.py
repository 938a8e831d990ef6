"""The notebook's loop against a run sent to a served deployment with a warm pool, in one run.

    python -m benchmarks.warm [--epochs 500] [--folds 5] [--runs 3]   (make bench ARGS="--warm")

In order, on one machine and the same data: the notebook loop; `foldflow run` with its local
API (cold, as `make bench`); a real `prefect server` on a free loopback port, then `foldflow
run` against it (as `make bench ARGS=--server`); `foldflow serve` without a pool and one
deployment run (what a scheduled run gets today); `foldflow serve --warm-workers 2` and
`--runs` deployment runs one after another. A deployment run is timed from its creation to
its Completed state by the server's own timestamps, with its phases: until the flow run
began (the serve process polls, spawns the flow-run process, which imports the flow), until
the folds were planned, until the first fold began, until the last fold finished, until the
run was Completed. Each run gets fresh cache and output folders, so every fold trains.
The serve processes poll for new runs every second (PREFECT_RUNNER_POLL_FREQUENCY=1; a
scheduled run is fetched ahead of its time and does not wait for a poll).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    NOTEBOOK_EPOCHS,
    NOTEBOOK_FOLDS,
    child_env,
    foldflow_command,
    keep_or_remove,
    machine_line,
    run_foldflow,
    run_notebook,
    running_server,
)
from tasks.config import BUNDLED_DATA, PROJECT_ROOT

TARGET_SPEEDUP = 40.0  # issue 23: a served run with a warm pool
TARGET_OVERHEAD_S = 3.0  # issue 23: beyond the busier worker's training
SERVE_START_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0
WARM_WORKERS = 2


@contextmanager
def serving(work: Path, name: str, api_url: str, extra: list[str], epochs: int, folds: int):
    """`foldflow serve` (no schedule) against the server until the block ends; its process."""
    cmd = [*foldflow_command(), "serve", "--name", name, "--cron", "", "--epochs", str(epochs),
           "--folds", str(folds), "--cache-dir", str(work / name / "cache"),
           "--output-dir", str(work / name / "out"), *extra]  # fmt: skip
    env = child_env() | {"PREFECT_API_URL": api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log_path = work / f"serve-{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while "being served" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"foldflow serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def deployment_run(client: Any, deployment: str, work: Path, tag: str) -> dict[str, Any]:
    """One run of a served deployment with fresh folders: its total time and phases."""
    from prefect.deployments import run_deployment

    config = dict(client.read_deployment_by_name(deployment).parameters["config"])
    config |= {"cache_dir": str(work / tag / "cache"), "output_dir": str(work / tag / "out")}
    flow_run = run_deployment(deployment, parameters={"config": config}, timeout=0)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = client.read_flow_run(flow_run.id)
        if run.state is not None and run.state.is_final():
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"deployment run {flow_run.id} not final after {RUN_TIMEOUT_S} s")
        time.sleep(0.1)
    if not run.state.is_completed():
        raise SystemExit(f"deployment run {run.id} ended {run.state.name}: {run.state.message}")
    return phases_of(client, run, Path(config["output_dir"]))


def phases_of(client: Any, run: Any, output: Path) -> dict[str, Any]:
    """A finished run's phases by the server's timestamps, and its workers' training."""
    import json

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    time.sleep(2)  # task-run states reach the database from events, a moment later
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    folds = [t for t in tasks if t.name.startswith("fold-")]
    planned = max(t.end_time for t in tasks if t.name == "check-output-dir")
    first_fold = min(t.start_time for t in folds)
    last_fold = max(t.end_time for t in folds)
    created, began, ended = run.created, run.start_time, run.end_time
    metrics = json.loads((output / "metrics.json").read_text())
    per_worker: dict[str, float] = {}
    for row in metrics["folds"]:
        per_worker[row["worker"]] = per_worker.get(row["worker"], 0.0) + row["train_seconds"]
    total = (ended - created).total_seconds()
    busier = max(per_worker.values())
    return {
        "total_s": total,
        "busier_worker_train_s": busier,
        "overhead_s": total - busier,
        "accuracy": metrics["final_accuracy"],
        "workers": sorted(per_worker),
        "phases": {
            "created -> flow run began (poll, process spawn, imports)": (began - created),
            "-> folds planned (download, clean, plan)": (planned - began),
            "-> first fold began (fan-out)": (first_fold - planned),
            "-> last fold done (training)": (last_fold - first_fold),
            "-> Completed (join, files, bundle)": (ended - last_fold),
        },
    }


def print_run(label: str, result: dict[str, Any], notebook_s: float) -> None:
    """One deployment run's line and phases."""
    speedup = notebook_s / result["total_s"]
    print(f"{label}: {result['total_s']:.1f} s ({speedup:.1f}x), busier worker trained "
          f"{result['busier_worker_train_s']:.1f} s, overhead {result['overhead_s']:.1f} s, "
          f"accuracy {result['accuracy']:.4f}, workers {', '.join(result['workers'])}")  # fmt: skip
    for phase, delta in result["phases"].items():
        print(f"    {phase:58}{delta.total_seconds():>7.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Every side once (the warm deployment `--runs` times); the figures; the speed-up."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm", description=__doc__)
    parser.add_argument("--epochs", type=int, default=NOTEBOOK_EPOCHS)
    parser.add_argument("--folds", type=int, default=NOTEBOOK_FOLDS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3, help="warm deployment runs (default 3)")
    parser.add_argument("--source", default=str(BUNDLED_DATA))
    parser.add_argument("--keep", action="store_true", help="keep logs and outputs; print where")
    parser.add_argument(
        "--warm-only", action="store_true",
        help="only the warm deployment's runs (no notebook loop, no cold sides): a quick look",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    print(machine_line())
    print(f"data: {args.source}; {args.folds} folds x {args.epochs} epochs; seed {args.seed}")
    work = Path(tempfile.mkdtemp(prefix="foldflow-bench-warm-"))
    try:
        for side in ("cold", "srv"):
            (work / side).mkdir()
        notebook_s = float("nan")  # --warm-only: no notebook loop to compare with
        if not args.warm_only:
            print("notebook loop ...", end=" ", flush=True)
            nb = run_notebook(args.seed, args.epochs, args.folds, args.source, work)
            notebook_s = nb["process_wall_seconds"] - nb["borrowed_import_seconds"]
            print(f"{notebook_s:.1f} s, accuracy {nb['final_accuracy']:.4f}", flush=True)
            cold = run_foldflow(args.seed, args.epochs, args.folds, args.source, work / "cold")
            print(f"foldflow run, local API (cold): {cold['process_wall_seconds']:.1f} s "
                  f"({notebook_s / cold['process_wall_seconds']:.1f}x)", flush=True)  # fmt: skip
        with running_server(work) as server:
            if not args.warm_only:
                ran = run_foldflow(args.seed, args.epochs, args.folds, args.source, work / "srv",
                                   server)  # fmt: skip
                print(f"foldflow run, running server: {ran['process_wall_seconds']:.1f} s "
                      f"({notebook_s / ran['process_wall_seconds']:.1f}x)", flush=True)  # fmt: skip
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                with get_client(sync_client=True) as client:
                    if not args.warm_only:
                        with serving(work, "served", server.api_url, [], args.epochs,
                                     args.folds):  # fmt: skip
                            served = deployment_run(client, "cross-validate/served", work, "s0")
                        print_run("served deployment, no pool", served, notebook_s)
                    warm_args = ["--warm-workers", str(WARM_WORKERS)]
                    warm = []
                    with serving(work, "warm", server.api_url, warm_args, args.epochs,
                                 args.folds):  # fmt: skip
                        for n in range(1, args.runs + 1):
                            warm.append(deployment_run(client, "cross-validate/warm", work,
                                                       f"w{n}"))  # fmt: skip
                            print_run(f"served deployment, warm pool, run {n}", warm[-1],
                                      notebook_s)  # fmt: skip
    finally:
        keep_or_remove(work, args.keep, "logs and outputs")
    median = statistics.median(r["total_s"] for r in warm)
    overhead = statistics.median(r["overhead_s"] for r in warm)
    speedup = notebook_s / median
    print(f"\nwarm pool, median of {len(warm)} runs: {median:.1f} s = {speedup:.1f}x the notebook "
          f"loop ({notebook_s:.1f} s); target >= {TARGET_SPEEDUP:.0f}x -> "
          f"{'MET' if speedup >= TARGET_SPEEDUP else 'NOT MET'}")  # fmt: skip
    print(f"overhead beyond the busier worker's training (median) {overhead:.1f} s; target <= "
          f"{TARGET_OVERHEAD_S:.0f} s -> {'MET' if overhead <= TARGET_OVERHEAD_S else 'NOT MET'}")
    print(f"speedup: {speedup:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
