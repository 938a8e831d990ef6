"""Tests for the download step against a real loopback HTTP server (no outside network)."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import os
import socket
import stat
import zipfile
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest
from prefect import flow
from prefect.states import Completed, Failed

from tasks.config import DownloadConfig
from tasks.data.formats import sniff_format
from tasks.download import RawData, _http_chunks, download_csv
from tasks.errors import (
    MAX_RETRY_DELAY_S,
    DownloadError,
    TransientDownloadError,
    retry_options,
    retry_unless_permanent,
)
from tests.loopback_http import Reply, serve

CSV = b"id,x,y\n1,0.5,a\n2,1.5,b\n"
CSV_SHA = hashlib.sha256(CSV).hexdigest()
HTML = b"  \n<!DOCTYPE html>\n<html><body>Please log in</body></html>\n"
DEFAULTS = DownloadConfig()


def fetch(source: str, dest_dir: str, **overrides: Any) -> RawData:
    """Run the task body with the config's limits (the only place they have defaults)."""
    limits = {"timeout_s": DEFAULTS.timeout_s, "max_bytes": DEFAULTS.max_bytes, **overrides}
    return download_csv.fn(source, dest_dir, **limits)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not be routed through a proxy configured in the environment."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A download directory that does not exist yet: download_csv must create it."""
    return tmp_path / "raw"


def _files(directory: Path) -> list[str]:
    """Everything left in the directory (including hidden .part- files), empty if it is absent."""
    return sorted(os.listdir(directory)) if directory.exists() else []


