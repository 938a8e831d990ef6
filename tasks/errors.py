"""Error types shared by every task, so retry policies can tell transient from permanent."""

from __future__ import annotations


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


def retry_unless_permanent(task: object, task_run: object, state: object) -> bool:
    """Prefect `retry_condition_fn`: retry anything except errors that would fail again."""
    try:
        state.result()  # type: ignore[attr-defined]
    except PermanentError:
        return False
    except BaseException:
        return True
    return True
