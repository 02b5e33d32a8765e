"""Experiment trackers through Ray Tune's own callbacks, for real and without network: an MLflow store in
SQLite, W&B in offline mode, TensorBoard event files. Every tracker's record is compared with the Parquet
rows, which stay the truth. A tracker whose store is unwritable costs a warning, never a trial: checked on
the study of tests/test_api.py (one Ray study less)."""

import glob
import os
import shutil
import sys

import pandas as pd
import pytest
from study_factory import TINY

from deqlab.cli import main
from deqlab.results import load
from deqlab.study import parse_study
from deqlab.study.driver import run_study

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the other Ray tests
METRICS = ("test_acc", "train_loss", "nfe_fwd", "epoch_time_s")


def study(name, tracking):
    return parse_study({"name": name, "base": {**TINY, "epochs": 2}, "space": {"deq.init": {"grid": ["zeros", "skip"]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"},
                        "tracking": tracking}, name)


def parquet_rows(path) -> dict:
    """{trial id: its epoch rows, by epoch} from the Parquet files."""
    rows = load(path, traces=False).trials
    return {tid: part.sort_values("epoch").reset_index(drop=True) for tid, part in rows.groupby("trial_id")}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_mlflow_wandb_and_tensorboard_hold_every_trial(ray_local, tmp_path):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from wandb_log import run_contents

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = study("tracked", {"mlflow": {"tracking_uri": uri, "experiment": "deq", "tags": {"team": "solvers"}},
                             "wandb": {"project": "deq", "mode": "offline"}, "tensorboard": True})
    lines = []
    outcome = run_study(spec, str(tmp_path / "results"), say=lines.append)
    assert not [line for line in lines if line.startswith("warning")], lines
    trials = parquet_rows(outcome.path)
    assert len(trials) == 2 and all(list(t["epoch"]) == [0, 1] for t in trials.values())

    # MLflow: one run per trial, every epoch's metrics, every flat parameter, status and provenance as tags
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("deq").experiment_id])
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert sorted(by_trial) == sorted(trials) and len(runs) == 2
    for tid, rows in trials.items():
        run = by_trial[tid]
        assert run.info.status == "FINISHED"
        for metric in METRICS:
            history = client.get_metric_history(run.info.run_id, metric)
            assert [(h.step, h.value) for h in sorted(history, key=lambda h: h.step)] == \
                   [(e + 1, pytest.approx(v, rel=1e-12)) for e, v in zip(rows["epoch"], rows[metric])]
        last = rows.iloc[-1]
        params = {c[len("param."):]: last[c] for c in rows.columns if c.startswith("param.") and pd.notna(last[c])}
        assert {k: run.data.params[k] for k in params} == {k: str(v) for k, v in params.items()}
        tags = run.data.tags
        assert tags["status"] == "completed" and tags["study"] == "tracked" and tags["team"] == "solvers"
        assert tags["hostname"] == last["hostname"] and tags["config_hash"] == last["config_hash"]

    # W&B offline: one run per trial (id = trial id), every epoch logged, parameters, status, provenance
    files = sorted(glob.glob(f"{outcome.path}/wandb/offline-run-*/run-*.wandb"))
    runs = {c["run"].run_id: c for c in map(run_contents, files)}
    assert sorted(runs) == sorted(trials)
    for tid, rows in trials.items():
        run = runs[tid]
        assert run["run"].project == "deq" and list(run["run"].tags) == ["tracked"]
        logged = [h for h in run["history"] if "test_acc" in h]
        for metric in METRICS:
            assert [h[metric] for h in logged] == pytest.approx(list(rows[metric]), rel=1e-12)
        last = rows.iloc[-1]
        assert run["config"]["deq.init"] == last["param.deq.init"] and run["config"]["epochs"] == 2
        assert run["config"]["status"] == "completed" and run["config"]["hostname"] == last["hostname"]

    # TensorBoard: each trial's event file holds every epoch's scalars
    for tid, rows in trials.items():
        (folder,) = glob.glob(f"{outcome.path}/tune/*_{tid}_*")
        events = EventAccumulator(folder)
        events.Reload()
        for metric in METRICS:
            scalars = events.Scalars(f"ray/tune/{metric}")
            assert [(s.step, s.value) for s in scalars] == \
                   [(e + 1, pytest.approx(v, rel=1e-6)) for e, v in zip(rows["epoch"], rows[metric])]


