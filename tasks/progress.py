"""Live training progress: loss lines in the Prefect log and a progress artifact, rate-limited."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.fold_cards import card_key, running_text


@dataclass
class RateLimiter:
    """Emit on the first and last epoch, else every N epochs and at most once per interval."""

    every: int
    total: int
    min_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None
    _last_epoch: int = 0

    def due(self, epoch: int) -> bool:
        """Whether progress for this (1-based) epoch should be reported.

        Epochs may arrive in steps (many epochs per graph call): a report is due when the
        epoch crosses a multiple of `every`, not only when it lands on one.
        """
        now = self.clock()
        crossed = epoch // self.every > self._last_epoch // self.every
        first, last = self._last is None, epoch == self.total
        if first or last or (crossed and now - self._last >= self.min_seconds):
            self._last, self._last_epoch = now, epoch
            return True
        return False


def progress_key(label: str) -> str:
    """A fold's progress-card key (fold-3, fold-2-3 for fold 3 of repeat 2): what readers match."""
    return card_key(label)


def progress_description(label: str, epoch: int, epochs: int, **where: Any) -> str:
    """'fold 3 · 250/500 epochs · 50 % · worker vm:301 (CPU)': what a fold's card says."""
    return running_text(label, epoch, epochs, **where)


@dataclass
class ProgressReporter:
    """Reports a fold's progress through Prefect without slowing the training loop."""

    fold: int
    epochs: int
    log_every: int
    logger: Any
    artifacts: bool = True
    label: str = ""  # fold-3, or fold-2.3 for fold 3 of repeat 2
    worker: str = ""  # host:pid and device, shown on the card while the fold trains
    device: str = ""
    min_seconds: float = 0.5
    validation_history: dict[str, list[float]] = field(default_factory=dict)
    _artifact_id: Any = None
    _loss: float | None = None
    _sender: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._log = RateLimiter(self.log_every, self.epochs, min_seconds=0.0)
        self._bar = RateLimiter(max(1, self.epochs // 20), self.epochs, self.min_seconds)

    def _update_artifact(self, epoch: int, note: str = "") -> None:
        from prefect.artifacts import update_progress_artifact
        from prefect.context import TaskRunContext

        from tasks.run_cards import progress_card

        if not self.artifacts or TaskRunContext.get() is None:
            return
        percent = 100.0 if note else 100.0 * epoch / self.epochs
        # The UI's artifact cards show the description, not the value: it carries the numbers.
        description = note or progress_description(
            self.label or f"fold-{self.fold}", epoch, self.epochs,
            worker=self.worker, device=self.device, loss=self._loss,
        )  # fmt: skip
        try:
            if self._artifact_id is None:  # the card the flow queued, else a new one
                self._artifact_id = progress_card(
                    progress_key(self.label or f"fold-{self.fold}"), percent, description
                )
            else:
                update_progress_artifact(self._artifact_id, percent, description=description)
        except Exception as err:  # noqa: BLE001 - progress must never fail a fold
            self.logger.debug("progress artifact not updated: %s", err)

    def start(self) -> None:
        """Show at once that the fold runs, and where (its card said 'queued')."""
        self._send_progress(0)

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch (1-based) with Keras' logs."""
        self._loss = logs.get("loss", self._loss)
        if self._log.due(epoch):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
            name = self.label or f"fold-{self.fold}"
            self.logger.info("%s epoch %d/%d: %s", name, epoch, self.epochs, shown)
        if self._bar.due(epoch):
            self._send_progress(epoch)

    def _send_progress(self, epoch: int) -> None:
        """Update the artifact off the training thread (an API call can take ~0.3 s).

        An update still in flight makes the next one be skipped, except the last, which waits.
        """
        busy = self._sender is not None and self._sender.is_alive()
        if epoch == self.epochs:
            if busy:
                self._sender.join(timeout=30)
            self._update_artifact(epoch)
        elif not busy:
            context = contextvars.copy_context()  # keeps the task run the artifact belongs to
            self._sender = threading.Thread(
                target=context.run, args=(self._update_artifact, epoch), daemon=True
            )
            self._sender.start()

    def stopped_early(self, epoch: int, best: int, best_loss: float) -> None:
        """Early stopping ended the fold at `epoch`: say so, and show its progress as done."""
        name = self.label or f"fold-{self.fold}"
        note = (
            f"{name.replace('fold-', 'fold ', 1)}: stopped early at epoch {epoch} of "
            f"{self.epochs} (best {best}, validation loss {best_loss:.4f})"
        )
        self.logger.info("%s; its weights of epoch %d restored", note, best)
        if self._sender is not None and self._sender.is_alive():
            self._sender.join(timeout=30)
        self._update_artifact(epoch, note)

    def record_validation(self, epoch: int, scores: dict[str, float]) -> None:
        """Keep the test-fold scores of this epoch for the learning curves.

        Whatever scores the task reports are kept (val_loss and val_accuracy for a classifier,
        val_loss and val_rmse for a regression), each as its own curve.
        """
        self.validation_history.setdefault("val_epoch", []).append(float(epoch))
        for key, value in scores.items():
            if key.startswith("val_"):
                self.validation_history.setdefault(key, []).append(float(value))


def expected_validation_epochs(validate_every: int, epochs_trained: int) -> list[float]:
    """The epochs a fold trained now with `--validate-every N` scores its test rows at."""
    if not validate_every:
        return []
    return [float(e) for e in range(validate_every, epochs_trained + 1, validate_every)]


def folds_with_other_curves(outcomes: list[Any], validate_every: int) -> list[str]:
    """Folds whose recorded test-fold curves are not what `validate_every` asks for.

    `--validate-every` changes only what is recorded, not a fold's numbers, so it is not part
    of the fold cache key: a cached fold comes back with the curves it was trained with.
    """
    other = []
    for res in outcomes:
        history = getattr(res, "history", None)
        if history is None or not len(res.test_positions):  # a failed fold; the refit
            continue
        recorded = list(history.get("val_epoch", []))
        if recorded != expected_validation_epochs(validate_every, res.run.epochs):
            other.append(f"fold-{res.repeat}.{res.fold}" if res.repeat else f"fold-{res.fold}")
    return other


def warn_cached_curves(outcomes: list[Any], validate_every: int, logger: Any = None) -> list[str]:
    """Say which (cached) folds keep curves other than `--validate-every` asks for, and why."""
    other = folds_with_other_curves(outcomes, validate_every)
    if other:
        from tasks.logs import run_logger

        asked = f"every {validate_every} epochs" if validate_every else "none"
        (logger or run_logger()).warning(
            "%s came from the fold cache with the test-fold curves they were trained with "
            "(--validate-every %s asks for %s); the flag changes only what is recorded, so it "
            "is not part of the fold cache key: --refresh retrains them with it",
            ", ".join(other), validate_every, asked,
        )  # fmt: skip
    return other
