"""Atomic output files: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
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


def _backup(path: Path) -> Path | None:
    """A hard link (or copy) of an existing file, to restore it if a later rename fails."""
    if not path.exists():
        return None
    backup = temp_sibling(path)
    backup.unlink()
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup


@contextmanager
def staged_files(*paths: Path) -> Iterator[list[Path]]:
    """Yield temporary names for `paths`; put them all in place only if the block succeeds.

    If renaming fails part-way, the files already replaced are restored from backups, so the
    folder never holds a mix of old and new outputs.
    """
    temps = [temp_sibling(p) for p in paths]
    replaced: list[tuple[Path, Path | None]] = []
    try:
        yield temps
        for tmp, final in zip(temps, paths):
            replaced.append((final, _backup(final)))
            os.replace(tmp, final)
    except BaseException:
        for final, backup in reversed(replaced):
            if backup is not None:
                os.replace(backup, final)
            else:
                final.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        for _, backup in replaced:
            if backup is not None:
                backup.unlink(missing_ok=True)


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
