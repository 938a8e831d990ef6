"""A bad input or a failing step fails the whole flow clearly, with nothing lost (issue 3).

The few cases that need the real `cross_validate` flow, under the session's Prefect test
harness (conftest): one per kind of failure, to prove the error propagates through the flow.
Every other malformed input is a fast plain-call case in `tests/test_bad_inputs_pure.py`.
Each case checks that

1. the flow run ends Failed, with an error naming the file, URL or folder and what is wrong;
2. the failure happened in the expected task, and no later step ran (the API's task runs);
3. no partial or stray file is left in the cache's ``downloads/`` and ``cleaned/`` folders, or
   anywhere in the output folder (no ``*.tmp``, ``.part-*`` or other leftovers);
4. the outputs of an earlier run, in the output folder before the bad case, are
   byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from flows.cross_validate import cross_validate
from tasks.clean import clean_to_parquet
from tasks.config import BUNDLED_DATA, CVConfig, DownloadConfig, ExecutionConfig, ModelConfig
from tasks.data.spec import DataSpec
from tasks.faults import FAIL_FOLDS_ENV
from tasks.folds import split_folds
from tasks.join import METRICS_JSON, OOF_CSV, OOF_PARQUET, join_out_of_fold
from tests.loopback_http import Reply, serve
from tests.prefect_runs import settled_task_runs
from tests.test_bad_inputs_pure import assert_cache_complete, synthetic_results, walk_files

pytestmark = pytest.mark.slow  # each case is a flow run; the session's first also imports TF

OUTPUTS = (OOF_PARQUET, OOF_CSV, METRICS_JSON)
ROUTE = "/data.csv"

HEADER, *ROWS = BUNDLED_DATA.read_text(encoding="utf-8").splitlines()
COLUMNS = HEADER.split(",")
SMALL = ("\n".join([HEADER, *ROWS[:100]]) + "\n").encode()

# The flow's steps in the order it runs them; "train-folds" stands for the fold task runs.
STEPS = ("check-cache-dir", "download", "clean", "plan-folds", "check-output-dir",
         "train-folds", "join")  # fmt: skip


def set_field(line: str, column: str, value: str) -> str:
    """The line with one column's value replaced."""
    cells = line.split(",")
    cells[COLUMNS.index(column)] = value
    return ",".join(cells)


def flow_config(source: str, tmp: Path, **overrides: Any) -> CVConfig:
    """The suite's config: tiny training, one thread worker, fast download retries."""
    download = DownloadConfig(retries=1, retry_delay_s=0, timeout_s=1.0, max_bytes=10**7)
    base: dict[str, Any] = dict(
        source=source,
        model=ModelConfig(epochs=2),
        folds=2,
        output_dir=str(tmp / "out"),
        cache_dir=str(tmp / "cache"),
        execution=ExecutionConfig(runner="thread", workers=1),
        fold_retries=0,
        download=download,
    )
    return CVConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def earlier_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real output files of an earlier run (its join on synthetic fold results: no training)."""
    tmp = tmp_path_factory.mktemp("earlier")
    sha = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    data = clean_to_parquet.fn(str(BUNDLED_DATA), sha, str(tmp / "cache"), DataSpec())
    folds = split_folds(data.n_rows, 5, True, 42)
    join_out_of_fold.fn(data, folds, synthetic_results(data, folds), str(tmp / "out"))
    return {name: (tmp / "out" / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy configured in the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One case's paths, handed to its prepare hook."""

    tmp: Path
    source: str
    cache_dir: Path
    output_dir: Path
    guarded: dict[Path, bytes] = field(default_factory=dict)  # files that must not change
    state: Any = None


@dataclass(frozen=True)
class Case:
    """One failure and what the flow must do with it.

    body: the CSV bytes, written to a local file unless `routes` serves them over HTTP.
    routes: loopback routes (path ROUTE is the source).
    failed_task: the step whose failure fails the flow (no later step may run, but `then`).
    then: later steps that do run, with the state they must end in.
    expect: fragments the error must contain; {source}, {cache} and {output} are filled in.
    hits: how many requests the server must have seen (retries included).
    env: environment variables for the run (FOLDFLOW_FAIL_FOLDS).
    config: config fields the case changes.
    """

    failed_task: str
    expect: tuple[str, ...]
    body: bytes | None = None
    routes: Callable[[], dict[str, Any]] | None = None
    then: dict[str, str] = field(default_factory=dict)
    hits: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Ctx], None] | None = None
    config: dict[str, Any] = field(default_factory=dict)


