"""What the terminal shows of a run's log: an expected error in one line, no pages of reprs.

Prefect prints every failed task and flow run with its traceback, and some of its services
log whole objects (an undeliverable event, for one). On the terminal that buries the one line
that says what went wrong. The console formatter here leaves out the traceback of errors
foldflow raises on purpose (a `FoldflowError`: bad data, a bad config, a failed fold) and
shortens very long lines; the Prefect API still gets every record whole, so the run's logs in
the UI keep the tracebacks. `--verbose` keeps the console as Prefect formats it.
"""

from __future__ import annotations

import logging
import os

MAX_CONSOLE_LINE = 600  # characters of one log message on the terminal


def is_expected(error: BaseException | None) -> bool:
    """Whether an error is one foldflow raises on purpose (its message says it all)."""
    from tasks.errors import FoldflowError

    chain = [error, getattr(error, "__cause__", None), getattr(error, "__context__", None)]
    return any(isinstance(e, FoldflowError) for e in chain)


class ConsoleFormatter(logging.Formatter):
    """Formats as the wrapped formatter does, minus expected tracebacks and runaway lines."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """The record as the terminal should show it; the record itself is left as it was."""
        expected = record.exc_info is not None and is_expected(record.exc_info[1])
        message = record.getMessage()
        if expected or len(message) > MAX_CONSOLE_LINE:
            if len(message) > MAX_CONSOLE_LINE:
                message = message[:MAX_CONSOLE_LINE] + " … (whole line in the run's log)"
            record = logging.makeLogRecord({**record.__dict__, "msg": message, "args": None})
            if expected:
                record.exc_info, record.exc_text = None, None
        return self.inner.format(record)


def console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers in this process (one handler, shared by several loggers)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    found: list[logging.Handler] = []
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        found += [h for h in logger.handlers if isinstance(h, PrefectConsoleHandler)]
    return list(dict.fromkeys(found))


def quiet_console(verbose: bool = False) -> None:
    """Give Prefect's console handlers the console formatter (unless `verbose`)."""
    if verbose:
        return
    for handler in console_handlers():
        if not isinstance(handler.formatter, ConsoleFormatter):
            handler.setFormatter(ConsoleFormatter(handler.formatter))


def warnings_only() -> None:
    """Keep Prefect's INFO lines for the UI and show only warnings in the terminal."""
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"  # worker processes
    for handler in console_handlers():
        handler.setLevel(logging.WARNING)
