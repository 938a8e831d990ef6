"""Credentials in a source URL reach the server, never a log line, an error or a returned value."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from tasks.config import DownloadConfig
from tasks.download import download_csv
from tasks.errors import DownloadError, TransientDownloadError
from tasks.redact import redact_source, redact_text
from tests.loopback_http import Reply, serve
from tests.test_download import _free_port, _no_proxy  # noqa: F401  (autouse fixture)

CSV = b"id,x,y\n1,0.5,a\n2,1.5,b\n"
DEFAULTS = DownloadConfig()
LIMITS = {"timeout_s": DEFAULTS.timeout_s, "max_bytes": DEFAULTS.max_bytes}


# --- redact_source / redact_text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("http://alice:s3cret@host/data.csv", "http://***@host/data.csv"),
        ("https://alice@host:8443/a.csv", "https://***@host:8443/a.csv"),
        ("https://host/a.csv?token=abc&x=1", "https://host/a.csv?token=***&x=1"),
        ("https://host/a.csv?Access_Token=abc", "https://host/a.csv?Access_Token=***"),
        (
            "https://host/a.csv?api_key=k&apikey=k&key=k",
            "https://host/a.csv?api_key=***&apikey=***&key=***",
        ),
        (
            "https://host/a?password=p&secret=s&code=c",
            "https://host/a?password=***&secret=***&code=***",
        ),
        (
            "https://b.s3.amazonaws.com/a.csv?X-Amz-Credential=AKIA%2F1&X-Amz-Expires=60"
            "&X-Amz-Security-Token=t&X-Amz-Signature=beef",
            "https://b.s3.amazonaws.com/a.csv?X-Amz-Credential=***&X-Amz-Expires=60"
            "&X-Amz-Security-Token=***&X-Amz-Signature=***",
        ),
        (
            "https://storage.googleapis.com/b/a.csv?X-Goog-Signature=beef&X-Goog-Date=1",
            "https://storage.googleapis.com/b/a.csv?X-Goog-Signature=***&X-Goog-Date=1",
        ),
        (  # Azure SAS: only sig is secret; se (expiry), sp, sv stay readable
            "https://acct.blob.core.windows.net/c/a.csv?sv=2022-11-02&se=2030-01-01&sp=r&sig=ab%2Bc",
            "https://acct.blob.core.windows.net/c/a.csv?sv=2022-11-02&se=2030-01-01&sp=r&sig=***",
        ),
        ("https://host/cb#access_token=abc&state=1", "https://host/cb#access_token=***&state=1"),
        ("https://host/keys/token/data.csv?monkey=1", "https://host/keys/token/data.csv?monkey=1"),
        ("/home/alice/data@2024/a.csv", "/home/alice/data@2024/a.csv"),
        ("C:\\data\\a.csv", "C:\\data\\a.csv"),
        ("s3://bucket/a.csv", "s3://bucket/a.csv"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_source(given: str, shown: str) -> None:
    assert redact_source(given) == shown


def test_redact_source_finds_urls_inside_text() -> None:
    text = "GET http://u:pw@h/x.csv (redirected to https://s3/x?X-Amz-Signature=beef). Done"
    assert redact_source(text) == (
        "GET http://***@h/x.csv (redirected to https://s3/x?X-Amz-Signature=***). Done"
    )


def test_redact_text_masks_pieces_of_the_source_anywhere() -> None:
    source = "https://alice:s3cr%40t@host/a.csv?token=tok123456"
    message = (
        f"failed {source}: auth alice:s3cr%40t rejected, password s3cr@t, "
        "token tok123456 expired; see https://other/b?sig=zz"
    )
    safe = redact_text(message, source)
    for secret in ("s3cr%40t", "s3cr@t", "tok123456", "zz"):
        assert secret not in safe, safe
    assert "https://***@host/a.csv?token=***" in safe
    assert "https://other/b?sig=***" in safe


def test_redact_text_leaves_clean_messages_alone() -> None:
    source = "http://127.0.0.1:8000/a.csv"
    message = f"GET {source} returned HTTP 404 Not Found"
    assert redact_text(message, source) == message


# --- the download task, against a loopback server that requires basic auth ------------------


def _never_shows(secret: str, *texts: str) -> None:
    """Assert the secret appears in none of the texts."""
    for text in texts:
        assert secret not in text, text


def test_basic_auth_from_url_succeeds_and_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve({"/data.csv": Reply(body=CSV)}, basic_auth=("alice", "s3cret")) as base:
        port = base.rsplit(":", 1)[1]
        url = f"http://alice:s3cret@127.0.0.1:{port}/data.csv"
        raw = download_csv.fn(url, str(tmp_path / "raw"), **LIMITS)
    assert Path(raw.path).read_bytes() == CSV
    assert raw.source == f"http://***@127.0.0.1:{port}/data.csv"
    logged = [r.getMessage() for r in caplog.records]
    assert any(raw.source in line for line in logged), logged
    _never_shows("s3cret", repr(raw), *logged)


def test_credentials_from_a_netrc_file_keep_the_url_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with serve({"/data.csv": Reply(body=CSV)}, basic_auth=("alice", "s3cret")) as base:
        raw = download_csv.fn(f"{base}/data.csv", str(tmp_path / "raw"), **LIMITS)
        assert Path(raw.path).read_bytes() == CSV
        assert raw.source == f"{base}/data.csv"
        _never_shows("s3cret", repr(raw), *[r.getMessage() for r in caplog.records])
        netrc.write_text("machine 127.0.0.1 login alice password wrong\n")
        with pytest.raises(DownloadError, match="HTTP 401"):  # the file's password was used
            download_csv.fn(f"{base}/data.csv", str(tmp_path / "raw2"), **LIMITS)
        netrc.write_text("machine\n")
        with pytest.raises(DownloadError, match=r"cannot read credentials from .*netrc"):
            download_csv.fn(f"{base}/data.csv", str(tmp_path / "raw3"), **LIMITS)


def test_basic_auth_is_really_required(tmp_path: Path) -> None:
    with serve({"/data.csv": Reply(body=CSV)}, basic_auth=("alice", "s3cret")) as base:
        with pytest.raises(DownloadError, match="HTTP 401"):
            download_csv.fn(f"{base}/data.csv", str(tmp_path / "raw"), **LIMITS)


def test_401_names_the_redacted_url_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve({"/data.csv": Reply(body=CSV)}, basic_auth=("alice", "s3cret")) as base:
        port = base.rsplit(":", 1)[1]
        url = f"http://alice:wr0ngpass@127.0.0.1:{port}/data.csv"
        with pytest.raises(DownloadError, match="HTTP 401") as excinfo:
            download_csv.fn(url, str(tmp_path / "raw"), **LIMITS)
    assert f"GET http://***@127.0.0.1:{port}/data.csv returned" in str(excinfo.value)
    shown = "".join(traceback.format_exception(excinfo.value))
    _never_shows("wr0ngpass", shown, *[r.getMessage() for r in caplog.records])
    assert list((tmp_path / "raw").glob("*")) == []


def test_network_error_with_credentials_is_redacted_in_the_whole_traceback(
    tmp_path: Path,
) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{_free_port()}/data.csv?token=tok-abcdef"
    with pytest.raises(TransientDownloadError) as excinfo:
        download_csv.fn(url, str(tmp_path / "raw"), timeout_s=2, max_bytes=DEFAULTS.max_bytes)
    assert redact_source(url) in str(excinfo.value)
    shown = "".join(traceback.format_exception(excinfo.value))
    _never_shows("s3cret", shown)
    _never_shows("tok-abcdef", shown)


def test_sha_mismatch_with_token_url_is_redacted(tmp_path: Path) -> None:
    with serve({"/data.csv": Reply(body=CSV)}) as base:
        url = f"{base}/data.csv?sig=signature-value"
        with pytest.raises(DownloadError, match="sha256 mismatch") as excinfo:
            download_csv.fn(url, str(tmp_path / "raw"), expected_sha256="0" * 64, **LIMITS)
    assert f"{base}/data.csv?sig=***" in str(excinfo.value)
    _never_shows("signature-value", str(excinfo.value))


def test_signed_query_is_masked_in_library_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve({"/data.csv": Reply(body=CSV)}) as base:
        url = f"{base}/data.csv?X-Amz-Expires=60&X-Amz-Signature=beefcafe1234"
        raw = download_csv.fn(url, str(tmp_path / "raw"), **LIMITS)
    logged = [r.getMessage() for r in caplog.records]
    assert any("X-Amz-Signature=***" in line for line in logged if "HTTP Request" in line)
    _never_shows("beefcafe1234", raw.source, *logged)
