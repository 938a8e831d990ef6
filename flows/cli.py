"""The `foldflow` command line: every option maps onto one field of the typed config."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from pathlib import Path
from typing import Any

from flows.cli_options import (
    POOL_SECTIONS,
    PREDICT_SECTIONS,
    SERVE_SECTIONS,
    add_config_options,
    add_model_options,
    config_from_args,
    load_file,
    model_values,
)
from flows.lifetime import seconds_since_start
from flows.local_api import api_for_run, wait_for_api
from flows.stops import stop_on_signals
from flows.worker import configure_process
from tasks.config import CompareConfig, PoolConfig, PredictConfig, ServeConfig


def say(line: str) -> None:
    """A line for the terminal, not the run's log."""
    print(line, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the cross-validation flow once, in this process."""
    config = config_from_args(args)
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    configure_process(quiet_console=show_progress)
    with stop_on_signals("run"), api_for_run(None if show_progress else say):
        from flows.console import quiet_console
        from flows.execution import fold_execution

        quiet_console(args.verbose)
        # The fold workers spawn and import TensorFlow (or this process imports it, when the
        # folds train here) while the API server boots; the flow's fan-out takes them over.
        with fold_execution(config):
            import tasks.join  # noqa: F401 - the flow imports it late; here it overlaps the boot
            from flows.cross_validate import cross_validate

            wait_for_api()
            if show_progress:
                from flows.console import warnings_only
                from flows.terminal import run_with_progress

                warnings_only()
                result = run_with_progress(
                    lambda: cross_validate(config), config.n_fold_tasks, config.model.epochs
                )
            else:
                result = cross_validate(config)
    from flows.summary import print_summary

    print_summary(result, seconds_since_start())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the whole resolved CVConfig as YAML, training nothing: `run --config` reproduces it."""
    import logging

    import yaml

    from flows.fetch import fetch_source
    from tasks.clean import describe_spec
    from tasks.config import CVConfig
    from tasks.data.read import read_table
    from tasks.data.resolve import resolve_spec
    from tasks.data.spec import declared_spec

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = config_from_args(args)
    raw = fetch_source(config.source, config.cache_dir, config.download, config.sha256, False)
    frame = read_table(raw.path, raw.source, config.data)
    resolved = resolve_spec(frame, config.data, raw.source, logging.getLogger("foldflow").warning)
    print(f"# data spec of {raw.source}: {resolved.n_rows} rows")
    for line in describe_spec(resolved):
        print(f"# {line}")
    print("# the whole run config: `foldflow run --config <this file>` reproduces the run")
    declared = declared_spec(resolved, config.data)
    whole = CVConfig.model_validate(
        {**config.model_dump(mode="json"), "source": raw.source, "data": declared.model_dump()}
    )
    text = yaml.safe_dump(whole.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
    print(text, end="")
    return 0


def load_grid(path: str) -> list[dict[str, Any]]:
    """A grid file: a list of {name, changes} or a mapping name -> ModelConfig changes."""
    data = load_file(path)
    if isinstance(data, dict):
        data = data.get("grid", [{"name": k, "changes": v or {}} for k, v in data.items()])
    return data


def cmd_compare(args: argparse.Namespace) -> int:
    """Cross-validate every configuration of a grid on the same folds and compare them."""
    configure_process()
    if args.output_dir is None:
        args.output_dir = CompareConfig.model_fields["cv"].default.output_dir
    payload: dict[str, Any] = {"cv": config_from_args(args).model_dump()}
    if args.grid:
        payload["grid"] = load_grid(args.grid)
    if args.baseline:
        payload["baseline"] = args.baseline
    config = CompareConfig.model_validate(payload)
    with stop_on_signals("comparison"), api_for_run(say):
        from flows.compare_regularizers import compare_regularizers
        from flows.console import quiet_console

        quiet_console(args.verbose)
        wait_for_api()
        result = compare_regularizers(config)
    print(Path(result["paths"]["md"]).read_text())
    for path in result["paths"].values():
        print(f"wrote {path}")
    print(f"wall time: {seconds_since_start():.1f} s")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Score new rows with a saved model bundle, in this process."""
    config = config_from_args(args, PREDICT_SECTIONS, PredictConfig)
    configure_process()
    with stop_on_signals("scoring"), api_for_run(say):
        from flows.console import quiet_console
        from flows.predict import predict

        quiet_console(args.verbose)
        wait_for_api()
        result = predict(config)
    for message in result["warnings"]:
        print(f"warning: {message}")
    if result["metrics"]:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if k != "n")
        print(f"against the {result['metrics']['n']} given targets: {shown}")
    print(f"scored {result['rows']} rows with {', '.join(result['models'])}")
    print(f"wrote {result['output']}")
    print(f"wall time: {seconds_since_start():.1f} s")
    return 0


def tune_config_from_args(args: argparse.Namespace) -> Any:
    """The TuneConfig of `foldflow tune`: the run's options, the tune options, the space file."""
    from tasks.search_space import load_space
    from tasks.tune_config import TuneConfig

    payload: dict[str, Any] = {"cv": config_from_args(args)}
    payload.update(model_values(args, TuneConfig, "tune"))
    if args.space:
        payload["space"] = load_space(args.space)
    return TuneConfig.model_validate(payload)


def cmd_tune(args: argparse.Namespace) -> int:
    """Search hyperparameters: every trial a k-fold cross-validation, pruned fold by fold."""
    config = tune_config_from_args(args)
    configure_process()
    with stop_on_signals("search"), api_for_run(say):
        from flows.console import quiet_console
        from flows.execution import fold_execution

        quiet_console(args.verbose)

        # As in `run`: the fold workers start while the API server boots.
        with fold_execution(config.cv, tasks=config.cv.n_fold_tasks * config.parallel_trials):
            from flows.tune import describe_result, tune

            wait_for_api()
            result = tune(config)
    print(describe_result(result))
    print("trials: " + ", ".join(f"{n} {state.lower()}" for state, n in result["trials"].items()))
    for path in result["paths"].values():
        print(f"wrote {path}")
    print(f"wall time: {seconds_since_start():.1f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a deployment of prefect.yaml from this long-running process (no work pool)."""
    import contextlib

    from flows.deployments import default_cron, deployment_of

    configure_process()
    deployment = deployment_of(args.flow)
    serving = config_from_args(args, SERVE_SECTIONS, ServeConfig, use_file=False)
    if args.flow == "predict":
        from flows.predict import predict as served_flow

        if serving.warm_workers:
            raise ValueError("--warm-workers: only the cross-validate flow trains folds")
        # A predict run's PredictConfig is a run parameter (`--param config=...`, UI form).
        parameters, tags = PredictConfig().model_dump(mode="json"), []
    elif args.flow == "tune":
        from flows.tune import tune as served_flow
        from tasks.tune_config import TuneConfig

        config = TuneConfig(cv=config_from_args(args))
        parameters, tags = config.model_dump(mode="json"), ["tune"]
    else:
        from flows.cross_validate import cross_validate as served_flow

        config = config_from_args(args)
    with api_for_run(say), contextlib.ExitStack() as stack:
        wait_for_api()  # before the pool starts: its workers inherit the API's URL
        if args.flow != "predict":
            if serving.warm_workers:
                from flows.workers import WarmPool, with_pool

                pool = PoolConfig(
                    workers=serving.warm_workers, gpus=config.execution.gpus,
                    cache_dir=config.cache_dir,
                )  # fmt: skip
                warm = stack.enter_context(WarmPool(pool))
                config = with_pool(config, pool, warm.address)
                say(f"foldflow: {pool.resolved_workers()} warm fold workers at {warm.address}")
            parameters = config.model_dump(mode="json")
            tags = [f"runner-{config.execution.runner}", *(["warm"] * bool(serving.warm_workers))]
        served_flow.serve(
            name=args.name or deployment["name"],
            cron=default_cron(deployment) if args.cron is None else (args.cron or None),
            parameters={"config": parameters},
            tags=[*deployment.get("tags", []), *tags],
            description=deployment.get("description"),
            pause_on_shutdown=False,
        )
    return 0


def cmd_workers_start(args: argparse.Namespace) -> int:
    """Start a warm pool of fold workers and keep it up until stopped; print its address."""
    import threading

    from flows.workers import WarmPool, read_state, terminate_as_interrupt

    pool = config_from_args(args, POOL_SECTIONS, PoolConfig)
    configure_process()
    running = read_state(pool.cache_dir)
    if running is not None:
        raise RuntimeError(
            f"a warm pool already runs for {pool.cache_dir} (pid {running.pid}, "
            f"{running.address}); `foldflow workers stop` ends it"
        )
    with terminate_as_interrupt():
        say(f"foldflow: starting {pool.resolved_workers()} warm fold workers ...")
        with WarmPool(pool, record=True) as warm:
            print(warm.address, flush=True)  # stdout: the address alone, for scripts
            say(
                f"foldflow: warm pool ready; run with --dask-address {warm.address} "
                "(`foldflow workers stop` or Ctrl-C ends it)"
            )
            threading.Event().wait()  # until SIGINT / SIGTERM
    return 0


def cmd_workers_stop(args: argparse.Namespace) -> int:
    """Stop the warm pool recorded under the cache folder."""
    from flows.workers import stop_pool

    cache_dir = args.cache_dir or PoolConfig.model_fields["cache_dir"].default
    stopped = stop_pool(cache_dir)
    if stopped is None:
        say(f"foldflow: no warm pool runs for {cache_dir}")
        return 1
    say(f"foldflow: stopped the warm pool at {stopped.address} (pid {stopped.pid})")
    return 0


def describe_error(err: BaseException) -> str:
    """One line for the terminal; a lost or silent Prefect API is named by its URL."""
    import httpx

    from tasks.errors import FoldflowError

    text = f"{type(err).__name__}: {err}"
    chain = [err, err.__cause__, err.__context__]
    ours = any(isinstance(e, FoldflowError) for e in chain)  # e.g. a download's own timeout
    if not ours and any(isinstance(e, (httpx.TransportError, TimeoutError)) for e in chain):
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or "(the local API)"
        return (
            f"the Prefect API at {url} did not answer ({text or type(err).__name__}); "
            "check that the server is running and reachable, then rerun to resume"
        )
    return text


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """--verbose: the terminal shows tracebacks of expected errors too (the UI always has them)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Prefect's tracebacks of expected errors (bad data, failed folds) on the "
        "terminal too; the run's logs in the Prefect API always have them",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `foldflow` parser: its commands, each with the options of its config."""
    parser = argparse.ArgumentParser(prog="foldflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run k-fold cross-validation once")
    add_config_options(run)
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars instead of log lines (default: when stderr is a terminal)",
    )
    add_verbose_option(run)
    run.set_defaults(func=cmd_run)
    inspect = sub.add_parser("inspect", help="print the inferred data spec as YAML; no training")
    add_config_options(inspect)
    inspect.set_defaults(func=cmd_inspect)
    compare = sub.add_parser("compare", help="compare regularizers on the same folds")
    compare.add_argument("--grid", help="YAML/JSON grid of named model changes")
    compare.add_argument("--baseline", help="grid entry to test against (default: l1-activity)")
    compare_out = CompareConfig.model_fields["cv"].default.output_dir  # not run's "output"
    add_config_options(compare, defaults={"output_dir": compare_out})
    add_verbose_option(compare)
    compare.set_defaults(func=cmd_compare)
    serve = sub.add_parser("serve", help="serve a deployment of prefect.yaml on its schedule")
    serve.add_argument(
        "--flow",
        choices=["cross-validate", "predict", "tune"],
        default="cross-validate",
        help="the flow to serve; the run options below apply to cross-validate and tune "
        "(default: cross-validate)",
    )
    serve.add_argument("--name", help="deployment name (default: prefect.yaml's)")
    serve.add_argument("--cron", help="cron schedule; '' for none (default: prefect.yaml's)")
    add_config_options(serve)
    add_config_options(serve, SERVE_SECTIONS, kind="", title="warm pool")
    serve.set_defaults(func=cmd_serve)
    workers = sub.add_parser("workers", help="a warm pool of fold workers that outlives runs")
    action = workers.add_subparsers(dest="action", required=True)
    start = action.add_parser("start", help="start the pool; prints the --dask-address to use")
    add_config_options(start, POOL_SECTIONS, "PoolConfig", title="warm pool")
    start.set_defaults(func=cmd_workers_start)
    stop = action.add_parser("stop", help="stop the pool that `workers start` started")
    cache = PoolConfig.model_fields["cache_dir"]
    stop.add_argument("--cache-dir", help=f"{cache.description} (default: {cache.default})")
    stop.set_defaults(func=cmd_workers_stop)
    tune = sub.add_parser("tune", help="search hyperparameters, every trial k parallel folds")
    tune.add_argument("--space", help="YAML/JSON search space: model field -> distribution")
    add_config_options(tune)
    from tasks.tune_config import TuneConfig

    add_model_options(tune, TuneConfig, "tune", "tune (the search)", skip=("cv", "space"))
    add_verbose_option(tune)
    tune.set_defaults(func=cmd_tune)
    predict = sub.add_parser("predict", help="score new rows with a saved model bundle")
    add_config_options(predict, PREDICT_SECTIONS, "PredictConfig")
    add_verbose_option(predict)
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `foldflow` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI shows the reason, not a traceback
        print(f"foldflow: error: {describe_error(err)}", file=sys.stderr)
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
