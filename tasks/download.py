"""Download step: fetch the raw CSV once, atomically and hashed, so later steps read one file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.request import url2pathname

import fsspec
import httpx
from prefect import task
from prefect.tasks import exponential_backoff

from tasks.errors import DownloadError, TransientDownloadError, retry_unless_permanent
from tasks.logs import current_attempt, run_logger

CHUNK_SIZE = 1024 * 1024
_HTML_SNIFF_BYTES = 1024
_HTML_START = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html)\b", re.IGNORECASE)
_HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class RawData:
    """A complete local copy of the raw CSV plus its hash, so later steps can trust and cache it."""

    path: str  # local file path of the raw CSV
    sha256: str  # hex sha256 of its content
    source: str  # what the user gave
    n_bytes: int


def _normalize_expected(expected_sha256: str | None) -> str | None:
    """Reject a malformed expected hash up front: it could never match, so fail before fetching."""
    if expected_sha256 is None:
        return None
    expected = expected_sha256.strip().lower()
    if not _SHA256_HEX.match(expected):
        raise DownloadError(f"expected_sha256 must be 64 hex characters, got {expected_sha256!r}")
    return expected


def _check_sha(source: str, expected: str | None, actual: str) -> None:
    """Refuse content whose hash differs from the one the user pinned."""
    if expected is not None and actual != expected:
        raise DownloadError(f"sha256 mismatch for {source}: expected {expected}, got {actual}")


def _local_path(source: str) -> str | None:
    """Return the filesystem path for a plain path or file:// URL, None for any other URL."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(
                f"{source}: file:// URL names host {parts.netloc!r}, expected a local file"
            )
        return url2pathname(parts.path)
    if parts.scheme == "" or len(parts.scheme) == 1:  # a single letter is a Windows drive
        return os.path.expanduser(source)
    return None


def _use_local(source: str, path: str, expected: str | None, max_bytes: int) -> RawData:
    """Hash a local file in place: copying it would only waste disk and time."""
    if not os.path.exists(path):
        raise DownloadError(f"{source}: local file {path} does not exist")
    if not os.path.isfile(path):
        raise DownloadError(f"{source}: {path} is not a regular file")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise DownloadError(f"{path} is {size} bytes, above max_bytes={max_bytes}")
    digest = hashlib.sha256()
    n_bytes = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            n_bytes += len(chunk)
            if n_bytes > max_bytes:  # the file grew while we read it
                raise DownloadError(f"{path} is larger than max_bytes={max_bytes}")
            digest.update(chunk)
    sha256 = digest.hexdigest()
    _check_sha(source, expected, sha256)
    return RawData(path=os.path.abspath(path), sha256=sha256, source=source, n_bytes=n_bytes)


def _store(
    source: str,
    chunks: Iterator[bytes],
    dest_dir: str,
    expected: str | None,
    max_bytes: int,
) -> RawData:
    """Stream chunks to a temp file in dest_dir and rename it into place only once it is verified.

    The temp file is removed on any error, so dest_dir never holds a partial download.
    """
    os.makedirs(dest_dir, exist_ok=True)
    digest = hashlib.sha256()
    n_bytes = 0
    head = b""
    sniffed = False
    tmp_path: str | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False, prefix=".part-") as tmp:
            tmp_path = tmp.name
            for chunk in chunks:
                n_bytes += len(chunk)
                if n_bytes > max_bytes:
                    raise DownloadError(
                        f"{source} is larger than max_bytes={max_bytes} "
                        f"(stopped after {n_bytes} bytes)"
                    )
                if not sniffed:
                    head += chunk[: _HTML_SNIFF_BYTES - len(head)]
                    sniffed = len(head) >= _HTML_SNIFF_BYTES
                    if sniffed:
                        _reject_html_body(source, head)
                digest.update(chunk)
                tmp.write(chunk)
            if not sniffed:
                _reject_html_body(source, head)
            tmp.flush()
            os.fsync(tmp.fileno())
        sha256 = digest.hexdigest()
        _check_sha(source, expected, sha256)
        final = os.path.join(dest_dir, f"{sha256}.csv")
        os.replace(tmp_path, final)
    except BaseException:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
        raise
    return RawData(path=final, sha256=sha256, source=source, n_bytes=n_bytes)


def _reject_html_body(source: str, head: bytes) -> None:
    """An HTML body is a login/error page, not data: fail instead of feeding it to the cleaner."""
    if _HTML_START.match(head):
        start = head.strip()[:20].decode("utf-8", "replace")
        raise DownloadError(f"{source} served an HTML page, expected CSV (body starts {start!r})")


