"""Human-readable summaries of a finished run for the Prefect UI: markdown, tables, failures."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.logs import run_logger
from tasks.metrics import FailedFold, RunMetrics


def fold_rows(metrics: RunMetrics) -> list[dict[str, Any]]:
    """One JSON-able row per planned fold (failed ones included), for tables."""
    rows: list[dict[str, Any]] = []
    for f in metrics.folds:
        rows.append(
            {
                "fold": f.label,
                **{name: round(value, 4) for name, value in f.scores.items()},
                "epochs": f.epochs,
                **({"best_epoch": f.best_epoch} if f.best_epoch is not None else {}),
                "train_seconds": round(f.train_seconds, 2),
                "worker": f.worker,
                "device": f.device,
                "attempt": f.attempt,
                "status": "ok",
            }
        )
    rows += [{"fold": f.label, "status": f.error} for f in metrics.failed_folds]
    return sorted(rows, key=lambda row: _fold_order(row["fold"]))


def _fold_order(label: str) -> tuple[int, ...]:
    return tuple(int(part) for part in label.removeprefix("fold-").split("."))


def _score_lines(metrics: RunMetrics) -> list[str]:
    """The headline scores as markdown bullets."""
    linear = metrics.linear_baseline
    beside = (
        [f"- linear baseline ({linear.model}, same folds and preprocessing): OOF "
         f"{linear.headline}, {linear.seconds:.1f} s"]
        if linear else []
    )  # fmt: skip
    if metrics.task == "regression":
        return [
            f"- out-of-fold RMSE: **{metrics.rmse:.4f}**, MAE {metrics.mae:.4f}, "
            f"R² {metrics.r2:.4f}, MAPE {_percent(metrics.mape)}",
            f"- per-fold RMSE: {metrics.mean_rmse:.4f} ± {metrics.std_rmse:.4f} (mean ± std)",
            f"- baseline (predict the training-fold mean): RMSE {metrics.baseline_rmse:.4f}",
            *beside,
        ]
    return [
        f"- out-of-fold accuracy: **{metrics.final_accuracy:.4f}**; balanced accuracy "
        f"{_number(metrics.balanced_accuracy)}; ROC-AUC {_number(metrics.roc_auc)}",
        f"- per-fold accuracy: {metrics.mean_accuracy:.4f} ± {metrics.std_accuracy:.4f}"
        " (mean ± std over folds)",
        f"- log-loss: {metrics.log_loss:.4f}; majority class: {metrics.majority_accuracy:.4f}",
        *beside,
    ]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def render_summary(metrics: RunMetrics, paths: dict[str, str]) -> str:
    """The markdown summary shown in the Prefect UI."""
    partial = ""
    if metrics.partial:
        partial = " (**partial**: " + ", ".join(f.label for f in metrics.failed_folds) + " missing)"
    lines = [
        f"# Cross-validation: {metrics.headline}",
        "",
        f"- task: {metrics.task} ({metrics.task_reason}); target `{metrics.target}`; "
        f"{metrics.n_scored} of {metrics.n_rows} rows scored{partial}",
        *_score_lines(metrics),
        f"- data sha256: `{metrics.data_sha256 or '?'}`",
    ]
    if metrics.repeat_scores:
        shown = ", ".join(f"{v:.4f}" for v in metrics.repeat_scores)
        lines.append(f"- per repeat: {shown}")
    rows = fold_rows(metrics)
    score_names = [k for k in (rows[0] if rows else {}) if k not in _FOLD_COLUMNS]
    lines += [
        "",
        "## Per fold",
        "",
        "| fold | " + " | ".join(score_names) + " | epochs | seconds | worker | attempt |",
        "|---|" + "---:|" * len(score_names) + "---:|---:|---|---:|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['fold']} | failed: {row['status']} |")
            continue
        scores = " | ".join(f"{row[name]:.4f}" for name in score_names)
        lines.append(
            f"| {row['fold']} | {scores} | {_epochs_cell(row)} | {row['train_seconds']:.1f} | "
            f"{row['worker']} ({row['device']}) | {row['attempt']} |"
        )
    if metrics.task == "classification":
        lines += _class_tables(metrics)
    lines += ["", "## Files", "", "```", *paths.values(), "```"]
    return "\n".join(lines) + "\n"


def _epochs_cell(row: dict[str, Any]) -> str:
    """Epochs trained, and the best one kept when early stopping ended the fold."""
    best = row.get("best_epoch")
    return f"{row['epochs']}" + (f" (best {best})" if best is not None else "")


_FOLD_COLUMNS = {
    "fold", "epochs", "best_epoch", "train_seconds", "worker", "device", "attempt", "status"
}  # fmt: skip


def _class_tables(metrics: RunMetrics) -> list[str]:
    """Per-class scores and the confusion matrix, as markdown tables."""
    classes = metrics.classes
    lines = ["", "## Per class", "", "| class | precision | recall | F1 | support |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for cls in classes:
        c = metrics.per_class[cls]
        lines.append(f"| {cls} | {c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} | {c.support} |")
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(classes) + " |",
              "|---|" + "---:|" * len(classes)]  # fmt: skip
    for cls, row in zip(classes, metrics.confusion_matrix):
        lines.append(f"| **{cls}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _in_run() -> bool:
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError

    try:
        get_run_context()
    except MissingContextError:
        return False
    return True


def failure_line(failed: list[FailedFold], limit: int = 300) -> str:
    """'fold 3 failed after 1 attempt: InjectedFault: …': the reason, first, for the card."""
    line = "; ".join(f"{f.label.replace('-', ' ', 1)} {f.error}" for f in failed)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failures_description(failed: list[FailedFold], attempt: int, earlier: str = "") -> str:
    """What the `failed-folds` card says: the reason first, or none failed (and what did before)."""
    if failed:
        return failure_line(failed) + (f" (attempt {attempt})" if attempt > 1 else "")
    if attempt == 1:
        return "No failed folds"
    before = earlier.split(" (attempt ")[0]
    return f"No failed folds (attempt {attempt}" + (f"; before: {before})" if before else ")")


def publish_failures(failed: list[FailedFold]) -> None:
    """The `failed-folds` table: each failed fold and why, or one row saying none failed.

    Always written, as the run's one `failed-folds`: a retry's replaces the attempt before
    (whose reason its description keeps), so the run's page shows only the current one.
    """
    from prefect.runtime import flow_run

    from tasks.run_cards import create_run_artifact, replace_artifact, table_data

    if not _in_run():
        return
    rows = [{"fold": f.label, "failure": f.error} for f in failed]

    def create(earlier: list[Any]) -> Any:
        previous = (earlier[0].description or "") if earlier else ""
        return create_run_artifact(
            "failed-folds", "table",
            table_data(rows or [{"fold": "-", "failure": "no failed folds"}]),
            failures_description(failed, flow_run.run_count or 1, previous),
        )  # fmt: skip

    replace_artifact("failed-folds", create)


def oof_preview(table: pd.DataFrame, rows: int = 10) -> str:
    """The first rows of the OOF table as markdown (the UI cannot open local files)."""
    head = table.head(rows).copy()
    for column in head.columns:
        if head[column].dtype.kind == "f":
            head[column] = head[column].map(lambda v: f"{v:.4f}")
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(map(str, values)) + " |" for values in head.to_numpy()]
    return "\n".join(lines)


def picture_markdown(paths: dict[str, str]) -> str:
    """The run's PNGs inline (data URIs), so the Artifacts page shows them without file access."""
    parts = []
    for name, path in paths.items():
        if name.endswith(".png") and Path(path).exists():
            encoded = base64.b64encode(Path(path).read_bytes()).decode()
            parts.append(f"## {name}\n\n![{name}](data:image/png;base64,{encoded})\n")
    return "\n".join(parts)


