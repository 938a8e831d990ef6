"""The one typed configuration of a foldflow run; the Prefect UI renders it as a form."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from tasks.data.spec import DataSpec
from tasks.form import form_schema

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = PROJECT_ROOT / "data" / "jh-simple-standin.csv"
REAL_DATA_URL = "https://data.heatonresearch.com/data/t81-558/jh-simple-dataset.csv"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"  # a hex sha256 digest, either case

# Bump when a change to the training code would change a fold's predictions: old cached
# fold results are then no longer reused.
# train-v5 (since train-v2): fold tasks preprocess their own rows (DataSpec), record every
# epoch's loss, and a fold result carries its trained model (.keras bytes), its preprocessing
# params and a typed FoldRun; older results lack them, so they must not be reused.
TRAINING_CODE_VERSION = "train-v5"


def stable_hash(payload: Any, length: int = 64) -> str:
    """Hash a JSON-able payload the same way on every machine and Python run."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class ModelConfig(BaseModel):
    """Everything that determines a fold's model and its training maths (the cache key)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=form_schema(("epochs", "hidden_units"))
    )

    hidden_units: list[PositiveInt] = Field(
        default=[50, 25], min_length=1, description="Units of each hidden Dense layer."
    )
    activation: Literal["relu", "tanh", "sigmoid", "elu", "selu"] = Field(
        default="relu", description="Activation of the hidden layers."
    )
    regularizer: Literal["none", "l1", "l2", "l1_l2"] = Field(
        default="l1", description="Penalty added to each hidden layer."
    )
    regularizer_on: Literal["activity", "kernel"] = Field(
        default="activity", description="Penalise the layer's outputs (activity) or weights."
    )
    l1: FiniteFloat = Field(default=1e-4, ge=0, description="L1 strength (used by l1 and l1_l2).")
    l2: FiniteFloat = Field(default=1e-3, ge=0, description="L2 strength (used by l2 and l1_l2).")
    dropout: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout rate after each hidden layer (0 = none)."
    )
    optimizer: Literal["adam", "sgd", "rmsprop", "adamw"] = Field(
        default="adam", description="Keras optimizer."
    )
    learning_rate: FiniteFloat | None = Field(
        default=None, gt=0, description="None keeps the optimizer's Keras default."
    )
    epochs: int = Field(default=500, ge=1, le=100_000, description="Training epochs per fold.")
    batch_size: int = Field(default=32, ge=1, le=65_536, description="Rows per optimizer step.")
    early_stopping: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="PATIENCE: stop a fold when the loss on a validation part of its training "
        "rows has not improved for this many epochs, and keep its best weights (0 = off).",
    )
    validation_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=0.5,
        description="Share of each fold's training rows held out for early stopping.",
    )

    @model_validator(mode="after")
    def _strengths_match_kind(self) -> ModelConfig:
        if self.regularizer in ("l1", "l1_l2") and self.l1 <= 0:
            raise ValueError(f"regularizer={self.regularizer!r} needs l1 > 0, got {self.l1}")
        if self.regularizer in ("l2", "l1_l2") and self.l2 <= 0:
            raise ValueError(f"regularizer={self.regularizer!r} needs l2 > 0, got {self.l2}")
        return self

    def effective(self) -> dict[str, Any]:
        """The settings that actually change training (unused strengths dropped)."""
        data = self.model_dump()
        if self.regularizer in ("none", "l2"):
            data.pop("l1")
        if self.regularizer in ("none", "l1"):
            data.pop("l2")
        if self.regularizer == "none":
            data.pop("regularizer_on")
        if not self.early_stopping:  # off: the keys (and cached folds) of before it existed
            data.pop("early_stopping")
            data.pop("validation_fraction")
        return data

    def label(self) -> str:
        """A short human name, e.g. 'l1-activity-0.0001' or 'dropout-0.5'."""
        parts = []
        if self.regularizer != "none":
            strength = {"l1": f"{self.l1:g}", "l2": f"{self.l2:g}"}.get(
                self.regularizer, f"{self.l1:g}+{self.l2:g}"
            )
            parts.append(f"{self.regularizer}-{self.regularizer_on}-{strength}")
        if self.dropout:
            parts.append(f"dropout-{self.dropout:g}")
        return "_".join(parts) or "none"


class TrainingLoopConfig(BaseModel):
    """How a fold's training loop runs and reports: shared by the run config and each fold."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=form_schema())

    xla: bool = Field(
        default=True,
        description="XLA-compile each fold's training loop (faster; not used with dropout). "
        "It changes float rounding, so it is part of a fold's cache key.",
    )
    log_every: int = Field(default=50, ge=1, description="Log training loss every N epochs.")
    validate_every: int = Field(
        default=0, ge=0, description="Evaluate the test fold every N epochs (0 = never)."
    )


