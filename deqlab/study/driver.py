"""Run and resume a study: the entry points (`run_study`, `resume_study`) and what they do around Tune.

A study directory `<storage>/<name>/` holds everything: `study.yaml` (the
validated spec as run), `trials/` and `traces/` (Parquet, one file per trial,
written by the trials), `optuna.db` (the Optuna study in SQLite, for
optuna-dashboard and Optuna's analysis tools) and `tune/` (Tune's experiment
state of the current run). One driver at a time holds the study's lock file
(`durable.StudyLock`); `resume` continues from the trials' files, not from
Tune's saved state (`durable`). The Tuner is assembled in `tuner`; the books
kept while it runs (statuses a trial cannot write itself, progress) are in
`bookkeeping`; after it returns the driver settles what Tune stopped, compacts
and uploads.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from pyarrow.fs import FileType

from ..results import STUDY_FILE, StudyStore, absolute, compact, is_uri, study_path
from . import own_code
from .bookkeeping import make_callback, settle_stopped_trials
from .cluster import refuse_unshared_storage
from .durable import (ResumePlan, StudyLock, check_owner, disk_full_error, disk_is_full, failed_for_space,
                      is_disk_full, plan_resume)
from .interrupt import StudyInterrupted, graceful_interrupt, resume_hint
from .spec import StudyError, StudySpec, drop_inert, parse_study
from .space import walk
from .tracking import tracker_callbacks
from .trial import trial_id_of
from .tuner import build_tuner, check_fits, close_orphaned_trials, fit, save_optuna, start_ray, waiting_for_gpus


def _tune_configs(result_grid) -> dict:
    """{trial id: Tune config} of the trials in a ResultGrid that reported at least once (public API: each
    Result's `config` and the `trial_id` of its last metrics)."""
    out = {}
    for result in result_grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is not None:
            out[trial_id_of(result.config or {}, trial_id)] = result.config or {}
    return out


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
    from ..data import DATASETS, load_dataset

    base = spec.train_config({})
    names = {base.data.name}
    for p in walk(spec.params):
        if p.path == "data.name":
            names.update(p.probe_values())
    for name in sorted(n for n in names if n in DATASETS):  # own data is tried by own_code.preflight
        load_dataset(name, data_dir=base.data.data_dir, seed=base.seed)


def prepare(spec: StudySpec, storage: str, *, exist_ok: bool = False) -> str:
    """Create the study directory, probe that it is writable, and save the spec as run."""
    store = StudyStore.of(storage, spec.name)
    if store.fs.get_file_info(store.at(STUDY_FILE)).type != FileType.NotFound and not exist_ok:
        raise StudyError(f"study {spec.name!r} already exists in {storage}: `deqlab resume {spec.name}` "
                         "continues it; --name gives a new run another name")
    probe = f".write-probe-{os.getpid()}-{time.time_ns()}"
    try:  # 1 MiB: a disk too full for a few epochs of Parquet fails here, not an hour in
        store.write_text(probe, "0" * (1 << 20))
        store.fs.delete_file(store.at(probe))
    except OSError as exc:
        raise StudyError(f"cannot write results under {store.path}: {exc}") from None
    store.write_text(STUDY_FILE, spec.dump())
    return store.path


def run_study(spec: StudySpec, storage: str, *, say: Callable[[str], None] = print, resume: bool = False,
              address: Optional[str] = None, num_cpus: Optional[int] = None,
              allow_changed_code: bool = False) -> StudyOutcome:
    """Run the study, or with `resume` continue it from its trials' files (`durable.plan_resume`), holding
    the study's lock throughout. Trials write their Parquet files as they go. A disk that fills up ends the
    study with a StudyError saying so (the study stays resumable). Your own model and data are tried on two
    samples before Ray starts and reach the workers through Ray's runtime_env (`own_code`); a resume whose
    code changed is refused unless `allow_changed_code`."""
    storage = absolute(storage)
    own = own_code.names_own_code(spec)
    if own:
        own_code.preflight(spec, cluster=address is not None, say=say)
    modules = own_code.ship(spec) if own else []
    if address is None:
        check_data(spec)  # a cluster's data lives on its nodes (cluster.yaml fetches it there)
    elif not is_uri(storage):  # before anything is written there
        start_ray(address, py_modules=modules)
        refuse_unshared_storage(storage)
    path = study_path(storage, spec.name)
    with StudyLock(path, spec.name):
        prepare(spec, storage, exist_ok=resume)
        if own:
            current = own_code.check_unchanged(spec, storage, allow_changed_code, say) if resume else None
            own_code.record(spec, storage, current)
        plan = _plan_resume(storage, path, spec, say) if resume else None
        t0 = time.perf_counter()
        grid = None
        if plan is None or plan.samples:  # a resume with nothing left to run starts no Ray
            start_ray(address, num_cpus, py_modules=modules)
            check_fits(spec, address is None, say)
            if address and not resume and waiting_for_gpus(spec):
                say("hint: the cluster has no GPU free for a trial yet (autoscaling GPU nodes start on demand), so "
                    "trials run one at a time; set search.max_concurrent_trials to what the cluster holds when "
                    "scaled up")
            t0 = time.perf_counter()
            try:
                with graceful_interrupt() as interrupt:
                    callbacks = [make_callback(spec, storage, say), *tracker_callbacks(spec, storage, say)]
                    grid = fit(build_tuner(spec, storage, callbacks, plan=plan))
            except Exception as exc:
                if is_disk_full(exc) or disk_is_full(path):
                    raise disk_full_error(spec, path) from None
                raise
            if interrupt.requested:  # unfinished trials stay `running` on disk: what `deqlab resume` runs again
                save_optuna(spec, storage)  # resume may run elsewhere
                raise StudyInterrupted(resume_hint(spec.name, storage))
        _finish_study(spec, storage, path, grid, say)
        return StudyOutcome(spec, path, time.perf_counter() - t0, grid)


def _plan_resume(storage: str, path: str, spec: StudySpec, say: Callable[[str], None]) -> ResumePlan:
    close_orphaned_trials(spec, storage)  # under the lock, every RUNNING Optuna trial was a dead driver's
    plan = plan_resume(storage, path, spec, say)
    say(f"resuming {spec.name}: {len(plan.finished)} finished trials kept, "
        f"{len(plan.continued)} continue from their checkpoints"
        + (f" ({', '.join(f'{t} after epoch {e}' for t, e in sorted(plan.resume_epochs.items()))})"
           if plan.continued else "")
        + f", {len(plan.set_aside)} unfinished set aside ({path}/orphaned/: no checkpoint), "
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
    save_optuna(spec, storage)


def load_saved_spec(storage: str, name: str) -> StudySpec:
    store = StudyStore.of(storage, name)
    try:
        raw = store.read_yaml(STUDY_FILE)
    except ValueError as exc:  # unreadable or not YAML: its one-line reason
        raise StudyError(str(exc)) from None
    if not raw:
        raise StudyError(f"no study {name!r} in {storage} (no {STUDY_FILE} there); `deqlab ls {storage}` lists them")
    own_code.restore_folders(store)  # your own modules: where the study first found them
    return parse_study(drop_inert(raw), store.at(STUDY_FILE))  # older saves recorded ignored defaults too


def resume_study(name: str, storage: str, **kwargs) -> StudyOutcome:
    """Continue an interrupted study: trials with a final status stay, unfinished ones run again (as new
    trials: `durable`). Only a study directory of the current user is resumed."""
    storage = absolute(storage)
    check_owner(study_path(storage, name))
    return run_study(load_saved_spec(storage, name), storage, resume=True, **kwargs)  # own code: refused if changed


__all__ = ["run_study", "resume_study", "prepare", "load_saved_spec", "check_data", "StudyOutcome"]
