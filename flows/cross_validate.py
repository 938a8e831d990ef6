"""The k-fold cross-validation DAG: download -> clean -> plan folds -> train each fold -> join."""

import contextlib
from typing import Any

from prefect import flow, unmapped
from prefect.runtime import flow_run

from flows.runners import fold_runtime, make_task_runner
from tasks.clean import CleanedData, clean_to_parquet
from tasks.config import CVConfig, ModelConfig
from tasks.download import download_csv
from tasks.folds import FoldSpec, plan_folds
from tasks.join import collect_outcome, join_out_of_fold
from tasks.outputs import check_output_dir
from tasks.progress import track_folds_done
from tasks.report import label_flow_run
from tasks.train import fold_results_storage, train_fold


def fetch_and_clean(config: CVConfig) -> CleanedData:
    """Steps 1-2: the raw CSV, downloaded with retries, cleaned once into cached Parquet."""
    download = download_csv.with_options(
        retries=config.download.retries, retry_delay_seconds=config.download.retry_delay_s
    )
    raw = download(
        config.source,
        f"{config.cache_dir}/downloads",
        expected_sha256=config.sha256,
        timeout_s=config.download.timeout_s,
        max_bytes=config.download.max_bytes,
    )
    return clean_to_parquet(raw.path, raw.sha256, config.cache_dir, source=raw.source)


@flow(name="train-folds", validate_parameters=False)
def train_folds(
    data: CleanedData,
    folds: list[FoldSpec],
    models: list[ModelConfig],
    config: CVConfig,
    labels: list[str] | None = None,
) -> list[Any]:
    """Step 3: one `train_fold` task per (fold, model), fanned out on the chosen runner.

    Returns each fold's result, or a FoldFailure where it failed, in input order.
    """
    workers = config.execution.resolved_workers(len(folds))
    fold_task = train_fold.with_options(
        retries=config.fold_retries,
        refresh_cache=config.refresh,
        result_storage=fold_results_storage(config.cache_dir),
    )
    # Each Dask GPU worker sees only its own GPU, as its first device: gpu=0 picks it.
    runtime = fold_runtime(config.execution, workers, gpu=0 if config.execution.gpus else None)
    with _fold_resources(config):
        futures = fold_task.map(
            unmapped(data),
            folds,
            models,
            unmapped(config.seed),
            unmapped(runtime),
            labels or [""] * len(folds),
        )
    track_folds_done(futures)
    return [collect_outcome(future, fold.index) for future, fold in zip(futures, folds)]


def _fold_resources(config: CVConfig) -> contextlib.AbstractContextManager[None]:
    """With GPUs (always on Dask), each fold task asks the cluster for one `GPU`."""
    if not config.execution.gpus:
        return contextlib.nullcontext()
    from flows.dask_cluster import fold_resources

    return fold_resources(config.execution)


def run_folds(
    data: CleanedData,
    folds: list[FoldSpec],
    models: list[ModelConfig],
    config: CVConfig,
    labels: list[str] | None = None,
) -> list[Any]:
    """Run the fan-out as a nested flow on the task runner the config asks for."""
    workers = config.execution.resolved_workers(len(folds))
    fan_out = train_folds.with_options(task_runner=make_task_runner(config.execution, workers))
    return fan_out(data, folds, models, config, labels)


def run_name() -> str:
    """The flow run's name until the data is known: cv-<config hash>."""
    config = CVConfig.model_validate(flow_run.parameters.get("config") or {})
    return f"cv-{config.config_hash()}"


@flow(name="cross-validate", flow_run_name=run_name, log_prints=True)
def cross_validate(config: CVConfig = CVConfig()) -> dict[str, Any]:
    """Cross-validate the notebook's model on a CSV and write the out-of-fold predictions."""
    data = fetch_and_clean(config)
    label_flow_run(
        f"cv-{data.raw_sha256[:8]}-{config.config_hash()}",
        [f"runner-{config.execution.runner}", f"model-{config.model.label()}"],
    )
    folds = plan_folds(
        data, config.folds, config.shuffle, config.seed, config.stratified, config.source
    )
    output_dir = check_output_dir(config.output_dir)
    outcomes = run_folds(data, folds, [config.model] * len(folds), config)
    run_info = {"config": config.model_dump(mode="json"), "config_hash": config.config_hash()}
    outcome = join_out_of_fold(data, folds, outcomes, output_dir, run_info, config.min_folds)
    return {"metrics": outcome.metrics, "paths": outcome.paths}
