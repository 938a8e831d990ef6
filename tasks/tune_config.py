"""The settings of `foldflow tune`: the run it searches around, the space, the study, the pruner."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.config import CVConfig, stable_hash
from tasks.search_space import DEFAULT_SPACE, SearchSpace

Metric = Literal["auto", "accuracy", "log_loss", "rmse", "mae", "r2"]
MAXIMISED = {"accuracy", "r2"}  # the other metrics are errors: smaller is better


class TuneConfig(BaseModel):
    """A hyperparameter search whose every trial is a k-fold cross-validation of one config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cv: CVConfig = Field(
        default=CVConfig(), description="The run each trial is (its model is the base model)."
    )
    space: SearchSpace = Field(
        default=DEFAULT_SPACE, description="Per model field, the distribution trials draw from."
    )
    trials: int = Field(
        default=20, ge=1, le=100_000,
        description="Finished trials the study should hold; the same command again continues "
        "up to this count.",
    )  # fmt: skip
    parallel_trials: int = Field(
        default=1, ge=1, le=256, description="Trials in flight at once (their folds share workers)."
    )
    prune: bool = Field(
        default=True, description="Stop a trial after a fold when its running score is poor."
    )
    prune_startup_trials: int = Field(
        default=5, ge=0, description="Trials that run all their folds before any is pruned."
    )
    prune_warmup_folds: int = Field(
        default=1, ge=0, description="Folds a trial runs before it may be pruned."
    )
    prune_keep: float = Field(
        default=30, gt=0, lt=100,
        description="Percent of trials kept at each fold: a trial whose running score is "
        "outside that top share of the completed trials' at the same fold stops (50: median).",
    )
    metric: Metric = Field(
        default="auto",
        description="The objective over the pooled out-of-fold predictions; auto = accuracy "
        "(classification) or rmse (regression), as `run` reports.",
    )
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna sampler.")
    sampler_seed: int | None = Field(
        default=None, ge=0, description="Seed of the sampler; none = the run's seed."
    )
    storage: str | None = Field(
        default=None,
        description="Optuna RDB URL (e.g. postgresql://host/db, sqlite:///study.db) or "
        "journal:///path; none = Optuna's journal file under the cache dir.",
    )
    study_name: str | None = Field(
        default=None,
        description="Optuna study name; none = tune-<hash of data, folds, space, metric>.",
    )
    holdout: float = Field(
        default=0.2, ge=0, lt=1,
        description="Share of rows set aside (stratified) that the search never sees; the best "
        "config is refit on the rest and scored once on them (0 = none).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        if self.holdout and self.cv.splitter == "group":
            raise ValueError("holdout splits rows, not groups: use --holdout 0 with splitter=group")
        if self.cv.min_folds is not None:
            raise ValueError("tune scores every fold of a trial; min_folds is not used by tune")
        return self

    def storage_url(self) -> str:
        """Where the study lives: the given URL, or a journal file beside the fold cache.

        Optuna's journal file costs ~14 ms of storage a trial where its SQLite database costs
        ~120 ms (quiet 2 cores, Optuna 5.1); a study an earlier foldflow kept in
        `tune/optuna.db` stays there, so it still resumes.
        """
        if self.storage:
            return self.storage
        folder = Path(self.cv.cache_dir.removeprefix("file://")).expanduser().resolve() / "tune"
        if (folder / "optuna.db").exists():
            return f"sqlite:///{folder / 'optuna.db'}"
        return f"journal:///{folder / 'optuna.journal'}"

    def study_for(self, data_key: str) -> str:
        """The study name: given, or one per (data, folds, base model, space, metric, holdout)."""
        if self.study_name:
            return self.study_name
        what = {
            "data": data_key,
            "cv": self.cv.config_hash(),
            "space": self.space.model_dump(mode="json"),
            "metric": self.metric,
            "holdout": self.holdout,
        }
        return f"tune-{stable_hash(what, 8)}"

    def output_folder(self) -> Path:
        """<output-dir>/tune: trials.parquet, best.yaml, the best trial's bundle, pictures."""
        return Path(self.cv.output_dir) / "tune"
