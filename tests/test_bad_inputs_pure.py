"""Malformed inputs end in a clear error that names the file, with nothing left half-written.

The fast half of the bad-input table (`tests/test_bad_inputs.py` keeps the few cases that run
the whole flow, to prove an error propagates through it). Here each case runs the steps the
flow runs before training, as plain calls of the same functions (`fetch_source` without a
Prefect run, `clean_to_parquet.fn`, `plan_folds.fn`), on real files and a real loopback HTTP
server, and checks that

1. the expected step raised, or every step passed where the input is legitimately odd;
2. the error names the file or URL and what is wrong (column, row/line, status, attempts);
3. no partial or stray file is left in the cache's ``downloads/`` and ``cleaned/`` folders.

Cases that `tests/test_dataspec.py`, `tests/test_clean.py`, `tests/test_folds.py` or
`tests/test_download.py` already prove with the same message are not repeated here. The
output-writing crash cases call `join_out_of_fold.fn` with synthetic fold results.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import socket
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import tasks.outputs
from flows.fetch import fetch_source
from tasks.bundle import output_bytes
from tasks.clean import CLEAN_VERSION, CleanedData, cache_path, clean_to_parquet
from tasks.config import BUNDLED_DATA, CVConfig, DownloadConfig, ModelConfig
from tasks.data.spec import DataSpec
from tasks.errors import (
    DataValidationError,
    DownloadError,
    PermanentError,
    TransientDownloadError,
)
from tasks.fit import FoldResult
from tasks.folds import FoldSpec, plan_folds, split_folds
from tasks.join import METRICS_JSON, OOF_CSV, OOF_PARQUET, join_out_of_fold
from tasks.metrics import FoldRun, RunInfo
from tasks.outputs import OutputSpaceError, check_cache_dir, check_free_space, check_output_dir
from tasks.redact import redact_source
from tests.loopback_http import Reply, serve

OUTPUTS = (OOF_PARQUET, OOF_CSV, METRICS_JSON)
ROUTE = "/data.csv"

HEADER, *ROWS = BUNDLED_DATA.read_text(encoding="utf-8").splitlines()
COLUMNS = HEADER.split(",")


@pytest.fixture(scope="module")
def prefect_api():
    """Plain function calls: no Prefect server needed (overrides the conftest fixture)."""
    yield


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy configured in the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


# --- building small CSVs from the bundled file ---------------------------------------------


def to_bytes(lines: list[str], newline: str = "\n") -> bytes:
    """Join CSV lines into file bytes."""
    return (newline.join(lines) + newline).encode()


def small(n: int = 100) -> list[str]:
    """The header and the first n data lines of the bundled file."""
    return [HEADER, *ROWS[:n]]


def get_field(line: str, column: str) -> str:
    return line.split(",")[COLUMNS.index(column)]


def set_field(line: str, column: str, value: str) -> str:
    """The line with one column's value replaced."""
    cells = line.split(",")
    cells[COLUMNS.index(column)] = value
    return ",".join(cells)


def drop_column(lines: list[str], column: str) -> list[str]:
    at = COLUMNS.index(column)
    return [",".join(c for i, c in enumerate(line.split(",")) if i != at) for line in lines]


def rare_class_lines() -> list[str]:
    """Classes b and c only, then two rows relabelled 'a': too rare for stratified 5-fold."""
    rows = [r for r in ROWS[:100] if get_field(r, "product") in ("b", "c")]
    return [HEADER, *rows[:-2], *(set_field(r, "product", "a") for r in rows[-2:])]


def big_renumbered(copies: int) -> list[str]:
    """The bundled rows repeated, ids renumbered so they stay unique."""
    rows = [set_field(r, "id", str(i)) for i, r in enumerate(ROWS * copies, start=1)]
    return [HEADER, *rows]


def with_bad_byte(lines: list[str], line_no: int) -> tuple[bytes, int]:
    """File bytes with a Latin-1 'é' in the job column of 1-based line `line_no`, and its offset."""
    cells = lines[line_no - 1].split(",")
    cells[COLUMNS.index("job")] = "caf\udce9"  # surrogateescape -> the single byte 0xE9
    bad = lines[: line_no - 1] + [",".join(cells)] + lines[line_no:]
    body = ("\n".join(bad) + "\n").encode("utf-8", "surrogateescape")
    return body, body.index(b"\xe9")


def records(n: int = 20) -> list[dict[str, str]]:
    """The first n bundled rows as JSON records."""
    return [dict(zip(COLUMNS, row.split(","))) for row in ROWS[:n]]


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive holding `files`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)
    return buffer.getvalue()


