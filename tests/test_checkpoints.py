"""Checkpoints of one run (no Ray): what they hold, that a resumed run ends bit-identical to an uninterrupted
one, and that a checkpoint cut short or corrupt is skipped for the previous one."""

import json
import logging

import numpy as np
import pytest
import torch
from study_factory import TINY

from deqlab.results import StudyStore, load
from deqlab.results import checkpoints as files
from deqlab.run.checkpoint import Checkpointing, load_state, newest_state
from deqlab.run.config import CheckpointSpec, TrainConfig
from deqlab.run.one import run_one

# cosine schedule and a shuffled loader: a resume that lost the schedule's or the shuffle's state would differ
CONFIG = TrainConfig.model_validate({**TINY, "epochs": 4, "device": "cpu",
                                     "optim": {"lr": 3e-3, "schedule": "cosine", "min_lr": 1e-4}})
TIMING = {"fwd_time_s", "bwd_time_s", "epoch_time_s", "infer_time_s", "peak_mem_bytes", "started_at", "hostname",
          "node_id"}  # measured, not computed


class Crash(Exception):
    pass


def _run(storage, trial, *, crash_after=None, start=None, policy=CheckpointSpec()):
    def reporter(epoch, metrics):
        if epoch == crash_after:
            raise Crash(epoch)

    return run_one(CONFIG, study="ck", trial_id=trial, storage=str(storage), reporter=reporter,
                   checkpointing=Checkpointing(policy, start=start), local_checkpoints=True)


def _values(storage, trial):
    rows = load(storage / "ck").trials
    rows = rows[rows.trial_id == trial].sort_values("epoch")
    return rows[[c for c in rows.columns if c not in TIMING | {"trial_id"}]].reset_index(drop=True)


def _final_weights(storage, trial):
    store = StudyStore.of(str(storage), "ck")
    ref = files.find(store, trial)[-1]
    return ref, load_state(store.fs, ref.path)


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    _run(tmp_path, "whole")
    with pytest.raises(Crash):
        _run(tmp_path, "cut", crash_after=1)  # dies after epoch 1's checkpoint is stored (reporter order)
    store = StudyStore.of(str(tmp_path), "ck")
    rows = load(tmp_path / "ck").trials
    before = rows[rows.trial_id == "cut"].sort_values("epoch").reset_index(drop=True)
    assert list(before.epoch) == [0, 1]
    start = newest_state(store, "cut")
    assert start["epoch"] == 1
    outcome = _run(tmp_path, "cut", start=start)
    assert outcome.result.status == "completed"
    assert len(outcome.result.history) == 2  # trained epochs 2 and 3 only

    whole, cut = _values(tmp_path, "whole"), _values(tmp_path, "cut")
    assert list(cut.epoch) == [0, 1, 2, 3]  # each epoch once
    assert cut.drop(columns="status").equals(whole.drop(columns="status"))  # every metric, bit for bit
    assert set(cut.status) == {"completed"}
    rows = load(tmp_path / "ck").trials
    after = rows[rows.trial_id == "cut"].sort_values("epoch").reset_index(drop=True)
    # the rows written before the crash keep their values, their measured times included
    assert after.loc[:1, "epoch_time_s"].tolist() == before["epoch_time_s"].tolist()
    (ref_w, w), (ref_c, c) = _final_weights(tmp_path, "whole"), _final_weights(tmp_path, "cut")
    assert ref_w.epoch == ref_c.epoch == 3
    assert w["model"].keys() == c["model"].keys()
    assert all(torch.equal(w["model"][k], c["model"][k]) for k in w["model"])
    # keep: 2 -> the two newest of each trial, in the study's own folder
    assert [r.epoch for r in files.find(store, "whole")] == [2, 3]