def http(reply: Reply) -> Callable[[], dict[str, Any]]:
    return lambda: {ROUTE: reply}


def _blocked_by_a_file(folder: str) -> Callable[[Ctx], None]:
    """Make the cache or output folder impossible: under a regular file (tests run as root, so
    chmod would not stop them)."""

    def prepare(ctx: Ctx) -> None:
        blocker = ctx.tmp / "blocker"
        blocker.write_bytes(b"a regular file, not a folder\n")
        ctx.guarded[blocker] = blocker.read_bytes()
        setattr(ctx, folder, blocker / folder)

    return prepare


def _fold_store_a_file(ctx: Ctx) -> None:
    """A writable cache whose fold store cannot be written (a file where the folder would be)."""
    store = ctx.cache_dir / "folds"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"a regular file, not a folder\n")
    ctx.guarded[store] = store.read_bytes()


def wider_than_the_disk() -> list[int]:
    """Two hidden layers so wide that the 2 fold models' files (float32 weights and Adam's two
    slots each) would need four times the disk the tests' temporary folder has free."""
    free = shutil.disk_usage(tempfile.gettempdir()).free
    return [math.isqrt(4 * free // (2 * 12)) + 1] * 2


CASES = [
    pytest.param(
        Case(
            "check-cache-dir",
            ("cache folder {cache}", "is not writable", "--cache-dir"),
            body=SMALL,
            prepare=_blocked_by_a_file("cache_dir"),
        ),
        id="cache-dir-under-a-file",
    ),
    pytest.param(
        Case(
            "check-cache-dir",
            ("cache folder {cache}/folds", "is not writable", "--cache-dir"),
            body=SMALL,
            prepare=_fold_store_a_file,
        ),
        id="fold-store-not-writable",
    ),
    pytest.param(
        Case(
            "download",
            ("{source}", "HTTP 500", "gave up after 2 attempt"),  # retries=1: two tries
            routes=http(Reply(500, b"down for maintenance")),
            hits=2,
        ),
        id="download-500-forever",
    ),
    pytest.param(
        Case(
            "clean",
            (
                "{source} (downloaded to ",  # the URL, not only the local copy
                "column 'age' row 2 (line 3) has non-numeric value 'thirty'",
            ),
            routes=http(
                Reply(body="\n".join([HEADER, ROWS[0], set_field(ROWS[1], "age", "thirty"),
                                      *ROWS[2:50]]).encode())  # fmt: skip
            ),
            hits=1,
        ),
        id="schema-error-over-http-names-url",
    ),
    pytest.param(
        Case(
            "check-output-dir",
            ("output folder {output}", "is not writable", "--output-dir"),
            body=SMALL,
            prepare=_blocked_by_a_file("output_dir"),
        ),
        id="output-dir-under-a-file",
    ),
    pytest.param(
        Case(
            "check-output-dir",
            ("output folder {output}", "bytes) free", "model bundle", "--output-dir"),
            body=SMALL,
            config={"model": ModelConfig(epochs=2, hidden_units=wider_than_the_disk())},
        ),
        id="outputs-larger-than-the-free-disk",
    ),
    pytest.param(
        Case(
            "train-folds",
            ("fold 2 failed after 1 attempt", "InjectedFault"),
            body=SMALL,
            then={"join": "FAILED"},  # the join names the failed fold and writes nothing
            env={FAIL_FOLDS_ENV: "2"},
        ),
        id="fold-crash",
    ),
]


# --- checks ----------------------------------------------------------------------------------


def assert_no_partial_files(cache_dir: Path, output_dir: Path) -> None:
    """Only complete, verified files may remain; the output folder holds just the earlier ones."""
    assert_cache_complete(cache_dir)
    if output_dir.is_dir():
        found = {str(p.relative_to(output_dir)) for p in walk_files(output_dir)}
        assert found == set(OUTPUTS), f"output folder holds {sorted(found)}"


def _expected_runs(case: Case, n_folds: int) -> set[str]:
    """The task-run names the API must hold: every step up to the failed one, and `then`."""
    steps = [*STEPS[: STEPS.index(case.failed_task) + 1], *case.then]
    folds = [f"fold-{k}" for k in range(1, n_folds + 1)]
    return {name for step in steps for name in (folds if step == "train-folds" else [step])}


def task_states(state: Any, present: set[str]) -> dict[str, str]:
    """Step name -> final state type of the flow run's task runs ('train-folds' = the folds).

    Read once the API has recorded every task run's final state (`settled_task_runs`): the
    server records them from events, after the flow run has ended.
    """
    with get_client(sync_client=True) as client:
        runs = settled_task_runs(client, state.state_details.flow_run_id, present=present)
    found: dict[str, str] = {}
    for run in runs:
        if run.name.startswith("fold-"):  # the fan-out: COMPLETED only if every fold completed
            if found.get("train-folds") in (None, "COMPLETED"):
                found["train-folds"] = run.state_type.value
        else:
            found[run.name] = run.state_type.value
    return found


def _run_case(case: Case, ctx: Ctx) -> int | None:
    """Serve or place the input, run the flow on it; the server's request count, if served."""
    with ExitStack() as stack:
        base = stack.enter_context(serve(case.routes())) if case.routes else None
        if base is not None:
            ctx.source = f"{base}{ROUTE}"
        if case.prepare is not None:
            case.prepare(ctx)
        config = flow_config(ctx.source, ctx.tmp, **case.config).model_copy(
            update={"output_dir": str(ctx.output_dir), "cache_dir": str(ctx.cache_dir)}
        )
        ctx.state = cross_validate(config, return_state=True)
        return base.hits[ROUTE] if base is not None else None


@pytest.mark.parametrize("case", CASES)
def test_failure_fails_the_flow_early_and_cleanly(
    case: Case,
    tmp_path: Path,
    earlier_outputs: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    ctx = Ctx(
        tmp=tmp_path,
        source=str(tmp_path / "input" / "data.csv"),
        cache_dir=tmp_path / "cache",
        output_dir=tmp_path / "out",
    )
    if case.body is not None and case.routes is None:
        Path(ctx.source).parent.mkdir()
        Path(ctx.source).write_bytes(case.body)
    ctx.output_dir.mkdir()
    for name, blob in earlier_outputs.items():
        (ctx.output_dir / name).write_bytes(blob)
        ctx.guarded[ctx.output_dir / name] = blob

    hits = _run_case(case, ctx)
    state = ctx.state
    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BaseException), error

    present = _expected_runs(case, flow_config(ctx.source, tmp_path).folds)
    tasks_run = task_states(state, present)
    assert tasks_run.get(case.failed_task) == "FAILED", tasks_run
    before = STEPS[: STEPS.index(case.failed_task)]
    assert all(tasks_run.get(step) == "COMPLETED" for step in before), tasks_run
    later = {step: tasks_run[step] for step in STEPS if step in tasks_run}
    later = {k: v for k, v in later.items() if k not in before and k != case.failed_task}
    assert later == case.then, f"later steps ran: {tasks_run}"
    if case.hits is not None:
        assert hits == case.hits, f"server saw {hits} requests"
    for path, blob in ctx.guarded.items():
        assert path.read_bytes() == blob, f"{path} changed"
    assert_no_partial_files(ctx.cache_dir, ctx.output_dir)
    # Last, so a message problem is reported after every other check has run.
    message = str(error)
    filled = {
        "source": ctx.source,
        "cache": str(ctx.cache_dir.resolve()),
        "output": str(ctx.output_dir.resolve()),
    }
    wanted = [f.format(**filled) for f in case.expect]
    missing = [w for w in wanted if w not in message]
    if missing:
        raise AssertionError(f"error lacks {missing}: {message}")
