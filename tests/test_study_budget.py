"""The time budget and the driver's bookkeeping around it.

When `search.time_budget_s` runs out Tune stops its running trials without
calling `on_trial_complete`; the driver settles them after `fit()` returns, so
no trial is left `running` (a real study on a local Ray, 2 CPUs, marked `ray`).
While a study runs the driver's callback also refreshes the results snapshot
(`compact`) on a schedule, `CompactionSchedule`: both tested with a fake clock
and hand-written trial files, without Ray.
"""

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import yaml
import pytest

from deqlab.results import load, snapshot_path
from deqlab.study import parse_study
from deqlab.study import bookkeeping, tuner
from deqlab.study.bookkeeping import CompactionSchedule
from deqlab.study.driver import prepare, run_study
from deqlab.study.summary import final_rows
from deqlab.study.trial import GRID_KEY
from study_factory import TINY, metrics, params, write_trial

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

LONG = 2000  # epochs the budget-stopped trial would need: far more than the budget holds
# a trial starts in ~3 s on an idle 2-core machine, ~10 s on a loaded one, and took more than 15 s (no epoch
# written before the budget ended) beside the other xdist worker's studies and another engineer's suite
BUDGET_S = 25


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_compaction_schedule_waits_the_interval_and_ten_times_the_last_duration():
    clock = FakeClock()
    schedule = CompactionSchedule(min_interval_s=30, cost_ratio=10, clock=clock)
    assert not schedule.due()  # the study just started
    clock.now += 29.9
    assert not schedule.due()
    clock.now += 0.1
    assert schedule.due()

    def slow_compaction():  # takes 5 s: the next one waits 50 s after it ends, not 30
        clock.now += 5
        return 7

    assert schedule.run(slow_compaction) == 7
    assert schedule.last_duration == 5
    clock.now += 49
    assert not schedule.due()
    clock.now += 1
    assert schedule.due()

    def fast_compaction():  # a quick one brings the 30 s floor back
        clock.now += 0.5

    schedule.run(fast_compaction)
    clock.now += 29
    assert not schedule.due()
    clock.now += 1
    assert schedule.due()

    def failing():
        clock.now += 2
        raise OSError("disk full")

    with pytest.raises(OSError):
        schedule.run(failing)
    assert schedule.last_duration == 2 and not schedule.due()  # a failed attempt still waits its interval
    schedule.restart()
    assert schedule.last_end == clock.now and schedule.last_duration == 0


# --------------------------------------------------------------------------- the callback, without Ray


