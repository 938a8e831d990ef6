"""What a study holds, as people read it: the trials table, the progress line, the UI artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.search_space import SearchSpace

# A trial's user attributes: what the table needs beside Optuna's own record of the trial.
FOLD_SCORES, FOLDS_TRAINED, SECONDS, ERROR, OWNER = (
    "fold_scores", "folds_trained", "seconds", "error", "owner",
)  # fmt: skip
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def counts_toward_study(trial: Any) -> bool:
    """A finished trial; one that was cut off by a killed process (FAIL, no error) does not."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and ERROR in trial.user_attrs)


def trial_row(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """One trial as a row: number, state, score, per-fold scores, mean ± std, folds, seconds."""
    state = trial.state.name
    if state == "FAIL" and ERROR not in trial.user_attrs:
        state = "INTERRUPTED"  # its process was killed; its params ran again as a new trial
    scores = [float(s) for s in trial.user_attrs.get(FOLD_SCORES, [])]
    params = space.decode(trial.params) if set(trial.params) <= set(space.params) else trial.params
    row: dict[str, Any] = {
        "number": trial.number,
        "state": state,
        "value": None if trial.value is None else float(trial.value),
        "fold_scores": scores,
        "mean": float(np.mean(scores)) if scores else None,
        "std": float(np.std(scores)) if scores else None,
        "folds_trained": int(trial.user_attrs.get(FOLDS_TRAINED, len(scores))),
        "seconds": float(trial.user_attrs.get(SECONDS, 0.0)),
        "error": trial.user_attrs.get(ERROR, ""),
        "params": json.dumps(params, sort_keys=True),
    }
    for name, value in trial.params.items():
        row[f"param_{name}"] = value
    return row


def trials_table(trials: list[Any], space: SearchSpace) -> pd.DataFrame:
    """Every trial of the study, in number order (trials.parquet)."""
    rows = [trial_row(t, space) for t in sorted(trials, key=lambda t: t.number)]
    return pd.DataFrame(rows)


def progress_line(trials: list[Any], total: int, best: tuple[int, float] | None) -> str:
    """'12 of 40 trials: 9 complete, 3 pruned; best 0.6710 (trial 7)'."""
    states = [t.state.name for t in trials if counts_toward_study(t)]
    parts = [f"{states.count('COMPLETE')} complete", f"{states.count('PRUNED')} pruned"]
    if states.count("FAIL"):
        parts.append(f"{states.count('FAIL')} failed")
    line = f"{len(states)} of {total} trials: " + ", ".join(parts)
    if best is not None:
        line += f"; best {best[1]:.4f} (trial {best[0]})"
    return line


def _json_cell(value: Any) -> Any:
    """A table cell the Prefect API accepts (no NaN, no numpy scalars), scores to 4 places."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, list):
        return ", ".join(f"{v:.4f}" for v in value)
    return value


def publish_trials(table: pd.DataFrame, line: str, done: int, total: int, progress: Any) -> Any:
    """The live `trials` table and the `tune-progress` card; returns the card's id."""
    from prefect.artifacts import (
        create_progress_artifact,
        create_table_artifact,
        update_progress_artifact,
    )
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return progress
    shown = [k for k in table.columns if not k.startswith("param_")]
    rows = [{k: _json_cell(v) for k, v in row.items()} for row in table[shown].to_dict("records")]
    create_table_artifact(table=rows or [{"number": "-"}], key="trials", description=line)
    percent = 100.0 * min(done, total) / total
    if progress is None:
        return create_progress_artifact(percent, key="tune-progress", description=line)
    update_progress_artifact(progress, percent, description=line)
    return progress


def plot_study(study: Any, folder: Path) -> dict[str, str]:
    """Optuna's optimization history and parameter importances as PNGs (what can be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization

    from tasks.outputs import write_atomic

    plots = {
        "optimization_history.png": visualization.matplotlib.plot_optimization_history,
        "param_importances.png": visualization.matplotlib.plot_param_importances,
    }
    paths: dict[str, str] = {}
    import warnings

    from optuna.exceptions import ExperimentalWarning

    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # the matplotlib backend
                axes = draw(study)
        except (ValueError, RuntimeError):  # e.g. importances need two completed trials
            continue
        figure = np.asarray(axes).flat[0].figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        write_atomic(folder / name, lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=100))
        plt.close(figure)
        paths[name] = str(folder / name)
    return paths
