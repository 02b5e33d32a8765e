"""Real studies on a local Ray (2 CPUs): Parquet rows against what Tune and Optuna report.

Slow by nature (Ray start-up, Train worker start-up); marked `ray` and run in CI.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from live_files import last_statuses
from ray_cluster import kill_session
from study_factory import TINY

from deqlab.results import FAULT_PAUSE_ENV, load
from deqlab.study import parse_study
from deqlab.study.driver import run_study
from deqlab.study.summary import final_rows, pareto_front

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def study(name, space, **extra):
    raw = {"name": name, "base": {**TINY, **extra.pop("base", {})}, "space": space,
           "objectives": extra.pop("objectives", [{"metric": "test_acc", "mode": "max"}]), **extra}
    return parse_study(raw, name)


def quiet(_line):
    pass


def test_optuna_study_parquet_matches_tune_and_optuna(ray_local, tmp_path):
    spec = study("mo", {"deq.init": {"choice": ["zeros", "skip", "skipreg"]},
                        "deq.solver": {"choice": {"anderson": {"deq.solver_options.m": {"int": [2, 5]}},
                                                  "broyden": {}}},
                        "deq.tol": {"loguniform": [1e-4, 1e-2]}},
                 objectives=[{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}],
                 search={"algorithm": "tpe", "num_samples": 4, "seed": 3})
    outcome = run_study(spec, str(tmp_path), say=quiet)
    tune_results = {r.metrics["trial_id"]: r.metrics for r in outcome.result_grid}
    assert len(tune_results) == 4 and not outcome.result_grid.errors

    res = load(outcome.path)
    assert res.skipped == []
    final = final_rows(res.trials).set_index("trial_id")
    assert set(final.index) == set(tune_results)
    assert (final["status"] == "completed").all()
    for tid, m in tune_results.items():
        rows = res.trials[res.trials.trial_id == tid]
        assert sorted(rows.epoch) == [0, 1]  # every epoch exactly once
        for metric in ("test_acc", "nfe_fwd", "nfe_bwd", "train_loss"):
            assert final.loc[tid, metric] == pytest.approx(m[metric], rel=0, abs=0)
        # the hyperparameters recorded are the ones Optuna drew
        assert final.loc[tid, "param.deq.solver"] == m["config"]["deq.solver"]
        assert final.loc[tid, "param.deq.tol"] == m["config"]["deq.tol"]
        assert final.loc[tid, "node_id"] and final.loc[tid, "torch_version"]
    traces = res.traces
    assert set(traces.trial_id) == set(tune_results) and (traces.residual_max >= 0).all()

    # Optuna's own study (SQLite in the study directory) has the same Pareto front as the Parquet data
    ot = optuna.load_study(study_name="mo", storage=f"sqlite:///{outcome.path}/optuna.db")
    assert len([t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    front = pareto_front(final.reset_index(), spec.objectives)
    assert {(round(a, 12), round(b, 12)) for a, b in zip(front.test_acc, front.nfe_fwd)} == \
           {(round(t.values[0], 12), round(t.values[1], 12)) for t in ot.best_trials}
    assert 1 <= len(front) <= 4


def test_asha_prunes_the_clearly_worse_trial(ray_local, tmp_path):
    spec = study("asha", {"optim.lr": {"grid": [3e-3, 1e-8]}}, base={"epochs": 4},
                 search={"algorithm": "grid", "max_concurrent_trials": 1},
                 scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    outcome = run_study(spec, str(tmp_path), say=quiet)
    final = final_rows(load(outcome.path).trials).set_index("param.optim.lr")
    assert final.loc[3e-3, "status"] == "completed" and final.loc[3e-3, "epoch"] == 3
    assert final.loc[1e-8, "status"] == "pruned" and final.loc[1e-8, "epoch"] < 3
    assert final.loc[1e-8, "test_acc"] < final.loc[3e-3, "test_acc"]
    rows = load(outcome.path).trials
    assert set(rows[rows["param.optim.lr"] == 1e-8].status) == {"pruned"}  # every row of it says so


def test_diverging_trial_is_recorded_and_the_study_goes_on(ray_local, tmp_path):
    """The diverging trial runs first (grid order, one at a time): the study must go on after it.

    Both trials pretrain one epoch at a fixed depth (not checked for convergence); at the first DEQ epoch a
    tolerance float32 cannot reach leaves the solver unconverged on (nearly) every sample: diverged.
    """
    spec = study("div", {"deq.tol": {"grid": [1e-12, 1e-3]}},
                 base={"pretrain_epochs": 1, "epochs": 2, "max_unconverged_frac": 0.5},
                 search={"algorithm": "grid", "max_concurrent_trials": 1})
    outcome = run_study(spec, str(tmp_path), say=quiet)
    res = load(outcome.path)
    assert res.skipped == []
    rows = res.trials
    final = final_rows(rows).set_index("param.deq.tol")
    assert final.loc[1e-12, "status"] == "diverged"
    assert final.loc[1e-3, "status"] == "completed" and final.loc[1e-3, "epoch"] == 2  # it ran, after
    diverged = rows[rows["param.deq.tol"] == 1e-12].sort_values("epoch")
    # its epochs are kept: the healthy pretraining epoch before the divergence, then the one that diverged
    assert list(diverged.epoch) == [0, 1] and set(diverged.status) == {"diverged"}
    assert list(diverged.phase) == ["pretrain", "deq"] and diverged.test_acc.notna().all()
    assert 1 - diverged.converged_frac.iloc[-1] > 0.5
    # grid order, one at a time: the healthy trial started only when the diverged one had ended
    order = sorted(final.index, key=lambda tol: final.loc[tol, "trial_id"])
    assert order == [1e-12, 1e-3]
    files = {tol: Path(outcome.path) / "trials" / f"{final.loc[tol, 'trial_id']}.parquet" for tol in final.index}
    started = pd.Timestamp(final.loc[1e-3, "started_at"]).timestamp()
    assert os.stat(files[1e-12]).st_mtime <= started + 1  # started_at has whole seconds


def test_ray_train_two_workers_end_with_identical_weights(ray_local, tmp_path):
    """With fixed-point reuse on (each worker keeps its own shard's fixed points: docs/design.md)."""
    spec = study("ddp", {"seed": {"grid": [0]}}, search={"algorithm": "grid"},
                 trainer={"num_workers": 2, "cpus_per_worker": 0.9},
                 base={"deq": {**TINY["deq"], "reuse": "epoch"}})
    outcome = run_study(spec, str(tmp_path), say=quiet)
    assert not outcome.result_grid.errors
    rows = load(outcome.path).trials
    assert len(rows) == 2 and (rows.status == "completed").all()
    assert (rows.num_workers == 2).all()
    assert (rows.replica_weight_spread == 0.0).all()  # replicas agree to the last bit after every epoch
    rows = rows.sort_values("epoch")
    # it learns: above chance (10 classes) and better after the second epoch (fixed shards deal other batches
    # than a DistributedSampler: 38.7% then 48.7% here; without reuse this test asked > 50% after epoch 1)
    assert rows.test_acc.iloc[1] > max(rows.test_acc.iloc[0], 0.3)
    assert rows.train_reuse_frac.iloc[0] == 0.0 and rows.train_reuse_frac.iloc[1] > 0.95  # the shard's own
    assert (rows.reuse_buffer_bytes == 150 * (16 * 4 + 1) + 300 * 8).all()  # half the 300 states, a full map
    tune_metrics = outcome.result_grid[0].metrics
    assert tune_metrics["test_acc"] == rows.sort_values("epoch").test_acc.iloc[-1]


# --------------------------------------------------------------------------- driver killed, then resumed


def _write(path: Path, spec_raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec_raw))
    return path