def grid_spec(name, epochs=3):
    return parse_study({"name": name, "base": {**TINY, "epochs": epochs}, "space": {"optim.lr": {"grid": [1e-3, 2e-3]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}, name)


def tune_trial(trial_id, lr):
    return SimpleNamespace(trial_id=trial_id, config={GRID_KEY: {"optim.lr": lr}}, status="TERMINATED")


def statuses(study_path, trial_id):
    return set(pd.read_parquet(Path(study_path) / "trials" / f"{trial_id}.parquet").status)


def test_callback_settles_stopped_trials_and_compacts_on_its_schedule(tmp_path, monkeypatch):
    spec = grid_spec("cb")
    path = prepare(spec, str(tmp_path))
    lines = []
    callback = bookkeeping.make_callback(spec, str(tmp_path), lines.append)
    clock = FakeClock()
    callback.compaction = CompactionSchedule(min_interval_s=30, cost_ratio=10, clock=clock)

    # stopped by ASHA after 2 of its 3 epochs: pruned, both epochs kept; no compaction yet (t = 0)
    write_trial(tmp_path, "cb", "early", params("zeros", "anderson", 0), [metrics(0.5, 5, 1)] * 2, "running")
    callback.on_trial_complete(0, [tune_trial("early", 1e-3)], tune_trial("early", 1e-3))
    assert statuses(path, "early") == {"pruned"} and "early pruned" in lines[-1]
    assert not Path(snapshot_path(path)).exists()

    # stopped at ASHA's max_t, its last epoch: completed; 31 s on, the snapshot is taken and holds both
    write_trial(tmp_path, "cb", "full", params("zeros", "anderson", 1), [metrics(0.6, 5, 1)] * 3, "running")
    clock.now += 31
    full = SimpleNamespace(**{**vars(tune_trial("full", 2e-3)), "status": "RUNNING"})  # Tune updates it after
    callback.on_trial_complete(0, [tune_trial("early", 1e-3), full], full)
    assert statuses(path, "full") == {"completed"}
    assert lines[-1].startswith("[2/2 done, 0 running, ")  # the trial being reported counts as done
    assert set(pd.read_parquet(snapshot_path(path)).trial_id) == {"early", "full"}

    # a failing compaction only warns; the study goes on
    def broken(_path):
        raise OSError("disk full")

    monkeypatch.setattr(bookkeeping, "compact", broken)
    write_trial(tmp_path, "cb", "crashed", params("skip", "anderson", 0), [metrics(0.1, 5, 1)], "running")
    clock.now += 31
    trial = SimpleNamespace(trial_id="crashed", config={GRID_KEY: {"optim.lr": 1e-3}}, status="ERROR",
                            get_error=lambda: "Traceback\nRuntimeError: worker died")
    callback.on_trial_error(0, [trial], trial)
    assert statuses(path, "crashed") == {"failed"}
    assert lines[-1] == f"warning: could not compact {path}: disk full"


def test_trials_left_running_after_fit_are_settled(tmp_path):
    spec = grid_spec("left", epochs=4)
    path = prepare(spec, str(tmp_path))
    write_trial(tmp_path, "left", "cut", params("zeros", "anderson", 0), [metrics(0.5, 5, 1)] * 2, "running")
    write_trial(tmp_path, "left", "done", params("zeros", "anderson", 1), [metrics(0.6, 5, 1)] * 4, "running")
    write_trial(tmp_path, "left", "old", params("zeros", "anderson", 2), [metrics(0.6, 5, 1)] * 4, "running")
    write_trial(tmp_path, "left", "fine", params("skip", "anderson", 0), [metrics(0.7, 5, 1)] * 4, "completed")
    configs = {"cut": {GRID_KEY: {"optim.lr": 1e-3}}, "done": {GRID_KEY: {"optim.lr": 2e-3}}}
    # "old": not a trial Tune knows (its config is unknown), so pruned whatever it ran
    assert bookkeeping.settle_stopped_trials(str(tmp_path), spec, configs) == \
        {"cut": "pruned", "done": "completed", "old": "pruned"}
    assert statuses(path, "cut") == {"pruned"} and len(pd.read_parquet(Path(path) / "trials" / "cut.parquet")) == 2
    assert statuses(path, "fine") == {"completed"}
    assert bookkeeping.settle_stopped_trials(str(tmp_path), spec, configs) == {}  # nothing left running


# --------------------------------------------------------------------------- a real study on a local Ray


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_time_budget_stopped_trial_is_pruned_with_the_epochs_it_ran(ray_local, tmp_path):
    spec = parse_study({
        "name": "budget", "base": TINY, "space": {"epochs": {"grid": [LONG]}},
        "objectives": [{"metric": "test_acc", "mode": "max"}],
        "search": {"algorithm": "grid", "time_budget_s": BUDGET_S},
    }, "budget")
    lines = []
    started = time.monotonic()
    outcome = run_study(spec, str(tmp_path), say=lines.append)
    assert time.monotonic() - started < BUDGET_S + 30, "the time budget did not stop the study"

    time.sleep(2)  # the stopped trial's actor may still be exiting: its file must not go back to `running`
    files = list((Path(outcome.path) / "trials").glob("*.parquet"))
    assert len(files) == 1, lines
    rows = pd.read_parquet(files[0])  # the per-trial file itself, the truth the snapshot is made from
    assert set(rows.status) == {"pruned"}, lines
    ran = sorted(rows.epoch)
    assert 1 <= len(ran) < LONG and ran == list(range(len(ran)))  # the epochs it ran are kept, once each
    assert rows.test_acc.notna().all()
    assert any(line.endswith("pruned (stopped by Tune at the end of the study)") for line in lines), lines
    assert (final_rows(load(outcome.path, traces=False).trials).status == "pruned").all()
    assert Path(snapshot_path(outcome.path)).is_file()


# --------------------------------------------------------------------------- default concurrency on a cluster


def test_gpu_study_on_a_cluster_without_gpus_yet_gets_one_trial_and_a_hint(monkeypatch):
    import ray

    raw = yaml.safe_load(Path("studies/gpu_cluster.yaml").read_text())
    del raw["search"]["max_concurrent_trials"]
    spec = parse_study(raw, "gpu_cluster.yaml")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})  # cluster.yaml's head, no workers yet
    assert tuner._default_concurrency(spec) == 1 and tuner.waiting_for_gpus(spec)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})  # scaled up: 8 GPU nodes
    assert tuner._default_concurrency(spec) == 32 and not tuner.waiting_for_gpus(spec)  # 4 trials per GPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})
    explicit = parse_study({**raw, "search": {**raw["search"], "max_concurrent_trials": 4}}, "gpu_cluster.yaml")
    assert not tuner.waiting_for_gpus(explicit)  # set explicitly: nothing to hint


def test_progress_shows_the_best_value_in_the_tables_units():
    assert bookkeeping._shown("test_acc", 0.9639) == "Test acc. (%) 96.39"  # as the closing table: %, not 0.9639
    assert bookkeeping._shown("nfe_fwd", 7.264) == "NFE fwd 7.264"
    assert bookkeeping._shown("my_metric", 3.0) == "my_metric 3"  # a metric without display info: as recorded
