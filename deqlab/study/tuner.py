"""The Ray Tune assembly of a study: Ray itself, the trainable and its resources, the Optuna searcher over
the define-by-run space, the scheduler, and the Tuner that runs them (the driver, `driver.py`, keeps the
books while it runs).

Tune's state lives in `<study dir>/tune/`, Optuna's study in `<study dir>/optuna.db` (SQLite: a remote
study keeps it in a local cache and copies it up at the end).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

from ..results import filesystem, is_uri, study_path
from .cluster import code_path_for_workers, private_ray_token
from .durable import ResumePlan
from .spec import StudyError, StudySpec
from .space import suggest
from .trial import CONTINUES, GRID_KEY, run_trial

TUNE_DIR = "tune"
OPTUNA_DB = "optuna.db"
# The Train controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s):
# each report after the first waits for it. 0.2 s cuts a short Train trial from ~20 s to ~12 s (docs/design.md).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
# Ray's notice, at every start of a local Ray, that it uses token authentication (its default) asks nothing
# of the user and would be the first line of every study: hidden. Ray's other warnings are shown.
RAY_NOTICES = {"ray._private.authentication.authentication_token_setup":
               "Token authentication is enabled for this Ray cluster"}


# --------------------------------------------------------------------------- Ray


def start_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
              py_modules: Optional[list] = None) -> None:
    """Join a cluster (`address`) or start a local Ray sized to this machine (or to `num_cpus`). `py_modules`
    (local files and folders: your own model and data modules) reach every worker through Ray's runtime_env."""
    import ray

    if ray.is_initialized():
        return
    for name in RAY_NOTICES:
        logging.getLogger(name).addFilter(_not_a_notice)  # a filter already there is not added twice
    logging.getLogger(TUNE_CONTROLLER).addFilter(_not_a_full_disk)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: our progress lines only
    # With CheckpointConfig(num_to_keep) Tune snapshots its experiment state whenever a trial has checkpointed
    # num_to_keep times since the last snapshot, and warns (twice a second in a study of short epochs) that
    # this "may become a bottleneck" for restoring it; deqlab never restores Tune's state (study.durable)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    runtime_env = {"env_vars": dict(RAY_ENV), **({"py_modules": list(py_modules)} if py_modules else {})}
    kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False, runtime_env=runtime_env)
    if address and (num_cpus is not None or num_gpus is not None):
        raise ValueError("--num-cpus/--num-gpus size a local Ray; a cluster (--address) has its own resources")
    private_ray_token(create=not address)  # Ray itself would leave the token it generates readable by every user (0644)
    with code_path_for_workers():  # not the caller's folder: a checkout named deqlab/ there shadows the package
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _not_a_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(RAY_NOTICES[record.name])


# A trial that hits a full disk before the driver does makes Tune log its traceback; the study then ends
# with deqlab's one line naming the full disk and the resume command, so the traceback only buries it.
# Tune's other trial failures keep theirs.
TUNE_CONTROLLER = "ray.tune.execution.tune_controller"


def _not_a_full_disk(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and record.getMessage().startswith("Trial task failed")
                and "No space left on device" in str(exc))


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


def waiting_for_gpus(spec: StudySpec) -> bool:
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
    fn = tune.with_parameters(run_trial, spec=spec, storage=storage)  # the object: a trial parses nothing
    return tune.with_resources(fn, resources)