def _free_port() -> int:
    """A port nobody listens on: bind to get one from the OS, then close it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- success paths -------------------------------------------------------------------------


def test_http_success_stores_file_named_by_sha(dest: Path) -> None:
    with serve({"/data.csv": Reply(body=CSV)}) as base:
        raw = fetch(f"{base}/data.csv", str(dest))
        assert base.hits["/data.csv"] == 1
    assert raw == RawData(
        path=str(dest / f"{CSV_SHA}.csv"),
        sha256=CSV_SHA,
        source=f"{base}/data.csv",
        n_bytes=len(CSV),
    )
    assert Path(raw.path).read_bytes() == CSV
    assert hashlib.sha256(Path(raw.path).read_bytes()).hexdigest() == raw.sha256
    assert _files(dest) == [f"{CSV_SHA}.csv"]


def test_http_follows_redirect_and_accepts_matching_sha(dest: Path) -> None:
    routes = {"/old.csv": Reply(302, headers={"Location": "/new.csv"}), "/new.csv": Reply(body=CSV)}
    with serve(routes) as base:
        raw = fetch(f"{base}/old.csv", str(dest), expected_sha256=CSV_SHA.upper())
    assert raw.sha256 == CSV_SHA
    assert _files(dest) == [f"{CSV_SHA}.csv"]


def test_empty_body_is_returned_not_rejected(dest: Path) -> None:
    with serve({"/empty.csv": Reply(body=b"")}) as base:
        raw = fetch(f"{base}/empty.csv", str(dest))
    assert raw.n_bytes == 0
    assert raw.sha256 == hashlib.sha256(b"").hexdigest()


def test_local_path_is_hashed_in_place(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "local.csv"
    src.write_bytes(CSV)
    raw = fetch(str(src), str(dest))
    assert raw == RawData(path=str(src), sha256=CSV_SHA, source=str(src), n_bytes=len(CSV))
    assert not dest.exists()  # nothing copied


def test_file_url_is_hashed_in_place(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "local.csv"
    src.write_bytes(CSV)
    raw = fetch(src.as_uri(), str(dest))
    assert raw.path == str(src)
    assert raw.sha256 == CSV_SHA
    assert raw.source == src.as_uri()
    assert not dest.exists()


def test_other_fsspec_url_is_streamed_into_dest(dest: Path) -> None:
    url = "memory://foldflow-test/data.csv"
    with fsspec.open(url, "wb") as fh:
        fh.write(CSV)
    raw = fetch(url, str(dest))
    assert raw.path == str(dest / f"{CSV_SHA}.csv")
    assert Path(raw.path).read_bytes() == CSV


# --- permanent failures --------------------------------------------------------------------


def test_http_404_is_permanent_and_leaves_nothing(dest: Path) -> None:
    with serve({}) as base:
        url = f"{base}/missing.csv"
        with pytest.raises(DownloadError, match="404") as excinfo:
            fetch(url, str(dest))
    assert url in str(excinfo.value)
    assert not isinstance(excinfo.value, TransientDownloadError)
    assert _files(dest) == []


def test_html_content_type_at_200_is_rejected(dest: Path) -> None:
    reply = Reply(body=HTML, headers={"Content-Type": "text/html; charset=utf-8"})
    with (
        serve({"/page": reply}) as base,
        pytest.raises(DownloadError, match="served an HTML page, expected CSV"),
    ):
        fetch(f"{base}/page", str(dest))
    assert _files(dest) == []


def test_html_body_with_csv_content_type_is_rejected(dest: Path) -> None:
    with (
        serve({"/page.csv": Reply(body=HTML)}) as base,
        pytest.raises(DownloadError, match="served an HTML page, expected CSV"),
    ):
        fetch(f"{base}/page.csv", str(dest))
    assert _files(dest) == []


@pytest.mark.parametrize("omit_length", [False, True], ids=["declared-length", "no-length"])
def test_size_cap_over_http_stops_and_leaves_nothing(dest: Path, omit_length: bool) -> None:
    # With Content-Length the cap trips before reading; without it, while streaming.
    big = b"a,b\n" + b"1,2\n" * 10_000
    with (
        serve({"/big.csv": Reply(body=big, omit_length=omit_length)}) as base,
        pytest.raises(DownloadError, match="max_bytes=1000") as excinfo,
    ):
        fetch(f"{base}/big.csv", str(dest), max_bytes=1000)
    assert f"{base}/big.csv" in str(excinfo.value)
    assert _files(dest) == []


def test_size_cap_applies_to_local_files(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "local.csv"
    src.write_bytes(CSV)
    with pytest.raises(DownloadError, match="max_bytes=10"):
        fetch(str(src), str(dest), max_bytes=10)


def test_sha_mismatch_over_http_names_both_hashes(dest: Path) -> None:
    wrong = "0" * 64
    with (
        serve({"/data.csv": Reply(body=CSV)}) as base,
        pytest.raises(DownloadError) as excinfo,
    ):
        fetch(f"{base}/data.csv", str(dest), expected_sha256=wrong)
    assert wrong in str(excinfo.value) and CSV_SHA in str(excinfo.value)
    assert _files(dest) == []


def test_sha_mismatch_applies_to_local_files(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "local.csv"
    src.write_bytes(CSV)
    with pytest.raises(DownloadError, match=f"expected {'f' * 64}, got {CSV_SHA}"):
        fetch(str(src), str(dest), expected_sha256="f" * 64)


def test_missing_local_file_names_the_path(tmp_path: Path, dest: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DownloadError, match=str(missing)):
        fetch(str(missing), str(dest))
    with pytest.raises(DownloadError, match="not a regular file"):
        fetch(str(tmp_path), str(dest))


# --- transient failures --------------------------------------------------------------------


def test_truncated_body_is_transient_and_leaves_nothing(dest: Path) -> None:
    with (
        serve({"/short.csv": Reply(body=b"id,x\n1,2\n3,", content_length=1000)}) as base,
        pytest.raises(TransientDownloadError) as excinfo,
    ):
        fetch(f"{base}/short.csv", str(dest))
    assert f"{base}/short.csv" in str(excinfo.value)
    assert _files(dest) == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(body=CSV, stall_after=10, stall_s=30), id="mid-body"),
        pytest.param(Reply(body=CSV, delay_s=30), id="before-headers"),
    ],
)
def test_stalled_server_times_out_as_transient(dest: Path, reply: Reply) -> None:
    with (
        serve({"/slow.csv": reply}) as base,
        pytest.raises(TransientDownloadError, match="timed out") as excinfo,
    ):
        fetch(f"{base}/slow.csv", str(dest), timeout_s=0.5)
    assert f"{base}/slow.csv" in str(excinfo.value)
    assert _files(dest) == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_are_transient(dest: Path, status: int) -> None:
    with (
        serve({"/data.csv": Reply(status, b"busy")}) as base,
        pytest.raises(TransientDownloadError, match=f"HTTP {status}"),
    ):
        fetch(f"{base}/data.csv", str(dest))
    assert _files(dest) == []


def test_dropped_connection_is_transient(dest: Path) -> None:
    with (
        serve({"/data.csv": Reply(drop=True)}) as base,
        pytest.raises(TransientDownloadError),
    ):
        fetch(f"{base}/data.csv", str(dest))


def test_connection_refused_is_transient(dest: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/data.csv"
    with pytest.raises(TransientDownloadError, match=url):
        fetch(url, str(dest), timeout_s=2)
    assert _files(dest) == []


# --- retry policy ----------------------------------------------------------------------------


def test_retry_condition_stops_on_permanent_and_retries_transient() -> None:
    assert retry_unless_permanent(None, None, Failed(data=DownloadError("404"))) is False
    assert retry_unless_permanent(None, None, Failed(data=TransientDownloadError("503"))) is True
    assert retry_unless_permanent(None, None, Completed(data=1)) is True


# --- the real Prefect task, with retries ---------------------------------------------------


@flow
def _download_flow(url: str, dest_dir: str) -> RawData:
    """Smallest flow that runs the real task, retries included, without waiting between tries."""
    download = download_csv.with_options(**retry_options(DEFAULTS.retries, 0))
    return download(url, dest_dir, timeout_s=DEFAULTS.timeout_s, max_bytes=DEFAULTS.max_bytes)


def test_flow_retries_transient_500_then_succeeds(dest: Path) -> None:
    with serve({"/data.csv": [Reply(500, b"oops"), Reply(body=CSV)]}) as base:
        raw = _download_flow(f"{base}/data.csv", str(dest))
        assert base.hits["/data.csv"] == 2
    assert raw.sha256 == CSV_SHA
    assert _files(dest) == [f"{CSV_SHA}.csv"]


def test_flow_does_not_retry_404(dest: Path) -> None:
    with serve({}) as base:
        state = _download_flow(f"{base}/missing.csv", str(dest), return_state=True)
        assert state.is_failed()
        assert base.hits["/missing.csv"] == 1
    with pytest.raises(DownloadError, match="404"):
        state.result()
    assert _files(dest) == []


def test_short_body_check_does_not_rely_on_httpx() -> None:
    # Belt and braces: even if the transport did not raise, fewer bytes than declared is transient.
    response = httpx.Response(
        200, headers={"Content-Length": "1000"}, stream=httpx.ByteStream(b"abc")
    )
    with pytest.raises(TransientDownloadError, match="body ended after 3 bytes"):
        list(_http_chunks("http://example.invalid/x.csv", response, 1000))


# --- stored name follows the content --------------------------------------------------------


def test_sniff_format_by_magic_bytes() -> None:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("data.csv", CSV)
    assert sniff_format(gzip.compress(CSV)) == "gzip"
    assert sniff_format(zipped.getvalue()) == "zip"
    assert sniff_format(b"PAR1\x15\x04") == "parquet"
    assert sniff_format(CSV) is None
    assert sniff_format(b"") is None
    assert sniff_format(b"\x1f") is None  # too short to be sure


@pytest.mark.parametrize("route", ["/data.csv.gz", "/export"], ids=["csv-gz-url", "no-extension"])
def test_gzip_body_is_stored_as_csv_gz(dest: Path, route: str) -> None:
    body = gzip.compress(CSV)
    reply = Reply(body=body, headers={"Content-Type": "application/gzip"})
    with serve({route: reply}) as base:
        raw = fetch(f"{base}{route}", str(dest))
    sha = hashlib.sha256(body).hexdigest()
    assert raw.path == str(dest / f"{sha}.csv.gz")
    assert raw.sha256 == sha
    assert gzip.decompress(Path(raw.path).read_bytes()) == CSV
    assert _files(dest) == [f"{sha}.csv.gz"]


@pytest.mark.parametrize(
    ("route", "suffix"),
    [("/a.TSV", ".tsv"), ("/a.txt", ".txt"), ("/a.csv.gz", ".csv"), ("/download", ".csv")],
)
def test_plain_body_keeps_a_text_suffix_from_the_url(dest: Path, route: str, suffix: str) -> None:
    # A .csv.gz URL whose body is plain text (the server decompressed it) is stored as .csv.
    with serve({route: Reply(body=CSV)}) as base:
        raw = fetch(f"{base}{route}?v=1", str(dest))
    assert _files(dest) == [f"{CSV_SHA}{suffix}"]
    assert raw.path == str(dest / f"{CSV_SHA}{suffix}")


def test_zip_over_fsspec_is_stored_as_zip(dest: Path) -> None:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("data.csv", CSV)
    url = "memory://foldflow-test/archive"
    with fsspec.open(url, "wb") as fh:
        fh.write(zipped.getvalue())
    raw = fetch(url, str(dest))
    assert raw.path.endswith(".zip")
    with zipfile.ZipFile(raw.path) as archive:
        assert archive.read("data.csv") == CSV


def test_stored_download_respects_umask(dest: Path) -> None:
    old = os.umask(0o022)
    try:
        with serve({"/data.csv": Reply(body=CSV)}) as base:
            raw = fetch(f"{base}/data.csv", str(dest))
    finally:
        os.umask(old)
    assert stat.filemode(os.stat(raw.path).st_mode) == "-rw-r--r--"


# --- retries: declared once, in the config ---------------------------------------------------


def test_download_task_declares_no_retry_numbers_and_no_limits() -> None:
    assert download_csv.retries == 0
    assert download_csv.retry_condition_fn is not None
    params = inspect.signature(download_csv.fn).parameters
    for name in ("timeout_s", "max_bytes"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default is inspect.Parameter.empty


def test_retry_options_back_off_exponentially_with_a_cap() -> None:
    assert retry_options(3, 1.0) == {
        "retries": 3,
        "retry_delay_seconds": [1.0, 2.0, 4.0],
        "retry_jitter_factor": 0.5,
    }
    assert retry_options(3, 0)["retry_delay_seconds"] == [0.0, 0.0, 0.0]  # retry at once
    assert retry_options(0, 5)["retry_delay_seconds"] == []
    delays = retry_options(20, 1.0)["retry_delay_seconds"]
    assert len(delays) == 20 and max(delays) == MAX_RETRY_DELAY_S
    assert retry_options(2, 600)["retry_delay_seconds"] == [600.0, 600.0]  # asked for: kept
    with pytest.raises(ValueError, match="must be >= 0"):
        retry_options(-1, 1)


def test_retry_options_apply_to_the_prefect_task() -> None:
    config = DownloadConfig(retries=4, retry_delay_s=0.5)
    task = download_csv.with_options(**retry_options(config.retries, config.retry_delay_s))
    assert task.retries == 4
    assert task.retry_delay_seconds == [0.5, 1.0, 2.0, 4.0]
    assert task.retry_jitter_factor == 0.5
    assert task.retry_condition_fn is download_csv.retry_condition_fn
