"""The trials of a study, run as fold tasks: Optuna asks and is told, foldflow trains the folds.

`run_search` keeps `parallel_trials` trials in flight. Each trial's folds are the run's own
fold task (same cache key: a config seen before reuses its folds), submitted to the shared
runner at most one per free worker, the trial with the fewest folds submitted first (so trials
in flight advance a fold at a time), and a pruned trial's remaining folds are never submitted.
After each fold the trial's running score over the folds done so far, in plan order (step =
folds done), goes to the pruner; a permanent error fails the trial and the study goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect.futures import as_completed
from pydantic import ValidationError

from flows.execution import FoldExecution, fold_task, outcome
from tasks.clean import CleanedData
from tasks.config import CVConfig, ModelConfig
from tasks.folds import FoldSpec
from tasks.logs import run_logger
from tasks.metrics import FailedFold
from tasks.objective import Truth, pooled_score
from tasks.search_space import SearchSpace
from tasks.train import FoldResult
from tasks.trials import ERROR, FOLD_SCORES, FOLDS_TRAINED, OWNER, SECONDS


def this_process() -> str:
    """host:pid, recorded on each trial so a rerun can tell its own killed trials apart."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class TrialRun:
    """One trial in flight: its folds waiting, training and done."""

    trial: Any
    model: ModelConfig
    waiting: list[FoldSpec]
    started: float = field(default_factory=time.monotonic)
    done: dict[int, FoldResult] = field(default_factory=dict)
    reported: int = 0  # folds 1..reported (plan order) are done and were reported
    finished: bool = False


@dataclass
class SearchStats:
    """What the search did: fold trainings submitted, and the storage time per trial."""

    folds_submitted: int = 0
    storage_seconds: float = 0.0
    trials_run: int = 0


@dataclass
class Search:
    """The ask/tell loop over one study (see the module docstring)."""

    study: Any
    space: SearchSpace
    cv: CVConfig
    data: CleanedData
    folds: list[FoldSpec]
    truth: Truth
    metric: str
    execution: FoldExecution
    prune: bool
    parallel: int
    on_trial_end: Callable[[], None] = lambda: None
    stats: SearchStats = field(default_factory=SearchStats)
    running: dict[Any, tuple[TrialRun, int]] = field(default_factory=dict)

    def run(self, n_trials: int) -> SearchStats:
        """Run `n_trials` new trials, `parallel` at a time, until each is told."""
        trials: list[TrialRun] = []
        asked = 0
        while True:
            while asked < n_trials and sum(not t.finished for t in trials) < self.parallel:
                asked += 1
                started = self.ask()
                if started is not None:
                    trials.append(started)
            self.dispatch(trials)
            if not self.running:
                if asked >= n_trials:
                    return self.stats
                continue
            future = next(as_completed(list(self.running)))
            self.fold_finished(future)

    def timed(self, call: Callable[[], Any]) -> Any:
        """A storage call, its time added to the overhead the benchmark reports."""
        began = time.perf_counter()
        try:
            return call()
        finally:
            self.stats.storage_seconds += time.perf_counter() - began

    def ask(self) -> TrialRun | None:
        """A new trial; a sampled config the model refuses fails at once (None)."""
        trial = self.timed(lambda: self.study.ask(self.space.distributions()))
        self.timed(lambda: trial.set_user_attr(OWNER, this_process()))
        self.stats.trials_run += 1
        try:
            model = self.space.model_for(trial.params, self.cv.model)
        except ValidationError as err:
            why = err.errors()[0]["msg"].removeprefix("Value error, ")
            run = TrialRun(trial, self.cv.model, [])
            self.finish(run, "FAIL", error=f"the sampled config is refused: {why}")
            return None
        return TrialRun(trial, model, list(self.folds))

    def dispatch(self, trials: list[TrialRun]) -> None:
        """Fill free workers, fewest folds submitted first: a pruned trial leaves few training."""
        while len(self.running) < self.execution.workers:
            waiting = [run for run in trials if run.waiting and not run.finished]
            if not waiting:
                return
            run = min(waiting, key=lambda r: len(self.folds) - len(r.waiting))  # oldest on ties
            spec = run.waiting.pop(0)
            task = fold_task(self.cv).with_options(
                task_run_name=f"trial-{run.trial.number}.{spec.label}"
            )
            parameters = {"data": self.data, "fold": spec, "model": run.model,
                          "seed": self.cv.seed, "runtime": self.execution.runtime}  # fmt: skip
            future = self.execution.runner.submit(task, parameters)
            self.running[future] = (run, self.folds.index(spec))
            self.stats.folds_submitted += 1

    def fold_finished(self, future: Any) -> None:
        """A fold came back: report the running score, prune, fail or complete its trial."""
        run, position = self.running.pop(future)
        spec = self.folds[position]
        result = outcome(future, spec.index, spec.repeat, spec.label)
        if run.finished:
            return  # a pruned or failed trial's fold that was already training
        if isinstance(result, FailedFold):
            self.finish(run, "FAIL", error=f"{result.label} {result.error}")
            return
        run.done[position] = result
        while run.reported < len(self.folds) and run.reported in run.done:
            run.reported += 1
            prefix = [run.done[i] for i in range(run.reported)]
            score = pooled_score(self.metric, self.truth, prefix)
            self.timed(lambda s=score, step=run.reported: run.trial.report(s, step))
            if run.reported == len(self.folds):
                self.finish(run, "COMPLETE", value=score)
                return
            if self.prune and self.timed(run.trial.should_prune):
                self.finish(run, "PRUNED")
                return

    def finish(
        self, run: TrialRun, state: str, value: float | None = None, error: str = ""
    ) -> None:
        """Tell Optuna how the trial ended, with its fold scores, folds trained and seconds."""
        from optuna.trial import TrialState

        run.finished, run.waiting = True, []
        ordered = [run.done[i] for i in sorted(run.done)]
        trial = run.trial
        attrs = {
            FOLD_SCORES: [pooled_score(self.metric, self.truth, [r]) for r in ordered],
            FOLDS_TRAINED: len(ordered),
            SECONDS: round(time.monotonic() - run.started, 3),
        }
        if error:
            attrs[ERROR] = error
        for key, item in attrs.items():
            self.timed(lambda k=key, v=item: trial.set_user_attr(k, v))
        told = TrialState[state]
        self.timed(lambda: self.study.tell(trial, value if told == TrialState.COMPLETE else None,
                                           state=told))  # fmt: skip
        shown = f" {self.metric} {value:.4f}" if value is not None else ""
        reason = f": {error}" if error else ""
        run_logger().info(
            "trial %d %s%s after %d of %d folds%s",
            trial.number, state.lower(), shown, len(ordered), len(self.folds), reason,
        )  # fmt: skip
        self.on_trial_end()


def fail_interrupted(study: Any) -> int:
    """Trials a killed run of this machine left RUNNING: failed, their params enqueued again.

    Their completed folds are in the fold cache, so the new trial continues from them. Trials
    of other machines (a shared study) are left alone: they may still be running.
    """
    import psutil
    from optuna.trial import TrialState

    host = socket.gethostname()
    again = 0
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get(OWNER, "")).rpartition(":")
        if owner_host != host or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        told = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        run_logger().info("trial %d was interrupted (%s); its params run again", trial.number,
                          told.state.name.lower())  # fmt: skip
        study.enqueue_trial(trial.params, skip_if_exists=False)
        again += 1
    return again
