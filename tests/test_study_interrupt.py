"""Ctrl-C (SIGINT to the driver) mid-trial: exit 130, unfinished trials left to resume, `deqlab resume NAME`
printed instead of Ray's own hint; `deqlab resume` then finishes the study."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from live_files import read_live
from study_factory import TINY

from deqlab.results import load
from deqlab.study.summary import final_rows

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _deqlab(*args):
    return [sys.executable, "-m", "deqlab", *args]


def _first_trial_mid_run(trials: Path) -> bool:
    """A trial has written an epoch and is still running."""
    for p in trials.glob("*.parquet") if trials.exists() else []:
        frame = read_live(p)
        if frame is not None and len(frame) and frame.status.iloc[-1] == "running" and frame.epoch.max() >= 0:
            return True
    return False


def test_ctrl_c_exits_130_and_leaves_the_study_resumable(tmp_path):
    raw = {"name": "stopped", "base": {**TINY, "epochs": 4}, "space": {"seed": {"grid": [0, 1]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}],
           "search": {"algorithm": "grid", "max_concurrent_trials": 1}}
    (tmp_path / "stopped.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = _deqlab("run", "stopped.yaml", "--storage", "res", "--num-cpus", "2")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    trials = tmp_path / "res" / "stopped" / "trials"
    try:
        deadline = time.time() + 300
        while not _first_trial_mid_run(trials):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # to the driver only, as Ctrl-C reaches `deqlab run`
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "deqlab resume stopped --storage" in out and "Tuner.restore" not in out, out
    final = final_rows(load(tmp_path / "res" / "stopped", traces=False).trials)
    assert "pruned" not in set(final.status), final[["trial_id", "status"]]
    assert set(final.status) <= {"completed", "running"} and (final.status == "running").any()

    done = subprocess.run(_deqlab("resume", "stopped", "--storage", "res", "--num-cpus", "2"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = load(tmp_path / "res" / "stopped", traces=False).trials
    final = final_rows(rows)
    assert len(final) == 2 and (final.status == "completed").all(), final[["trial_id", "status"]]
    assert (rows.groupby("trial_id").epoch.apply(sorted).map(tuple) == tuple(range(4))).all()
