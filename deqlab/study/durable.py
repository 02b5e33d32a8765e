"""What keeps a study whole across crashes: one driver per study, resume from the files on disk, full disks.

Resume never restores Tune's saved experiment state. Tune saves it every ~10 s
(`TUNE_GLOBAL_CHECKPOINT_S`), so a driver killed in between leaves trials on
disk the saved state does not know (or no trial state at all, when the kill
came before the first save): a restore then runs their share of the budget
again or stops early. The trials' own files are written every epoch and are
the truth instead: a resume keeps every trial whose Parquet file holds a final
status; an unfinished trial with a checkpoint in the study (`results.checkpoints`)
continues under its own id from that checkpoint's epoch (its Tune config, read
from the checkpoint, is handed to the new run marked with the id it continues);
one without is set aside (`StudyStore.set_aside`). A new Tune run then runs
the rest of the budget (the grid points not yet finished), its Optuna sampler
continuing the study's SQLite history.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import socket
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from ..results import FINAL_STATUSES, Status, StudyStore, is_uri, load, scalar
from ..results.checkpoints import newest_whole
from ..run.config import TrainConfig
from .spec import StudyError, StudySpec
from .trial import GRID_KEY, with_continues

LOCK_FILE = ".driver.lock"
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


# --------------------------------------------------------------------------- one driver per study


class StudyLock:
    """An exclusive `flock` on the study's lock file, held for the driver's life.

    The kernel drops the lock when the holder exits, however it exits (SIGKILL
    included), so a lock is never stale; the file keeps the holder's pid and
    host only for the message a second driver gets. A study on remote storage
    is locked through a file in the local temp folder (one machine's drivers).
    """

    def __init__(self, path: str, name: str):
        self.name = name
        if is_uri(path):
            key = hashlib.sha256(path.encode()).hexdigest()[:32]
            self.path = os.path.join(tempfile.gettempdir(), "deqlab-locks", f"{key}.lock")
        else:
            self.path = os.path.join(path, LOCK_FILE)
        self.fd: Optional[int] = None

    def __enter__(self) -> "StudyLock":
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StudyError(f"cannot write results under {os.path.dirname(self.path)}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StudyError(f"study {self.name!r} is already being run by {holder} (lock {self.path}): "
                             "one study has one driver; wait for it to end or stop it, then resume") from None
        try:  # who holds it, for the message above; a full disk must not stop the study here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the lock
            self.fd = None


def check_owner(path: str) -> None:
    """Resume loads state from the study directory (Optuna's SQLite, the spec): only from one of ours."""
    if is_uri(path) or not os.path.isdir(path):
        return
    owner, me = os.stat(path).st_uid, os.geteuid()
    if owner != me:
        raise StudyError(f"refusing to resume {path}: it belongs to uid {owner}, not to you (uid {me}); "
                         "resume only studies you created (copy it to a folder of your own if you trust it)")


# --------------------------------------------------------------------------- full disks


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception (or one in its chain, or its text: Ray and Optuna re-wrap them) is ENOSPC."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) == errno.ENOSPC or NO_SPACE in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(spec: StudySpec, path: str) -> StudyError:
    return StudyError(f"study {spec.name!r} stopped: {NO_SPACE} under {path}; its finished trials are kept: "
                      f"free some space, then `deqlab resume {spec.name}` runs the rest")


def disk_is_full(path: str, need: int = 1 << 20) -> bool:
    """Whether the local study directory's file system has less than `need` bytes left."""
    if is_uri(path):
        return False
    try:
        return shutil.disk_usage(path).free < need
    except OSError:
        return False


def failed_for_space(path: str) -> list:
    """Trial ids recorded failed because the disk was full."""
    final = _final_rows(path)
    return sorted(final[_failed_for_space(final)].trial_id) if not final.empty else []


def _failed_for_space(final: pd.DataFrame) -> pd.Series:
    """Trials recorded failed because the disk was full: not finished, they run again on resume."""
    if "error" not in final:
        return pd.Series(False, index=final.index)
    return (final.status == Status.FAILED) & final["error"].astype(str).str.contains(NO_SPACE, regex=False)


# --------------------------------------------------------------------------- resume from the files on disk


@dataclass
class ResumePlan:
    finished: list = field(default_factory=list)     # trial ids kept (final status on disk)
    set_aside: list = field(default_factory=list)    # unfinished trial ids moved to orphaned/
    samples: int = 0                                 # trials still to run (grid: 1, over `grid`)
    grid: Optional[list] = None                      # grid points still to run, one per missing trial
    continued: dict = field(default_factory=dict)    # {unfinished trial id: its Tune config}: from its checkpoint
    resume_epochs: dict = field(default_factory=dict)  # {that trial id: the epoch of its newest checkpoint}


def finished_trials(path: str) -> pd.DataFrame:
    """The final row of every trial on disk whose status is final (and not a full disk's failure)."""
    final = _final_rows(path)
    if final.empty:
        return final
    final = final[final.status.isin(FINAL_STATUSES)]
    return final[~_failed_for_space(final)]


def _final_rows(path: str) -> pd.DataFrame:
    trials = load(path, traces=False).trials
    if trials.empty:
        return trials
    return trials.sort_values("epoch", kind="stable").groupby("trial_id", sort=True).tail(1)


def _whole_checkpoints(store: StudyStore, trial_ids, say) -> dict:
    """{trial id: its newest whole checkpoint} of the trials that have one; each newer one cut short or
    corrupt is named (the trial falls back to the one before it)."""
    out = {}
    for trial_id in sorted(trial_ids):
        ref, skipped = newest_whole(store, trial_id)
        for reason in skipped:
            say(f"{reason}: falling back to the trial's previous checkpoint")
        if ref is not None:
            out[trial_id] = ref
    return out


def plan_resume(storage: str, path: str, spec: StudySpec, say=lambda line: None) -> ResumePlan:
    """Keep the finished trials, continue the unfinished ones that have a whole checkpoint, set the others
    aside, and say what is left of the budget."""
    final = finished_trials(path)
    finished = sorted(final.trial_id) if not final.empty else []
    store = StudyStore.of(storage, spec.name)
    unfinished = store.trial_ids() - set(finished)
    # a PBT population is not continued trial by trial (its scheduler's state is gone): as before, its
    # unfinished trials are set aside and their share of the budget drawn again
    latest = _whole_checkpoints(store, unfinished, say) if spec.checkpoint.enabled and spec.scheduler.name != "pbt" \
        else {}
    continued = {t: latest[t].meta["tune_config"] for t in sorted(unfinished)
                 if t in latest and isinstance(latest[t].meta.get("tune_config"), dict)}
    if spec.search.algorithm != "grid":
        moved = store.set_aside(unfinished - set(continued))
        return ResumePlan(finished, moved, max(len(continued), spec.search.samples - len(finished)),
                          continued=continued, resume_epochs={t: latest[t].epoch for t in continued})
    defaults = _defaults()
    done = Counter(_row_key(row, defaults) for _, row in final.iterrows())
    todo = []
    for point in spec.grid() * spec.search.samples:
        key = _point_key(spec, point, defaults)
        if done[key] > 0:
            done[key] -= 1
        else:
            todo.append(point)
    keys = [_point_key(spec, p, defaults) for p in todo]
    for trial_id, config in list(continued.items()):  # a continued trial runs its own point, marked
        point = config.get(GRID_KEY)
        key = _point_key(spec, point, defaults) if isinstance(point, dict) else None
        if key in keys:
            k = keys.index(key)
            todo[k], keys[k] = with_continues(config, trial_id)[GRID_KEY], None
        else:  # a point the grid no longer has (or already finished): not continued
            del continued[trial_id]
    moved = store.set_aside(unfinished - set(continued))
    return ResumePlan(finished, moved, 1 if todo else 0, todo, continued,
                      {t: latest[t].epoch for t in continued})


def _defaults() -> dict:
    """deqlab's own default of every setting, as trial files record them.

    A setting at its default is left out of both keys below: a trial finished before that setting existed
    has no column for it, and must still count as done (resuming an old grid study never retrains it)."""
    return {k: scalar(v) for k, v in TrainConfig().flat_params().items() if v is not None}


def _point_key(spec: StudySpec, point: dict, defaults: dict) -> tuple:
    """A grid point's hyperparameters as its trial file records them (`param.*`, nested values as text)."""
    params = spec.train_config(point).flat_params()
    return _key(((k, scalar(v)) for k, v in params.items() if v is not None), defaults)


def _row_key(row: pd.Series, defaults: dict) -> tuple:
    return _key(((k[len("param."):], v.item() if hasattr(v, "item") else v) for k, v in row.items()
                 if k.startswith("param.") and v is not None and not (isinstance(v, float) and v != v)), defaults)


def _key(items, defaults: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in items if k not in defaults or defaults[k] != v))


__all__ = ["StudyLock", "check_owner", "is_disk_full", "disk_full_error", "plan_resume", "ResumePlan"]
