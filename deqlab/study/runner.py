"""Run, resume and summarise a study on Ray Tune with Optuna.

A study directory `<storage>/<name>/` holds everything: `study.yaml` (the
validated spec as run), `trials/` and `traces/` (Parquet, one file per trial,
written by the trials), `optuna.db` (the Optuna study in SQLite, for
optuna-dashboard and Optuna's analysis tools) and `tune/` (Tune's experiment
state of the current run). One driver at a time holds the study's lock file
(`durable.StudyLock`); `resume` continues from the trials' files, not from
Tune's saved state (`durable`). The driver owns the statuses a trial cannot
write itself: pruned (stopped by ASHA or the time budget) and failed (crashed
after its retries).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..results import _filesystem, compact, finalize_trial, load, trial_progress, write_text_atomic
from .cluster import code_path_for_workers, refuse_unshared_storage
from .durable import (ResumePlan, StudyLock, check_owner, disk_full_error, disk_is_full, failed_for_space,
                      is_disk_full, plan_resume)
from .failures import trial_error
from .heartbeat import Heartbeat
from .interrupt import StudyInterrupted, graceful_interrupt, resume_hint
from .spec import StudyError, StudySpec, drop_inert, parse_study
from .space import suggest, walk
from .trial import GRID_KEY, assignment_of, run_trial

TUNE_DIR = "tune"
OPTUNA_DB = "optuna.db"
# The Train controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s):
# each report after the first waits for it. 0.2 s cuts a short Train trial from ~20 s to ~12 s (docs/design.md).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
# While a study runs the driver re-compacts its results (the dashboard's cold load reads the snapshot) at
# most every COMPACT_EVERY_S seconds and at least COMPACT_COST_RATIO x the last compaction's duration apart.
COMPACT_EVERY_S = 30.0
COMPACT_COST_RATIO = 10.0


def study_dir(storage: str, name: str) -> str:
    """Absolute for a local root (Tune needs it), the URI itself for remote storage."""
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else f"{_filesystem(storage)[1]}/{name}"


def absolute_storage(storage: str) -> str:
    """Tune runs each trial in its own working directory: a relative root would land inside it."""
    return storage if "://" in storage else os.path.abspath(storage)


def _is_local(storage: str) -> bool:
    return "://" not in storage


# --------------------------------------------------------------------------- Ray


def start_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None) -> None:
    """Join a cluster (`address`) or start a local Ray sized to this machine (or to `num_cpus`)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: our progress lines only
    kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                  runtime_env={"env_vars": dict(RAY_ENV)})
    if address and (num_cpus is not None or num_gpus is not None):
        raise ValueError("--num-cpus/--num-gpus size a local Ray; a cluster (--address) has its own resources")
    with code_path_for_workers():  # not the caller's folder: a checkout named deqlab/ there shadows the package
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _trial_fits(spec: StudySpec) -> dict:
    """How many trials the cluster's resources hold at once, per resource kind (CPU, and GPU when used)."""
    import ray

    res = ray.cluster_resources()
    t = spec.trainer
    per_trial_cpu = t.cpus_per_worker * max(t.num_workers, 1) + (0.1 if t.num_workers else 0)
    fits = {"CPU": res.get("CPU", 1) / per_trial_cpu}
    if t.use_gpu and t.gpus_per_worker:
        fits["GPU"] = res.get("GPU", 0) / (t.gpus_per_worker * max(t.num_workers, 1))
    return fits


def check_fits(spec: StudySpec, local: bool, say: Callable[[str], None]) -> None:
    """A trial the local Ray can never hold is refused at once (Tune would wait forever, warning every
    60 s); on a cluster, which may still scale up, it is a warning."""
    import ray

    short = {kind: fit for kind, fit in _trial_fits(spec).items()
             if fit < 1 and (local or kind == "CPU")}  # a cluster's GPU nodes may start on demand: hinted below
    if not short:
        return
    have = ray.cluster_resources()
    t = spec.trainer
    what = ", ".join(f"{have.get(kind, 0):g} {kind}" for kind in short)
    msg = (f"trainer: one trial needs more than the {what} of the {'local Ray' if local else 'cluster'} "
           f"(num_workers {t.num_workers} x cpus_per_worker {t.cpus_per_worker:g}"
           + (f", gpus_per_worker {t.gpus_per_worker:g}" if t.use_gpu else "") + ")")
    if local:
        raise StudyError(f"{msg}: lower them, or give the local Ray more with --num-cpus")
    say(f"warning: {msg}: trials wait until the cluster scales up")


