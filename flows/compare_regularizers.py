"""Compare regularizers in one run: configurations × folds fanned out, joined per configuration."""

from pathlib import Path
from typing import Any

from prefect import flow

from flows.cross_validate import fetch_and_clean, run_folds
from tasks.compare import compare_configurations
from tasks.config import CompareConfig
from tasks.folds import plan_folds
from tasks.join import join_out_of_fold
from tasks.outputs import check_output_dir
from tasks.report import label_flow_run


@flow(name="compare-regularizers", log_prints=True)
def compare_regularizers(config: CompareConfig = CompareConfig()) -> dict[str, Any]:
    """Which regularization works best on this data, and is its lead beyond fold noise?"""
    cv = config.cv
    data = fetch_and_clean(cv)
    label_flow_run(
        f"compare-{data.raw_sha256[:8]}-{len(config.grid)}x{cv.folds}",
        [f"runner-{cv.execution.runner}", "compare"],
    )
    folds = plan_folds(data, cv.folds, cv.shuffle, cv.seed, cv.stratified, cv.source)
    output_dir = check_output_dir(cv.output_dir)
    models = config.models()
    # One mapped set of fold tasks over configurations × folds, all on the same folds (paired).
    jobs = [(name, model, fold) for name, model in models.items() for fold in folds]
    outcomes = run_folds(
        data,
        [fold for _, _, fold in jobs],
        [model for _, model, _ in jobs],
        cv,
        [f"-{name}" for name, _, _ in jobs],
    )
    results: dict[str, dict[str, Any]] = {}
    for index, (name, model) in enumerate(models.items()):
        mine = outcomes[index * len(folds) : (index + 1) * len(folds)]
        run_info = {"name": name, "model_label": model.label(), "config": model.model_dump()}
        joined = join_out_of_fold.with_options(task_run_name=f"join-{name}")(
            data, folds, mine, str(Path(output_dir) / name), run_info, cv.min_folds
        )
        results[name] = joined.metrics
    summary = compare_configurations(results, config.baseline, output_dir)
    return {"best": summary["best"], "paths": summary["paths"], "results": results}
