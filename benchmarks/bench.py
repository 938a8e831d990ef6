"""Time the notebook's loop against `foldflow run` in one run, on one machine, on the same data.

Both sides run as fresh subprocesses, one after the other (the notebook first), each timed by
the wall clock from process start to exit while a sampler records the peak RSS of every process
in its tree. foldflow gets empty temporary cache and output folders, so nothing is reused. The
timing figures are those of the first seed; further seeds only add to the accuracy comparison.
With `--server`, foldflow reports to a real `prefect server` started for the benchmark (on a
free loopback port, its own PREFECT_HOME) instead of starting its local API server: the
orchestration overhead with a running server. The last line printed is
`speedup: <notebook wall / foldflow wall>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from tasks.config import BUNDLED_DATA, PROJECT_ROOT

NOTEBOOK_EPOCHS, NOTEBOOK_FOLDS = 500, 5
QUICK_EPOCHS = 20
ACCURACY_TOLERANCE = 0.02  # issue 5: over 3 seeds the means must agree within this
SAMPLE_EVERY_S = 0.2
TARGET_SPEEDUP = 25.0  # issue 13: end to end, with the local API server (no PREFECT_API_URL)
TARGET_SERVER_OVERHEAD_S = 6.0  # issue 13: orchestration overhead with a running server
SERVER_START_TIMEOUT_S = 180.0


@dataclass
class Measured:
    """One subprocess's wall time, exit status and per-process peak memory."""

    pid: int
    wall_seconds: float
    returncode: int
    log_path: Path
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    cmdlines: dict[int, str] = field(default_factory=dict)


class TreeSampler(threading.Thread):
    """Poll a process and all its descendants, keeping each one's highest RSS seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks: dict[int, float] = {}
        self.cmdlines: dict[int, str] = {}
        self._done = threading.Event()

    def _sample(self) -> None:
        """One pass over the tree; processes that vanish mid-pass are simply skipped."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                rss = proc.memory_info().rss / 2**20
                if proc.pid not in self.cmdlines:
                    self.cmdlines[proc.pid] = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0.0), rss)

    def run(self) -> None:
        """Sample until told to stop."""
        while not self._done.is_set():
            self._sample()
            self._done.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        """End the sampling thread (the process has exited by now)."""
        self._done.set()
        self.join()