def one_line_summary(metrics: RunMetrics) -> str:
    """'OOF accuracy 0.6280 · 5 folds · 0.6280 ± 0.0140': the score, where a card shows it."""
    planned = len(metrics.folds) + len(metrics.failed_folds)
    folds = f"{len(metrics.folds)} of {planned} folds" if metrics.partial else f"{planned} folds"
    if metrics.task == "regression":
        line = (
            f"RMSE {metrics.rmse:.4g} · R² {metrics.r2:.2f} · {folds} · "
            f"fold RMSE {metrics.mean_rmse:.4g} ± {metrics.std_rmse:.2g}"
        )
    else:
        line = (
            f"OOF accuracy {metrics.final_accuracy:.4f} · {folds} · "
            f"{metrics.mean_accuracy:.4f} ± {metrics.std_accuracy:.4f}"
        )
    if metrics.partial:
        line += " · partial: " + ", ".join(f.label for f in metrics.failed_folds) + " missing"
    return line


def score_tag(metrics: RunMetrics) -> str:
    """The run's score as a tag the Runs list shows: acc-0.628, or rmse-55.89."""
    if metrics.task == "regression":
        return f"rmse-{metrics.rmse:.4g}"
    return f"acc-{metrics.final_accuracy:.3f}"


SCORE_TAG_PREFIXES = ("acc-", "rmse-")  # a retried run's new score replaces its old tag


def _replace_markdown(key: str, markdown: str, description: str) -> None:
    from tasks.run_cards import create_run_artifact, replace_artifact

    replace_artifact(key, lambda _: create_run_artifact(key, "markdown", markdown, description))


def publish_artifacts(outcome: Any) -> None:
    """Table, summary, picture and preview artifacts for the UI; a no-op outside a Prefect run.

    Each is the run's one artifact of its key (a retry's replaces the attempt before).
    """
    from tasks.run_cards import create_run_artifact, replace_artifact, table_data

    if not _in_run():
        return
    metrics, paths = outcome.metrics, outcome.paths
    summary = one_line_summary(metrics)
    replace_artifact(
        "fold-results",
        lambda _: create_run_artifact(
            "fold-results", "table", table_data(fold_rows(metrics)), f"Per fold: {summary}"
        ),
    )
    _replace_markdown("cv-summary", render_summary(metrics, paths), summary)
    pictures = picture_markdown(paths)
    if pictures:
        names = " and ".join(name.removesuffix(".png").replace("_", " ") for name in paths
                             if name.endswith(".png") and name in pictures)  # fmt: skip
        _replace_markdown("cv-pictures", f"# Pictures\n\n{pictures}", f"Plots: {names}")
    oof = paths.get("oof_predictions.parquet")
    if oof:
        table = pd.read_parquet(oof)
        _replace_markdown(
            "oof-table",
            f"# Out-of-fold predictions (first rows of {len(table)})\n\n"
            f"{oof_preview(table)}\n\nThe whole table:\n\n```\n{oof}\n```\n",
            f"OOF predictions: first rows of {len(table)}",
        )
    run_logger().debug("artifacts published")