def test_checkpoint_holds_the_run_state_and_no_data(tmp_path):
    _run(tmp_path, "t", policy=CheckpointSpec(every=2, keep=5))
    store = StudyStore.of(str(tmp_path), "ck")
    refs = files.find(store, "t")
    assert [r.epoch for r in refs] == [1, 3]  # every 2 epochs; the last is epoch 3 anyway
    meta = json.loads((tmp_path / "ck" / "checkpoints" / "t" / "checkpoint_000003" / "meta.json").read_text())
    assert meta["trial_id"] == "t" and meta["study"] == "ck" and meta["epoch"] == 3
    assert TrainConfig.model_validate(meta["train_config"]) == CONFIG
    state = load_state(store.fs, refs[-1].path)
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python", "loader"}
    params = sum(t.numel() for t in state["model"].values())
    assert meta["state_bytes"] < 4 * 3 * params + 64 * 1024  # weights + Adam's two moments + pickling


def test_corrupt_or_half_written_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    _run(tmp_path, "t")
    store = StudyStore.of(str(tmp_path), "ck")
    newest = tmp_path / "ck" / "checkpoints" / "t" / "checkpoint_000003" / "state.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # cut short
    with caplog.at_level(logging.WARNING, logger="deqlab.checkpoint"):
        state = newest_state(store, "t")
    assert state["epoch"] == 2
    assert "incomplete or corrupt" in caplog.text and "falling back" in caplog.text
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1  # one bit
    newest.write_bytes(bytes(flipped))
    assert newest_state(store, "t")["epoch"] == 2
    (newest.parent / "meta.json").write_text("{")  # meta.json cut short: not a checkpoint at all
    assert [r.epoch for r in files.find(store, "t")] == [2]


def test_every_zero_writes_no_checkpoint(tmp_path):
    _run(tmp_path, "t", policy=CheckpointSpec(every=0))
    assert files.find(StudyStore.of(str(tmp_path), "ck")) == []
    assert not (tmp_path / "ck" / "checkpoints").exists()


def test_numpy_and_python_rng_are_restored(tmp_path):
    import random

    from deqlab.run.checkpoint import capture, restore

    class Run:  # what capture/restore touch
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.Adam(model.parameters())
        sched = None
        train_loader = type("L", (), {"generator": torch.Generator().manual_seed(3)})()

    state = capture(Run, 0)
    drawn = (np.random.rand(), random.random(), torch.rand(1).item(),
             torch.rand(1, generator=Run.train_loader.generator).item())
    restore(Run, state)
    assert (np.random.rand(), random.random(), torch.rand(1).item(),
            torch.rand(1, generator=Run.train_loader.generator).item()) == drawn


def _fake_checkpoint(study, folder, trial_id, epoch, tune_config):
    """A checkpoint folder as Ray leaves it in a Tune trial's folder (state bytes need only match meta.json)."""
    path = study / "tune" / folder / f"checkpoint_{epoch:06d}"
    path.mkdir(parents=True)
    data = f"state of {trial_id} after epoch {epoch}".encode()
    (path / files.STATE_FILE).write_bytes(data)
    meta = files.make_meta(data, study=study.name, trial_id=trial_id, epoch=epoch, tune_config=tune_config)
    (path / files.META_FILE).write_text(json.dumps(meta))
    return path