class ExecutionConfig(TrainingLoopConfig):
    """Where and how folds run; only `xla` can change a fold's numbers (and is in its key)."""

    runner: Literal["process", "thread", "dask"] = Field(
        default="process", description="Worker processes on this machine, threads, or Dask."
    )
    workers: int | None = Field(
        default=None, ge=1, le=256, description="Parallel folds; default min(folds, CPU cores)."
    )
    dask_address: str | None = Field(
        default=None, description="tcp://host:8786 of an existing Dask scheduler."
    )
    gpus: list[int] | None = Field(
        default=None, description="GPU ids to use, one fold per GPU; None = CPU only."
    )
    api_lost_after_s: float = Field(
        default=60.0,
        ge=5,
        description="Stop the run when the Prefect API has not answered for this many seconds "
        "while folds train (finished folds stay persisted; rerun to resume).",
    )

    @field_validator("gpus")
    @classmethod
    def _check_gpus(cls, gpus: list[int] | None) -> list[int] | None:
        from tasks.devices import check_devices

        return None if gpus is None else (check_devices(gpus) or None)

    def uses_dask(self) -> bool:
        """Whether folds run on Dask: asked for, an existing cluster, or GPUs (one per worker)."""
        return self.runner == "dask" or bool(self.dask_address) or bool(self.gpus)

    def starts_workers(self, workers: int) -> bool:
        """Whether a run starts worker processes for its folds (a pool or a local cluster)."""
        if self.uses_dask():
            return not self.dask_address
        return self.runner == "process" and workers > 1

    def resolved_workers(self, folds: int) -> int:
        """Default to one worker per fold, bounded by cores (or one per GPU)."""
        if self.gpus:
            return max(1, min(folds, len(self.gpus)))
        if self.workers:
            return self.workers
        return max(1, min(folds, os.cpu_count() or 1))


class FoldRuntime(TrainingLoopConfig):
    """What one fold task needs to know about where it runs (derived from ExecutionConfig)."""

    threads: int = Field(default=1, ge=1, description="TensorFlow threads for this worker.")
    gpu: int | None = Field(default=None, description="Index of the visible GPU to use.")
    progress_artifacts: bool = Field(default=True, description="Publish progress artifacts.")
    faults: dict[int, int | str] = Field(
        default_factory=dict, description="Injected faults by fold (tasks/faults.py)."
    )

    @classmethod
    def from_execution(
        cls, execution: ExecutionConfig, threads: int, faults: dict[int, int | str] | None = None
    ) -> FoldRuntime:
        """The per-fold runtime of a run: the loop settings plus this worker's share."""
        loop = TrainingLoopConfig.model_fields
        return cls(
            **{name: getattr(execution, name) for name in loop},
            threads=threads,
            # Each Dask GPU worker sees only its own GPU, as its first device: gpu=0 picks it.
            gpu=0 if execution.gpus else None,
            faults=faults or {},
        )


class PoolConfig(BaseModel):
    """A warm pool of fold workers that outlives runs (`foldflow workers start`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int | None = Field(
        default=None, ge=1, le=256,
        description="Fold worker processes kept warm; default one per CPU core (or per GPU).",
    )  # fmt: skip
    gpus: list[int] | None = Field(
        default=None, description="GPU ids, one warm worker per GPU; None = CPU only."
    )
    memory_limit: str = Field(
        default="auto",
        description="Memory per worker (e.g. 2GiB); its nanny restarts a worker that passes "
        "95 percent of it (Dask's memory_limit; auto = RAM / workers).",
    )
    cache_dir: str = Field(
        default=".foldflow/cache", description="Local folder holding the pool's state file."
    )

    @field_validator("gpus")
    @classmethod
    def _check_gpus(cls, gpus: list[int] | None) -> list[int] | None:
        from tasks.devices import check_devices

        return None if gpus is None else (check_devices(gpus) or None)

    def resolved_workers(self) -> int:
        """One worker per GPU, else as asked, else one per CPU core."""
        if self.gpus:
            return len(self.gpus)
        return self.workers or max(1, os.cpu_count() or 1)


class ServeConfig(BaseModel):
    """What `foldflow serve` adds to a served deployment besides its runs' config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warm_workers: int | None = Field(
        default=None, ge=1, le=256,
        description="Keep this many fold workers warm beside the deployment, and send every "
        "run's folds to them (none: each run starts its own workers).",
    )  # fmt: skip


