"""Score new rows with a run's model bundle: download -> read -> validate -> predict -> write."""

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.fetch import fetch_source
from flows.naming import short_run_id
from tasks.config import PredictConfig
from tasks.logs import run_logger
from tasks.predict import (
    add_kept,
    read_new_rows,
    score_against_truth,
    score_rows,
    verify_bundle,
    write_predictions,
)
from tasks.redact import redact_source


def predict_run_name() -> str:
    """predict-<use>-<flow run id>: which models, and which run, the same in logs and the UI."""
    config = PredictConfig.model_validate(flow_run.parameters.get("config") or {})
    return f"predict-{config.use}-{short_run_id()}"


@flow(name="predict", flow_run_name=predict_run_name, log_prints=True)
def predict(config: PredictConfig = PredictConfig()) -> dict[str, Any]:
    """Score new rows with the fold models (ensemble), the refit model or one fold model."""
    bundle = verify_bundle(config.model, config.use)
    raw = fetch_source(config.source, config.cache_dir, config.download)
    label = redact_source(config.source)
    rows = read_new_rows(raw.path, label, bundle, config.keep, config.keep_all)
    predictions, unseen = score_rows(bundle, rows, config.use)
    metrics = score_against_truth(predictions, rows.truth, bundle.spec)
    if metrics is not None:
        run_logger().info(
            "Against the %d given targets: %s",
            metrics["n"],
            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n"),
        )
    output = write_predictions(add_kept(predictions, rows.kept, bundle.spec.key), config.output)
    return {
        "output": output,
        "rows": len(predictions),
        "use": config.use,
        "models": [config.use] if config.use != "ensemble" else bundle.fold_models(),
        "metrics": metrics,
        "warnings": [*rows.warnings, *unseen],
    }