def _http_chunks(source: str, response: httpx.Response, declared: int | None) -> Iterator[bytes]:
    """Yield the decoded body, then fail if fewer bytes arrived than Content-Length promised."""
    yield from response.iter_bytes(CHUNK_SIZE)
    received = response.num_bytes_downloaded
    if declared is not None and received < declared:
        raise TransientDownloadError(
            f"GET {source}: body ended after {received} bytes, Content-Length said {declared}"
        )


def _check_response(source: str, response: httpx.Response, max_bytes: int) -> int | None:
    """Turn a bad status or header into the right error class; return the declared length."""
    where = source if str(response.url) == source else f"{source} (redirected to {response.url})"
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise TransientDownloadError(f"GET {where} returned {status}")
    if response.status_code >= 400:
        raise DownloadError(f"GET {where} returned {status}")
    if response.status_code != 200:
        raise DownloadError(f"GET {where} returned {status}, expected HTTP 200 with the CSV")
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() in _HTML_CONTENT_TYPES:
        raise DownloadError(
            f"{where} served an HTML page, expected CSV (Content-Type: {content_type})"
        )
    raw_length = response.headers.get("content-length")
    declared = int(raw_length) if raw_length and raw_length.strip().isdigit() else None
    identity = response.headers.get("content-encoding", "identity").lower() == "identity"
    if declared is not None and identity and declared > max_bytes:
        raise DownloadError(
            f"{where} declares Content-Length {declared}, above max_bytes={max_bytes}"
        )
    return declared


def _download_http(
    source: str, dest_dir: str, expected: str | None, timeout_s: float, max_bytes: int
) -> RawData:
    """Stream an http(s) URL, mapping each failure to transient (retry) or permanent (stop)."""
    try:
        timeout = httpx.Timeout(timeout_s)
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", source) as response,
        ):
            declared = _check_response(source, response, max_bytes)
            chunks = _http_chunks(source, response, declared)
            return _store(source, chunks, dest_dir, expected, max_bytes)
    except httpx.TimeoutException as exc:
        raise TransientDownloadError(
            f"GET {source} timed out after {timeout_s}s ({type(exc).__name__}: {exc})"
        ) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise TransientDownloadError(f"GET {source} failed: {type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:  # redirect loops, bad URL, undecodable body: will not heal
        raise DownloadError(f"GET {source} failed: {type(exc).__name__}: {exc}") from exc


def _fsspec_chunks(source: str) -> Iterator[bytes]:
    """Read any fsspec URL in chunks, classifying backend errors as transient or permanent."""
    try:
        with fsspec.open(source, "rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                yield chunk
    except FileNotFoundError as exc:
        raise DownloadError(f"{source} does not exist ({exc})") from exc
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise DownloadError(f"{source} cannot be read: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # timeouts, connection resets, generic remote-filesystem errors
        raise TransientDownloadError(
            f"{source} could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    except (ValueError, ImportError) as exc:  # unknown protocol or missing backend package
        raise DownloadError(f"{source} cannot be opened: {type(exc).__name__}: {exc}") from exc


def _fetch(
    source: str, dest_dir: str, expected: str | None, timeout_s: float, max_bytes: int
) -> RawData:
    """Dispatch on the kind of source: local file, http(s) URL, or another fsspec URL."""
    path = _local_path(source)
    if path is not None:
        return _use_local(source, path, expected, max_bytes)
    if urlsplit(source).scheme.lower() in ("http", "https"):
        return _download_http(source, dest_dir, expected, timeout_s, max_bytes)
    return _store(source, _fsspec_chunks(source), dest_dir, expected, max_bytes)


@task(
    name="download",
    task_run_name="download",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_permanent,
)
def download_csv(
    source: str,
    dest_dir: str,
    expected_sha256: str | None = None,
    timeout_s: float = 30.0,
    max_bytes: int = 200 * 1024 * 1024,
) -> RawData:
    """Fetch the raw CSV once, atomically, so each later step reads a complete hashed local file."""
    logger = run_logger(__name__)
    expected = _normalize_expected(expected_sha256)
    dest_dir = os.fspath(dest_dir)
    try:
        raw = _fetch(source, dest_dir, expected, timeout_s, max_bytes)
    except TransientDownloadError as exc:
        attempt, allowed = current_attempt()
        if attempt >= allowed:
            raise TransientDownloadError(f"{exc} — gave up after {allowed} attempt(s)") from exc
        logger.warning("download attempt %d/%d failed, will retry: %s", attempt, allowed, exc)
        raise
    logger.info("fetched %s: %d bytes, sha256=%s -> %s", source, raw.n_bytes, raw.sha256, raw.path)
    return raw


__all__: list[str] = ["RawData", "download_csv"]