# What Excel writes (the parts a reader looks for first); no Excel writer is installed here.
XLSX = zipped({
    "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats'
                           b'.org/package/2006/content-types"/>',
    "_rels/.rels": b"<Relationships/>",
    "xl/workbook.xml": b"<workbook><sheets><sheet name='data' sheetId='1'/></sheets></workbook>",
    "xl/worksheets/sheet1.xml": b"<worksheet><sheetData/></worksheet>",
})  # fmt: skip
XLS = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504  # the compound-file header of .xls
JSON_ARRAY = json.dumps(records()).encode()
JSON_PRETTY = json.dumps(records(), indent=2).encode()
JSON_LINES = "".join(json.dumps(r) + "\n" for r in records()).encode()
UNSUPPORTED = ("unsupported format: {kind}; foldflow reads CSV (plain, gzip, zip) and Parquet",)


def unsupported(kind: str, body: bytes, **kw: Any) -> Case:
    return fail("clean", *(u.format(kind=kind) for u in UNSUPPORTED), body=body, **kw)


SMALL = to_bytes(small())
SMALL_SHA = hashlib.sha256(SMALL).hexdigest()
HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Sign in</h1></body></html>\n"
NON_UTF8_BIG, NON_UTF8_BIG_AT = with_bad_byte(big_renumbered(4), 8000)

# --- a user's own table (issue 10's bad inputs) ----------------------------------------------
USER_HEADER = "customer,region,plan,age,income,notes,household,y"


def user_table(n: int = 40, **columns: Callable[[int], str]) -> list[str]:
    """A small table of the user's own: two categorical, two numeric, text, groups, a target."""
    cells = {
        "customer": lambda i: str(1000 + i),
        "region": lambda i: ("north", "south", "east")[i % 3],
        "plan": lambda i: ("basic", "pro")[i % 2],
        "age": lambda i: str(20 + (i * 7) % 40),
        "income": lambda i: f"{30000 + (i * 997) % 50000}.5",
        "notes": lambda i: f"note number {i}",
        "household": lambda i: str(i // 4),
        "y": lambda i: f"{(i * 13) % 17 + 0.25}",
        **columns,
    }
    header = USER_HEADER.split(",")
    return [USER_HEADER, *(",".join(cells[c](i) for c in header) for i in range(n))]


USER = {"data": {"target": "y", "id_column": "customer", "drop": ["notes"]}, "folds": 2}


# --- the steps before training, as plain calls -----------------------------------------------


def step_config(source: str, tmp: Path, **overrides: Any) -> CVConfig:
    """The flow suite's config: one download attempt of at most 1 s, a 10 MB cap."""
    download = DownloadConfig(
        retries=1, retry_delay_s=0, timeout_s=1.0, max_bytes=overrides.pop("max_bytes", 10**7)
    )
    base: dict[str, Any] = dict(
        source=source, folds=5, cache_dir=str(tmp / "cache"), download=download
    )
    return CVConfig(**{**base, **overrides})


@dataclass
class Outcome:
    """How far the steps got: the step that raised (or the last one), its error, the results."""

    step: str = ""
    error: BaseException | None = None
    data: CleanedData | None = None
    folds: list[FoldSpec] | None = None


def run_steps(config: CVConfig) -> Outcome:
    """Download, clean and plan the folds as `cross_validate` does, without Prefect."""
    out = Outcome()
    try:
        out.step = "download"
        raw = fetch_source(
            config.source, config.cache_dir, config.download, config.sha256, in_run=False
        )
        out.step = "clean"
        out.data = clean_to_parquet.fn(
            raw.path, raw.sha256, config.cache_dir, config.data, raw.source
        )
        out.step = "plan-folds"
        out.folds = plan_folds.fn(
            out.data, config.folds, config.shuffle, config.seed, config.splitter,
            config.repeats, redact_source(config.source),
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the case says which step must raise, and what
        out.error = err
    return out


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One case's paths, handed to its prepare/check hooks."""

    tmp: Path
    source: str
    cache_dir: Path
    body: bytes | None
    out: Outcome = field(default_factory=Outcome)


@dataclass(frozen=True)
class Case:
    """One malformed (or legitimately odd) input and what the steps must do with it.

    body: the input bytes, written to a local file unless `routes` serves them over HTTP.
    routes: loopback routes (path ROUTE is the source); refused: point at a closed port.
    failed_step: the step that must raise (None: every step passes).
    expect: fragments the error must contain; {source} is filled in.
    error: the exception class the step must raise.
    hits: how many requests the server must have seen.
    rows: for a passing case, the cleaned table's row count.
    warns: fragments of a WARNING log record the steps must emit.
    """

    body: bytes | None = None
    routes: Callable[[], dict[str, Any]] | None = None
    refused: bool = False
    failed_step: str | None = None
    expect: tuple[str, ...] = ()
    error: type[BaseException] = PermanentError
    hits: int | None = None
    rows: int | None = None
    warns: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[Ctx], None] | None = None
    check: Callable[[Ctx], None] | None = None


def http(*replies: Reply) -> Callable[[], dict[str, Any]]:
    return lambda: {ROUTE: list(replies) if len(replies) > 1 else replies[0]}


def fail(step: str, *expect: str, **kw: Any) -> Case:
    kw.setdefault("error", DownloadError if step == "download" else DataValidationError)
    return Case(failed_step=step, expect=("{source}", *expect), **kw)


def transient(*expect: str, **kw: Any) -> Case:
    """A download fault a retry could heal: one attempt outside a flow run, then it gives up."""
    return fail("download", *expect, GAVE_UP, error=TransientDownloadError, **kw)


def ok(rows: int, **kw: Any) -> Case:
    return Case(rows=rows, **kw)


GAVE_UP = "gave up after 1 attempt"  # a plain call is its own last attempt


def _corrupt_cache(how: Callable[[bytes], bytes]) -> Callable[[Ctx], None]:
    """Build the real cached Parquet for this source, then damage it in place."""

    def prepare(ctx: Ctx) -> None:
        sha = hashlib.sha256(ctx.body or b"").hexdigest()
        built = clean_to_parquet.fn(ctx.source, sha, str(ctx.cache_dir), DataSpec())
        path = Path(built.path)
        path.write_bytes(how(path.read_bytes()))

    return prepare


def _symlink_loop(ctx: Ctx) -> None:
    """The source is one of two symbolic links that point at each other."""
    source = Path(ctx.source)
    source.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source.with_name("other.csv"), source)
    os.symlink(source, source.with_name("other.csv"))