def _default_concurrency(spec: StudySpec) -> int:
    """How many trials the cluster holds at once, from its CPUs (and GPUs when used)."""
    return max(1, int(math.floor(min(_trial_fits(spec).values()) + 1e-9)))


def _waiting_for_gpus(spec: StudySpec) -> bool:
    """A GPU study on a cluster with no GPU for a trial yet (an autoscaling cluster starts its GPU nodes
    on demand): the default concurrency, taken from the resources at start, is then 1."""
    return spec.search.max_concurrent_trials is None and _trial_fits(spec).get("GPU", 1.0) < 1


def _trainable(spec: StudySpec, storage: str):
    from ray import tune

    t = spec.trainer
    if t.num_workers == 0:
        resources = {"cpu": t.cpus_per_worker, **({"gpu": t.gpus_per_worker} if t.use_gpu else {})}
    else:
        resources = {"cpu": 0.1}  # the trial only drives the TorchTrainer; its workers hold the resources
    fn = tune.with_parameters(run_trial, study=spec, storage=storage)  # the object: a trial parses nothing
    return tune.with_resources(fn, resources)


def _searcher(spec: StudySpec, storage: str, draws_done: int = 0):
    """OptunaSearch over the define-by-run space, its study in SQLite inside the study directory.

    A resumed study's sampler continues the SQLite history; its seed moves on by the trials already drawn
    (`draws_done`), else a random sampler would propose the first run's configurations again.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    s = spec.search
    seed = (s.seed + draws_done) % 2**32  # numpy takes seeds below 2**32
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    params = tuple(spec.params)
    multi = len(spec.objectives) > 1
    return _resumable_optuna_search()(
        space=DefineByRun(params),
        metric=spec.metrics if multi else spec.metrics[0],
        mode=spec.modes if multi else spec.modes[0],
        sampler=samplers[s.algorithm](),
        study_name=spec.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{_optuna_path(spec, storage)}"),
    )


def _resumable_optuna_search():
    """OptunaSearch that tolerates a result for an Optuna trial already finished (a trial Tune retried after
    it had finished reports its stored result again): Optuna keeps the values it already has."""
    from optuna.exceptions import UpdateFinishedTrialError
    from ray.tune.search.optuna import OptunaSearch

    class ResumableOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id, result):
            try:
                super().on_trial_result(trial_id, result)
            except UpdateFinishedTrialError:
                pass

    return ResumableOptunaSearch


def close_orphaned_optuna_trials(path: str, name: str) -> int:
    """After a study ends, Optuna trials still RUNNING were asked by a driver that died: mark them failed."""
    import optuna

    db = os.path.join(path, OPTUNA_DB)
    if not os.path.exists(db):
        return 0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    orphans = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    for number in orphans:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


@dataclass(frozen=True)
class DefineByRun:
    """The space as Optuna's define-by-run function; a class, not a lambda, so Tune can pickle the searcher."""

    params: tuple

    def __call__(self, trial) -> dict:
        return suggest(trial, list(self.params))  # fixed values ride along with the drawn ones


def _optuna_path(spec: StudySpec, storage: str) -> str:
    """SQLite needs a local file: remote studies keep it in a local cache and copy it up at the end."""
    if _is_local(storage):
        return os.path.join(study_dir(storage, spec.name), OPTUNA_DB)
    folder = os.path.join(tempfile.gettempdir(), "deqlab-optuna", spec.name)
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, OPTUNA_DB)
    if not os.path.exists(local):  # resumed on another machine: start from the copy in storage, if any
        _download(f"{study_dir(storage, spec.name)}/{OPTUNA_DB}", local)
    return local


