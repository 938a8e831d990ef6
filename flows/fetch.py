"""The first step of every command that reads a table: the source, fetched once into the cache."""

from __future__ import annotations

from tasks.config import DownloadConfig
from tasks.download import RawData, download_csv
from tasks.errors import retry_options
from tasks.outputs import check_cache_dir


def fetch_source(
    source: str,
    cache_dir: str,
    download: DownloadConfig,
    sha256: str | None = None,
    in_run: bool = True,
) -> RawData:
    """The raw file, downloaded with the configured retries into `<cache_dir>/downloads`.

    In a run (`run`, `predict`) the cache folder is probed first and both are task runs;
    `in_run=False` (`inspect`) calls the same functions directly, with no retries.
    """
    arguments = (source, f"{cache_dir}/downloads", sha256)
    limits = {"timeout_s": download.timeout_s, "max_bytes": download.max_bytes}
    if not in_run:
        return download_csv.fn(*arguments, **limits)
    check_cache_dir(cache_dir)
    fetch = download_csv.with_options(**retry_options(download.retries, download.retry_delay_s))
    return fetch(*arguments, **limits)
