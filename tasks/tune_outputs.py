"""A study's files: trials.parquet and best.yaml, written atomically under <output-dir>/tune."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from tasks.config import CVConfig, ModelConfig
from tasks.outputs import staged_files
from tasks.redact import redact_source

TRIALS_PARQUET, BEST_YAML = "trials.parquet", "best.yaml"


def best_config(cv: CVConfig, model: ModelConfig) -> CVConfig:
    """The run the best trial was: `foldflow run --config best.yaml` cross-validates it."""
    return cv.model_copy(update={"model": model, "refresh": False})


def best_yaml(config: CVConfig) -> str:
    """best.yaml's text: the CVConfig, with any credentials in the source masked."""
    payload = config.model_dump(mode="json")
    header = "# The best trial's CVConfig: foldflow run --config best.yaml\n"
    shown = redact_source(config.source)
    if shown != config.source:
        payload["source"] = shown
        header += "# The source's credentials are masked: put them back to run it.\n"
    return header + yaml.safe_dump(payload, sort_keys=False)


def write_tune_files(output_dir: str, table: pd.DataFrame, best: CVConfig) -> dict[str, str]:
    """trials.parquet and best.yaml, both in place or neither."""
    folder = Path(output_dir)
    paths = {TRIALS_PARQUET: folder / TRIALS_PARQUET, BEST_YAML: folder / BEST_YAML}
    with staged_files(*paths.values()) as (parquet, best_file):
        table.to_parquet(parquet, index=False)
        best_file.write_text(best_yaml(best))
    return {name: str(path) for name, path in paths.items()}
