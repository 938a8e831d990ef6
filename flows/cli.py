"""The `foldflow` command line: every option maps onto one field of the typed config."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flows.process import (
    api_is_temporary,
    configure_process,
    seconds_since_start,
    start_api_in_background,
    stop_on_signals,
)
from tasks.config import (
    CompareConfig,
    CVConfig,
    DownloadConfig,
    ExecutionConfig,
    ModelConfig,
    PredictConfig,
)
from tasks.dataspec import DataSpec

DEFAULTS = CVConfig()

# Where each config section's fields land on the command line: (section, model, option prefix).
# Top-level scalar fields of CVConfig have section None. Every option is derived from a field:
# adding a field to a model adds its option, with the field's description and default.
SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = (
    (None, CVConfig, ""),
    ("model", ModelConfig, ""),
    ("execution", ExecutionConfig, ""),
    ("data", DataSpec, ""),
    ("download", DownloadConfig, "download-"),
)
# `foldflow predict`: the same derivation over PredictConfig.
PREDICT_SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = (
    (None, PredictConfig, ""),
    ("download", DownloadConfig, "download-"),
)
# Shorter names kept from earlier versions of the CLI.
RENAMED = {"hidden_units": "hidden", "fold_retries": "retries"}
# Values with a syntax of their own on the command line.
PARSERS: dict[str, Callable[[str], Any]] = {"gpus": lambda text: _gpus(text)}
GROUP_TITLES = {
    None: "run",
    "data": "data (your own table; no --target = the jh-simple preset)",
    "model": "model",
    "execution": "execution",
    "download": "download",
}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def _strs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _unwrap(annotation: Any) -> Any:
    """The annotation without Optional[...] and Annotated[...] wrappers."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _argument_kwargs(name: str, info: FieldInfo) -> dict[str, Any] | None:
    """argparse keyword arguments for one pydantic field (None: not settable from the CLI)."""
    kind = _unwrap(info.annotation)
    default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else default
    if isinstance(shown, list):
        shown = ",".join(map(str, shown)) or "none"
    help_text = f"{info.description or name.replace('_', ' ')} (default: {shown})"
    kwargs: dict[str, Any] = {"help": help_text}
    if name in PARSERS:
        return {**kwargs, "type": PARSERS[name], "metavar": name.upper()}
    if kind is bool:
        return {**kwargs, "action": argparse.BooleanOptionalAction, "default": None}
    if get_origin(kind) is Literal:
        return {**kwargs, "choices": list(get_args(kind))}
    if get_origin(kind) is list:
        item = _unwrap(get_args(kind)[0])
        return {**kwargs, "type": _ints if item is int else _strs, "metavar": "A,B,..."}
    if get_origin(kind) is dict:
        return {**kwargs, "type": json.loads, "metavar": "JSON"}
    if kind in (int, float, str):
        return {**kwargs, "type": kind, "metavar": name.split("_")[-1].upper()}
    return None  # a nested model: its own section


def _dest(section: str | None, name: str) -> str:
    return f"{section}.{name}" if section else name


def add_config_options(
    parser: argparse.ArgumentParser, sections: tuple = SECTIONS, kind: str = "CVConfig"
) -> None:
    """One option per field of the config models, grouped by section."""
    parser.add_argument("--config", help=f"JSON or YAML file with a {kind}; options override it")
    for section, model, prefix in sections:
        group = parser.add_argument_group(GROUP_TITLES[section])
        for name, info in model.model_fields.items():
            kwargs = _argument_kwargs(name, info)
            if kwargs is None:
                continue
            flag = "--" + prefix + RENAMED.get(name, name).replace("_", "-")
            group.add_argument(flag, dest=_dest(section, name), **kwargs)


def _gpus(text: str | None) -> list[int] | None:
    from tasks.devices import parse_gpus

    return parse_gpus(text)