def _cache_rebuilt(ctx: Ctx) -> None:
    sha = hashlib.sha256(ctx.body or b"").hexdigest()
    path = cache_path(str(ctx.cache_dir), sha, DataSpec())
    table = pq.read_table(path)  # readable again: rebuilt, not trusted
    assert table.num_rows == 100
    meta = json.loads(pq.read_schema(path).metadata[b"foldflow"])
    assert meta["clean_version"] == CLEAN_VERSION and meta["n_rows"] == 100


def _constant_dropped(ctx: Ctx) -> None:
    assert ctx.out.data is not None
    assert "age" in ctx.out.data.spec.dropped and "age" not in ctx.out.data.features


def _dates_dropped(ctx: Ctx) -> None:
    assert ctx.out.data is not None
    assert ctx.out.data.spec.dropped["region"].startswith("dates")
    assert not [f for f in ctx.out.data.features if f.startswith("region")]


def _stored_as_gzip(ctx: Ctx) -> None:
    """Served as CSV, stored by its content: the cleaner then reads it decompressed."""
    assert [p.name for p in (ctx.cache_dir / "downloads").iterdir()] == [
        f"{hashlib.sha256(ctx.body or b'').hexdigest()}.csv.gz"
    ]


CASES = [
    # --- download ----------------------------------------------------------------------------
    pytest.param(
        fail("download", "HTTP 404", hits=1, routes=lambda: {}),
        id="download-404",
    ),
    pytest.param(
        transient("HTTP 500", hits=1, routes=http(Reply(500, b"down for maintenance"))),
        id="download-500",
    ),
    pytest.param(transient("ConnectError", refused=True), id="download-connection-refused"),
    pytest.param(
        transient("timed out after 1.0s", hits=1, routes=http(Reply(body=SMALL, delay_s=30))),
        id="download-timeout-before-headers",
    ),
    pytest.param(
        transient(
            "timed out after 1.0s",
            hits=1,
            routes=http(Reply(body=SMALL, stall_after=500, stall_s=30)),
        ),
        id="download-stall-mid-body",
    ),
    pytest.param(
        transient(
            f"{len(SMALL) - 200} bytes",  # what arrived ...
            f"{len(SMALL)}",  # ... and what Content-Length promised
            hits=1,
            routes=http(Reply(body=SMALL[:-200], content_length=len(SMALL))),
        ),
        id="download-short-body",
    ),
    pytest.param(
        fail(
            "download",
            "served an HTML page, expected CSV",
            hits=1,
            routes=http(Reply(body=HTML_PAGE, headers={"Content-Type": "text/html"})),
        ),
        id="download-html-200",
    ),
    pytest.param(
        fail(
            "download",
            "served an HTML page, expected CSV",
            hits=1,
            routes=http(Reply(body=HTML_PAGE)),
        ),
        id="download-html-200-as-text-csv",
    ),
    pytest.param(
        fail(
            "download",
            "max_bytes=2000",
            hits=1,
            routes=http(Reply(body=SMALL)),
            config={"max_bytes": 2000},
        ),
        id="download-over-size-cap",
    ),
    pytest.param(
        fail(
            "download",
            "max_bytes=2000",
            hits=1,
            routes=http(Reply(body=SMALL, omit_length=True)),
            config={"max_bytes": 2000},
        ),
        id="download-over-size-cap-no-length",
    ),
    pytest.param(
        fail(
            "download",
            "sha256 mismatch",
            f"expected {'0' * 64}, got {SMALL_SHA}",
            hits=1,
            routes=http(Reply(body=SMALL)),
            config={"sha256": "0" * 64},
        ),
        id="download-sha256-mismatch",
    ),
    pytest.param(
        fail(
            "download",
            "sha256 mismatch",
            f"got {SMALL_SHA}",
            body=SMALL,
            config={"sha256": "f" * 64},
        ),
        id="local-sha256-mismatch",
    ),
    pytest.param(
        ok(100, routes=http(Reply(body=gzip.compress(SMALL))), body=gzip.compress(SMALL),
           check=_stored_as_gzip),  # fmt: skip
        id="gzip-served-as-csv",
    ),
    pytest.param(
        fail("download", "too many levels of symbolic links", prepare=_symlink_loop),
        id="local-symlink-loop",
    ),
    # --- content (the rest are in test_dataspec.py and test_clean.py) -------------------------
    pytest.param(
        fail(
            "clean",
            "declared column(s) 'age' (numeric)",
            body=to_bytes(drop_column(small(), "age")),
        ),
        id="missing-column",
    ),
    pytest.param(
        fail(
            "clean",
            "malformed CSV",
            "line 4",
            body=to_bytes([HEADER, ROWS[0], ROWS[1], ROWS[2] + ",surplus", *ROWS[3:50]]),
        ),
        id="ragged-row",
    ),
    pytest.param(
        fail("clean", f"not valid UTF-8 at byte {NON_UTF8_BIG_AT}", body=NON_UTF8_BIG),
        id="non-utf8-past-first-read-chunk",
    ),
    pytest.param(
        fail(
            "clean",
            "column 'job' row 2 (line 3) has a cell of 5000 characters",
            body=to_bytes([HEADER, ROWS[0], set_field(ROWS[1], "job", "x" * 5000), *ROWS[2:50]]),
        ),
        id="huge-cell-over-the-default-cap",
    ),
    pytest.param(
        fail(
            "clean",
            "header only",
            "(downloaded to ",
            hits=1,
            routes=http(Reply(body=to_bytes([HEADER]))),
        ),
        id="bad-content-over-http-names-url",
    ),
    pytest.param(
        ok(
            40,
            body=to_bytes(user_table(age=lambda _i: "40")),
            warns=("dropping column 'age': it is constant",),
            config=USER,
            check=_constant_dropped,
        ),
        id="constant-column-dropped-with-warning",
    ),
    # --- formats foldflow does not read: named, not misread as CSV (issue 19) ---------------
    pytest.param(unsupported("JSON", JSON_ARRAY), id="json-array"),
    pytest.param(unsupported("JSON", JSON_PRETTY), id="json-pretty-printed"),
    pytest.param(unsupported("JSON Lines", JSON_LINES), id="json-lines"),
    pytest.param(unsupported("JSON Lines", gzip.compress(JSON_LINES)), id="json-lines-gzip"),
    pytest.param(unsupported("JSON", zipped({"data.json": JSON_ARRAY})), id="json-in-a-zip"),
    pytest.param(unsupported("Excel (xlsx)", XLSX), id="excel-xlsx"),
    pytest.param(unsupported("Excel (xls)", XLS), id="excel-xls"),
    pytest.param(
        unsupported("JSON Lines", JSON_LINES, routes=http(Reply(body=JSON_LINES)), hits=1),
        id="json-lines-over-http",
    ),
    pytest.param(
        ok(
            40,
            body=to_bytes(user_table(region=lambda i: f"2023-{i % 12 + 1:02d}-{i % 28 + 1:02d} "
                                                      f"10:{i:02d}:00")),  # fmt: skip
            warns=("dropping column 'region': it holds dates (e.g. '2023-01-01 10:00:00')",),
            config=USER,
            check=_dates_dropped,
        ),
        id="datetime-column-dropped-as-a-date",
    ),
    pytest.param(
        ok(
            40,
            body=to_bytes(user_table(region=lambda i: f"{i % 3 + 1}/{i % 5 + 10}/2024")),
            warns=("dropping column 'region': it holds dates",),
            config=USER,
            check=_dates_dropped,
        ),
        id="few-distinct-dates-dropped-as-a-date",
    ),
    # --- folds ---------------------------------------------------------------------------------
    pytest.param(
        fail("plan-folds", "4 rows cannot be split into 5 folds", body=to_bytes(small(4))),
        id="fewer-rows-than-folds",
    ),
    pytest.param(
        fail(
            "plan-folds",
            "stratified 5-fold",
            "class 'a' has 2",
            body=to_bytes(rare_class_lines()),
            config={"splitter": "stratified"},
        ),
        id="class-too-rare-for-stratified",
    ),
    pytest.param(
        ok(
            100,
            body=to_bytes([HEADER, set_field(ROWS[0], "product", "z"), *ROWS[1:100]]),
            warns=("class 'z' is only in the test rows of fold-", "--splitter stratified"),
        ),
        id="one-row-class-under-plain-kfold-warned",
    ),
    pytest.param(
        fail(
            "plan-folds",
            "group column 'household' has 3 distinct group(s)",
            body=to_bytes(user_table(household=lambda i: str(i % 3))),
            config={**USER, "folds": 5, "splitter": "group",
                    "data": {**USER["data"], "group_column": "household"}},
        ),
        id="fewer-groups-than-folds",
    ),
    # --- cache (a truncated file: test_clean.py) -----------------------------------------------
    pytest.param(
        ok(
            100,
            body=SMALL,
            prepare=_corrupt_cache(lambda blob: b"PAR1" + b"\0" * (len(blob) - 8) + b"PAR1"),
            warns=("unreadable or stale; rebuilding",),
            check=_cache_rebuilt,
        ),
        id="cache-zeroed-parquet-rebuilt",
    ),
]