def _searcher(spec: StudySpec, storage: str, draws_done: int = 0, continued: Optional[dict] = None):
    """OptunaSearch over the define-by-run space, its study in SQLite inside the study directory.

    A resumed study's sampler continues the SQLite history; its seed moves on by the trials already drawn
    (`draws_done`), else a random sampler would propose the first run's configurations again. Its first
    suggestions are the `continued` trials' own configurations ({trial id: Tune config}), marked with the
    id they continue.
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
        continued=continued,
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
        def __init__(self, *args, continued: Optional[dict] = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._continued = sorted((continued or {}).items())

        def suggest(self, trial_id):
            """A trial that continues an unfinished one asks Optuna for that trial's values (enqueued), and
            its config names the trial it continues (`trial.CONTINUES`)."""
            if not self._continued or trial_id in self._ot_trials:
                return super().suggest(trial_id)
            continues, config = self._continued.pop(0)
            self._ot_study.enqueue_trial(config, skip_if_exists=False)
            out = super().suggest(trial_id)
            return {**out, CONTINUES: continues} if isinstance(out, dict) else out

        def on_trial_result(self, trial_id, result):
            try:
                super().on_trial_result(trial_id, result)
            except UpdateFinishedTrialError:
                pass

    return ResumableOptunaSearch


def close_orphaned_trials(spec: StudySpec, storage: str) -> int:
    """Before a resume, under the study's lock: Optuna trials still RUNNING were asked by a driver that
    died; mark them failed. Returns how many."""
    import optuna

    db = os.path.join(study_path(storage, spec.name), OPTUNA_DB)
    if is_uri(storage) or spec.search.algorithm == "grid" or not os.path.exists(db):
        return 0
    searched = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{db}")
    orphans = [t.number for t in searched.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    for number in orphans:
        searched.tell(number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


@dataclass(frozen=True)
class DefineByRun:
    """The space as Optuna's define-by-run function; a class, not a lambda, so Tune can pickle the searcher."""

    params: tuple

    def __call__(self, trial) -> dict:
        return suggest(trial, list(self.params))  # fixed values ride along with the drawn ones


def _optuna_path(spec: StudySpec, storage: str) -> str:
    """SQLite needs a local file: remote studies keep it in a local cache and copy it up at the end."""
    if not is_uri(storage):
        return os.path.join(study_path(storage, spec.name), OPTUNA_DB)
    folder = os.path.join(tempfile.gettempdir(), "deqlab-optuna", spec.name)
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, OPTUNA_DB)
    if not os.path.exists(local):  # resumed on another machine: start from the copy in storage, if any
        _download(f"{study_path(storage, spec.name)}/{OPTUNA_DB}", local)
    return local


def save_optuna(spec: StudySpec, storage: str) -> None:
    """A remote study's Optuna database is a local cache: copy it up (a resume may run elsewhere)."""
    if is_uri(storage) and spec.search.algorithm != "grid":
        _upload(_optuna_path(spec, storage), f"{study_path(storage, spec.name)}/{OPTUNA_DB}")


def build_tuner(spec: StudySpec, storage: str, callbacks: list, *, plan: Optional[ResumePlan] = None):
    """A Tune run of the whole study, or with `plan` (a resume) of what is left of it."""
    from ray import tune

    s = spec.search
    concurrency = s.max_concurrent_trials or _default_concurrency(spec)
    trainable = _trainable(spec, storage)
    scheduler = None
    if spec.scheduler.name == "pbt":
        scheduler = tune.schedulers.PopulationBasedTraining(
            time_attr="training_iteration", metric=spec.metrics[0], mode=spec.modes[0],
            perturbation_interval=spec.scheduler.perturbation_interval,
            hyperparam_mutations=_pbt_mutations(spec), quantile_fraction=spec.scheduler.quantile_fraction,
            resample_probability=spec.scheduler.resample_probability)
    elif spec.scheduler.name == "asha":
        base = spec.train_config({})
        scheduler = tune.schedulers.ASHAScheduler(
            metric=spec.metrics[0], mode=spec.modes[0], time_attr="training_iteration",
            max_t=base.epochs + base.pretrain_epochs, grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor)
    drawn = len(plan.finished) + len(plan.set_aside) + len(plan.continued) if plan else 0
    if spec.scheduler.name == "pbt":  # PBT takes no searcher: Tune's random generator draws the population
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=(s.seed + drawn) % 2**32)
    else:
        search_alg = None if s.algorithm == "grid" else _searcher(spec, storage, drawn,
                                                                  plan.continued if plan else None)
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
            name=TUNE_DIR, storage_path=study_path(storage, spec.name), callbacks=callbacks, verbose=0,
            # each trial's checkpoints go to its folder under tune/ (docs/reliability.md "Checkpoints")
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            failure_config=tune.FailureConfig(
                max_failures=spec.trainer.max_failures if spec.trainer.num_workers == 0 else 0),
        ),
    )


