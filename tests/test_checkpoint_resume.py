"""A trial lost mid-training continues from its checkpoint, under its own id, bit-identical on CPU.

Both ways a trial is lost, with Tune's default settings, the study run as users run it (`deqlab run`
in a subprocess, from another folder): (a) its worker process is SIGKILLed and Tune retries it
(`trainer.max_failures: 1`); (b) the driver is SIGKILLed mid-epoch and `deqlab resume` continues the
study, after the newest checkpoint was cut short (as a kill during Ray's copy leaves it). The reference
is the same TrainConfig trained in this process without interruption.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from study_factory import TINY
from test_faults import _descends_from
from test_study_ray import _crash

from deqlab.results import StudyStore, load
from deqlab.results import checkpoints as files
from deqlab.run.checkpoint import Checkpointing, load_state
from deqlab.run.config import CheckpointSpec, TrainConfig
from deqlab.run.one import run_one

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]
ENV = {k: v for k, v in os.environ.items() if k != "TUNE_GLOBAL_CHECKPOINT_S"}  # Tune's default save period
ENV["RAY_AUTH_MODE"] = "disabled"
EPOCHS = 5
BASE = {**TINY, "epochs": EPOCHS, "device": "cpu",
        "optim": {"lr": 3e-3, "schedule": "cosine", "min_lr": 1e-4}}
TIMING = ["fwd_time_s", "bwd_time_s", "epoch_time_s", "infer_time_s"]
VALUES = ["test_acc", "test_loss", "train_loss", "nfe_fwd", "nfe_bwd", "converged_frac", "residual", "lr"]


def _study(tmp_path, name, **trainer):
    raw = {"name": name, "base": BASE, "space": {"seed": {"grid": [7]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"},
           "trainer": {"num_workers": 0, **trainer}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _deqlab(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "deqlab", *args, "--num-cpus", "2"], cwd=cwd, env=ENV,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The trial trained here, never interrupted: its rows and final weights."""
    root = tmp_path_factory.mktemp("ref")
    config = TrainConfig.model_validate({**BASE, "seed": 7})
    run_one(config, study="ref", trial_id="ref", storage=str(root), reporter=lambda e, m: None,
            checkpointing=Checkpointing(CheckpointSpec()), local_checkpoints=True)
    store = StudyStore.of(str(root), "ref")
    return load(store.path).trials.sort_values("epoch").reset_index(drop=True), _final_state(store, "ref")


def _final_state(store, trial_id):
    ref = files.find(store, trial_id)[-1]
    assert ref.epoch == EPOCHS - 1
    return load_state(store.fs, ref.path)


def _wait(cond, proc, timeout=240):
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, "the study ended before the kill point:\n" + proc.stdout.read()
        assert time.time() < deadline, "the kill point never came"
        time.sleep(0.05)


def _checkpoint_epochs(study: Path) -> list:
    return [r.epoch for r in files.find(StudyStore(str(study)))]


def _rows(study: Path) -> pd.DataFrame:
    return load(study).trials.sort_values("epoch").reset_index(drop=True)


def _assert_identical(study: Path, trial_id: str, before: pd.DataFrame, kept_until: int, reference):
    rows, (ref_rows, ref_state) = _rows(study), reference
    assert set(rows.trial_id) == {trial_id}  # continued under its own id
    assert list(rows.epoch) == list(range(EPOCHS)) and set(rows.status) == {"completed"}  # each epoch once
    # the rows up to the checkpoint it continued from are the ones written before the loss, times included
    kept = before[before.epoch <= kept_until]
    pd.testing.assert_frame_equal(rows.loc[kept.index, TIMING + VALUES], kept[TIMING + VALUES])
    # and the whole trial is bit-identical to the uninterrupted one
    pd.testing.assert_frame_equal(rows[VALUES], ref_rows[VALUES], check_exact=True)
    state = _final_state(StudyStore(str(study)), trial_id)
    assert all(torch.equal(state["model"][k], ref_state["model"][k]) for k in ref_state["model"])


def _function_trial_pids(driver: int) -> list:
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ImplicitFunc" in cmdline and _descends_from(int(proc.name), driver):
            out.append(int(proc.name))
    return out


def test_worker_crash_retried_continues_from_its_checkpoint(tmp_path, reference):
    """(a) The trial's process is SIGKILLed after its epoch-2 checkpoint; Tune retries it (max_failures 1)
    and `tune.get_checkpoint()` hands it that checkpoint."""
    study = tmp_path / "res" / "wk"
    proc = _deqlab("run", str(_study(tmp_path, "wk", max_failures=1)), "--storage", str(tmp_path / "res"),
                   cwd=tmp_path)
    try:
        _wait(lambda: max(_checkpoint_epochs(study), default=-1) >= 2, proc)
        checkpointed = max(_checkpoint_epochs(study))
        before = _rows(study)
        pids = _function_trial_pids(proc.pid)
        assert pids, "no trial process found"
        for pid in pids:
            os.kill(pid, 9)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            _crash(proc.pid)
            proc.wait()
    assert proc.returncode == 0, out
    assert before.epoch.max() < EPOCHS - 1, "the trial finished before the kill"
    # a row written after its newest checkpoint (if any) is trained again: rows up to that checkpoint stay
    _assert_identical(study, before.trial_id.iloc[0], before, checkpointed, reference)
    # its model back, run on its test set from another folder: the recorded final numbers, exactly
    evaluated = subprocess.run([sys.executable, "-m", "deqlab", "evaluate", str(study), "--best", "test_acc",
                                "--json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    out, last = json.loads(evaluated.stdout), _rows(study).iloc[-1]
    assert (out["trial_id"], out["epoch"]) == (last.trial_id, EPOCHS - 1)
    assert out["test_acc"] == last.test_acc and out["nfe_fwd"] == last.nfe_fwd


def test_driver_killed_then_resume_continues_from_the_previous_whole_checkpoint(tmp_path, reference):
    """(b) The driver (and its Ray) is SIGKILLed mid-epoch; the newest checkpoint is then cut short (a kill
    during its copy); `deqlab resume` continues the trial under its id from the checkpoint before it."""
    study = tmp_path / "res" / "dk"
    proc = _deqlab("run", str(_study(tmp_path, "dk")), "--storage", str(tmp_path / "res"), cwd=tmp_path)
    try:
        _wait(lambda: max(_checkpoint_epochs(study), default=-1) >= 2, proc)
    finally:
        _crash(proc.pid)
        proc.wait()
    before = _rows(study)
    assert set(before.status) == {"running"} and before.epoch.max() < EPOCHS - 1
    refs = files.find(StudyStore(str(study)))
    newest = Path(refs[-1].path)
    state = newest / files.STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])
    previous = refs[-2].epoch
    trial_id = before.trial_id.iloc[0]

    resume = _deqlab("resume", "dk", "--storage", str(tmp_path / "res"), cwd=tmp_path)
    out, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0, out
    assert f"{newest}: state.pt is incomplete or corrupt" in out and "falling back" in out, out
    assert f"1 continue from their checkpoints ({trial_id} after epoch {previous})" in out, out
    assert not (study / "orphaned").exists()
    _assert_identical(study, trial_id, before, previous, reference)
    # the killed driver's checkpoints of it were deleted once the resumed run stored one: keep 2, not 2 per resume
    saved = files.find(StudyStore(str(study)))
    assert len(saved) == 2 and len({r.meta["run"] for r in saved}) == 1
