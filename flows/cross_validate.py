"""The k-fold cross-validation DAG: download -> clean -> plan folds -> train each fold -> join."""

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.fanout import REFIT, fold_workers_started, run_folds
from flows.naming import short_run_id, tag_flow_run
from tasks.bundle import write_model_bundle
from tasks.clean import CleanedData, clean_to_parquet
from tasks.config import CVConfig
from tasks.download import download_csv
from tasks.errors import FoldFailedError, retry_options
from tasks.folds import plan_folds
from tasks.join import join_out_of_fold, split_outcomes
from tasks.metrics import RunInfo
from tasks.outputs import check_cache_dir, check_output_dir
from tasks.redact import redact_source
from tasks.train import FoldResult


def fetch_and_clean(config: CVConfig) -> CleanedData:
    """Steps 1-2: the raw file, downloaded with retries, cleaned once into cached Parquet."""
    check_cache_dir(config.cache_dir)
    download = download_csv.with_options(
        **retry_options(config.download.retries, config.download.retry_delay_s)
    )
    raw = download(
        config.source,
        f"{config.cache_dir}/downloads",
        expected_sha256=config.sha256,
        timeout_s=config.download.timeout_s,
        max_bytes=config.download.max_bytes,
    )
    return clean_to_parquet(
        raw.path, raw.sha256, config.cache_dir, config.data, source=raw.source
    )


def redacted_config(config: CVConfig) -> dict[str, Any]:
    """The config as JSON for metrics.json, with any credentials in the source masked."""
    return {**config.model_dump(mode="json"), "source": redact_source(config.source)}


def run_name() -> str:
    """cv-<config hash>-<flow run id>: what ran, and which run, the same in logs and the UI."""
    config = CVConfig.model_validate(flow_run.parameters.get("config") or {})
    return f"cv-{config.config_hash()}-{short_run_id()}"


@flow(name="cross-validate", flow_run_name=run_name, log_prints=True)
def cross_validate(config: CVConfig = CVConfig()) -> dict[str, Any] | State:
    """Cross-validate a Keras MLP on a table and write the out-of-fold predictions."""
    with fold_workers_started(config):  # they spawn and import TensorFlow meanwhile
        data = fetch_and_clean(config)
        tag_flow_run(
            [
                f"data-{data.raw_sha256[:8]}",
                f"runner-{config.execution.runner}",
                f"model-{config.model.label()}",
            ]
        )
        folds = plan_folds(
            data, config.folds, config.shuffle, config.seed, config.splitter, config.repeats,
            redact_source(config.source),
        )  # fmt: skip
        output_dir = check_output_dir(config.output_dir)
        fanned = run_folds(data, folds, config, refit=config.refit)
    outcomes = fanned[""]
    run = RunInfo(
        model_label=config.model.label(),
        config=redacted_config(config),
        config_hash=config.config_hash(),
    )
    try:
        outcome = join_out_of_fold(data, folds, outcomes, output_dir, run, config.min_folds)
    except FoldFailedError as err:
        # The run's state message is what the UI shows first: start it with the failed fold.
        return Failed(message=str(err), data=err)
    refit = fanned[REFIT][0] if config.refit else None
    if refit is not None and not isinstance(refit, FoldResult):
        why = refit.describe() if hasattr(refit, "describe") else "failed"
        return Failed(message=f"full (the refit on all rows) {why}; the model bundle is unchanged")
    results, _ = split_outcomes(folds, outcomes)
    bundle = write_model_bundle(
        data, results, outcome.metrics, output_dir, config.model, config.data,
        config.config_hash(), refit,
    )  # fmt: skip
    paths = {**outcome.paths, "model": bundle}
    return {"metrics": outcome.metrics.model_dump(mode="json"), "paths": paths}
