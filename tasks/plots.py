"""Pictures people would rather look at than read: learning curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window (workers and CI have no display)
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(results: list[Any], path: Path) -> None:
    """Training loss per epoch for each fold (and validation loss when it was recorded)."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for res in sorted(results, key=lambda r: r.fold):
        loss = res.history.get("loss", [])
        epochs = res.history.get("epoch") or range(1, len(loss) + 1)
        (line,) = ax.plot(epochs, loss, label=f"fold {res.fold}", lw=1.2)
        if res.history.get("val_loss"):
            ax.plot(res.history["val_epoch"], res.history["val_loss"], "--", color=line.get_color())
    ax.set(xlabel="epoch", ylabel="loss (training; dashed: test fold)", title="Learning curves")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())  # plain text, no mathtext
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend()
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