# --- checks ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def walk_files(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file()) if folder.exists() else iter(())


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") or name.endswith((".tmp", ".part", ".partial")) or ".part-" in name


def assert_cache_complete(cache_dir: Path) -> None:
    """Only complete, verified files may remain in the cache; nothing half-written."""
    leftovers = [p for p in walk_files(cache_dir) if _is_temp_name(p.name)]
    assert not leftovers, f"temporary files left in the cache: {leftovers}"
    for path in walk_files(cache_dir / "downloads"):
        assert re.fullmatch(r"[0-9a-f]{64}\.(csv|csv\.gz|zip|parquet)", path.name), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0], path
    for path in walk_files(cache_dir / "cleaned"):
        pattern = rf"[0-9a-f]{{64}}-[0-9a-f]{{12}}-{re.escape(CLEAN_VERSION)}\.parquet"
        assert re.fullmatch(pattern, path.name), f"stray cleaned file {path}"
        pq.read_table(path)  # complete, or this raises


def _run_case(case: Case, ctx: Ctx) -> int | None:
    """Serve or place the input, run the steps on it; the server's request count, if served."""
    with ExitStack() as stack:
        base = stack.enter_context(serve(case.routes())) if case.routes else None
        if base is not None:
            ctx.source = f"{base}{ROUTE}"
        elif case.refused:
            ctx.source = f"http://127.0.0.1:{_free_port()}{ROUTE}"
        if case.prepare is not None:
            case.prepare(ctx)
        ctx.out = run_steps(step_config(ctx.source, ctx.tmp, **case.config))
        return base.hits[ROUTE] if base is not None else None


