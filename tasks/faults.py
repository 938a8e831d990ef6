"""Opt-in fault injection, for tests and demonstrations of retries and resume.

FOLDFLOW_FAIL_FOLDS is a comma-separated list of FOLD[:HOW]. FOLD alone fails that fold on
every attempt; FOLD:N fails its first N attempts only; FOLD:kill kills the worker process
mid-fold (a Crashed task, as when a machine dies). Unset (the default), nothing happens.
The flow reads it once (`fault_plan_from_env`) and the plan travels to each fold in its
`FoldRuntime`; a fold served from the cache does not run, so nothing is injected into it.
"""

from __future__ import annotations

import os
import signal

from tasks.errors import TransientError

FAIL_FOLDS_ENV = "FOLDFLOW_FAIL_FOLDS"


class InjectedFault(TransientError):
    """Raised on purpose by FOLDFLOW_FAIL_FOLDS; transient, so retries apply."""


def parse_fail_folds(spec: str) -> dict[int, int | str]:
    """'3' -> {3: 'always'}, '3:1' -> {3: 1}, '2:kill' -> {2: 'kill'}."""
    plan: dict[int, int | str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fold, _, how = item.partition(":")
        if not fold.isdigit() or (how and how != "kill" and not how.isdigit()):
            raise ValueError(
                f"{FAIL_FOLDS_ENV}: cannot read {item!r}; use FOLD, FOLD:N or FOLD:kill"
            )
        plan[int(fold)] = int(how) if how.isdigit() else (how or "always")
    return plan


def fault_plan_from_env() -> dict[int, int | str]:
    """The fault plan the user asked for through FOLDFLOW_FAIL_FOLDS (empty when unset)."""
    return parse_fail_folds(os.environ.get(FAIL_FOLDS_ENV, ""))


def maybe_inject_fault(fold: int, attempt: int, plan: dict[int, int | str]) -> None:
    """Fail this fold now if the run's fault plan asks for it."""
    how = plan.get(fold)
    if how is None:
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "always" or (isinstance(how, int) and attempt <= how):
        raise InjectedFault(
            f"fold {fold}: injected failure on attempt {attempt} ({FAIL_FOLDS_ENV}={how})"
        )
