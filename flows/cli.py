"""The `foldflow` command line: every option maps onto one field of the typed config."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tasks.config import CVConfig

DEFAULTS = CVConfig()


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs cross-validation."""
    m, e = DEFAULTS.model, DEFAULTS.execution
    data = parser.add_argument_group("data")
    data.add_argument("--config", help="JSON or YAML file with a CVConfig; options override it")
    data.add_argument(
        "--source",
        help=f"CSV URL, path or fsspec URL (default: bundled {Path(DEFAULTS.source).name})",
    )
    data.add_argument("--sha256", help="expected sha256 of the CSV; a mismatch stops the run")
    data.add_argument("--output-dir", help=f"where results go (default: {DEFAULTS.output_dir})")
    data.add_argument(
        "--cache-dir", help=f"cleaned data and fold results (default: {DEFAULTS.cache_dir})"
    )
    cv = parser.add_argument_group("cross-validation")
    cv.add_argument("--folds", type=int, help=f"number of folds (default: {DEFAULTS.folds})")
    cv.add_argument("--seed", type=int, help=f"split and training seed (default: {DEFAULTS.seed})")
    cv.add_argument("--stratified", action="store_true", default=None, help="StratifiedKFold")
    cv.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)
    model = parser.add_argument_group("model")
    model.add_argument("--epochs", type=int, help=f"default: {m.epochs}")
    model.add_argument("--batch-size", type=int, help=f"default: {m.batch_size}")
    model.add_argument("--hidden", type=_ints, dest="hidden_units", help="e.g. 50,25")
    model.add_argument("--activation", choices=["relu", "tanh", "sigmoid", "elu", "selu"])
    model.add_argument("--regularizer", choices=["none", "l1", "l2", "l1_l2"])
    model.add_argument("--regularizer-on", choices=["activity", "kernel"])
    model.add_argument("--l1", type=float, help=f"default: {m.l1:g}")
    model.add_argument("--l2", type=float, help=f"default: {m.l2:g}")
    model.add_argument("--dropout", type=float, help="dropout after each hidden layer")
    model.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop", "adamw"])
    model.add_argument("--learning-rate", type=float)
    run = parser.add_argument_group("execution")
    run.add_argument("--runner", choices=["process", "thread", "dask"], help=f"default: {e.runner}")
    run.add_argument("--workers", type=int, help="parallel folds (default: min(folds, cores))")
    run.add_argument("--dask-address", help="tcp://host:8786 of an existing Dask cluster")
    run.add_argument("--gpus", help="GPU count or ids: 2, 0,1 or 3, (one fold per GPU)")
    run.add_argument("--validate-every", type=int, help="evaluate the test fold every N epochs")
    run.add_argument(
        "--xla",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA-compile each fold's training loop (default: on)",
    )
    run.add_argument(
        "--log-every", type=int, help=f"log loss every N epochs (default: {e.log_every})"
    )
    run.add_argument("--retries", type=int, dest="fold_retries", help="retries of a failing fold")
    run.add_argument("--min-folds", type=int, help="accept partial results with at least K folds")
    run.add_argument("--refresh", action="store_true", default=None, help="retrain cached folds")


def _gpus(text: str | None) -> list[int] | None:
    from tasks.devices import parse_gpus

    return parse_gpus(text)


def _load_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def config_from_args(args: argparse.Namespace) -> CVConfig:
    """Merge a config file (if any) with the command-line options into one validated config."""
    base: dict[str, Any] = _load_file(args.config) if args.config else {}
    opts = vars(args)
    top = ("source", "sha256", "output_dir", "cache_dir", "folds", "seed", "stratified",
           "shuffle", "fold_retries", "min_folds", "refresh")  # fmt: skip
    model = ("epochs", "batch_size", "hidden_units", "activation", "regularizer",
             "regularizer_on", "l1", "l2", "dropout", "optimizer", "learning_rate")  # fmt: skip
    execution = ("runner", "workers", "dask_address", "validate_every", "log_every", "xla")
    for key in top:
        if opts.get(key) is not None:
            base[key] = opts[key]
    for section, keys in (("model", model), ("execution", execution)):
        values = {k: opts[k] for k in keys if opts.get(k) is not None}
        if section == "execution" and opts.get("gpus") is not None:
            values["gpus"] = _gpus(opts["gpus"])
        if values:
            base[section] = {**base.get(section, {}), **values}
    return CVConfig.model_validate(base)