# Tune's usage telemetry names the callbacks a run was given by comparing them with the classes of its
# tracker integrations, which it imports to do so: mlflow and wandb, 2.2 s of every study's start on 2 cores
# (measured with torch and Ray Tune already imported). A callback can only be one of those classes once its
# module is loaded, so while one is not, that one telemetry record is skipped rather than paid for.
TRACKER_INTEGRATIONS = ("ray.air.integrations.mlflow", "ray.air.integrations.wandb", "ray.air.integrations.comet",
                        "ray.tune.logger.aim")


def fit(tuner):
    """`tuner.fit()`, without importing the tracker libraries a study does not use (see TRACKER_INTEGRATIONS)."""
    with _callback_telemetry_without_tracker_imports():
        return tuner.fit()


@contextmanager
def _callback_telemetry_without_tracker_imports():
    from ray.air._internal import usage

    original = getattr(usage, "tag_callbacks", None)
    if original is None or all(name in sys.modules for name in TRACKER_INTEGRATIONS):
        yield  # (a Ray without this hook, or every integration loaded already: nothing to spare)
        return
    usage.tag_callbacks = lambda callbacks: False  # "no usage recorded", as the hook answers for no callbacks
    try:
        yield
    finally:
        usage.tag_callbacks = original


def _domain(p):
    """A space entry as a Ray Tune domain (PBT's flat space; conditional choices were refused by the probe)."""
    from ray import tune

    if p.kind == "fixed":
        return p.values[0]
    if p.kind in ("choice", "grid"):
        return tune.choice(list(p.values))
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.log:
        return tune.lograndint(int(p.low), int(p.high) + 1)
    return tune.qrandint(int(p.low), int(p.high), p.step) if p.step else tune.randint(int(p.low), int(p.high) + 1)


def _pbt_mutations(spec: StudySpec) -> dict:
    """`scheduler.mutations` as PBT's hyperparam_mutations: a list for a choice (PBT moves to a neighbour),
    a Tune domain for a range (PBT multiplies by 0.8 or 1.2, or redraws)."""
    from .space import parse_space

    return {p.path: list(p.values) if p.kind in ("choice", "grid") else _domain(p)
            for p in parse_space(spec.scheduler.mutations, "scheduler.mutations")}


def _pbt_space(spec: StudySpec) -> dict:
    """A PBT study's Tune param space: the space's entries as Tune domains, and the base's starting value of
    each mutated setting the space does not draw (PBT mutates the keys a trial's config has)."""
    space = {p.path: _domain(p) for p in spec.params}
    base = spec.train_config({}).model_dump()
    for path in spec.scheduler.mutations:
        if path not in space:
            node = base
            for part in path.split("."):
                node = node[part]
            space[path] = node
    return space


def _param_space(spec: StudySpec, plan: Optional[ResumePlan] = None) -> dict:
    from ray import tune

    if spec.scheduler.name == "pbt":
        return _pbt_space(spec)
    if spec.search.algorithm != "grid":
        return {}
    return {GRID_KEY: tune.grid_search(plan.grid if plan else spec.grid())}


def _download(source: str, local: str) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(source)
    if fs.get_file_info(path).type == pafs.FileType.File:
        pafs.copy_files(path, local, source_filesystem=fs)


def _upload(local: str, target: str) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(target)
    pafs.copy_files(local, path, destination_filesystem=fs)


__all__ = ["start_ray", "build_tuner", "check_fits", "waiting_for_gpus", "save_optuna", "close_orphaned_trials",
           "TUNE_DIR", "OPTUNA_DB"]