@pytest.mark.parametrize("case", CASES)
def test_bad_input_step(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ctx = Ctx(
        tmp=tmp_path,
        source=str(tmp_path / "input" / "data.csv"),
        cache_dir=tmp_path / "cache",
        body=case.body,
    )
    if case.body is not None and case.routes is None:
        Path(ctx.source).parent.mkdir()
        Path(ctx.source).write_bytes(case.body)

    hits = _run_case(case, ctx)
    out = ctx.out
    if case.failed_step is None:
        assert out.error is None, f"{out.step} raised {out.error!r}"
        assert out.data is not None and out.data.n_rows == case.rows
        assert out.data.raw_sha256 == hashlib.sha256(case.body or b"").hexdigest()
        assert out.folds and sum(len(f.test_positions) for f in out.folds) == case.rows
    else:
        assert out.error is not None, f"no step raised; {case.failed_step} should have"
        assert out.step == case.failed_step, f"{out.step} raised {out.error!r}"
        assert isinstance(out.error, case.error), repr(out.error)
    if case.hits is not None:
        assert hits == case.hits, f"server saw {hits} requests"
    for fragment in case.warns:
        wanted = fragment.format(source=ctx.source)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(wanted in w for w in warnings), f"{wanted!r} not warned: {warnings}"
    assert_cache_complete(ctx.cache_dir)
    if case.check is not None:
        case.check(ctx)
    # Last, so a message problem is reported after every other check has run.
    if out.error is not None:
        message = str(out.error)
        wanted = [f.format(source=ctx.source) for f in case.expect]
        missing = [w for w in wanted if w not in message]
        if missing:
            raise AssertionError(f"error lacks {missing}: {message}")


def test_output_dir_that_is_a_file_fails_up_front(tmp_path: Path) -> None:
    """The output folder is an existing regular file (tests run as root: chmod would not stop
    them); the file itself is left alone."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a regular file, not a folder\n")
    with pytest.raises(PermanentError) as excinfo:
        check_output_dir.fn(str(blocker))
    message = str(excinfo.value)
    assert f"output folder {blocker.resolve()}" in message and "is not writable" in message
    assert "--output-dir" in message
    assert blocker.read_bytes() == b"a regular file, not a folder\n"
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        pytest.param("bad.yaml", "folds: 3\nmodel: [epochs: 2\n", "line 3", id="yaml"),
        pytest.param("bad.json", '{"folds": 3,\n "seed": }\n', "line 2", id="json"),
    ],
)
def test_broken_config_file_names_the_file_and_line(
    name: str, text: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--config` with a syntax error: the one-line error names the file and the line."""
    from flows.cli import main

    path = tmp_path / name
    path.write_text(text)
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("foldflow: error: ") and len(err.splitlines()) == 1, err
    assert str(path) in err and where in err, err
    assert "<unicode string>" not in err, err


@pytest.mark.parametrize("store", ["folds", "cleaned", "downloads"])
def test_unwritable_store_in_a_writable_cache_fails_up_front(tmp_path: Path, store: str) -> None:
    """The cache folder is fine but one of its stores is a regular file (tests run as root:
    chmod would not stop them; a read-only mount fails the same probe): refused, naming it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / store).write_bytes(b"a regular file, not a folder\n")
    with pytest.raises(PermanentError) as excinfo:
        check_cache_dir.fn(str(cache))
    message = str(excinfo.value)
    assert f"cache folder {cache.resolve() / store} is not writable" in message, message
    assert "--cache-dir" in message
    assert (cache / store).read_bytes() == b"a regular file, not a folder\n"


# --- the out-of-fold table: synthetic fold results on real cleaned data ----------------------


def synthetic_results(
    data: CleanedData, folds: list[FoldSpec], confident: bool = False
) -> list[FoldResult]:
    """One result per fold: uniform probabilities, or `confident` ones (so different files)."""
    ids = pd.read_parquet(data.path, columns=[data.spec.key])[data.spec.key].to_numpy()
    k = len(data.classes)
    results = []
    for spec in folds:
        n = len(spec.test_positions)
        predictions = np.full((n, k), 1.0 / k)
        if confident:
            predictions = 0.5 * predictions + 0.5 * np.eye(k)[np.arange(n) % k]
        run = FoldRun(
            scores={"accuracy": 0.1, "log_loss": float(np.log(k))},
            final_loss=1.0,
            epochs=2,
            train_seconds=0.0,
            started_at=0.0,
            finished_at=0.0,
            worker="synthetic",
            device="CPU",
            attempt=1,
        )
        results.append(
            FoldResult(
                fold=spec.index,
                test_ids=ids[spec.test_positions],
                test_positions=spec.test_positions,
                predictions=predictions,
                run=run,
                history={"loss": [1.2, 1.1]},
            )
        )
    return results


def test_ids_beyond_float_and_int64_reach_the_oof_table_exactly(tmp_path: Path) -> None:
    """Ids beyond 2**53 and beyond int64 come back in the OOF table exactly as in the file."""
    lines = user_table(
        40, customer=lambda i: str(2**53 + 1 + i) if i % 2 else str(2**64 + i),
        y=lambda i: "ab"[i % 2],  # classes: the synthetic results are probabilities
    )  # fmt: skip
    source = tmp_path / "ids.csv"
    source.write_bytes(to_bytes(lines))
    out = run_steps(step_config(str(source), tmp_path, **USER))
    assert out.error is None and out.data is not None and out.folds is not None
    join_out_of_fold.fn(
        out.data, out.folds, synthetic_results(out.data, out.folds), str(tmp_path / "out")
    )
    table = pd.read_parquet(tmp_path / "out" / OOF_PARQUET)
    written = sorted(line.split(",")[0] for line in lines[1:])
    assert sorted(table["customer"].astype(str).tolist()) == written
    assert len(table) == 40


# --- a full disk (issue 19) -----------------------------------------------------------------


def test_free_space_check_refuses_outputs_that_cannot_fit(tmp_path: Path) -> None:
    """The check is a pure function of the folder, the bytes needed and the bytes free."""
    check_free_space(tmp_path, 10**6, 10**6)  # exactly fits
    with pytest.raises(OutputSpaceError) as excinfo:
        check_free_space(tmp_path, 3_500_000_000, 1_200_000_000)
    message = str(excinfo.value)
    assert f"output folder {tmp_path}" in message and "--output-dir" in message
    assert "1.2 GB (1200000000 bytes) free" in message and "3.5 GB (3500000000 bytes)" in message


def test_output_estimate_covers_what_the_join_writes(join_inputs: JoinInputs) -> None:
    """The estimate is no smaller than the real OOF files of the bundled data (no models)."""
    j = join_inputs
    written = sum(len(blob) for blob in j.outputs.values())
    estimate = output_bytes(j.data, ModelConfig(hidden_units=[1]), n_models=0)
    assert written <= estimate <= 10 * written + 2 * 1024 * 1024


def test_full_disk_while_writing_outputs_names_the_folder(
    tmp_path: Path, join_inputs: JoinInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in pyarrow's writer: an error naming the folder and files, no library chain."""
    j = join_inputs
    out = tmp_path / "out"
    j.seed(out)
    with monkeypatch.context() as patch:
        _crash_to_parquet(patch)
        with pytest.raises(OutputSpaceError) as excinfo:
            join_out_of_fold.fn(j.data, j.folds, j.results, str(out), RunInfo(name="full"))
    message = str(excinfo.value)
    assert f"in {out}" in message and OOF_PARQUET in message, message
    assert "No space left on device" in message and "bytes) free" in message, message
    assert excinfo.value.__suppress_context__ and excinfo.value.__cause__ is None
    assert sorted(os.listdir(out)) == sorted(OUTPUTS), "temporary files left behind"
    assert all((out / n).read_bytes() == blob for n, blob in j.outputs.items())


def test_integer_ids_beyond_int64_keep_numeric_order(tmp_path: Path) -> None:
    """One id above int64 makes the id column text; the OOF table still sorts by the integer."""
    lines = user_table(
        40, customer=lambda i: str(2**64 + i) if i == 7 else str(10 ** (i % 6) + i),
        y=lambda i: "ab"[i % 2],
    )  # fmt: skip
    source = tmp_path / "ids.csv"
    source.write_bytes(to_bytes(lines))
    out = run_steps(step_config(str(source), tmp_path, **USER))
    assert out.error is None and out.data is not None and out.folds is not None
    assert out.data.spec.id_dtype == "string"  # text, so the order is ours to get right
    join_out_of_fold.fn(
        out.data, out.folds, synthetic_results(out.data, out.folds), str(tmp_path / "out")
    )
    for written in (
        pd.read_parquet(tmp_path / "out" / OOF_PARQUET)["customer"].tolist(),
        pd.read_csv(tmp_path / "out" / OOF_CSV, dtype=str)["customer"].tolist(),
    ):
        ids = [int(v) for v in written]
        assert ids == sorted(ids) and len(ids) == 40 and ids[-1] == 2**64 + 7


def test_predict_warns_of_target_classes_the_model_never_saw(tmp_path: Path) -> None:
    """New rows whose target holds a class not in training: warned, naming class and count."""
    from tasks.bundle import Bundle
    from tasks.predict import read_new_rows

    train = tmp_path / "train.csv"
    train.write_bytes(to_bytes(user_table(40, y=lambda i: "ab"[i % 2])))
    out = run_steps(step_config(str(train), tmp_path, **USER))
    assert out.data is not None, out.error
    declared = DataSpec.model_validate(USER["data"])
    spec_doc = {"spec": out.data.spec.to_dict(), "data": declared.model_dump(mode="json")}
    bundle = Bundle(str(tmp_path / "model"), {}, spec_doc)  # no models: none are needed to read
    new = tmp_path / "new.csv"
    new.write_bytes(to_bytes(user_table(12, y=lambda i: "abcaac"[i % 6] if i < 11 else "")))
    rows = read_new_rows.fn(str(new), "new.csv", bundle)
    unseen = [w for w in rows.warnings if "never saw" in w]
    assert unseen == [
        "new.csv: target column 'y' holds 3 row(s) of class(es) the model never saw, "
        "which count as wrong: 'c' (3 rows)"
    ], rows.warnings


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem (tmpfs); skipped where this process may not mount one."""
    import subprocess

    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_real_full_disk_is_refused_up_front_and_named_when_writing(
    tiny_disk: Path, join_inputs: JoinInputs
) -> None:
    """On a real 64 KiB disk: the flow's up-front check refuses the bundled data's outputs, and
    writing them anyway fails with ENOSPC from pyarrow, named, leaving no file behind."""
    j = join_inputs
    needed = output_bytes(j.data, ModelConfig(), n_models=5)
    with pytest.raises(OutputSpaceError, match=f"output folder {tiny_disk} has"):
        check_output_dir.fn(str(tiny_disk), needed)
    with pytest.raises(OutputSpaceError) as excinfo:
        join_out_of_fold.fn(j.data, j.folds, j.results, str(tiny_disk), RunInfo(name="full"))
    message = str(excinfo.value)
    assert f"in {tiny_disk}" in message and OOF_PARQUET in message, message
    assert "No space left on device" in message, message
    assert os.listdir(tiny_disk) == [], "a half-written file was left behind"


# --- a crash while writing the outputs ------------------------------------------------------


@dataclass(frozen=True)
class JoinInputs:
    """The bundled data cleaned, its 5 folds, synthetic results, and earlier good outputs."""

    data: CleanedData
    folds: list[FoldSpec]
    results: list[FoldResult]
    outputs: dict[str, bytes]

    def seed(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, blob in self.outputs.items():
            (folder / name).write_bytes(blob)


@pytest.fixture(scope="module")
def join_inputs(tmp_path_factory: pytest.TempPathFactory) -> JoinInputs:
    tmp = tmp_path_factory.mktemp("join")
    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp / "cache"), DataSpec())
    folds = split_folds(data.n_rows, 5, True, 42)
    good = tmp / "good"
    join_out_of_fold.fn(
        data, folds, synthetic_results(data, folds, confident=True), str(good),
        RunInfo(name="good"),
    )  # fmt: skip
    outputs = {name: (good / name).read_bytes() for name in OUTPUTS}
    return JoinInputs(data, folds, synthetic_results(data, folds), outputs)


def _half_then_raise(real: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a DataFrame writer: write the file, keep its first half, then crash."""

    def writer(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, path, *args, **kwargs)
        blob = Path(path).read_bytes()
        Path(path).write_bytes(blob[: len(blob) // 2])
        raise OSError(28, "No space left on device (injected)")

    return writer


def _crash_to_parquet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _half_then_raise(pd.DataFrame.to_parquet))


def _crash_to_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pd.DataFrame, "to_csv", _half_then_raise(pd.DataFrame.to_csv))


def _crash_json(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_text

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(Path, "write_text", write_text)


def _crash_second_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first output is renamed into place, then the second rename fails."""
    real = os.replace
    calls = []

    def replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error (injected)")
        real(src, dst)

    monkeypatch.setattr(tasks.outputs.os, "replace", replace)


@pytest.mark.parametrize(
    "crash",
    [
        pytest.param(_crash_to_parquet, id="crash-writing-parquet"),
        pytest.param(_crash_to_csv, id="crash-writing-csv"),
        pytest.param(_crash_json, id="crash-writing-metrics-json"),
        pytest.param(_crash_second_rename, id="crash-between-renames"),
    ],
)
def test_crash_while_writing_outputs_keeps_previous_files(
    crash: Callable[[pytest.MonkeyPatch], None],
    tmp_path: Path,
    join_inputs: JoinInputs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    j = join_inputs
    out = tmp_path / "out"
    j.seed(out)
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(OSError, match="injected"):
            join_out_of_fold.fn(j.data, j.folds, j.results, str(out), RunInfo(name="crash"))
    assert sorted(os.listdir(out)) == sorted(OUTPUTS), "temporary files left behind"
    changed = [n for n, blob in j.outputs.items() if (out / n).read_bytes() != blob]
    if changed:
        raise AssertionError(f"{changed} changed by the crashed write")
    # Without the crash the same call does replace them: the crash test is not vacuous.
    join_out_of_fold.fn(j.data, j.folds, j.results, str(out), RunInfo(name="no-crash"))
    assert (out / OOF_PARQUET).read_bytes() != j.outputs[OOF_PARQUET]
    assert set(os.listdir(out)) >= set(OUTPUTS)
    assert not [n for n in os.listdir(out) if _is_temp_name(n)]
