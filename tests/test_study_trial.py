"""A trial gets one typed config: the driver validated the study once, a trial builds its TrainConfig from
the StudySpec object it was handed (never parsing the study again), a Ray Train worker gets that TrainConfig
object itself, and every caller trains through `run_one`."""

import sys
import types

import pandas as pd
import pytest
from pydantic import ValidationError

from deqlab.run.one import run_one
from deqlab.study import parse_study, spec as spec_module, trial
from deqlab.run import TrainConfig
from study_factory import TINY


def study(**trainer):
    return parse_study({"name": "one", "base": {**TINY, "epochs": 1}, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}], "trainer": trainer}, "one")


PLAIN, RAY_TRAIN = study(), study(num_workers=2, cpus_per_worker=0.9)  # validated once, as the driver does


@pytest.fixture
def in_a_trial(monkeypatch):
    """run_trial outside Tune: a trial id, no stored result, and any parse of the study counted."""
    from ray import tune

    parsed = []
    monkeypatch.setattr(trial, "_node_id", lambda: "node-x")  # asking Ray would start one
    monkeypatch.setattr(tune, "get_context", lambda: type("C", (), {"get_trial_id": lambda self: "t1"})())
    monkeypatch.setattr(spec_module, "check_space", lambda s: parsed.append(s))
    monkeypatch.setattr(spec_module.StudySpec, "model_validate", classmethod(lambda cls, *a, **k: parsed.append(a)))
    return parsed


def test_a_trial_builds_its_config_without_parsing_the_study(in_a_trial, monkeypatch, tmp_path):
    runs = []
    monkeypatch.setattr(trial, "run_one", lambda config, **kw: runs.append((config, kw)))
    trial.run_trial({"optim.lr": 3e-3}, spec=PLAIN, storage=str(tmp_path))
    assert in_a_trial == []  # neither parse_study's checks nor a StudySpec validation ran in the trial
    (config, kw), = runs
    assert isinstance(config, TrainConfig) and config.optim.lr == 3e-3 and config.epochs == 1
    assert (kw["study"], kw["trial_id"], kw["storage"], kw["node_id"]) == ("one", "t1", str(tmp_path), "node-x")


def test_a_bad_combination_found_at_trial_time_still_fails_the_trial(in_a_trial, tmp_path):
    with pytest.raises(ValidationError, match="lr"):
        trial.run_trial({"optim.lr": -1.0}, spec=PLAIN, storage=str(tmp_path))


def test_a_ray_train_worker_receives_the_train_config_object(in_a_trial, monkeypatch, tmp_path):
    import ray.train.torch
    import ray.tune.integration.ray_train

    fitted = []

    class FakeTrainer:
        def __init__(self, loop, *, train_loop_config, **kw):
            fitted.append((loop, train_loop_config))

        def fit(self):
            pass

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    # outside a Tune session: no Tune report callback, and a RunConfig that does not check it
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", lambda: None)
    monkeypatch.setattr(ray.train, "RunConfig", lambda **kw: kw)
    trial.run_trial({"optim.lr": 2e-3}, spec=RAY_TRAIN, storage=str(tmp_path))
    (loop, cfg), = fitted
    assert loop is trial.worker_loop and isinstance(cfg["train_config"], TrainConfig)
    assert cfg["train_config"].optim.lr == 2e-3 and cfg["threads"] == 1

    from deqlab.run import parallel

    runs = []
    replicas = types.SimpleNamespace(rank=1)
    monkeypatch.setattr(parallel.Replicas, "from_process_group", classmethod(lambda cls: replicas))
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: "cpu")
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)  # a first attempt: no checkpoint yet
    monkeypatch.setattr(trial, "run_one", lambda config, **kw: runs.append((config, kw)))
    trial.worker_loop(cfg)
    (config, kw), = runs
    assert config is cfg["train_config"] and kw["replicas"] is replicas  # the object itself, not a rebuilt dump
    # rank 1 loads a checkpoint when there is one, rank 0 writes them
    assert kw["checkpointing"].writes is False and kw["checkpointing"].start is None
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # no Ray was started for this


def test_run_one_writes_the_trial_with_its_params_provenance_and_node(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 1})
    heard = []
    run = run_one(config, study="s", trial_id="t", storage=str(tmp_path), node_id="node-a",
                  reporter=lambda epoch, m: heard.append((epoch, m["test_acc"])))
    assert run.result.status == "completed" and run.path == f"{tmp_path}/s"
    rows = pd.read_parquet(tmp_path / "s" / "trials" / "t.parquet")
    assert list(rows.status) == ["completed"] and (rows.node_id == "node-a").all()
    assert rows["param.optim.lr"].iloc[0] == config.optim.lr and rows.config_hash.iloc[0] == config.config_hash()
    assert heard == [(0, rows.test_acc.iloc[0])]