def _deqlab(*args, **kw):
    return [sys.executable, "-m", "deqlab", *args]


PAUSE_S = 1.5  # the kill during a write: every write holds its finished temp file this long before the rename


def _hidden_temps_of_visible_files(trials: Path) -> list:
    """Temp files (`.<name>.<uuid>.tmp`) of a rewrite in progress: their target is already there for readers."""
    temps = list(trials.glob(".*.tmp")) if trials.exists() else []
    return [t for t in temps if (trials / t.name[1:].rsplit(".", 2)[0]).is_file()]


def _crash(leader: int) -> None:
    """SIGKILL a driver started with `start_new_session` and the local Ray it started, as a crash would."""
    kill_session(leader)


def _load_strict(path):
    """`load`, failing on any warning: a file readers would skip (torn, unreadable) fails the test."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = load(path)
    assert res.skipped == []
    return res


@pytest.mark.parametrize("kill_after, during_write", [(1, True)], ids=["during-a-parquet-write"])
def test_resume_after_sigkill_loses_and_duplicates_nothing(kill_after, during_write, tmp_path):
    """(The other kill points, with fewer trials: test_resume_matrix.py.)"""
    raw = {"name": "killed", "base": {**TINY, "epochs": 2},
           "space": {"deq.tol": {"loguniform": [1e-4, 1e-2]}, "seed": {"int": [0, 100]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}],
           "search": {"algorithm": "tpe", "num_samples": 6, "max_concurrent_trials": 1}}
    file = _write(tmp_path / "killed.yaml", raw)
    storage = tmp_path / "res"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # Tune's default state-save period
    env.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
    env.pop(FAULT_PAUSE_ENV, None)
    # the pause reaches the trials through the local Ray the driver starts, which inherits its environment
    run_env = {**env, FAULT_PAUSE_ENV: str(PAUSE_S)} if during_write else env
    # a relative --storage, as a user types it: Tune runs trials in their own working directories
    proc = subprocess.Popen(_deqlab("run", str(file), "--storage", "res", "--num-cpus", "2"), cwd=tmp_path,
                            env=run_env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    trials = storage / "killed" / "trials"
    deadline = time.time() + 400
    caught = []  # during_write: the temp files of the rewrite the kill interrupted
    try:
        while time.time() < deadline:  # kill once `kill_after` trials finished (0: the first is mid-epoch)
            if during_write:  # ... and, for this kill point, while a trial file is being rewritten
                caught = _hidden_temps_of_visible_files(trials)
            done = last_statuses(trials)
            finished = sum(status == "completed" for status in done.values())
            if done and finished >= kill_after and (caught or not during_write):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1 if during_write else 0.5)
        else:
            pytest.fail(f"study never got {kill_after} trials done" + (" and a rewrite under way" * during_write))
    finally:
        _crash(proc.pid)
        proc.wait()
    if during_write:
        time.sleep(PAUSE_S + 1)  # had any writer survived the kill, its rename would have happened by now
        assert all(t.exists() for t in caught), "the kill did not land between a temp file's write and its rename"
    before = final_rows(_load_strict(storage / "killed").trials)  # no torn file visible after the crash
    completed_before = set(before[before.status == "completed"].trial_id)
    assert kill_after <= len(completed_before) < 6

    out = subprocess.run(_deqlab("resume", "killed", "--storage", "res", "--num-cpus", "2"), env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = _load_strict(storage / "killed").trials  # every file readable; a stale temp file is not one of them
    final = final_rows(rows)
    assert (final.status == "completed").all() and len(final) == 6, final[["trial_id", "status"]]
    assert completed_before <= set(final.trial_id)  # nothing finished before the kill was lost
    values = ["test_acc", "train_loss", "nfe_fwd"]  # ... nor retrained: the same numbers, to the last bit
    pd.testing.assert_frame_equal(final.set_index("trial_id").loc[sorted(completed_before), values],
                                  before.set_index("trial_id").loc[sorted(completed_before), values])
    # no trial has an epoch twice; every trial has every epoch
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    assert (rows.groupby("trial_id").epoch.apply(sorted).map(tuple) == (0, 1)).all()
    assert "killed: " in out.stdout and "completed" in out.stdout


# --------------------------------------------------------------------------- a two-node cluster on this machine


