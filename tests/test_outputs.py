"""Output files get normal permissions; unusable output and cache folders fail up front."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasks.errors import PermanentError
from tasks.outputs import (
    check_cache_dir,
    check_output_dir,
    current_umask,
    staged_files,
    write_atomic,
)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and always restore it."""
    saved = os.umask(0o077)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def _mode(path: Path) -> str:
    """ls -l style permissions of a file."""
    return stat.filemode(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "expected"), [(0o022, "-rw-r--r--"), (0o077, "-rw-------"), (0o002, "-rw-rw-r--")]
)
def test_outputs_follow_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int, expected: str
) -> None:
    umask(mask)
    assert current_umask() == mask
    one, two = tmp_path / "one.txt", tmp_path / "sub" / "two.txt"
    write_atomic(one, lambda tmp: tmp.write_text("one"))
    with staged_files(two) as (tmp,):
        tmp.write_text("two")
    assert (_mode(one), _mode(two)) == (expected, expected)
    assert one.read_text() == "one" and two.read_text() == "two"


def test_replacing_an_output_also_gets_normal_mode(
    tmp_path: Path, umask: Callable[[int], None]
) -> None:
    umask(0o022)
    path = tmp_path / "metrics.json"
    path.write_text("old")
    path.chmod(0o600)
    write_atomic(path, lambda tmp: tmp.write_text("new"))
    assert _mode(path) == "-rw-r--r--"
    assert path.read_text() == "new"


def test_cache_dir_is_created_and_resolved(tmp_path: Path) -> None:
    wanted = tmp_path / "a" / "cache"
    assert check_cache_dir.fn(str(wanted)) == str(wanted.resolve())
    assert wanted.is_dir() and list(wanted.iterdir()) == []  # the probe is gone
    assert check_cache_dir.fn(wanted.as_uri()) == str(wanted.resolve())


def test_remote_cache_dir_is_not_probed() -> None:
    assert check_cache_dir.fn("s3://bucket/foldflow-cache") == "s3://bucket/foldflow-cache"
    assert check_cache_dir.fn("memory://cache") == "memory://cache"


def test_cache_dir_under_a_file_fails_up_front(tmp_path: Path) -> None:
    # Fails for root too: no permission bit lets a folder be made inside a regular file.
    (tmp_path / "afile").write_text("not a folder")
    cache = tmp_path / "afile" / "cache"
    with pytest.raises(PermanentError) as excinfo:
        check_cache_dir.fn(str(cache))
    message = str(excinfo.value)
    assert f"cache folder {cache}" in message
    assert "would not be saved or reused" in message
    assert "--cache-dir" in message


def test_output_dir_under_a_file_fails_with_its_own_hint(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(PermanentError, match="--output-dir") as excinfo:
        check_output_dir.fn(str(tmp_path / "afile" / "out"))
    assert "--cache-dir" not in str(excinfo.value)


def test_read_only_cache_dir_fails_up_front(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        if os.access(cache, os.W_OK):  # root ignores the mode bits: where writing works,
            check_cache_dir.fn(str(cache))  # the check passes, and a folder that even root
            cache = Path("/proc/sys")  # cannot create files in stands in for a read-only one
        with pytest.raises(PermanentError, match=r"cache folder .* is not writable"):
            check_cache_dir.fn(str(cache))
    finally:
        (tmp_path / "cache").chmod(0o755)