def test_resume_plan_continues_unfinished_trials_with_a_whole_checkpoint(tmp_path):
    from study_factory import metrics, write_trial
    from test_durable import spec_of

    from deqlab.study.driver import prepare
    from deqlab.study.durable import plan_resume
    from deqlab.study.trial import CONTINUES, GRID_KEY, assignment_of, continued_id

    spec = spec_of("g", algorithm="grid")  # optim.lr in 1e-3, 2e-3, 3e-3, x 2 samples
    path = prepare(spec, str(tmp_path))
    study = tmp_path / "g"
    for tid, lr, status in (("a", 1e-3, "completed"), ("d", 3e-3, "running"), ("e", 2e-3, "running")):
        write_trial(tmp_path, "g", tid, spec.train_config({"optim.lr": lr}).flat_params(), [metrics(0.5, 5, 1)] * 2,
                    status)
    _fake_checkpoint(study, "run_trial_d_0", "d", 0, {GRID_KEY: {"optim.lr": 3e-3}})
    cut = _fake_checkpoint(study, "run_trial_d_0", "d", 1, {GRID_KEY: {"optim.lr": 3e-3}})
    (cut / files.STATE_FILE).write_bytes(b"state of d after")  # cut short: d continues after epoch 0
    said = []
    plan = plan_resume(str(tmp_path), path, spec, said.append)
    assert plan.finished == ["a"] and plan.set_aside == ["e"]  # e has no checkpoint: orphaned/ as before
    assert list(plan.continued) == ["d"] and plan.resume_epochs == {"d": 0}
    assert len(said) == 1 and "checkpoint_000001: state.pt is incomplete or corrupt" in said[0]
    marked = [p for p in plan.grid if CONTINUES in p]
    assert marked == [{"optim.lr": 3e-3, CONTINUES: "d"}]  # d runs its own point, under its own id
    assert sorted(p["optim.lr"] for p in plan.grid) == [1e-3, 2e-3, 2e-3, 3e-3, 3e-3]
    config = {GRID_KEY: marked[0]}
    assert continued_id(config) == "d" and assignment_of(config) == {"optim.lr": 3e-3}
    assert (study / "trials" / "d.parquet").exists() and not (study / "orphaned" / "trials" / "d.parquet").exists()


def test_resume_plan_without_checkpoints_when_they_are_off(tmp_path):
    from study_factory import metrics, write_trial
    from test_durable import spec_of

    from deqlab.study import parse_study
    from deqlab.study.driver import prepare
    from deqlab.study.durable import plan_resume

    raw = {**spec_of("o").model_dump(mode="json"), "checkpoint": {"every": 0}}
    spec = parse_study(raw, "o")
    path = prepare(spec, str(tmp_path))
    write_trial(tmp_path, "o", "d", spec.train_config({"optim.lr": 1e-3}).flat_params(), [metrics(0.5, 5, 1)],
                "running")
    _fake_checkpoint(tmp_path / "o", "x", "d", 0, {"optim.lr": 1e-3})
    plan = plan_resume(str(tmp_path), path, spec)
    assert plan.continued == {} and plan.set_aside == ["d"] and plan.samples == 4


def test_study_file_checkpoint_settings_are_validated():
    from test_durable import spec_of

    from deqlab.study import parse_study
    from deqlab.study.spec import StudyError

    raw = spec_of("v").model_dump(mode="json")
    assert parse_study(raw, "v").checkpoint == CheckpointSpec(every=1, keep=2)  # the defaults
    for bad, says in (({"every": -1}, "checkpoint.every: Input should be greater than or equal to 0"),
                      ({"keep": 0}, "checkpoint.keep: Input should be greater than or equal to 1"),
                      ({"evry": 1}, "checkpoint.evry")):
        with pytest.raises(StudyError, match=says):
            parse_study({**raw, "checkpoint": bad}, "v.yaml")


# --------------------------------------------------------------------------- the trained models back


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    """Two finished `deqlab train`-style trials of one study, one per learning rate."""
    root = tmp_path_factory.mktemp("models")
    for trial, lr in (("slow", 1e-4), ("fast", 1e-2)):
        config = TrainConfig.model_validate({**TINY, "epochs": 2, "device": "cpu", "optim": {"lr": lr}})
        run_one(config, study="m", trial_id=trial, storage=str(root), reporter=lambda e, m: None,
                checkpointing=Checkpointing(CheckpointSpec()), local_checkpoints=True)
    return root / "m"


