"""Pictures people would rather look at than read: learning curves, confusion matrix, scatter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window (workers and CI have no display)
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(results: list[Any], path: Path) -> None:
    """Training loss per epoch for each fold (and the test fold's loss when it was recorded)."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    validated = stopping = False
    for res in sorted(results, key=lambda r: (r.repeat, r.fold)):
        loss = res.history.get("loss", [])
        epochs = res.history.get("epoch") or range(1, len(loss) + 1)
        name = f"fold {res.repeat}.{res.fold}" if res.repeat else f"fold {res.fold}"
        if res.history.get("best_epoch"):  # early stopping: how far it went, what it kept
            name += f" ({len(loss)} epochs, best {res.history['best_epoch'][0]:g})"
        (line,) = ax.plot(epochs, loss, label=name, lw=1.2)
        if res.history.get("stop_loss"):
            stopping = True
            ax.plot(res.history["stop_epoch"], res.history["stop_loss"], ":",
                    color=line.get_color())  # fmt: skip
            ax.axvline(res.history["best_epoch"][0], color=line.get_color(), lw=0.6, alpha=0.5)
        if res.history.get("val_loss"):
            validated = True
            ax.plot(
                res.history["val_epoch"], res.history["val_loss"], "--", color=line.get_color()
            )
    ylabel = "training loss (solid)"
    if validated:
        ylabel += "; test fold (dashed)"
    if stopping:
        ylabel += "; early-stopping validation (dotted, line: best epoch)"
    ax.set(xlabel="epoch", ylabel=ylabel, title="Learning curves")
    values = [v for r in results for v in r.history.get("loss", []) if v > 0]
    if values and max(values) / min(values) > 20:  # a log axis only when the range calls for it
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_predicted_vs_true(
    table: Any, target: str, path: Path, rmse: float | None = None, r2: float | None = None
) -> None:
    """Out-of-fold predictions against the truth (regression); the diagonal is perfect.

    The run's pooled RMSE and R² are printed on the picture, so it says how good it is.
    """
    scored = table[table["predicted"].notna()]
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=100)
    ax.scatter(scored[target], scored["predicted"], s=8, alpha=0.5)
    low = float(min(scored[target].min(), scored["predicted"].min()))
    high = float(max(scored[target].max(), scored["predicted"].max()))
    ax.plot([low, high], [low, high], "k--", lw=1, label="perfect")
    ax.set(xlabel=f"true {target}", ylabel="predicted (out of fold)", title="Predicted vs true")
    if rmse is not None and r2 is not None:
        box = {"boxstyle": "round", "fc": "white", "alpha": 0.8}
        ax.text(0.03, 0.97, f"RMSE {rmse:.4g}\nR² {r2:.3f}", transform=ax.transAxes,
                va="top", ha="left", bbox=box)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")  # the upper left holds the scores
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    """Counts of true (rows) against predicted (columns) classes."""
    size = max(4.0, 0.7 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=9)
    ax.set(xlabel="predicted", ylabel="true", title="Out-of-fold confusion matrix")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