def run_measured(cmd: list[str], log_path: Path, env: dict[str, str]) -> Measured:
    """Run a command to completion, its output to a log, timed and memory-sampled."""
    with log_path.open("w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - started
        sampler.stop()
    return Measured(proc.pid, wall, returncode, log_path, sampler.peaks, sampler.cmdlines)


def child_env() -> dict[str, str]:
    """The caller's environment, minus fault injection, with TensorFlow's chatter turned down."""
    env = dict(os.environ)
    env.pop("FOLDFLOW_FAIL_FOLDS", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def foldflow_command() -> list[str]:
    """The venv's `foldflow` console script, or the same CLI through this interpreter."""
    script = Path(sys.executable).with_name("foldflow")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "flows.cli"]


def fail(what: str, measured: Measured) -> None:
    """Stop the benchmark, showing the end of the failing side's log."""
    tail = measured.log_path.read_text(errors="replace").splitlines()[-40:]
    print(f"\n{what} exited with status {measured.returncode}; last lines of its log:")
    print("\n".join(f"  | {line}" for line in tail))
    raise SystemExit(1)


def run_notebook(seed: int, epochs: int, folds: int, source: str, work: Path) -> dict[str, Any]:
    """The notebook's sequential loop in its own process; its figures plus the measured wall."""
    out = work / f"notebook-{seed}.json"
    cmd = [sys.executable, "-m", "benchmarks.notebook_loop", "--source", source, "--json", str(out)]
    cmd += ["--epochs", str(epochs), "--folds", str(folds), "--seed", str(seed)]
    measured = run_measured(cmd, work / f"notebook-{seed}.log", child_env())
    if measured.returncode != 0:
        fail("the notebook loop", measured)
    report = json.loads(out.read_text())
    report["process_wall_seconds"] = measured.wall_seconds
    report["sampled_peak_rss_mb"] = max(measured.peak_rss_mb.values(), default=0.0)
    return report


def classify(pid: int, cmdline: str, root: int, workers: set[int]) -> str:
    """Name a process of foldflow's tree by its role."""
    if pid == root:
        return "flow process (foldflow run)"
    if pid in workers:
        return "fold worker"
    server_marks = ("uvicorn", "prefect.server", "prefect server", "flows.local_api")
    if any(mark in cmdline for mark in server_marks):
        return "Prefect API server"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    if "multiprocessing" in cmdline:
        return "pool process that reported no fold"
    return "other: " + (cmdline[:60] or "?")


# Milestones in `foldflow run`'s console log (best effort: a milestone whose line is missing or
# reworded is skipped, and its phase merges into the next): (phase ending here, pattern, which).
# A process pool's workers spawn and import TensorFlow as the folds arrive (a local Dask
# cluster's from the CLI's start on, flows/execution.py): the phase ending at the first fold's
# start is what their start-up adds once the folds are planned.
MILESTONES = (
    ("start-up until the flow run begins (API server)", r"Beginning flow run", "first"),
    ("download, clean, plan folds", r"Task run 'check-output-dir' - Finished", "first"),
    ("fold workers ready (rest of spawn + TF import)", r"attempt \d+: training on", "first"),
    ("training: first fold start to last fold done", r"fold-\d+: accuracy", "last"),
    ("fold results back, join, files written", r"Flow run .* Finished in state", "last"),
)
LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+ +\| (.*)$")


def phase_breakdown(log_text: str, started: float, wall: float) -> list[tuple[str, float]]:
    """Where foldflow's wall time went, from the timestamps of its console log."""
    day = datetime.fromtimestamp(started).replace(hour=0, minute=0, second=0, microsecond=0)
    stamped: list[tuple[float, str]] = []
    for line in log_text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            h, m, sec, ms = (int(g) for g in match.groups()[:4])
            at = (day + timedelta(hours=h, minutes=m, seconds=sec, milliseconds=ms)).timestamp()
            stamped.append((at + 86400 if at < started - 60 else at, match.group(5)))
    phases, previous = [], started
    for label, pattern, which in MILESTONES:
        hits = [at for at, message in stamped if re.search(pattern, message)]
        if hits:
            at = hits[0] if which == "first" else hits[-1]
            phases.append((label, at - previous))
            previous = at
    phases.append(("shutdown: server stop, process exit", started + wall - previous))
    return phases


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api_url: str, proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Block until the server answers /health, failing fast if its process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited with status {proc.returncode} at start")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"prefect server at {api_url} did not answer within {timeout_s:.0f} s")


@dataclass
class Server:
    """A running `prefect server start` for foldflow's side: its API URL and process."""

    api_url: str
    pid: int


@contextlib.contextmanager
def running_server(work: Path) -> Iterator[Server]:
    """A real Prefect server on a free loopback port, with its own PREFECT_HOME, until the end."""
    port, home = free_port(), work / "server-home"
    home.mkdir()
    env = child_env() | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with (work / "server.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url, proc, SERVER_START_TIMEOUT_S)
        yield Server(api_url, proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_foldflow(
    seed: int, epochs: int, folds: int, source: str, work: Path, server: Server | None = None
) -> dict[str, Any]:
    """`foldflow run` with its defaults in a fresh process, empty cache and output folders.

    With `server`, it reports to that running server (PREFECT_API_URL), whose memory is
    sampled meanwhile; otherwise it starts its own local API server, as by default.
    """
    cache, output = work / f"foldflow-{seed}-cache", work / f"foldflow-{seed}-output"
    cmd = [*foldflow_command(), "run", "--source", source, "--cache-dir", str(cache)]
    cmd += ["--output-dir", str(output), "--epochs", str(epochs), "--folds", str(folds)]
    cmd += ["--seed", str(seed)]
    env = child_env() | ({"PREFECT_API_URL": server.api_url} if server else {})
    server_sampler = TreeSampler(server.pid) if server else None
    if server_sampler:
        server_sampler.start()
    process_started = time.time()
    measured = run_measured(cmd, work / f"foldflow-{seed}.log", env)
    if server_sampler:
        server_sampler.stop()
    if measured.returncode != 0:
        fail("foldflow run", measured)
    metrics_path = output / "metrics.json"
    metrics = json.loads(metrics_path.read_text())

    per_worker: dict[str, float] = {}
    for row in metrics["folds"]:
        per_worker[row["worker"]] = per_worker.get(row["worker"], 0.0) + row["train_seconds"]
    worker_pids = {int(name.rsplit(":", 1)[1]) for name in per_worker if ":" in name}
    processes = [
        {
            "pid": pid,
            "role": classify(pid, measured.cmdlines.get(pid, ""), measured.pid, worker_pids),
            "peak_rss_mb": rss,
        }
        for pid, rss in sorted(measured.peak_rss_mb.items(), key=lambda kv: -kv[1])
    ]
    if server_sampler:  # the running server is not foldflow's child: its own sampler
        processes += [
            {"pid": pid, "role": "Prefect server (running, --server)", "peak_rss_mb": rss}
            for pid, rss in sorted(server_sampler.peaks.items(), key=lambda kv: -kv[1])
        ]
    slowest = max(per_worker.values(), default=0.0)
    wall = measured.wall_seconds
    return {
        "seed": seed,
        "api": server.api_url if server else "local server",
        "final_accuracy": metrics["final_accuracy"],
        "fold_accuracy": metrics["fold_accuracy"],
        "process_wall_seconds": wall,
        "files_written_seconds": metrics_path.stat().st_mtime - process_started,
        "train_seconds_per_worker": per_worker,
        "slowest_worker_train_seconds": slowest,
        "overhead_seconds": wall - slowest,
        "overhead_fraction": (wall - slowest) / wall if wall else 0.0,
        "processes": processes,
        "retried_folds": [row["fold"] for row in metrics["folds"] if row.get("attempt", 1) > 1],
        "phases": phase_breakdown(
            measured.log_path.read_text(errors="replace"), process_started, wall
        ),
    }


def spread(values: list[float]) -> str:
    """Mean and min–max of a side's accuracies."""
    return f"{statistics.fmean(values):.4f} (min–max {min(values):.4f}–{max(values):.4f})"


def print_report(
    notebook: list[dict[str, Any]], foldflow: list[dict[str, Any]], epochs: int, folds: int
) -> float:
    """The figures table; returns the speed-up of the first (timed) seed."""
    nb, ff = notebook[0], foldflow[0]
    nb_wall = nb["process_wall_seconds"] - nb["borrowed_import_seconds"]
    speedup = nb_wall / ff["process_wall_seconds"]
    line = "-" * 78
    print(f"\n{line}\nTiming (seed {nb['seed']}, {folds} folds x {epochs} epochs)\n{line}")
    borrowed = nb["borrowed_import_seconds"]
    rows = [
        ("wall time, process start to exit (s)", nb_wall, ff["process_wall_seconds"], ".1f"),
        ("  start to results written (s)", nb["wall_seconds"] - borrowed,
         ff["files_written_seconds"], ".1f"),
        ("  training (s; foldflow: slowest worker)", nb["loop_seconds"],
         ff["slowest_worker_train_seconds"], ".1f"),
        ("final accuracy (out-of-fold)", nb["final_accuracy"], ff["final_accuracy"], ".4f"),
        ("peak RSS, largest process (MB)", nb["peak_rss_mb"],
         max(p["peak_rss_mb"] for p in ff["processes"]), ".0f"),
    ]  # fmt: skip
    print(f"{'':42}{'notebook loop':>16}{'foldflow run':>16}")
    for label, left, right, spec in rows:
        print(f"{label:42}{left:>16{spec}}{right:>16{spec}}")
    print(
        f"\nnotebook wall excludes {borrowed:.1f} s of importing foldflow's cleaning module "
        f"(Prefect, PyArrow),\nwhich the notebook never loads; measured "
        f"{nb['process_wall_seconds']:.1f} s in all."
    )
    print("notebook per fold (s): " + ", ".join(f"{s:.1f}" for s in nb["fold_seconds"]))
    print(
        "foldflow training per worker (s): "
        + ", ".join(f"{w} {s:.1f}" for w, s in ff["train_seconds_per_worker"].items())
    )
    print_overhead(ff, speedup)
    print("where foldflow's wall time went (from its log's timestamps):")
    for label, seconds in ff["phases"]:
        print(f"  {label:50}{seconds:>8.1f} s")
    if ff["retried_folds"]:
        print(f"note: fold(s) {ff['retried_folds']} needed retries; timings include them")

    print(f"\n{line}\nPeak memory per process (RSS sampled every {SAMPLE_EVERY_S} s)\n{line}")
    print(f"{'notebook loop (one process, ru_maxrss)':62}{nb['peak_rss_mb']:>8.0f} MB")
    for proc in ff["processes"]:
        label = f"foldflow: {proc['role']} [pid {proc['pid']}]"
        print(f"{label[:62]:62}{proc['peak_rss_mb']:>8.0f} MB")
    print("(target: every fold worker < 1.5 GB)")

    print(f"\n{line}\nAccuracy over seeds (final out-of-fold accuracy)\n{line}")
    print(f"{'seed':>6}{'notebook':>12}{'foldflow':>12}{'difference':>12}")
    for a, b in zip(notebook, foldflow):
        diff = b["final_accuracy"] - a["final_accuracy"]
        print(
            f"{a['seed']:>6}{a['final_accuracy']:>12.4f}{b['final_accuracy']:>12.4f}{diff:>+12.4f}"
        )
    nb_acc = [r["final_accuracy"] for r in notebook]
    ff_acc = [r["final_accuracy"] for r in foldflow]
    gap = statistics.fmean(ff_acc) - statistics.fmean(nb_acc)
    print(f"notebook mean {spread(nb_acc)}")
    print(f"foldflow mean {spread(ff_acc)}")
    verdict = "within" if abs(gap) <= ACCURACY_TOLERANCE else "NOT within"
    print(f"difference of means {gap:+.4f}: {verdict} {ACCURACY_TOLERANCE} ", end="")
    if len(notebook) < 3:
        print(f"({len(notebook)} seed(s); the issue's check uses 3: --seeds 42,43,44)")
    else:
        print(f"over {len(notebook)} seeds")
    if epochs != NOTEBOOK_EPOCHS or folds != NOTEBOOK_FOLDS:
        print(
            f"\nnote: {folds} folds x {epochs} epochs is a quick look; the reported figures are "
            f"at the notebook's {NOTEBOOK_FOLDS} folds x {NOTEBOOK_EPOCHS} epochs."
        )
    return speedup


def print_overhead(ff: dict[str, Any], speedup: float) -> None:
    """Orchestration overhead and the end-to-end speed-up, against issue 13's targets."""
    running = ff["api"] != "local server"
    where = "with a running server" if running else "with the local API server"
    target = f"issue 13: <= {TARGET_SERVER_OVERHEAD_S:.0f} s" if running else "issue 5: < 15 s"
    print(
        f"orchestration overhead {where} (foldflow wall - slowest worker's training): "
        f"{ff['overhead_seconds']:.1f} s = {100 * ff['overhead_fraction']:.1f} % of "
        f"{ff['process_wall_seconds']:.1f} s ({target})"
    )
    if running:
        met = ff["overhead_seconds"] <= TARGET_SERVER_OVERHEAD_S
        print(f"  -> {'MET' if met else 'NOT MET'} (API: {ff['api']})")
    else:
        met = speedup >= TARGET_SPEEDUP
        print(f"speed-up end to end {speedup:.1f}x (issue 13: >= {TARGET_SPEEDUP:.0f}x with the "
              f"local server) -> {'MET' if met else 'NOT MET'}")  # fmt: skip


def done_line(side: dict[str, Any]) -> str:
    """The progress note after one side of one seed."""
    return f"{side['process_wall_seconds']:.1f} s, accuracy {side['final_accuracy']:.4f}"


def machine_line() -> str:
    """Where the figures come from, so they are compared only with like."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, TensorFlow {version('tensorflow')}, "
        f"Keras {version('keras')}, Prefect {version('prefect')}"
    )


def run_seeds(
    seeds: list[int], epochs: int, folds: int, source: str, work: Path, server: Server | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both sides for each seed, one after the other, with a progress line each."""
    notebook: list[dict[str, Any]] = []
    foldflow: list[dict[str, Any]] = []
    for n, seed in enumerate(seeds, start=1):
        print(f"[seed {seed}, {n}/{len(seeds)}] notebook loop ...", end=" ", flush=True)
        notebook.append(run_notebook(seed, epochs, folds, source, work))
        print(done_line(notebook[-1]), flush=True)
        print(f"[seed {seed}, {n}/{len(seeds)}] foldflow run ...", end=" ", flush=True)
        foldflow.append(run_foldflow(seed, epochs, folds, source, work, server))
        print(done_line(foldflow[-1]), flush=True)
    return notebook, foldflow


def keep_or_remove(work: Path, keep: bool, what: str) -> None:
    """A benchmark's scratch folder: kept (and named) with --keep, else removed."""
    if keep:
        print(f"{what} kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run both sides for each seed, print the figures, end with the speed-up."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    epochs_help = f"default: {NOTEBOOK_EPOCHS} ({QUICK_EPOCHS} with --quick)"
    parser.add_argument("--epochs", type=int, help=epochs_help)
    parser.add_argument("--folds", type=int, help=f"default: {NOTEBOOK_FOLDS}")
    seeds_help = (
        "the first is timed, all are compared for accuracy (default: 42; 3 seeds: 42,43,44)"
    )
    parser.add_argument("--seeds", default="42", help=seeds_help)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, a fast look")
    parser.add_argument("--source", default=str(BUNDLED_DATA), help="CSV (default: bundled)")
    parser.add_argument("--json", dest="json_path", help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep logs and outputs; print where")
    parser.add_argument(
        "--server", action="store_true",
        help="foldflow reports to a real `prefect server` started for the benchmark "
        "(PREFECT_API_URL) instead of its local API server",
    )  # fmt: skip
    parser.add_argument(
        "--warm", action="store_true",
        help="benchmarks.warm instead: also a served deployment, cold and with a warm pool",
    )  # fmt: skip
    args = parser.parse_args(argv)
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else NOTEBOOK_EPOCHS)
    folds = args.folds or NOTEBOOK_FOLDS
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        parser.error("--seeds needs at least one seed")
    if args.warm:  # its own sides, the first seed only
        from benchmarks.warm import main as warm_main

        return warm_main([
            "--epochs", str(epochs), "--folds", str(folds), "--seed", str(seeds[0]),
            "--source", args.source, *(["--keep"] if args.keep else []),
        ])  # fmt: skip

    print(machine_line())
    print(f"data: {args.source}; {folds} folds x {epochs} epochs; seeds {seeds}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="foldflow-bench-"))
    try:
        with running_server(work) if args.server else contextlib.nullcontext() as server:
            if server:
                print(f"foldflow reports to a running Prefect server at {server.api_url}")
            notebook, foldflow = run_seeds(seeds, epochs, folds, args.source, work, server)
        speedup = print_report(notebook, foldflow, epochs, folds)
        if args.json_path:
            figures = {"machine": machine_line(), "epochs": epochs, "folds": folds}
            figures |= {"notebook": notebook, "foldflow": foldflow, "speedup": speedup}
            Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        keep_or_remove(work, args.keep, "logs and outputs")
    print(f"speedup: {speedup:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