def test_load_model_gives_the_trained_model_of_a_trial_or_the_best(two_trials):
    import deqlab
    from deqlab.run.loop import evaluate
    from deqlab.data import load_dataset, make_loaders

    final = load(two_trials).trials.query("epoch == 1").set_index("trial_id")
    best_acc = final.test_acc.idxmax()
    best_nfe = final.nfe_fwd.idxmin()
    model, config = deqlab.load_model(two_trials, best="test_acc")
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert config.optim.lr == final.loc[best_acc, "param.optim.lr"]
    assert deqlab.load_model(two_trials, best="nfe_fwd")[1].optim.lr == final.loc[best_nfe, "param.optim.lr"]
    model, config = deqlab.load_model(str(two_trials), "slow")
    assert config.optim.lr == 1e-4
    # the weights are the final checkpoint's: its test set gives the recorded numbers, bit for bit
    splits = load_dataset("digits", subset=config.data.subset, test_subset=config.data.test_subset, seed=config.seed)
    m = evaluate(model, make_loaders(splits, config.data.batch_size, seed=config.seed)[1], torch.device("cpu"))
    assert (m["test_acc"], m["nfe_fwd"]) == (final.loc["slow", "test_acc"], final.loc["slow", "nfe_fwd"])


def test_evaluate_command_reproduces_the_recorded_numbers_and_refuses_what_is_missing(two_trials, capsys,
                                                                                     tmp_path, monkeypatch):
    from deqlab.cli import main

    monkeypatch.chdir(tmp_path)  # started from another folder
    final = load(two_trials).trials.query("epoch == 1").set_index("trial_id")
    assert main(["evaluate", str(two_trials), "--trial", "fast", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trial_id"] == "fast" and out["epoch"] == 1 and out["data"] == "digits"
    assert out["test_acc"] == final.loc["fast", "test_acc"] and out["nfe_fwd"] == final.loc["fast", "nfe_fwd"]
    assert {"nfe_fwd_paper", "residual", "infer_time_s", "converged_frac"} <= set(out)
    for argv, says in ((["evaluate", str(tmp_path / "none")], "no study at"),
                       (["evaluate", str(two_trials)], "has 2 trials with a checkpoint"),
                       (["evaluate", str(two_trials), "--trial", "nope"], "no trial 'nope'"),
                       (["evaluate", str(two_trials), "--best", "hostname"], "unknown metric 'hostname'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, err


def test_checkpoints_written_before_meta_recorded_shapes_still_load_and_reproduce(two_trials, tmp_path):
    """Checkpoints of deqlab before load_model (meta.json without input_shape, num_classes, test batch, threads,
    run): the model is rebuilt from the data set's shape and still gives the recorded numbers."""
    import shutil

    from deqlab.run.saved import evaluate_saved

    old = tmp_path / "m"
    shutil.copytree(two_trials, old)  # another folder: nothing points at the first one
    for meta_file in old.glob("checkpoints/*/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        for key in ("input_shape", "num_classes", "test_batch_size", "torch_threads", "run"):
            meta.pop(key, None)
        meta_file.write_text(json.dumps(meta))
    final = load(old).trials.query("epoch == 1").set_index("trial_id")
    out = evaluate_saved(old, "slow")
    assert (out["test_acc"], out["nfe_fwd"]) == (final.loc["slow", "test_acc"], final.loc["slow", "nfe_fwd"])


def test_a_checkpoint_folder_linked_from_outside_or_with_an_oversized_meta_is_no_checkpoint(two_trials, tmp_path):
    import shutil

    study = tmp_path / "m"
    shutil.copytree(two_trials, study)
    store = StudyStore(str(study))
    assert len(files.find(store, "slow")) == 2
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(study / "checkpoints" / "slow" / "checkpoint_000001"), elsewhere)
    (study / "checkpoints" / "slow" / "checkpoint_000001").symlink_to(elsewhere)
    assert [r.epoch for r in files.find(store, "slow")] == [0]
    meta = study / "checkpoints" / "slow" / "checkpoint_000000" / "meta.json"
    meta.write_text(meta.read_text()[:-1] + ', "pad": "' + "x" * (1 << 20) + '"}')
    assert files.find(store, "slow") == []
