"""The k-fold cross-validation DAG: fetch -> clean -> plan -> train each fold -> join -> bundle."""

import importlib
import threading
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows.execution import IdleWork, as_inputs, collect_outcomes, fold_execution, fold_task
from flows.fetch import fetch_source
from flows.naming import announce_run, short_run_id, tag_flow_run
from tasks.bundle import output_bytes, write_model_bundle
from tasks.clean import CleanedData, clean_to_parquet
from tasks.config import CVConfig
from tasks.errors import FoldFailedError
from tasks.fold_cards import queue_fold_cards
from tasks.folds import FoldSpec, full_fold, plan_folds
from tasks.metrics import FailedFold, RunInfo
from tasks.outputs import check_output_dir
from tasks.progress import warn_cached_curves
from tasks.redact import redact_source
from tasks.report import SCORE_TAG_PREFIXES, one_line_summary, score_tag


def fetch_and_clean(config: CVConfig) -> CleanedData:
    """Steps 1-2: the raw file, downloaded with retries, cleaned once into cached Parquet."""
    raw = fetch_source(config.source, config.cache_dir, config.download, config.sha256)
    return clean_to_parquet(raw.path, raw.sha256, config.cache_dir, config.data, raw.source)


def import_meanwhile(module: str) -> threading.Thread:
    """Import a module on a thread while the flow waits on other work: scikit-learn's splitters
    while the data is fetched and cleaned."""
    thread = threading.Thread(
        target=importlib.import_module, args=(module,), name=f"foldflow-import-{module}"
    )
    thread.start()
    return thread


def prepare_join(config: CVConfig, data: CleanedData, folds: list[FoldSpec]) -> Any:
    """The join's imports (scikit-learn, SciPy, matplotlib: most of the flow's own import time)
    and the linear baseline (seconds), while the last folds train."""
    importlib.import_module("tasks.join")
    if not config.linear_baseline:
        return None
    from tasks.baseline import linear_baseline

    return linear_baseline(data, folds)


def run_info(config: CVConfig) -> RunInfo:
    """What metrics.json says about the run: the model, the config (credentials masked)."""
    return RunInfo(
        model_label=config.model.label(),
        config={**config.model_dump(mode="json"), "source": redact_source(config.source)},
        config_hash=config.config_hash(),
    )


def run_name() -> str:
    """cv-<config hash>-<flow run id>: what ran, and which run, the same in logs and the UI."""
    config = CVConfig.model_validate(flow_run.parameters.get("config") or {})
    return f"cv-{config.config_hash()}-{short_run_id()}"


@flow(name="cross-validate", flow_run_name=run_name, log_prints=True)
def cross_validate(config: CVConfig = CVConfig()) -> dict[str, Any] | State:
    """Cross-validate a Keras MLP on a table and write the out-of-fold predictions."""
    announce_run()  # its name as the UI shows it, and its page there
    with fold_execution(config) as execution:  # its workers start now and import TensorFlow
        if not config.execution.dask_address:  # else the running cluster plans (see `call`)
            import_meanwhile("sklearn.model_selection")  # plan_folds' splitters
        data = fetch_and_clean(config)
        tag_flow_run([f"data-{data.raw_sha256[:8]}", f"runner-{config.execution.runner}",
                      f"model-{config.model.label()}"])  # fmt: skip
        folds = execution.call(plan_folds, {
            "data": data, "n_folds": config.folds, "shuffle": config.shuffle, "seed": config.seed,
            "splitter": config.splitter, "repeats": config.repeats,
            "source": redact_source(config.source),
        })  # fmt: skip
        n_models = len(folds) + int(config.refit)
        output_dir = check_output_dir(
            config.output_dir, output_bytes(data, config.model, n_models, config.repeats)
        )

        # Fan-out: one task run per fold, and one more on every row for the refit.
        train = fold_task(config)
        inputs = {"data": data, "model": config.model, "seed": config.seed,
                  "runtime": execution.runtime}  # fmt: skip
        queue_fold_cards([f.label for f in folds] + (["full"] if config.refit else []))
        futures = execution.runner.map(
            train, {"fold": folds, **{name: unmapped(v) for name, v in inputs.items()}}
        )
        refit = None
        if config.refit:
            everything = full_fold(data.n_rows, config.folds)
            refit = execution.runner.submit(train, {"fold": everything, **inputs})
        # The flow's own work waits for a core that a worker left idle (see IdleWork).
        meanwhile = IdleWork(execution.workers, lambda: prepare_join(config, data, folds))
        outcomes = collect_outcomes(futures, folds, refit, meanwhile)
    linear = meanwhile.wait()
    from tasks.join import join_out_of_fold, split_outcomes

    warn_cached_curves(outcomes.folds, config.execution.validate_every)
    # The Runs list says which folds failed (a successful retry drops the tags again).
    _, failed = split_outcomes(folds, outcomes.folds)
    tag_flow_run([f"failed-{f.label}" for f in failed], ("failed-fold-", *SCORE_TAG_PREFIXES))

    # Fan-in: every prediction back at its own row, the scores, the files.

    try:
        joined = join_out_of_fold(data, folds, as_inputs(outcomes.folds), output_dir,
                                  run_info(config), config.min_folds, linear)  # fmt: skip
    except FoldFailedError as err:
        # The run's state message is what the UI shows first: start it with the failed fold.
        return Failed(message=str(err), data=err)
    if isinstance(outcomes.refit, FailedFold):
        return Failed(
            message=f"full (the refit on all rows) {outcomes.refit.error}; "
            "the model bundle is unchanged"
        )
    results, _ = split_outcomes(folds, outcomes.folds)
    if config.importance:  # optional, bounded: folds × columns × 3 forward passes
        from tasks.importance import feature_importance

        scored = as_inputs(results)
        joined.paths.update(feature_importance(data, scored, output_dir, config.seed))
    bundle = write_model_bundle(data, as_inputs(results), joined.metrics, output_dir,
                                config.model, config.data, config.config_hash(),
                                outcomes.refit)  # fmt: skip
    summary = one_line_summary(joined.metrics)
    tag_flow_run([score_tag(joined.metrics)])
    get_run_logger().info(summary)  # the run's log ends with its score
    # The state's message too: Prefect's last log line, "Finished in state Completed('…')".
    return Completed(
        message=summary,
        data={
            "metrics": joined.metrics.model_dump(mode="json"),
            "paths": {**joined.paths, "model": bundle},
        },
    )