def print_summary(result: dict[str, Any], seconds: float) -> None:
    """The short table `foldflow run` ends with."""
    metrics, paths = result["metrics"], result["paths"]
    print("\nfold  accuracy  log-loss  train-s  worker")
    for row in metrics["folds"]:
        print(
            f"{row['fold']:>4}  {row['accuracy']:>8.4f}  {row['log_loss']:>8.4f}  "
            f"{row['train_seconds']:>7.1f}  {row['worker']} ({row['device']})"
        )
    for index in metrics["missing_folds"]:
        print(f"{index:>4}  {'FAILED':>8}  {metrics['fold_errors'][str(index)]}")
    print(
        f"\nfinal accuracy (out-of-fold): {metrics['final_accuracy']:.4f}"
        f"{'  (PARTIAL)' if metrics['partial'] else ''}"
    )
    print(
        f"fold accuracy: {metrics['mean_accuracy']:.4f} ± {metrics['std_accuracy']:.4f}; "
        f"log-loss {metrics['log_loss']:.4f}; majority class {metrics['majority_accuracy']:.4f}"
    )
    for path in paths.values():
        print(f"wrote {path}")
    print(f"wall time: {seconds:.1f} s")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the cross-validation flow once, in this process."""
    from flows.api import start_api_in_background

    config = config_from_args(args)
    api = start_api_in_background()
    from flows.cross_validate import cross_validate

    api.join()
    started = time.perf_counter()
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    if show_progress:
        from flows.terminal import quiet_console_logs, run_with_progress

        quiet_console_logs()
        result = run_with_progress(lambda: cross_validate(config), config.folds)
    else:
        result = cross_validate(config)
    print_summary(result, time.perf_counter() - started)
    return 0


def load_grid(path: str) -> list[dict[str, Any]]:
    """A grid file: a list of {name, changes} or a mapping name -> ModelConfig changes."""
    data = _load_file(path)
    if isinstance(data, dict):
        data = data.get("grid", [{"name": k, "changes": v or {}} for k, v in data.items()])
    return data


def cmd_compare(args: argparse.Namespace) -> int:
    """Cross-validate every configuration of a grid on the same folds and compare them."""
    from flows.api import start_api_in_background

    api = start_api_in_background()
    from flows.compare_regularizers import compare_regularizers
    from tasks.config import CompareConfig

    api.join()
    if args.output_dir is None:
        args.output_dir = "output/compare"
    payload: dict[str, Any] = {"cv": config_from_args(args).model_dump()}
    if args.grid:
        payload["grid"] = load_grid(args.grid)
    if args.baseline:
        payload["baseline"] = args.baseline
    config = CompareConfig.model_validate(payload)
    started = time.perf_counter()
    result = compare_regularizers(config)
    print(Path(result["paths"]["md"]).read_text())
    for path in result["paths"].values():
        print(f"wrote {path}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the flow on a cron schedule from this long-running process (no work pool needed)."""
    from flows.cross_validate import cross_validate

    config = config_from_args(args)
    cross_validate.serve(
        name=args.name,
        cron=args.cron or None,
        parameters={"config": config.model_dump(mode="json")},
        tags=["foldflow", f"runner-{config.execution.runner}"],
        description="foldflow k-fold cross-validation (served by `foldflow serve`)",
        pause_on_shutdown=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `foldflow` console script."""
    parser = argparse.ArgumentParser(prog="foldflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run k-fold cross-validation once")
    add_config_options(run)
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars instead of log lines (default: when stderr is a terminal)",
    )
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser("compare", help="compare regularizers on the same folds")
    compare.add_argument("--grid", help="YAML/JSON grid of named model changes")
    compare.add_argument("--baseline", help="grid entry to test against (default: l1-activity)")
    add_config_options(compare)
    compare.set_defaults(func=cmd_compare)
    serve = sub.add_parser("serve", help="serve the flow on a schedule (Prefect deployment)")
    serve.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    serve.add_argument("--cron", default="0 2 * * *", help="cron schedule; '' for none")
    add_config_options(serve)
    serve.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI shows the reason, not a traceback
        print(f"foldflow: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def console_main() -> None:
    """The `foldflow` console script: `main`, then exit without the interpreter's teardown.

    Everything is flushed and stopped by then (Prefect's own exit handlers, registered later,
    run first); skipping the module teardown of a process that loaded TensorFlow, pandas and
    Prefect saves about a second per command.
    """
    code = [1]

    def _exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code[0])

    atexit.register(_exit)
    try:
        code[0] = main()
    except SystemExit as stop:  # argparse's --help and usage errors
        code[0] = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    raise SystemExit(code[0])


if __name__ == "__main__":
    console_main()
