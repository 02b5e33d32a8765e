"""The kill matrix: a study's driver SIGKILLed at every awkward moment, with Tune's default state-save period.

After each fault `deqlab resume` must end the study with exactly `num_samples`
trials, every trial's epochs once, and the trials finished before the fault
unchanged (their values, not only their ids). Each chain below is one study:
(a) killed the moment `tune/tuner.pkl` appears (before Tune saved any trial
state), then (d) its resume killed mid-trial, then (c) the next resume killed
right after a trial finished (before Tune's next state save), then resumed
again; (b) killed mid-trial, then (e) two resumes at once (one is refused by
the study's lock); (f) the disk fills mid-study (a small tmpfs), then space is
freed and resumed. Faults share a study where each leaves it in a state the
next one starts from: every `deqlab` process costs a Python, torch and Ray
start-up, most of these tests' time.
"""

import errno
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from study_factory import TINY
from live_files import last_statuses
from system_tools import tmpfs
from test_study_ray import _crash, _deqlab, _load_strict

from deqlab.results import load
from deqlab.study.summary import final_rows

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]
SAMPLES = 3
VALUES = ["test_acc", "train_loss", "test_loss", "nfe_fwd", "converged_frac"]
ENV = {k: v for k, v in os.environ.items() if k != "TUNE_GLOBAL_CHECKPOINT_S"}  # Tune's default save period
ENV["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture
def study_file(tmp_path):
    raw = {"name": "km", "base": {**TINY, "epochs": 2},
           "space": {"deq.tol": {"loguniform": [1e-4, 1e-2]}, "seed": {"int": [0, 100]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}],
           "search": {"algorithm": "tpe", "num_samples": SAMPLES, "max_concurrent_trials": 1}}
    path = tmp_path / "km.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(cmd, storage, cwd):
    return subprocess.Popen(_deqlab(cmd[0], *cmd[1:], "--storage", str(storage), "--num-cpus", "2"), cwd=cwd,
                            env=ENV, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _files(study: Path) -> dict:
    """{trial id: last status} of the visible trial files (a torn one would fail to read)."""
    return last_statuses(study / "trials")


def _kill_when(proc, ready, timeout=240):
    """SIGKILL the driver (and its Ray) as soon as `ready()` holds."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the driver ended before the kill point:\n" + proc.stdout.read()
            assert time.time() < deadline, "the kill point never came"
            time.sleep(0.05)
    finally:
        _crash(proc.pid)
        proc.wait()


def _completed_values(study: Path) -> pd.DataFrame:
    final = final_rows(load(study, traces=False).trials)
    if final.empty:
        return pd.DataFrame(columns=VALUES, index=pd.Index([], name="trial_id"))
    return final[final.status == "completed"].set_index("trial_id")[VALUES]


def _resume(storage, cwd):
    out = subprocess.run(_deqlab("resume", "km", "--storage", str(storage), "--num-cpus", "2"), cwd=cwd, env=ENV,
                         capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def _check_whole(study: Path, before: pd.DataFrame) -> None:
    """Exactly SAMPLES trials, all completed, each epoch once, the ones finished before unchanged."""
    rows = _load_strict(study).trials
    final = final_rows(rows)
    assert len(final) == SAMPLES and (final.status == "completed").all(), final[["trial_id", "status"]]
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    assert (rows.groupby("trial_id").epoch.apply(sorted).map(tuple) == (0, 1)).all()
    after = final.set_index("trial_id")[VALUES]
    assert set(before.index) <= set(after.index)
    if len(before):
        pd.testing.assert_frame_equal(after.loc[before.index], before)  # bit-identical: never retrained


def test_a_killed_before_any_state_save_then_d_killed_during_its_resume_then_c_after_a_trial_ended(
        study_file, tmp_path):
    storage, study = tmp_path / "res", tmp_path / "res" / "km"
    _kill_when(_start(["run", str(study_file)], storage, tmp_path), (study / "tune" / "tuner.pkl").exists)
    assert not list((study / "tune").glob("experiment_state*"))  # (a): Tune had saved no trial state
    before = _completed_values(study)
    known = set(_files(study))
    _kill_when(_start(["resume", "km"], storage, tmp_path),
               lambda: any(s == "running" for t, s in _files(study).items() if t not in known))  # (d)
    # (c): the next resume killed the moment one more trial has finished, before Tune's next state save
    done = _completed_values(study)
    resumed = _start(["resume", "km"], storage, tmp_path)
    _kill_when(resumed, lambda: any(s == "completed" for t, s in _files(study).items() if t not in done.index))
    log = resumed.stdout.read()  # its progress lines are flushed one by one: all there despite the kill
    # the trial (d) cut short: continued from its checkpoint, or set aside when killed before it
    assert "1 continue from their checkpoints" in log or "1 unfinished set aside" in log, log
    finished = _completed_values(study)
    assert len(finished) > len(done) and set(before.index) <= set(done.index)
    if len(done):
        pd.testing.assert_frame_equal(finished.loc[done.index], done)  # bit-identical: never retrained
    code, log = _resume(storage, tmp_path)
    assert code == 0, log
    _check_whole(study, finished)
    assert f"{len(finished)} finished trials kept" in log, log


def test_b_killed_mid_trial_then_e_two_resumes_at_once(study_file, tmp_path):
    storage, study = tmp_path / "res", tmp_path / "res" / "km"
    _kill_when(_start(["run", str(study_file)], storage, tmp_path),
               lambda: "running" in _files(study).values())
    before = _completed_values(study)
    first, second = _start(["resume", "km"], storage, tmp_path), _start(["resume", "km"], storage, tmp_path)
    outs = [p.communicate(timeout=300)[0] for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert sorted(codes) == [0, 2], outs
    refused = outs[codes.index(2)]
    assert "is already being run by pid" in refused and refused.count("\n") == 1 and "Traceback" not in refused
    _check_whole(study, before)


def _fill(folder: Path) -> Path:
    """Write zeros until the file system is full; return the filler file."""
    filler = folder / "filler"
    # unbuffered: a buffered writer keeps the bytes a short write left over and raises ENOSPC again at close,
    # which made this helper fail or pass with the few KiB the study happened to have written
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_f_disk_full_mid_study_then_space_freed_and_resumed(study_file, tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as mnt:
        study = mnt / "km"
        proc = _start(["run", str(study_file)], mnt, tmp_path)
        deadline = time.time() + 240
        while "completed" not in _files(study).values():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        filler = _fill(mnt)
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 2, log
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "deqlab resume km" in errors[0], log
        assert "Traceback" not in log, log
        filler.unlink()
        before = _completed_values(study)
        assert len(before) >= 1
        code, log = _resume(mnt, tmp_path)
        assert code == 0, log
        _check_whole(study, before)
