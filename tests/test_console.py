"""The terminal shows an expected error in one line; the API's copy of the log keeps it whole."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.console import MAX_CONSOLE_LINE, ConsoleFormatter, console_handlers, quiet_console
from tasks.errors import DataValidationError

ROOT = Path(__file__).resolve().parents[1]


def record_with(error: BaseException, message: str = "Task run failed") -> logging.LogRecord:
    try:
        raise error
    except BaseException:  # noqa: BLE001 - the record carries whatever was raised
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, message,
                                 None, sys.exc_info())  # fmt: skip


def test_an_expected_error_is_one_line_and_the_record_keeps_its_traceback():
    record = record_with(DataValidationError("data.csv: target column 'y' not found"))
    shown = ConsoleFormatter(logging.Formatter("%(levelname)s | %(message)s")).format(record)
    assert shown == "ERROR | Task run failed"
    assert record.exc_info is not None  # the API handler formats the same record afterwards
    assert "Traceback" in logging.Formatter().format(record)


def test_an_error_raised_from_an_expected_one_is_one_line_too():
    wrapper = RuntimeError("Task run encountered an exception")
    wrapper.__cause__ = DataValidationError("no column 'y'")
    assert "Traceback" not in ConsoleFormatter(None).format(record_with(wrapper))


def test_an_unexpected_error_keeps_its_traceback_on_the_terminal():
    shown = ConsoleFormatter(None).format(record_with(ZeroDivisionError("a bug")))
    assert "Traceback" in shown and "ZeroDivisionError: a bug" in shown


def test_a_runaway_line_is_shortened_on_the_terminal_only():
    record = logging.LogRecord("prefect.events", logging.ERROR, __file__, 1,
                               "failed to process item %r", ("Event(" + "x" * 5000 + ")",),
                               None)  # fmt: skip
    shown = ConsoleFormatter(None).format(record)
    assert len(shown) < MAX_CONSOLE_LINE + 60 and shown.endswith("(whole line in the run's log)")
    assert len(record.getMessage()) > 5000


def test_quiet_console_wraps_prefects_console_handler_unless_verbose():
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler()
    original = logging.Formatter("%(message)s")
    handler.setFormatter(original)
    logging.getLogger("prefect").addHandler(handler)
    try:
        assert handler in console_handlers()
        quiet_console(verbose=True)
        assert handler.formatter is original
        quiet_console()
        quiet_console()  # idempotent: wrapped once
        assert isinstance(handler.formatter, ConsoleFormatter)
        assert handler.formatter.inner is original
    finally:
        logging.getLogger("prefect").removeHandler(handler)


@pytest.mark.slow  # a CLI subprocess with its local API
def test_a_data_error_ends_the_terminal_output_in_one_line_without_tracebacks(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("a,b,y\n1,2,x\n3,4,y\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--no-progress", "--source", str(source),
         "--target", "nope", "--epochs", "2", "--cache-dir", str(tmp_path / "cache"),
         "--output-dir", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**env, "PREFECT_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("foldflow: error: DataValidationError:") and "'nope'" in last