def build_tuner(spec: StudySpec, storage: str, callbacks: list, *, plan: Optional[ResumePlan] = None):
    """A Tune run of the whole study, or with `plan` (a resume) of what is left of it."""
    from ray import tune

    s = spec.search
    concurrency = s.max_concurrent_trials or _default_concurrency(spec)
    trainable = _trainable(spec, storage)
    scheduler = None
    if spec.scheduler.name == "asha":
        base = spec.train_config({})
        scheduler = tune.schedulers.ASHAScheduler(
            metric=spec.metrics[0], mode=spec.modes[0], time_attr="training_iteration",
            max_t=base.epochs + base.pretrain_epochs, grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor)
    drawn = len(plan.finished) + len(plan.set_aside) if plan else 0
    search_alg = None if s.algorithm == "grid" else _searcher(spec, storage, drawn)
    return tune.Tuner(
        trainable,
        param_space=_param_space(spec, plan),
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                    num_samples=plan.samples if plan else s.samples,
                                    max_concurrent_trials=concurrency, time_budget_s=s.time_budget_s,
                                    # a fresh actor per trial re-imports torch/Ray Train/deqlab (~4.7 s here):
                                    # reusing it cut 3 ~8 s trials from 43.5 s to 28.1 s (platform_overhead.py).
                                    # Not with Ray Train: a trial ASHA stops is still inside TorchTrainer.fit(),
                                    # so its actor cannot be reset and Tune would fail the next trial instead
                                    reuse_actors=spec.trainer.num_workers == 0),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=study_dir(storage, spec.name), callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(
                max_failures=spec.trainer.max_failures if spec.trainer.num_workers == 0 else 0),
        ),
    )


def _param_space(spec: StudySpec, plan: Optional[ResumePlan] = None) -> dict:
    from ray import tune

    if spec.search.algorithm != "grid":
        return {}
    return {GRID_KEY: tune.grid_search(plan.grid if plan else spec.grid())}


# --------------------------------------------------------------------------- driver-side bookkeeping


@dataclass
class Progress:
    done: int = 0
    running: int = 0
    best: Optional[float] = None
    best_trial: Optional[str] = None


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
    status, last_epoch = trial_progress(storage, spec.name, trial_id)
    if status not in (None, "running"):
        return status
    epochs = config.epochs + config.pretrain_epochs if config is not None else None
    final = "completed" if epochs is not None and last_epoch + 1 >= epochs else "pruned"
    return finalize_trial(storage, spec.name, trial_id, final, params=config.flat_params() if config else None)


def settle_stopped_trials(storage: str, spec: StudySpec, configs: dict) -> dict:
    """After Tune returns: settle every trial of the study still `running` on disk.

    When `search.time_budget_s` runs out Tune stops its running trials without calling the callbacks'
    `on_trial_complete`, so nothing else records them. `configs` maps trial ids to their Tune configs
    (trials not in it are pruned). Returns {trial id: status now}.
    """
    trials = load(study_dir(storage, spec.name), traces=False).trials
    if trials.empty:
        return {}
    running = sorted(trials.loc[trials.status == "running", "trial_id"].unique())
    return {tid: settle_trial(storage, spec, tid, _train_config(spec, configs[tid]) if tid in configs else None)
            for tid in running}


def _tune_configs(result_grid) -> dict:
    """{trial id: Tune config} of the trials in a ResultGrid that reported at least once."""
    out = {}
    for result in result_grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is not None:
            out[trial_id] = result.config or {}
    return out


def _make_callback(spec: StudySpec, storage: str, say: Callable[[str], None]):
    from ray import tune

    metric, mode = spec.metrics[0], spec.modes[0]
    total = spec.search.samples * (len(spec.grid()) if spec.search.algorithm == "grid" else 1)
    path = study_dir(storage, spec.name)

    class StudyCallback(tune.Callback):
        """Writes the statuses trials cannot write themselves, prints progress, and keeps the results
        snapshot fresh for the dashboard while the study runs."""

        def __init__(self):
            self.p = Progress()
            self.t0 = time.perf_counter()
            self.compaction = CompactionSchedule()
            self.beat, self.lengths = Heartbeat(total), {}

        def setup(self, **info):
            # a restored study brings this object back from Tune's saved state: its clocks are another process's
            self.t0 = time.perf_counter()
            self.compaction.restart()
            self.beat.restart()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            line = self.beat.update(trial.trial_id, result.get("epoch"), self._length(trial))
            if line:
                say(line)
            value = result.get(metric)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                return
            better = self.p.best is None or (value > self.p.best if mode == "max" else value < self.p.best)
            if better:
                self.p.best, self.p.best_trial = value, trial.trial_id

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.beat.finish(trial.trial_id)
            status = settle_trial(storage, spec, trial.trial_id, self._config(trial))
            self._report(trials, trial, status)
            self._maybe_compact()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.beat.finish(trial.trial_id)
            error = trial_error(trial)
            status = finalize_trial(storage, spec.name, trial.trial_id, "failed", error=error or "trial failed",
                                    params=self._params(trial))
            self._report(trials, trial, status + (f": {error}" if error else ""))
            self._maybe_compact()

        def _maybe_compact(self) -> None:
            if not self.compaction.due():
                return
            try:
                self.compaction.run(lambda: compact(path))
            except Exception as exc:  # a snapshot is only a speed-up: the study goes on without it
                say(f"warning: could not compact {path}: {exc}")

        def _config(self, trial):
            return _train_config(spec, trial.config)

        def _length(self, trial) -> int:
            """Epochs the trial runs if not pruned (read from its config once)."""
            if trial.trial_id not in self.lengths:
                config = self._config(trial)
                self.lengths[trial.trial_id] = config.pretrain_epochs + config.epochs if config else 0
            return self.lengths[trial.trial_id]

        def _params(self, trial) -> dict:
            config = self._config(trial)
            return config.flat_params() if config else {}

        def _report(self, trials, trial, status: str) -> None:
            # Tune calls this before it updates the trial's own status: count it as done, not running
            others = [t for t in trials if t is not trial]
            done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in others)
            running = sum(t.status == "RUNNING" for t in others)
            best = f"best {_shown(metric, self.p.best)} ({self.p.best_trial})" if self.p.best is not None else ""
            say(f"[{done}/{total} done, {running} running, {time.perf_counter() - self.t0:.0f} s] "
                f"{trial.trial_id} {status}  {best}")

    return StudyCallback()


