"""The `train-fold` Prefect task: a fold's cache key, seed and stored result around tasks/fit.py."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.clean import CleanedData, load_table
from tasks.config import TRAINING_CODE_VERSION, FoldRuntime, ModelConfig, stable_hash
from tasks.errors import retry_unless_permanent
from tasks.faults import maybe_inject_fault
from tasks.fit import FitSettings, FoldResult, PreparedFold, epochs_per_call, fit_and_predict
from tasks.fold_cards import worker_label
from tasks.folds import FoldSpec
from tasks.logs import current_attempt, run_logger
from tasks.progress import ProgressReporter
from tasks.tf_runtime import device_label, import_tensorflow, keras_session, uses_xla

# FoldResult is defined next to the fit that makes it; the rest of foldflow imports it here.
__all__ = ["FoldResult", "fold_cache_key", "fold_results_storage", "fold_seed", "train_fold"]


def fold_results_storage(cache_dir: str) -> Any:
    """Where fold results persist: a local folder, or any fsspec URL all workers can reach."""
    if "://" in cache_dir and not cache_dir.startswith("file://"):
        from prefect.filesystems import RemoteFileSystem

        return RemoteFileSystem(basepath=f"{cache_dir.rstrip('/')}/folds")
    return Path(cache_dir.removeprefix("file://")).expanduser().resolve() / "folds"


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible seed per fold."""
    return seed * 1000 + fold


def fold_cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    """Key a fold's result by what determines it (data, rows, model, seed, code), not the run."""
    data: CleanedData = parameters["data"]
    fold: FoldSpec = parameters["fold"]
    model: ModelConfig = parameters["model"]
    payload = {
        "data": data.data_key,
        "fold": fold.index,
        "rows": fold.assignment_hash(),
        "model": model.effective(),
        "seed": parameters["seed"],
        # XLA's fusion changes float rounding, so it is part of what determines the result.
        "xla": uses_xla(model, parameters.get("runtime", FoldRuntime())),
        "code": TRAINING_CODE_VERSION,
    }
    return f"fold-{fold.index}-{stable_hash(payload, 32)}"


@lru_cache(maxsize=4)
def _cached_table(data: CleanedData) -> pd.DataFrame:
    """Read the cleaned table once per worker process, however many folds it trains."""
    return load_table(data)


# Retries come from the run's config (`retry_options`, applied in flows/execution.py).
@task(
    name="train-fold",
    task_run_name="{fold.label}",
    retry_condition_fn=retry_unless_permanent,
    cache_key_fn=fold_cache_key,
    persist_result=True,
    result_serializer="pickle",
)
def train_fold(
    data: CleanedData,
    fold: FoldSpec,
    model: ModelConfig,
    seed: int,
    runtime: FoldRuntime = FoldRuntime(),
) -> FoldResult:
    """Train one fold independently so folds can run anywhere, be retried and be cached."""
    logger = run_logger()
    attempt, _ = current_attempt()
    maybe_inject_fault(fold.index, attempt, runtime.faults)
    tf = import_tensorflow(runtime.threads, runtime.gpu, logger)
    device = device_label(runtime.gpu, bool(tf.config.get_visible_devices("GPU")))
    with keras_session(fold_seed(seed, fold.index)):
        prepared = PreparedFold.of(_cached_table(data), data.spec, fold)
        how = FitSettings(
            seed=fold_seed(seed, fold.index),
            span=epochs_per_call(
                model.epochs, runtime.log_every, runtime.validate_every, model.early_stopping
            ),
            progress=ProgressReporter(
                fold=fold.index,
                epochs=model.epochs,
                log_every=runtime.log_every,
                logger=logger,
                artifacts=runtime.progress_artifacts,
                label=fold.label,
                worker=worker_label(),
                device=device,
            ),
            validate_every=runtime.validate_every,
            jit=uses_xla(model, runtime),
            device=device,
            attempt=attempt,
        )
        logger.info(
            "%s/%d attempt %d on worker %s (%s): training on %d rows, testing on %d, %d epochs, "
            "%d thread(s)%s", fold.label, fold.n_folds, attempt, worker_label(), how.device,
            len(prepared.train), len(prepared.test), model.epochs, runtime.threads,
            ", XLA" if how.jit else "",
        )  # fmt: skip
        how.progress.start()
        result = fit_and_predict(tf, prepared, model, how)
    logger.info(
        "%s: %s, %.1f s", fold.label,
        ", ".join(f"{k} {v:.4f}" for k, v in result.run.scores.items()) or "all rows, none tested",
        result.run.train_seconds,
    )  # fmt: skip
    return result
