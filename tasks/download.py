"""Download step: fetch the raw CSV once, atomically and hashed, so later steps read one file."""

from __future__ import annotations

import contextlib
import hashlib
import netrc
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import fsspec
import httpx
from prefect import task

from tasks.config import SHA256_PATTERN
from tasks.data.formats import sniff_format
from tasks.errors import DownloadError, TransientDownloadError, retry_unless_permanent
from tasks.logs import current_attempt, run_logger
from tasks.outputs import set_normal_mode
from tasks.redact import redact_library_logs, redact_source, redact_text

CHUNK_SIZE = 1024 * 1024
_HTML_SNIFF_BYTES = 1024
_HTML_START = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html)\b", re.IGNORECASE)
_HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_FORMAT_SUFFIX = {"gzip": ".csv.gz", "zip": ".zip", "parquet": ".parquet"}
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")

# httpx logs every request's full URL at INFO (user-info and signed query included); the
# fsspec core may log URLs too. Mask them at the source, for every handler (a filter on a
# logger covers only records logged by that very logger, not its children).
redact_library_logs("httpx", "fsspec")


@dataclass(frozen=True)
class RawData:
    """A complete local copy of the raw CSV plus its hash, so later steps can trust and cache it."""

    path: str  # local file path of the raw CSV (suffix from its content: .csv.gz, .zip, ...)
    sha256: str  # hex sha256 of its content
    source: str  # what the user gave, with passwords and tokens masked: safe to log and show
    n_bytes: int


def _stored_suffix(source: str, head: bytes) -> str:
    """The suffix a stored download gets, so readers pick the right decoder from the name."""
    sniffed = sniff_format(head)
    if sniffed is not None:
        return _FORMAT_SUFFIX[sniffed]
    path = urlsplit(source).path.lower()
    return next((s for s in _TEXT_SUFFIXES if path.endswith(s)), ".csv")


def _normalize_expected(expected_sha256: str | None) -> str | None:
    """Reject a malformed expected hash up front: it could never match, so fail before fetching."""
    if expected_sha256 is None:
        return None
    expected = expected_sha256.strip().lower()
    if not re.fullmatch(SHA256_PATTERN, expected):
        raise DownloadError(f"expected_sha256 must be 64 hex characters, got {expected_sha256!r}")
    return expected


def _check_sha(shown: str, expected: str | None, actual: str) -> None:
    """Refuse content whose hash differs from the one the user pinned."""
    if expected is not None and actual != expected:
        raise DownloadError(f"sha256 mismatch for {shown}: expected {expected}, got {actual}")


def _safe_cause(exc: BaseException, source: str) -> BaseException | None:
    """Chain `exc` only if its text holds no secret of `source`: tracebacks print the chain."""
    text = str(exc)
    return exc if redact_text(text, source) == text else None


def _local_path(source: str) -> str | None:
    """Return the filesystem path for a plain path or file:// URL, None for any other URL."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(
                f"{redact_source(source)}: file:// URL names host {parts.hostname!r}, "
                "expected a local file"
            )
        return url2pathname(parts.path)
    if parts.scheme == "" or len(parts.scheme) == 1:  # a single letter is a Windows drive
        return os.path.expanduser(source)
    return None


def _use_local(shown: str, path: str, expected: str | None, max_bytes: int) -> RawData:
    """Hash a local file in place: copying it would only waste disk and time."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise DownloadError(f"{shown}: local file {path} does not exist") from None
    except OSError as err:  # a symlink loop (ELOOP), a name too long, no permission ...
        raise DownloadError(
            f"{shown}: local file {path}: {(err.strerror or str(err)).lower()}"
        ) from None
    if not os.path.isfile(path):
        raise DownloadError(f"{shown}: {path} is not a regular file")
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
    _check_sha(shown, expected, sha256)
    return RawData(path=os.path.abspath(path), sha256=sha256, source=shown, n_bytes=n_bytes)


def _store(
    source: str,
    chunks: Iterator[bytes],
    dest_dir: str,
    expected: str | None,
    max_bytes: int,
) -> RawData:
    """Stream chunks to a temp file in dest_dir and rename it into place only once it is verified.

    The temp file is removed on any error, so dest_dir never holds a partial download. The
    stored name is `<sha256><suffix>`, the suffix telling readers how the content is encoded.
    """
    shown = redact_source(source)
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
                        f"{shown} is larger than max_bytes={max_bytes} "
                        f"(stopped after {n_bytes} bytes)"
                    )
                if not sniffed:
                    head += chunk[: _HTML_SNIFF_BYTES - len(head)]
                    sniffed = len(head) >= _HTML_SNIFF_BYTES
                    if sniffed:
                        _reject_html_body(shown, head)
                digest.update(chunk)
                tmp.write(chunk)
            if not sniffed:
                _reject_html_body(shown, head)
            tmp.flush()
            os.fsync(tmp.fileno())
        sha256 = digest.hexdigest()
        _check_sha(shown, expected, sha256)
        final = os.path.join(dest_dir, f"{sha256}{_stored_suffix(source, head)}")
        set_normal_mode(tmp_path)
        os.replace(tmp_path, final)
    except BaseException:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
        raise
    return RawData(path=final, sha256=sha256, source=shown, n_bytes=n_bytes)