def test_validate_refuses_a_tracker_whose_package_is_missing(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {data: {name: digits}, model: {name: mlp}}\n"
                    "space: {seed: {grid: [0, 1]}}\nobjectives: [{metric: test_acc, mode: max}]\n"
                    "tracking: {wandb: {mode: offline}}\n")
    assert main(["validate", str(path)]) == 0
    assert "tracking: wandb" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python marks a package absent: import fails
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: tracking.wandb: the wandb package is not installed; pip install 'deqlab[wandb]'"]
    path.write_text(path.read_text().replace("wandb: {mode: offline}", "mlflow: {experiment: x, trackin_uri: y}"))
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.endswith("tracking.mlflow.trackin_uri: unknown key; valid: tracking_uri, "
                                            "experiment, tags; did you mean 'tracking_uri'?\n")


def test_a_study_without_tracking_saves_no_tracking_section(tmp_path):
    spec = study("plain", {})
    assert "tracking" not in spec.dump() and spec.tracking.requested == []
    assert parse_study(study("t", {"tensorboard": True}).model_dump(mode="json")).tracking.tensorboard


def test_a_run_tune_stopped_without_a_word_ends_with_the_drivers_status(tmp_path):
    """Tune stops the trials a time budget cuts short without `on_trial_complete`: their runs are ended at
    the study's end (left open, MLflow showed them running and W&B's callback held the study up to its
    30-minute upload timeout), with the status the driver then records (pruned: 1 of its 2 epochs ran).
    The callback is driven through Tune's hooks by hand, with a real Tune `Trial`; no cluster needed."""
    import mlflow
    from ray.tune.experiment import Trial
    from study_factory import metrics, params, write_trial

    from deqlab.study.tracking import tracker_callbacks

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = study("budget", {"mlflow": {"tracking_uri": uri}})
    storage = str(tmp_path / "results")
    write_trial(storage, "budget", "abc_00000", params("zeros", "anderson", 0), [metrics(0.5, 9.0, 1.0)], "running",
                traces=False)
    lines = []
    (callback,) = tracker_callbacks(spec, storage, lines.append)
    trial = Trial("run_trial", config={"point": {"deq.init": "zeros"}}, trial_id="abc_00000", stub=True)
    callback.setup()
    callback.on_trial_start(iteration=1, trials=[trial], trial=trial)
    callback.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"test_acc": 0.5, "training_iteration": 1})
    callback.on_experiment_end(trials=[trial])  # no on_trial_complete: the time budget's way
    assert lines == []
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("budget").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "pruned"
    assert run.data.tags["trial_id"] == "abc_00000" and run.data.params["deq.init"] == "zeros"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_acc")] == [(1, 0.5)]


def test_a_store_unwritable_mid_study_is_one_warning_and_the_tracker_stops(tmp_path, monkeypatch):
    """MLflow's folder store is gone after the run started (a file stands where it was, which stops root
    too): the next epoch's logging fails, one warning is printed, the tracker is off for the rest of the
    study, and no hook raises into Tune (which would end the study)."""
    from ray.tune.experiment import Trial

    from deqlab.study.tracking import tracker_callbacks

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its folder store behind this
    store = tmp_path / "mlruns"
    spec = study("midway", {"mlflow": {"tracking_uri": store.as_uri()}})
    lines = []
    (callback,) = tracker_callbacks(spec, str(tmp_path / "results"), lines.append)
    trial = Trial("run_trial", config={"point": {"deq.init": "zeros"}}, trial_id="abc_00000", stub=True)
    callback.setup()
    callback.on_trial_start(iteration=1, trials=[trial], trial=trial)
    callback.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"test_acc": 0.5, "training_iteration": 1})
    assert len(list(store.glob("*/*/metrics/test_acc"))) == 1  # epoch 1 reached the store
    shutil.rmtree(store)
    store.write_text("not a folder")
    for epoch in (2, 3):
        callback.on_trial_result(iteration=epoch, trials=[trial], trial=trial,
                                 result={"test_acc": 0.6, "training_iteration": epoch})
    callback.on_trial_complete(iteration=3, trials=[trial], trial=trial)
    callback.on_experiment_end(trials=[trial])
    assert len(lines) == 1 and lines[0].startswith("warning: mlflow tracking failed (")
    assert lines[0].endswith("it is off for the rest of this study, whose Parquet results are complete")
    assert store.read_text() == "not a folder"