def _load_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def config_from_args(
    args: argparse.Namespace, sections: tuple = SECTIONS, config_type: type[BaseModel] = CVConfig
) -> Any:
    """Merge a config file (if any) with the command-line options into one validated config."""
    base: dict[str, Any] = _load_file(args.config) if args.config else {}
    opts = vars(args)
    for section, model, _ in sections:
        values = {
            name: opts[_dest(section, name)]
            for name in model.model_fields
            if opts.get(_dest(section, name)) is not None
        }
        if section is None:
            base.update(values)
        elif values:
            base[section] = {**base.get(section, {}), **values}
    return config_type.model_validate(base)


def print_summary(result: dict[str, Any], seconds: float) -> None:
    """The short table `foldflow run` ends with."""
    from tasks.metrics import RunMetrics

    metrics, paths = RunMetrics.model_validate(result["metrics"]), result["paths"]
    score_names = list(metrics.folds[0].scores) if metrics.folds else []
    print("\n" + f"{'fold':>8}  " + "  ".join(f"{n:>9}" for n in score_names) + "  train-s  worker")
    for row in metrics.folds:
        scores = "  ".join(f"{row.scores[n]:>9.4f}" for n in score_names)
        print(
            f"{row.label:>8}  {scores}  {row.train_seconds:>7.1f}  {row.worker} ({row.device})"
        )
    for failure in metrics.failed_folds:
        print(f"{failure.label:>8}  FAILED  {failure.error}")
    partial = "  (PARTIAL)" if metrics.partial else ""
    if metrics.task == "regression":
        print(f"\nout-of-fold RMSE: {metrics.rmse:.4f}{partial}")
        print(
            f"fold RMSE: {metrics.mean_rmse:.4f} ± {metrics.std_rmse:.4f}; MAE {metrics.mae:.4f}; "
            f"R² {metrics.r2:.4f}; baseline RMSE (training-fold mean) {metrics.baseline_rmse:.4f}"
        )
    else:
        print(f"\nfinal accuracy (out-of-fold): {metrics.final_accuracy:.4f}{partial}")
        print(
            f"fold accuracy: {metrics.mean_accuracy:.4f} ± {metrics.std_accuracy:.4f}; "
            f"log-loss {metrics.log_loss:.4f}; majority class {metrics.majority_accuracy:.4f}"
        )
    if metrics.repeat_scores:
        print("per repeat: " + ", ".join(f"{v:.4f}" for v in metrics.repeat_scores))
    for path in paths.values():
        print(f"wrote {path}")
    print(f"wall time: {seconds:.1f} s")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the cross-validation flow once, in this process."""
    config = config_from_args(args)
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    configure_process(quiet_console=show_progress)
    temporary_api = api_is_temporary()
    api = start_api_in_background()
    from flows.cross_validate import cross_validate
    from flows.fanout import fold_workers_started, tensorflow_imported_for_local_folds

    # The fold workers spawn and import TensorFlow while the API server boots (and then while
    # the flow downloads and cleans); the flow's fan-out takes them over. Folds that train in
    # this process get TensorFlow imported here meanwhile.
    with stop_on_signals("run"), fold_workers_started(config):
        if temporary_api:
            tensorflow_imported_for_local_folds(config)
        api.join()
        if show_progress:
            from flows.terminal import quiet_console_logs, run_with_progress

            quiet_console_logs()
            folds = config.folds * config.repeats
            result = run_with_progress(lambda: cross_validate(config), folds)
        else:
            result = cross_validate(config)
    print_summary(result, seconds_since_start())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the resolved DataSpec as YAML (declared plus inferred), training nothing."""
    import logging

    import yaml

    from tasks.clean import describe_spec
    from tasks.dataspec import declared_spec, read_table, resolve_spec
    from tasks.download import download_csv

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = config_from_args(args)
    raw = download_csv.fn(
        config.source,
        f"{config.cache_dir}/downloads",
        expected_sha256=config.sha256,
        timeout_s=config.download.timeout_s,
        max_bytes=config.download.max_bytes,
    )
    frame = read_table(raw.path, raw.source, config.data)
    resolved = resolve_spec(frame, config.data, raw.source, logging.getLogger("foldflow").warning)
    print(f"# data spec of {raw.source}: {resolved.n_rows} rows")
    for line in describe_spec(resolved):
        print(f"# {line}")
    declared = declared_spec(resolved, config.data).model_dump(mode="json", exclude_defaults=True)
    print(yaml.safe_dump({"source": raw.source, "data": declared}, sort_keys=False), end="")
    return 0


