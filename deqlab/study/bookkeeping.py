"""The driver's books while Tune runs: the statuses trials cannot write themselves, progress lines, and
a results snapshot kept fresh for the dashboard.

The driver owns two statuses: pruned (a trial Tune stopped, by ASHA or the time budget, before its last
epoch) and failed (crashed after its retries). `StudyBooks` is Tune's callback (`make_callback` mixes in
`tune.Callback`, imported only then: Ray takes seconds to import).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

from ..results import Status, StudyStore, compact, finalize_trial, load, study_path
from .failures import trial_error
from .heartbeat import Heartbeat
from .spec import StudySpec
from .trial import assignment_of, trial_id_of

# While a study runs the driver re-compacts its results (the dashboard's cold load reads the snapshot) at
# most every COMPACT_EVERY_S seconds and at least COMPACT_COST_RATIO x the last compaction's duration apart.
COMPACT_EVERY_S = 30.0
COMPACT_COST_RATIO = 10.0


class CompactionSchedule:
    """When the driver may compact a running study: `min_interval_s` after the last compaction ended (or
    the study started), and never sooner than `cost_ratio` x that compaction's duration, so compacting
    takes at most 1/(1 + cost_ratio) of the driver's time however large the study grows."""

    def __init__(self, min_interval_s: Optional[float] = None, cost_ratio: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval_s = COMPACT_EVERY_S if min_interval_s is None else min_interval_s
        self.cost_ratio = COMPACT_COST_RATIO if cost_ratio is None else cost_ratio
        self.clock = clock
        self.restart()

    def restart(self) -> None:
        self.last_end, self.last_duration = self.clock(), 0.0

    def due(self) -> bool:
        return self.clock() - self.last_end >= max(self.min_interval_s, self.cost_ratio * self.last_duration)

    def run(self, fn: Callable[[], object]):
        """Run `fn` (the compaction), timing it; its exceptions propagate, its time still counts."""
        start = self.clock()
        try:
            return fn()
        finally:
            self.last_end = self.clock()
            self.last_duration = self.last_end - start


def _train_config(spec: StudySpec, config: dict):
    """A Tune trial's training config, or None when it cannot be rebuilt (bookkeeping must not take the
    driver down)."""
    try:
        return spec.train_config(assignment_of(config))
    except Exception:
        return None


def settle_trial(storage: str, spec: StudySpec, trial_id: str, config) -> str:
    """Record how a trial Tune stopped ended, when the trial did not write it itself; return its status.

    A final status the trial wrote (completed, diverged) stays. A trial still `running` on disk (or with
    no file yet) was stopped by Tune: at its last epoch (ASHA's max_t) it is completed, earlier (ASHA, or
    the time budget) it is pruned, keeping the epochs it ran. `config` is its TrainConfig (None: unknown,
    so pruned).
    """
    status, last_epoch = StudyStore.of(storage, spec.name).trial_progress(trial_id)
    if status not in (None, Status.RUNNING):
        return status
    epochs = config.epochs + config.pretrain_epochs if config is not None else None
    final = Status.COMPLETED if epochs is not None and last_epoch + 1 >= epochs else Status.PRUNED
    return finalize_trial(storage, spec.name, trial_id, final, params=config.flat_params() if config else None)


def settle_stopped_trials(storage: str, spec: StudySpec, configs: dict) -> dict:
    """After Tune returns: settle every trial of the study still `running` on disk.

    When `search.time_budget_s` runs out Tune stops its running trials without calling the callbacks'
    `on_trial_complete`, so nothing else records them. `configs` maps trial ids to their Tune configs
    (trials not in it are pruned). Returns {trial id: status now}.
    """
    trials = load(study_path(storage, spec.name), traces=False).trials
    if trials.empty:
        return {}
    running = sorted(trials.loc[trials.status == Status.RUNNING, "trial_id"].unique())
    return {tid: settle_trial(storage, spec, tid, _train_config(spec, configs[tid]) if tid in configs else None)
            for tid in running}


class StudyBooks:
    """Tune callback hooks: settle each trial as it ends, print progress, compact on its schedule."""

    def __init__(self, spec: StudySpec, storage: str, say: Callable[[str], None]):
        self.spec, self.storage, self.say = spec, storage, say
        self.metric, self.mode = spec.metrics[0], spec.modes[0]
        self.total = spec.search.samples * (len(spec.grid()) if spec.search.algorithm == "grid" else 1)
        self.path = study_path(storage, spec.name)
        self.best: Optional[float] = None
        self.best_trial: Optional[str] = None
        self.t0 = time.perf_counter()
        self.compaction = CompactionSchedule()
        self.beat, self.lengths = Heartbeat(self.total), {}

    def setup(self, **info):
        # a restored study brings this object back from Tune's saved state: its clocks are another process's
        self.t0 = time.perf_counter()
        self.compaction.restart()
        self.beat.restart()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        line = self.beat.update(self._id(trial), result.get("epoch"), self._length(trial))
        if line:
            self.say(line)
        value = result.get(self.metric)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_trial = value, self._id(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.beat.finish(self._id(trial))
        status = settle_trial(self.storage, self.spec, self._id(trial), self._config(trial))
        self._report(trials, trial, status)
        self._maybe_compact()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.beat.finish(self._id(trial))
        error = trial_error(trial)
        config = self._config(trial)
        status = finalize_trial(self.storage, self.spec.name, self._id(trial), Status.FAILED, error=error or "trial failed",
                                params=config.flat_params() if config else {})
        self._report(trials, trial, status + (f": {error}" if error else ""))
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if not self.compaction.due():
            return
        try:
            self.compaction.run(lambda: compact(self.path))
        except Exception as exc:  # a snapshot is only a speed-up: the study goes on without it
            self.say(f"warning: could not compact {self.path}: {exc}")

    def _config(self, trial):
        return _train_config(self.spec, trial.config)

    @staticmethod
    def _id(trial) -> str:
        """The trial's id in the study's files (a resumed study's trial may continue an earlier one's)."""
        return trial_id_of(trial.config or {}, trial.trial_id)

    def _length(self, trial) -> int:
        """Epochs the trial runs if not pruned (read from its config once)."""
        if trial.trial_id not in self.lengths:
            config = self._config(trial)
            self.lengths[trial.trial_id] = config.pretrain_epochs + config.epochs if config else 0
        return self.lengths[trial.trial_id]

    def _report(self, trials, trial, status: str) -> None:
        # Tune calls this before it updates the trial's own status: count it as done, not running
        others = [t for t in trials if t is not trial]
        done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in others)
        running = sum(t.status == "RUNNING" for t in others)
        best = f"best {_shown(self.metric, self.best)} ({self.best_trial})" if self.best is not None else ""
        self.say(f"[{done}/{self.total} done, {running} running, {time.perf_counter() - self.t0:.0f} s] "
                 f"{self._id(trial)} {status}  {best}")


def make_callback(spec: StudySpec, storage: str, say: Callable[[str], None]):
    """The books as a `tune.Callback` (Tune calls the hooks it does not find on StudyBooks as no-ops)."""
    from ray import tune

    class StudyCallback(StudyBooks, tune.Callback):
        pass

    return StudyCallback(spec, storage, say)


def _shown(metric: str, value: float) -> str:
    """A metric as the tables show it: `Test acc. (%) 96.39`, not `test_acc 0.9639`."""
    from ..results import metric_info

    info = metric_info(metric)
    return f"{info.title} {value * info.scale:.4g}"


__all__ = ["make_callback", "settle_trial", "settle_stopped_trials", "CompactionSchedule", "StudyBooks"]
