"""Atomic output files: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from prefect import task

from tasks.errors import PermanentError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded


# The cache's stores, each probed up front: fetch's downloads, clean's typed tables, and the
# fold results Prefect persists (tasks.train.fold_results_storage); a store Prefect cannot
# write would otherwise only log tracebacks while committing each fold.
CACHE_STORES = ("downloads", "cleaned", "folds")


class OutputSpaceError(PermanentError, OSError):
    """The outputs do not fit on their disk (found up front, or when a write ran out of space)."""


def size_text(n_bytes: float) -> str:
    """Bytes as a person reads them, with the exact count: '1.5 GB (1500000000 bytes)'."""
    value, unit = float(n_bytes), "bytes"
    for name in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, name
    return f"{n_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({n_bytes} bytes)"


def check_free_space(folder: Path, needed: int, free: int) -> None:
    """Refuse a run whose outputs cannot fit, before any fold trains on (pure: testable)."""
    if needed > free:
        raise OutputSpaceError(
            f"output folder {folder} has {size_text(free)} free, but this run's outputs (the "
            f"out-of-fold table and the model bundle) need about {size_text(needed)}; free some "
            "space or choose another folder with --output-dir"
        )


@contextmanager
def full_disk_named(folder: Path, what: str) -> Iterator[None]:
    """A write that runs out of space names its folder and files (the OS error names neither)."""
    try:
        yield
    except OSError as err:
        if err.errno not in FULL_DISK or isinstance(err, OutputSpaceError):
            raise
        try:
            free = f"; {size_text(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = ""
        raise OutputSpaceError(
            f"no space left on device writing {what} in {folder} ({err.strerror}{free}); "
            "nothing was half-written, the earlier files are unchanged"
        ) from None


def _umask_by_swapping() -> int:
    """Read the umask the only portable way (set, then restore): not thread-safe, so run once."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# Read at import, while no other foldflow thread writes files; used where /proc is missing.
_UMASK_AT_IMPORT = _umask_by_swapping()


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else the value at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def set_normal_mode(path: str | os.PathLike[str]) -> None:
    """Give a finished temp file the mode a plain open() would (mkstemp makes it owner-only)."""
    os.chmod(path, 0o666 & ~current_umask())


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
    what = ", ".join(p.name for p in paths)
    try:
        with full_disk_named(paths[0].parent, what):
            yield temps
        for tmp in temps:
            set_normal_mode(tmp)
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


def _probe_writable(path: Path) -> None:
    """Create `path` if needed and a file in it, so a folder we cannot use fails before any work."""
    path.mkdir(parents=True, exist_ok=True)
    probe = temp_sibling(path / "probe")
    probe.unlink()


def _local_dir(folder: str) -> Path | None:
    """The local path of a folder or file:// URL, None for a remote fsspec URL (s3://, gs://)."""
    parts = urlsplit(folder)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path)).expanduser().resolve()
    if parts.scheme == "" or len(parts.scheme) == 1:  # a single letter is a Windows drive
        return Path(folder).expanduser().resolve()
    return None


@task(name="check-output-dir", task_run_name="check-output-dir")
def check_output_dir(output_dir: str, needed_bytes: int = 0) -> str:
    """Fail before any training if results could not be written, or would not fit."""
    path = Path(output_dir).expanduser().resolve()
    try:
        _probe_writable(path)
    except OSError as err:
        raise PermanentError(
            f"output folder {path} is not writable ({err.strerror or err}); "
            "choose another with --output-dir"
        ) from err
    check_free_space(path, needed_bytes, shutil.disk_usage(path).free)
    return str(path)


@task(name="check-cache-dir", task_run_name="check-cache-dir")
def check_cache_dir(cache_dir: str) -> str:
    """Fail before any work if the cache could not be written: nothing would be reused.

    Returns the resolved local path, or a remote fsspec URL unchanged (not probed: that would
    need credentials and network before the run even starts).
    """
    path = _local_dir(cache_dir)
    if path is None:
        return cache_dir
    stores = [path / store for store in CACHE_STORES if os.path.lexists(path / store)]
    for folder in (path, *stores):  # a store not made yet is made in the writable cache
        try:
            _probe_writable(folder)
        except OSError as err:
            raise PermanentError(
                f"cache folder {folder} is not writable ({err.strerror or err}), so downloads, "
                "cleaned data and fold results would not be saved or reused; "
                "choose another with --cache-dir"
            ) from err
    return str(path)