class DownloadConfig(BaseModel):
    """How patiently the source is fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=form_schema())

    timeout_s: float = Field(default=30.0, gt=0, description="Seconds without data: give up.")
    max_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, description="Refuse sources larger than this."
    )
    retries: int = Field(default=3, ge=0, le=20, description="Retries of a failed download.")
    retry_delay_s: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles on each later retry."
    )


class CVConfig(BaseModel):
    """A whole cross-validation run; the defaults reproduce the T81-558 5.3 notebook."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra=form_schema(("source", "data", "model", "folds")),
    )

    source: str = Field(
        default=str(BUNDLED_DATA),
        description=f"CSV: http(s) URL, path or fsspec URL (real data: {REAL_DATA_URL}).",
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="Expected sha256 of the CSV."
    )
    folds: int = Field(default=5, ge=2, le=100, description="Number of folds (k).")
    shuffle: bool = Field(default=True, description="Shuffle rows before splitting into folds.")
    seed: int = Field(default=42, ge=0, description="KFold random_state and per-fold seeds.")
    splitter: Literal["kfold", "stratified", "group", "repeated"] = Field(
        default="kfold",
        description="kfold; stratified (classes balanced across folds); group (rows sharing "
        "data.group_column stay in one fold); repeated (k-fold `repeats` times, reshuffled).",
    )
    repeats: int = Field(
        default=1, ge=1, le=100, description="Repeats of k-fold (splitter=repeated only)."
    )
    data: DataSpec = Field(
        default=DataSpec(),
        description="The table's schema and preprocessing; no target = the jh-simple preset.",
    )
    model: ModelConfig = ModelConfig()
    output_dir: str = Field(default="output", description="Where the OOF table and metrics go.")
    cache_dir: str = Field(
        default=".foldflow/cache", description="Cleaned Parquet and fold results (shared storage)."
    )
    execution: ExecutionConfig = ExecutionConfig()
    download: DownloadConfig = DownloadConfig()
    fold_retries: int = Field(default=2, ge=0, le=20, description="Retries of a failing fold.")
    fold_retry_delay_s: float = Field(
        default=2.0, ge=0, description="First fold retry delay; doubles on each later retry."
    )
    min_folds: int | None = Field(
        default=None, ge=1, description="Write partial results if at least this many folds ran."
    )
    refresh: bool = Field(default=False, description="Retrain folds even if cached.")
    linear_baseline: bool = Field(
        default=True,
        description="Also score a scikit-learn linear model (LogisticRegression / Ridge, the "
        "same preprocessing) on the same folds, reported beside the network (seconds).",
    )
    importance: bool = Field(
        default=False,
        description="Permutation importance on the OOF rows (each fold's model, its own test "
        "rows, one column shuffled): feature_importance.csv and .png.",
    )
    refit: bool = Field(
        default=False,
        description="Also train the same model on all rows (preprocessing fitted on all rows), "
        "cached like a fold, and save it in the model bundle as full.keras.",
    )

    @property
    def n_fold_tasks(self) -> int:
        """How many folds a run trains: k per repeat (the refit not counted)."""
        return self.folds * self.repeats

    @model_validator(mode="after")
    def _check_fold_counts(self) -> CVConfig:
        if self.min_folds is not None and self.min_folds > self.n_fold_tasks:
            raise ValueError(
                f"min_folds={self.min_folds} exceeds the {self.n_fold_tasks} folds planned"
            )
        if self.repeats > 1 and self.splitter != "repeated":
            raise ValueError(f"repeats={self.repeats} needs splitter='repeated'")
        if self.splitter == "group" and not self.data.group_column:
            raise ValueError("splitter='group' needs data.group_column (--group-column)")
        if self.data.group_column and self.splitter != "group":
            # Silently ignoring the groups would split each group across folds (a leak).
            raise ValueError(
                f"data.group_column={self.data.group_column!r} is set but splitter="
                f"{self.splitter!r} ignores groups, so a group's rows would land in several "
                "folds; use --splitter group, or remove the group column"
            )
        return self

    def config_hash(self) -> str:
        """8 hex digits naming what determines the results (data source excluded)."""
        return stable_hash(
            {
                "folds": self.folds,
                "shuffle": self.shuffle,
                "seed": self.seed,
                "splitter": self.splitter,
                "repeats": self.repeats,
                "data": self.data.model_dump(mode="json"),
                "model": self.model.effective(),
            },
            8,
        )


