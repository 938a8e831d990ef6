"""The tune DAG: fetch -> clean -> holdout -> plan -> trials of k folds -> best -> holdout score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, unmapped
from prefect.states import Failed, State

from flows.cross_validate import fetch_and_clean
from flows.execution import as_inputs, collect_outcomes, fold_execution, fold_task
from flows.naming import short_run_id, tag_flow_run
from flows.search import Search, fail_interrupted
from tasks.bundle import write_model_bundle
from tasks.clean import CleanedData
from tasks.folds import plan_folds
from tasks.holdout import split_holdout
from tasks.join import join_out_of_fold, split_outcomes
from tasks.logs import run_logger
from tasks.metrics import FailedFold, RunInfo
from tasks.objective import Truth, direction, pooled_score, resolve_metric
from tasks.outputs import check_output_dir
from tasks.redact import redact_source
from tasks.report import picture_markdown
from tasks.trials import counts_toward_study, plot_study, progress_line, publish_trials
from tasks.tune_config import TuneConfig
from tasks.tune_outputs import best_config, write_tune_files


def tune_run_name() -> str:
    """tune-<flow run id>: unique, the same in logs and the UI."""
    return f"tune-{short_run_id()}"


def open_study(config: TuneConfig, name: str, metric: str) -> Any:
    """The Optuna study (created, or loaded to resume), with the sampler and pruner asked for."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # foldflow logs each trial itself
    seed = config.cv.seed if config.sampler_seed is None else config.sampler_seed
    sampler = (optuna.samplers.TPESampler(seed=seed) if config.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))  # fmt: skip
    pruner = optuna.pruners.PercentilePruner(
        config.prune_keep, n_startup_trials=config.prune_startup_trials,
        n_warmup_steps=config.prune_warmup_folds,
    )  # fmt: skip
    url = config.storage_url()
    storage: Any = url
    for prefix in ("sqlite:///", "journal:///"):
        if url.startswith(prefix):
            Path(url.removeprefix(prefix)).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:///")))
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction(metric), sampler=sampler,
        pruner=pruner, load_if_exists=True,
    )  # fmt: skip
    run_logger().info("study %s in %s (%s %s)", name, redact_source(url), study.direction.name
                      .lower(), metric)  # fmt: skip
    return study


def read_truth(data: CleanedData) -> Truth:
    """Every row's target in the cleaned table, for the trials' pooled scores."""
    target = pd.read_parquet(data.path, columns=[data.spec.target])[data.spec.target]
    return Truth.of(data.spec, target.to_numpy())


