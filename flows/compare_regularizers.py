"""Compare regularizers in one run: configurations × folds fanned out, joined per configuration."""

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from flows.cross_validate import fetch_and_clean
from flows.execution import fold_execution, fold_outcomes, fold_task, track_folds_done
from flows.naming import short_run_id, tag_flow_run
from tasks.compare import compare_configurations, model_labels
from tasks.config import CompareConfig
from tasks.folds import plan_folds
from tasks.join import join_out_of_fold
from tasks.metrics import RunInfo, RunMetrics
from tasks.outputs import check_output_dir
from tasks.redact import redact_source


def compare_run_name() -> str:
    """compare-<flow run id>: unique, the same in logs and the UI."""
    return f"compare-{short_run_id()}"


@flow(name="compare-regularizers", flow_run_name=compare_run_name, log_prints=True)
def compare_regularizers(config: CompareConfig = CompareConfig()) -> dict[str, Any]:
    """Which regularization works best on this data, and is its lead beyond fold noise?"""
    cv = config.cv
    models = config.models()
    with fold_execution(cv, tasks=cv.n_fold_tasks * len(models)) as execution:
        data = fetch_and_clean(cv)
        tag_flow_run([f"data-{data.raw_sha256[:8]}", f"runner-{cv.execution.runner}", "compare"])
        folds = plan_folds(
            data, cv.folds, cv.shuffle, cv.seed, cv.splitter, cv.repeats, redact_source(cv.source)
        )
        output_dir = check_output_dir(cv.output_dir)
        # Fan-out: configurations × folds, all on the same folds (a paired comparison).
        shared = {"data": unmapped(data), "seed": unmapped(cv.seed),
                  "runtime": unmapped(execution.runtime)}  # fmt: skip
        futures = {
            name: execution.runner.map(
                fold_task(cv, name), {"fold": folds, "model": unmapped(model), **shared}
            )
            for name, model in models.items()
        }
        track_folds_done([future for group in futures.values() for future in group])
        outcomes = {name: fold_outcomes(group, folds) for name, group in futures.items()}

    # Fan-in: one join per configuration, then the comparison.
    results: dict[str, RunMetrics] = {}
    labels = model_labels(models, cv.model)  # distinct, even where label() is the same
    oof_paths: dict[str, str] = {}
    for name, model in models.items():
        run = RunInfo(name=name, model_label=labels[name], config=model.model_dump(mode="json"))
        joined = join_out_of_fold.with_options(task_run_name=f"join-{name}")(
            data, folds, outcomes[name], str(Path(output_dir) / name), run, cv.min_folds
        )
        results[name] = joined.metrics
        oof_paths[name] = joined.paths["oof_predictions.parquet"]
    summary = compare_configurations(results, labels, config.baseline, output_dir, oof_paths)
    return {
        "best": summary["best"],
        "paths": summary["paths"],
        "results": {name: m.model_dump(mode="json") for name, m in results.items()},
    }