def load_grid(path: str) -> list[dict[str, Any]]:
    """A grid file: a list of {name, changes} or a mapping name -> ModelConfig changes."""
    data = _load_file(path)
    if isinstance(data, dict):
        data = data.get("grid", [{"name": k, "changes": v or {}} for k, v in data.items()])
    return data


def cmd_compare(args: argparse.Namespace) -> int:
    """Cross-validate every configuration of a grid on the same folds and compare them."""
    configure_process()
    api = start_api_in_background()
    from flows.compare_regularizers import compare_regularizers

    api.join()
    if args.output_dir is None:
        args.output_dir = CompareConfig.model_fields["cv"].default.output_dir
    payload: dict[str, Any] = {"cv": config_from_args(args).model_dump()}
    if args.grid:
        payload["grid"] = load_grid(args.grid)
    if args.baseline:
        payload["baseline"] = args.baseline
    config = CompareConfig.model_validate(payload)
    with stop_on_signals("comparison"):
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
    api = start_api_in_background()
    from flows.predict import predict

    api.join()
    with stop_on_signals("scoring"):
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


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the flow on a cron schedule from this long-running process (no work pool needed)."""
    configure_process()
    if args.flow == "predict":
        from flows.predict import predict

        # A predict run's PredictConfig is a run parameter (`--param config=...`, UI form).
        predict.serve(
            name=args.name or "on-demand",
            cron=args.cron or None,
            parameters={"config": PredictConfig().model_dump(mode="json")},
            tags=["foldflow", "predict"],
            description="foldflow: score new rows with a saved model bundle",
            pause_on_shutdown=False,
        )
        return 0
    from flows.cross_validate import cross_validate

    config = config_from_args(args)
    cross_validate.serve(
        name=args.name or "nightly",
        cron="0 2 * * *" if args.cron is None else (args.cron or None),
        parameters={"config": config.model_dump(mode="json")},
        tags=["foldflow", f"runner-{config.execution.runner}"],
        description="foldflow k-fold cross-validation (served by `foldflow serve`)",
        pause_on_shutdown=False,
    )
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

        url = PREFECT_API_URL.value() or "(temporary server)"
        return (
            f"the Prefect API at {url} did not answer ({text or type(err).__name__}); "
            "check that the server is running and reachable, then rerun to resume"
        )
    return text


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
    inspect = sub.add_parser("inspect", help="print the inferred data spec as YAML; no training")
    add_config_options(inspect)
    inspect.set_defaults(func=cmd_inspect)
    compare = sub.add_parser("compare", help="compare regularizers on the same folds")
    compare.add_argument("--grid", help="YAML/JSON grid of named model changes")
    compare.add_argument("--baseline", help="grid entry to test against (default: l1-activity)")
    add_config_options(compare)
    compare.set_defaults(func=cmd_compare)
    serve = sub.add_parser("serve", help="serve the flow on a schedule (Prefect deployment)")
    serve.add_argument(
        "--flow",
        choices=["cross-validate", "predict"],
        default="cross-validate",
        help="the flow to serve; the run options below apply to cross-validate only "
        "(default: cross-validate)",
    )
    serve.add_argument(
        "--name", help="deployment name (default: nightly; on-demand for --flow predict)"
    )
    serve.add_argument(
        "--cron",
        help="cron schedule; '' for none (default: '0 2 * * *'; none for --flow predict)",
    )
    add_config_options(serve)
    serve.set_defaults(func=cmd_serve)
    predict = sub.add_parser("predict", help="score new rows with a saved model bundle")
    add_config_options(predict, PREDICT_SECTIONS, "PredictConfig")
    predict.set_defaults(func=cmd_predict)
    args = parser.parse_args(argv)
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