def _shown(metric: str, value: float) -> str:
    """A metric as the tables show it: `Test acc. (%) 96.39`, not `test_acc 0.9639`."""
    from ..export import metric_info

    info = metric_info(metric)
    return f"{info.title} {value * info.scale:.4g}"


# --------------------------------------------------------------------------- entry points


@dataclass
class StudyOutcome:
    spec: StudySpec
    path: str
    seconds: float
    result_grid: object


def check_data(spec: StudySpec) -> None:
    """Load every data set the study can use once, before Ray starts: missing or corrupt files are a
    one-line error naming the command that fetches them, not a failed trial an hour in."""
    from ..data import load_dataset

    base = spec.train_config({})
    names = {base.data.name}
    for p in walk(spec.params):
        if p.path == "data.name":
            names.update(p.probe_values())
    for name in sorted(names):
        load_dataset(name, data_dir=base.data.data_dir, seed=base.seed)


def prepare(spec: StudySpec, storage: str, *, exist_ok: bool = False) -> str:
    """Create the study directory, probe that it is writable, and save the spec as run."""
    path = study_dir(storage, spec.name)
    fs, base = _filesystem(path)
    existing = fs.get_file_info(f"{base}/study.yaml")
    if existing.type != existing.type.NotFound and not exist_ok:
        raise StudyError(f"study {spec.name!r} already exists in {storage}: `deqlab resume {spec.name}` "
                         "continues it; --name gives a new run another name")
    probe = f"{path}/.write-probe-{os.getpid()}-{time.time_ns()}"  # the URI: a bare bucket path reads as local
    try:  # 1 MiB: a disk too full for a few epochs of Parquet fails here, not an hour in
        write_text_atomic("0" * (1 << 20), probe)
        fs.delete_file(_filesystem(probe)[1])
    except OSError as exc:
        raise StudyError(f"cannot write results under {path}: {exc}") from None
    write_text_atomic(spec.dump(), f"{path}/study.yaml")
    return path


def run_study(spec: StudySpec, storage: str, *, say: Callable[[str], None] = print, resume: bool = False,
              address: Optional[str] = None, num_cpus: Optional[int] = None) -> StudyOutcome:
    """Run the study, or with `resume` continue it from its trials' files (`durable.plan_resume`), holding
    the study's lock throughout. Trials write their Parquet files as they go. A disk that fills up ends the
    study with a StudyError saying so (the study stays resumable)."""
    storage = absolute_storage(storage)
    if address is None:
        check_data(spec)  # a cluster's data lives on its nodes (cluster.yaml fetches it there)
    elif _is_local(storage):  # before anything is written there
        start_ray(address)
        refuse_unshared_storage(storage)
    path = study_dir(storage, spec.name)
    with StudyLock(path, spec.name):
        prepare(spec, storage, exist_ok=resume)
        plan = _plan_resume(storage, path, spec, say) if resume else None
        start_ray(address, num_cpus)
        check_fits(spec, address is None, say)
        if address and not resume and _waiting_for_gpus(spec):
            say("hint: the cluster has no GPU free for a trial yet (autoscaling GPU nodes start on demand), so trials "
                "run one at a time; set search.max_concurrent_trials to what the cluster holds when scaled up")
        t0 = time.perf_counter()
        grid = None
        if plan is None or plan.samples:
            try:
                with graceful_interrupt() as interrupt:
                    grid = build_tuner(spec, storage, [_make_callback(spec, storage, say)], plan=plan).fit()
            except Exception as exc:
                if is_disk_full(exc) or disk_is_full(path):
                    raise disk_full_error(spec, path) from None
                raise
            if interrupt.requested:  # unfinished trials stay `running` on disk: what `deqlab resume` runs again
                if not _is_local(storage) and spec.search.algorithm != "grid":
                    _upload(_optuna_path(spec, storage), f"{path}/{OPTUNA_DB}")  # resume may run elsewhere
                raise StudyInterrupted(resume_hint(spec.name, storage))
        _finish_study(spec, storage, path, grid, say)
        return StudyOutcome(spec, path, time.perf_counter() - t0, grid)