class PredictConfig(BaseModel):
    """Scoring new rows with a saved model bundle (`foldflow predict`, the `predict` flow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default="output/model",
        description="The model bundle folder a run wrote (<output-dir>/model).",
    )
    source: str = Field(
        default=str(BUNDLED_DATA), description="Rows to score: CSV/Parquet path, URL or fsspec URL."
    )
    output: str = Field(
        default="predictions.parquet", description="Predictions file (.parquet, or .csv)."
    )
    use: str = Field(
        default="ensemble",
        pattern=r"^(ensemble|full|fold-\d+(\.\d+)?)$",
        description="ensemble (mean of the fold models), full (the --refit model) or fold-<k>.",
    )
    cache_dir: str = Field(default=".foldflow/cache", description="Where downloads are kept.")
    download: DownloadConfig = DownloadConfig()
    keep: list[str] = Field(
        default=[], description="Input columns copied into the predictions file, after the key."
    )
    keep_all: bool = Field(
        default=False, description="Copy every input column into the predictions file."
    )


class GridEntry(BaseModel):
    """One named model of a comparison: fields that differ from the base model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Folder and table name.")
    changes: dict[str, Any] = Field(default_factory=dict, description="ModelConfig fields.")

    def resolve(self, base: ModelConfig) -> ModelConfig:
        """The full model: the base (notebook) model with this entry's changes."""
        return ModelConfig.model_validate({**base.model_dump(), **self.changes})


# Module 5's techniques: none, L1 (5.3, the notebook), L2, L1+L2, dropout (5.4), dropout + L2.
DEFAULT_GRID = (
    GridEntry(name="none", changes={"regularizer": "none"}),
    GridEntry(name="l1-activity", changes={"regularizer": "l1", "regularizer_on": "activity"}),
    GridEntry(
        name="l2-kernel", changes={"regularizer": "l2", "regularizer_on": "kernel", "l2": 1e-3}
    ),
    GridEntry(
        name="l1l2-kernel",
        changes={"regularizer": "l1_l2", "regularizer_on": "kernel", "l1": 1e-5, "l2": 1e-3},
    ),
    GridEntry(name="dropout", changes={"regularizer": "none", "dropout": 0.5}),
    GridEntry(
        name="dropout-l2",
        changes={"regularizer": "l2", "regularizer_on": "kernel", "l2": 1e-3, "dropout": 0.5},
    ),
)


class CompareConfig(BaseModel):
    """A paired comparison of model configurations on the same folds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cv: CVConfig = CVConfig(output_dir="output/compare")
    grid: list[GridEntry] = Field(default=list(DEFAULT_GRID), min_length=1)
    baseline: str = Field(default="l1-activity", description="Entry the others are tested against.")

    @model_validator(mode="after")
    def _check_grid(self) -> CompareConfig:
        names = [entry.name for entry in self.grid]
        if len(set(names)) != len(names):
            raise ValueError(f"grid names must be unique, got {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not in the grid {names}")
        for entry in self.grid:
            try:
                entry.resolve(self.cv.model)
            except ValueError as err:
                raise ValueError(f"grid entry {entry.name!r}: {err}") from err
        return self

    def models(self) -> dict[str, ModelConfig]:
        """Each entry's full model, by name, in grid order."""
        return {entry.name: entry.resolve(self.cv.model) for entry in self.grid}
