"""Human-readable summaries of a finished run for the Prefect UI: markdown, tables, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.logs import run_logger


def fold_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON-able row per fold, for tables."""
    done = {f["fold"]: f for f in metrics["folds"]}
    rows = []
    for index, _ in enumerate(metrics["fold_accuracy"], start=1):
        f = done.get(index)
        if f is None:
            reason = metrics["fold_errors"].get(str(index), "missing")
            rows.append({"fold": index, "accuracy": None, "log_loss": None, "status": reason})
            continue
        rows.append(
            {
                "fold": index,
                "accuracy": round(f["accuracy"], 4),
                "log_loss": round(f["log_loss"], 4),
                "epochs": f["epochs"],
                "train_seconds": round(f["train_seconds"], 2),
                "worker": f["worker"],
                "device": f["device"],
                "attempt": f["attempt"],
                "status": "ok",
            }
        )
    return rows


def render_summary(metrics: dict[str, Any], paths: dict[str, str]) -> str:
    """The markdown summary shown in the Prefect UI."""
    classes = metrics["classes"]
    lines = [
        f"# Cross-validation: accuracy {metrics['final_accuracy']:.4f}",
        "",
        f"- out-of-fold accuracy: **{metrics['final_accuracy']:.4f}** over "
        f"{metrics['n_scored']} of {metrics['n_rows']} rows"
        + (
            " (**partial**: folds " + ", ".join(map(str, metrics["missing_folds"])) + " missing)"
            if metrics["partial"]
            else ""
        ),
        f"- per-fold accuracy: {metrics['mean_accuracy']:.4f} ± {metrics['std_accuracy']:.4f}"
        " (mean ± std over folds)",
        f"- log-loss: {metrics['log_loss']:.4f}; "
        f"majority class: {metrics['majority_accuracy']:.4f}",
        f"- data sha256: `{metrics.get('data_sha256', '?')}`",
        "",
        "## Per fold",
        "",
        "| fold | accuracy | log-loss | seconds | worker | attempt |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for row in fold_rows(metrics):
        if row["status"] != "ok":
            lines.append(f"| {row['fold']} | failed | | | {row['status']} | |")
        else:
            lines.append(
                f"| {row['fold']} | {row['accuracy']:.4f} | {row['log_loss']:.4f} | "
                f"{row['train_seconds']:.1f} | {row['worker']} ({row['device']}) | "
                f"{row['attempt']} |"
            )
    lines += ["", "## Per class", "", "| class | precision | recall | F1 | support |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for cls in classes:
        c = metrics["per_class"][cls]
        lines.append(
            f"| {cls} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
        )
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(classes) + " |",
              "|---|" + "---:|" * len(classes)]  # fmt: skip
    for cls, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"| **{cls}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Files", ""]
    lines += [f"- {name}: `{path}`" for name, path in paths.items()]
    return "\n".join(lines) + "\n"


def _in_run() -> bool:
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError

    try:
        get_run_context()
    except MissingContextError:
        return False
    return True


def publish_failures(failed: dict[int, str]) -> None:
    """A table artifact naming each failed fold, its final state, attempts and error."""
    from prefect.artifacts import create_table_artifact

    if _in_run():
        create_table_artifact(
            table=[{"fold": i, "failure": why} for i, why in sorted(failed.items())],
            key="failed-folds",
            description="Folds without a result",
        )


def publish_artifacts(outcome: Any) -> None:
    """Table, summary and link artifacts for the UI; a no-op outside a Prefect run."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    if not _in_run():
        return
    metrics, paths = outcome.metrics, outcome.paths
    create_table_artifact(
        table=fold_rows(metrics), key="fold-results", description="Per-fold results"
    )
    create_markdown_artifact(
        markdown=render_summary(metrics, paths), key="cv-summary", description="Run summary"
    )
    oof = paths.get("oof_predictions.csv")
    if oof:
        create_link_artifact(
            link=Path(oof).resolve().as_uri(), link_text="OOF predictions (CSV)", key="oof-table"
        )
    run_logger().debug("artifacts published")