@flow(name="tune", flow_run_name=tune_run_name, log_prints=True)
def tune(config: TuneConfig = TuneConfig()) -> dict[str, Any] | State:
    """Search hyperparameters; every trial is a k-fold cross-validation, pruned fold by fold."""
    cv = config.cv
    with fold_execution(cv, tasks=cv.n_fold_tasks * config.parallel_trials) as execution:
        data = fetch_and_clean(cv)
        tag_flow_run([f"data-{data.raw_sha256[:8]}", f"runner-{cv.execution.runner}", "tune"])
        metric = resolve_metric(config.metric, data.spec.task)
        split = split_holdout(data, config.holdout, cv.seed, cv.folds) if config.holdout else None
        search_data = split.search if split else data
        folds = plan_folds(search_data, cv.folds, cv.shuffle, cv.seed, cv.splitter, cv.repeats,
                           redact_source(cv.source))  # fmt: skip
        output_dir = check_output_dir(str(config.output_folder()))

        # The trials: Optuna asks, k fold tasks per trial train, Optuna is told.
        study = open_study(config, config.study_for(data.data_key), metric)
        resumed = fail_interrupted(study)
        progress: list[Any] = [None]

        def show_progress() -> None:
            trials = study.get_trials(deepcopy=False)
            done = sum(counts_toward_study(t) for t in trials)
            best = best_of(study)
            line = progress_line(trials, config.trials, best)
            table = trials_frame(study, config)
            progress[0] = publish_trials(table, line, done, config.trials, progress[0])

        finished = sum(counts_toward_study(t) for t in study.get_trials(deepcopy=False))
        search = Search(study, config.space, cv, search_data, folds, read_truth(search_data),
                        metric, execution, config.prune, config.parallel_trials,
                        show_progress)  # fmt: skip
        run_logger().info(
            "%d trials finished before, %d to run%s", finished, max(0, config.trials - finished),
            f"; {resumed} interrupted trial(s) run again from cached folds" if resumed else "",
        )  # fmt: skip
        stats = search.run(max(0, config.trials - finished))
        show_progress()
        best = best_of(study)
        if best is None:
            return Failed(message=f"no trial of study {study.study_name} completed")
        model = config.space.model_for(study.best_trial.params, cv.model)

        # The best trial again: its folds come from the cache; the holdout fold trains once.
        train = fold_task(cv).with_options(task_run_name="best.{fold.label}")
        inputs = {"data": search_data, "model": model, "seed": cv.seed,
                  "runtime": execution.runtime}  # fmt: skip
        futures = execution.runner.map(
            train, {"fold": folds, **{name: unmapped(v) for name, v in inputs.items()}}
        )
        final = None
        if split is not None:
            final = execution.runner.submit(
                train.with_options(task_run_name="best.holdout"),
                {**inputs, "data": data, "fold": split.final},
            )
        outcomes = collect_outcomes(futures, folds, final)

    # The best trial's outputs, then the holdout score, then the study's files.
    best_dir = str(Path(output_dir) / "best")
    joined = join_out_of_fold(data=search_data, folds=folds,
                              outcomes=as_inputs(outcomes.folds), output_dir=best_dir,
                              run=RunInfo(name=f"trial-{best[0]}",
                                          model_label=model.label()))  # fmt: skip
    results, _ = split_outcomes(folds, outcomes.folds)
    bundle = write_model_bundle(search_data, as_inputs(results), joined.metrics, best_dir,
                                model, cv.data, cv.config_hash())  # fmt: skip
    holdout = None
    if isinstance(outcomes.refit, FailedFold):
        return Failed(message=f"the best config's refit for the holdout {outcomes.refit.error}")
    if outcomes.refit is not None:
        holdout = pooled_score(metric, read_truth(data), [outcomes.refit])
    table = trials_frame(study, config)
    paths = write_tune_files(output_dir, table, best_config(cv, model))
    paths.update(plot_study(study, Path(output_dir)))
    publish_pictures(paths)
    summary = {
        "study": study.study_name,
        "storage": redact_source(config.storage_url()),
        "metric": metric,
        "best_trial": best[0],
        "cv_score": best[1],
        "holdout_score": holdout,
        "holdout_rows": 0 if split is None else int(len(split.holdout_positions)),
        "search_rows": search_data.n_rows,
        "trials": table["state"].value_counts().to_dict(),
        "folds_submitted": stats.folds_submitted,
        "storage_ms_per_trial": 1000 * stats.storage_seconds / max(1, stats.trials_run),
        "paths": {**paths, "best": best_dir, "model": bundle},
    }
    run_logger().info("%s", describe_result(summary))
    return summary


def best_of(study: Any) -> tuple[int, float] | None:
    """(number, value) of the best completed trial, if any."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial.number, float(study.best_value)


def trials_frame(study: Any, config: TuneConfig) -> pd.DataFrame:
    """The study's trials as the table trials.parquet holds."""
    from tasks.trials import trials_table

    return trials_table(study.get_trials(deepcopy=False), config.space)


def describe_result(summary: dict[str, Any]) -> str:
    """Both numbers, named as what they are: the selected CV score and the untouched holdout."""
    metric = summary["metric"]
    line = (f"best trial {summary['best_trial']}: cross-validated {metric} "
            f"{summary['cv_score']:.4f} on {summary['search_rows']} search rows (the score "
            "it was selected on, so biased upwards)")  # fmt: skip
    if summary["holdout_score"] is not None:
        line += (f"; holdout {metric} {summary['holdout_score']:.4f} on "
                 f"{summary['holdout_rows']} rows the search never saw (refit on the search "
                 "rows, scored once)")  # fmt: skip
    return line


def publish_pictures(paths: dict[str, str]) -> None:
    """Optuna's pictures inline on the run's Artifacts page."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    pictures = picture_markdown(paths)
    if pictures and FlowRunContext.get() is not None:
        create_markdown_artifact(
            markdown=f"# Study\n\n{pictures}", key="tune-pictures", description="Study plots"
        )