def _reject_html_body(shown: str, head: bytes) -> None:
    """An HTML body is a login/error page, not data: fail instead of feeding it to the cleaner."""
    if _HTML_START.match(head):
        start = head.strip()[:20].decode("utf-8", "replace")
        raise DownloadError(f"{shown} served an HTML page, expected CSV (body starts {start!r})")


def _http_chunks(shown: str, response: httpx.Response, declared: int | None) -> Iterator[bytes]:
    """Yield the decoded body, then fail if fewer bytes arrived than Content-Length promised."""
    yield from response.iter_bytes(CHUNK_SIZE)
    received = response.num_bytes_downloaded
    if declared is not None and received < declared:
        raise TransientDownloadError(
            f"GET {shown}: body ended after {received} bytes, Content-Length said {declared}"
        )


def _check_response(shown: str, response: httpx.Response, max_bytes: int) -> int | None:
    """Turn a bad status or header into the right error class; return the declared length."""
    where = (
        f"{shown} (redirected to {redact_source(str(response.url))})" if response.history else shown
    )
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


def netrc_auth(source: str) -> httpx.Auth | None:
    """Basic auth from `$NETRC` or `~/.netrc` for a URL without user-info, if that file exists.

    The way to give a password without writing it into the URL (where it could end up in a
    flow-run parameter); the URL's own user-info, when present, wins.
    """
    if urlsplit(source).username:
        return None
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        return httpx.NetRCAuth(str(path))
    except (netrc.NetrcParseError, OSError) as err:
        raise DownloadError(f"cannot read credentials from {path}: {err}") from None


def _download_http(
    source: str, dest_dir: str, expected: str | None, timeout_s: float, max_bytes: int
) -> RawData:
    """Stream an http(s) URL, mapping each failure to transient (retry) or permanent (stop).

    User-info in the URL is sent as HTTP basic auth (httpx does that); it is never shown.
    Without it, credentials for the host come from a netrc file, as for curl.
    """
    shown = redact_source(source)
    try:
        timeout = httpx.Timeout(timeout_s)
        with (
            httpx.Client(follow_redirects=True, timeout=timeout, auth=netrc_auth(source)) as client,
            client.stream("GET", source) as response,
        ):
            declared = _check_response(shown, response, max_bytes)
            chunks = _http_chunks(shown, response, declared)
            return _store(source, chunks, dest_dir, expected, max_bytes)
    except httpx.TimeoutException as exc:
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise TransientDownloadError(
            f"GET {shown} timed out after {timeout_s}s ({detail})"
        ) from _safe_cause(exc, source)
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise TransientDownloadError(f"GET {shown} failed: {detail}") from _safe_cause(exc, source)
    except httpx.HTTPError as exc:  # redirect loops, bad URL, undecodable body: will not heal
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise DownloadError(f"GET {shown} failed: {detail}") from _safe_cause(exc, source)


def _fsspec_chunks(source: str) -> Iterator[bytes]:
    """Read any fsspec URL in chunks, classifying backend errors as transient or permanent."""
    shown = redact_source(source)
    try:
        with fsspec.open(source, "rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                yield chunk
    except FileNotFoundError as exc:
        detail = redact_text(str(exc), source)
        raise DownloadError(f"{shown} does not exist ({detail})") from _safe_cause(exc, source)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise DownloadError(f"{shown} cannot be read: {detail}") from _safe_cause(exc, source)
    except OSError as exc:  # timeouts, connection resets, generic remote-filesystem errors
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise TransientDownloadError(f"{shown} could not be read: {detail}") from _safe_cause(
            exc, source
        )
    except (ValueError, ImportError) as exc:  # unknown protocol or missing backend package
        detail = redact_text(f"{type(exc).__name__}: {exc}", source)
        raise DownloadError(f"{shown} cannot be opened: {detail}") from _safe_cause(exc, source)


def _fetch(
    source: str, dest_dir: str, expected: str | None, timeout_s: float, max_bytes: int
) -> RawData:
    """Dispatch on the kind of source: local file, http(s) URL, or another fsspec URL."""
    path = _local_path(source)
    if path is not None:
        return _use_local(redact_source(source), path, expected, max_bytes)
    if urlsplit(source).scheme.lower() in ("http", "https"):
        return _download_http(source, dest_dir, expected, timeout_s, max_bytes)
    return _store(source, _fsspec_chunks(source), dest_dir, expected, max_bytes)


# Retries, their delays and jitter come from DownloadConfig via retry_options(): not set here,
# so there is one place to change them. Which errors are retried is behaviour, so it stays.
@task(name="download", task_run_name="download", retry_condition_fn=retry_unless_permanent)
def download_csv(
    source: str,
    dest_dir: str,
    expected_sha256: str | None = None,
    *,
    timeout_s: float,
    max_bytes: int,
) -> RawData:
    """Fetch the raw CSV once, atomically, so each later step reads a complete hashed local file.

    `source` is used only to fetch; logs, errors and the returned RawData.source show it with
    passwords and tokens masked (tasks.redact). timeout_s and max_bytes have no defaults here:
    they come from tasks.config.DownloadConfig, the one place they are set.
    """
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
    logger.info(
        "fetched %s: %d bytes, sha256=%s -> %s", raw.source, raw.n_bytes, raw.sha256, raw.path
    )
    return raw


__all__: list[str] = ["RawData", "download_csv"]
