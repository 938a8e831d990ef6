"""Error types shared by every task, so retry policies can tell transient from permanent."""

from __future__ import annotations

from typing import Any

# Retry delays double from the configured first delay but never grow past this (seconds).
MAX_RETRY_DELAY_S = 60.0


class FoldflowError(Exception):
    """Base class: every error foldflow raises on purpose derives from it."""


class PermanentError(FoldflowError):
    """An error that will fail again on retry (bad input, bad config): never retried."""


class TransientError(FoldflowError):
    """An error worth retrying (network hiccup, 5xx, timeout, injected fault)."""


class DataValidationError(PermanentError):
    """The input data does not have the schema or values foldflow needs."""


class DownloadError(PermanentError):
    """The source could not be fetched and retrying will not help (4xx, checksum, size cap)."""


class TransientDownloadError(TransientError):
    """The source could not be fetched this time (connection, timeout, 5xx, 429, short body)."""


class FoldFailedError(FoldflowError):
    """One or more folds did not produce a result."""


def describe_failure(error: BaseException) -> str:
    """One line saying why a step failed: the error's type and the first line of its message."""
    return f"{type(error).__name__}: {error}".strip().splitlines()[0][:500]


# Exceptions that mean a mistake in code (ours, or how we call a library), not bad luck: the
# same inputs raise them again, so a retry only wastes the run's time (a KeyError in a fold
# once cost 3 retries per fold). Network, disk and memory errors (OSError, MemoryError, ...)
# and everything else stay retried.
CODE_ERRORS: tuple[type[BaseException], ...] = (
    LookupError,  # KeyError, IndexError
    AttributeError,
    NameError,
    TypeError,
    AssertionError,
    NotImplementedError,
)


def is_permanent(error: BaseException) -> bool:
    """Whether retrying cannot help: a PermanentError, or a mistake in code (CODE_ERRORS)."""
    return isinstance(error, PermanentError) or (
        isinstance(error, CODE_ERRORS) and not isinstance(error, TransientError)
    )


def retry_unless_permanent(_task: object, _task_run: object, state: object) -> bool:
    """Prefect `retry_condition_fn`: retry anything except errors that would fail again."""
    try:
        state.result()  # type: ignore[attr-defined]
    except BaseException as err:  # noqa: BLE001 - classified, not swallowed
        return not is_permanent(err)
    return True


def retry_options(retries: int, delay_s: float) -> dict[str, Any]:
    """Prefect task options for a retried task: the config's numbers, one backoff shape.

    Delays double from `delay_s` (jittered by up to 50%) and stop growing at
    max(MAX_RETRY_DELAY_S, delay_s); delay_s=0 retries at once (jitter is skipped for 0).
    """
    if retries < 0 or delay_s < 0:
        raise ValueError(f"retries and delay_s must be >= 0, got {retries} and {delay_s}")
    from prefect.tasks import exponential_backoff

    cap = max(MAX_RETRY_DELAY_S, delay_s)
    delays = [min(float(d), cap) for d in exponential_backoff(backoff_factor=delay_s)(retries)]
    return {"retries": retries, "retry_delay_seconds": delays, "retry_jitter_factor": 0.5}
