"""What each fold's progress card says: queued from the start, then how far and where it runs.

A fold's card is keyed by its label (`fold-3`, the card's title in the UI) and its text, which
the UI's card shows, starts with the fold: "fold 3 · 2250/3000 epochs · 75 % · worker
vm:301 (CPU) · loss 0.0123". The flow creates every card at 0 % "queued" before the fan-out,
the fold updates its own as it trains, and the flow says "cached" or "failed" as each ends.
"""

from __future__ import annotations

import os
import socket


def worker_label() -> str:
    """host:pid of the process training a fold: the same in its log, its card and metrics."""
    return f"{socket.gethostname()}:{os.getpid()}"


def card_key(label: str) -> str:
    """A fold's card key (fold-3, fold-2-3 for fold 3 of repeat 2): a valid artifact key."""
    return label.replace(".", "-")


def fold_name(label: str) -> str:
    """'fold 3' for fold-3: how a card's text starts."""
    return label.replace("fold-", "fold ", 1)


def running_text(
    label: str, epoch: int, epochs: int, worker: str = "", device: str = "",
    loss: float | None = None,
) -> str:  # fmt: skip
    """'fold 3 · 2250/3000 epochs · 75 % · worker vm:301 (CPU) · loss 0.0123'."""
    parts = [fold_name(label), f"{epoch}/{epochs} epochs", f"{100 * epoch / epochs:.0f} %"]
    if worker:
        parts.append(f"worker {worker}" + (f" ({device})" if device else ""))
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    return " · ".join(parts)


def queued_text(label: str) -> str:
    """'fold 5 · queued': a fold not started yet."""
    return f"{fold_name(label)} · queued"


def ended_text(label: str, state_name: str) -> str | None:
    """A fold's card text once it ended without training here (cached, failed), else None."""
    if state_name == "Cached":
        return f"{fold_name(label)} · done (cached: trained by an earlier run or attempt)"
    if state_name != "Completed":
        return f"{fold_name(label)} · {state_name.lower()} (why: the failed-folds card)"
    return None


def queue_fold_cards(labels: list[str]) -> None:
    """Every fold's card at 0 % 'queued', before any fold starts (a retry's reset).

    One read finds a retry's cards; the cards are then written side by side, not one round
    trip after another, since the folds wait for them.
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from tasks.run_cards import run_artifacts, this_flow_run_id

    if this_flow_run_id() is None:
        return
    keys = {card_key(label): label for label in labels}
    found: dict[str, object] = {}
    for artifact in run_artifacts(list(keys)):  # newest first: the newest card of a key
        if artifact.type == "progress":
            found.setdefault(artifact.key, artifact.id)

    def queue(key: str) -> None:
        text = queued_text(keys[key])
        if key in found:
            update_progress_artifact(found[key], 0.0, description=text)
        else:
            create_progress_artifact(0.0, key=key, description=text)

    with ThreadPoolExecutor(max_workers=min(8, len(keys)) or 1) as pool:
        # Each thread writes for this flow run: the artifacts take its id from the context.
        done = [pool.submit(contextvars.copy_context().run, queue, key) for key in keys]
    for future in done:
        future.result()


def show_fold_ended(label: str, state_name: str) -> None:
    """Say on a fold's card that it came from the cache or failed (a trained fold said done)."""
    from tasks.run_cards import progress_card

    text = ended_text(label, state_name)
    if text is not None:
        progress_card(card_key(label), 100.0 if state_name == "Cached" else None, text)