def _plan_resume(storage: str, path: str, spec: StudySpec, say: Callable[[str], None]) -> ResumePlan:
    if _is_local(storage) and spec.search.algorithm != "grid":
        close_orphaned_optuna_trials(path, spec.name)  # under the lock, every RUNNING one was a dead driver's
    plan = plan_resume(storage, path, spec)
    say(f"resuming {spec.name}: {len(plan.finished)} finished trials kept, "
        f"{len(plan.set_aside)} unfinished set aside ({path}/orphaned/), "
        f"{len(plan.grid) if plan.grid is not None else plan.samples} trials to run")
    return plan


def _finish_study(spec: StudySpec, storage: str, path: str, grid, say: Callable[[str], None]) -> None:
    """Settle what Tune stopped, compact, upload; a trial that failed for want of space fails the study."""
    try:  # trials stopped by the time budget get no on_trial_complete: they are settled here
        settled = settle_stopped_trials(storage, spec, _tune_configs(grid) if grid is not None else {})
    except (OSError, ValueError) as exc:
        if is_disk_full(exc):
            raise disk_full_error(spec, path) from None
        settled = {}
        say(f"warning: could not settle the trials still running in {path}: {exc}")
    for trial_id, status in settled.items():
        say(f"{trial_id} {status} (stopped by Tune at the end of the study)")
    try:  # one snapshot file per kind: the dashboard then opens 2 files instead of one per trial
        compact(path)
    except (OSError, ValueError) as exc:  # the per-trial files stay the truth; a snapshot is only a speed-up
        if is_disk_full(exc):
            raise disk_full_error(spec, path) from None
        say(f"warning: could not compact {path}: {exc}")
    if failed_for_space(path):
        raise disk_full_error(spec, path)
    if not _is_local(storage) and spec.search.algorithm != "grid":
        _upload(_optuna_path(spec, storage), f"{path}/{OPTUNA_DB}")


def load_saved_spec(storage: str, name: str) -> StudySpec:
    import yaml

    fs, base = _filesystem(study_dir(storage, name))
    try:
        with fs.open_input_stream(f"{base}/study.yaml") as f:
            raw = yaml.safe_load(f.read().decode())
    except (FileNotFoundError, OSError):
        raise StudyError(f"no study {name!r} in {storage} (no study.yaml there); `deqlab ls {storage}` lists them") \
            from None
    return parse_study(drop_inert(raw), f"{base}/study.yaml")  # older saves recorded ignored defaults too


def resume_study(name: str, storage: str, **kwargs) -> StudyOutcome:
    """Continue an interrupted study: trials with a final status stay, unfinished ones run again (as new
    trials: `durable`). Only a study directory of the current user is resumed."""
    storage = absolute_storage(storage)
    check_owner(study_dir(storage, name))
    return run_study(load_saved_spec(storage, name), storage, resume=True, **kwargs)


def _download(source: str, local: str) -> None:
    import pyarrow.fs as pafs

    fs, path = _filesystem(source)
    if fs.get_file_info(path).type == pafs.FileType.File:
        pafs.copy_files(path, local, source_filesystem=fs)


def _upload(local: str, target: str) -> None:
    import pyarrow.fs as pafs

    fs, path = _filesystem(target)
    pafs.copy_files(local, path, destination_filesystem=fs)


__all__ = ["run_study", "resume_study", "start_ray", "build_tuner", "prepare", "study_dir", "load_saved_spec",
           "StudyOutcome"]
