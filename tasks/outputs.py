"""Atomic output files: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import task

from tasks.errors import PermanentError


def temp_sibling(path: Path) -> Path:
    """A fresh hidden temporary name beside `path` (same filesystem, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


@contextmanager
def staged_files(*paths: Path) -> Iterator[list[Path]]:
    """Yield temporary names for `paths`; rename them all into place only if the block succeeds."""
    temps = [temp_sibling(p) for p in paths]
    try:
        yield temps
        for tmp, final in zip(temps, paths):
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through `write(tmp)` and rename it into place."""
    with staged_files(path) as (tmp,):
        write(tmp)


@task(name="check-output-dir", task_run_name="check-output-dir")
def check_output_dir(output_dir: str) -> str:
    """Fail before any training if results could not be written."""
    path = Path(output_dir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_sibling(path / "probe")
        probe.unlink()
    except OSError as err:
        raise PermanentError(
            f"output folder {path} is not writable ({err.strerror or err}); "
            "choose another with --output-dir"
        ) from err
    return str(path)
