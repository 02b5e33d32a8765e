"""The training loop on real (embedded) data: accuracy, determinism, divergence, results files."""

import math

import pytest
import torch

from deqlab.results import TrialWriter, load
from deqlab.run import TrainConfig, provenance, select_device, train

TIMES = ("fwd_time_s", "bwd_time_s", "epoch_time_s", "infer_time_s", "peak_mem_bytes")  # measured, not computed


def digits_config(init="zeros", **overrides):
    base = dict(
        epochs=4, seed=0, optim={"lr": 3e-3}, data={"batch_size": 32},
        model={"name": "mlp", "options": {"width": 64, "inner": 128}},
        deq={"init": init, "solver": "anderson", "tol": 1e-3},
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.parametrize("init", ["zeros", "skip", "skipreg"])
def test_short_digits_training_reaches_90_percent(init):
    result = train(digits_config(init))
    assert result.status == "completed"
    assert result.final["test_acc"] >= 0.90
    for m in result.history:  # NFE reported every epoch, forward and backward
        assert m["nfe_fwd"] > 1 and m["nfe_bwd"] > 1 and 0 <= m["converged_frac"] <= 1
        assert all(m[k] > 0 for k in TIMES)


def test_same_seed_gives_identical_metrics():
    cfg = digits_config(epochs=2)
    a, b = train(cfg), train(cfg)
    strip = lambda h: [{k: v for k, v in m.items() if k not in TIMES} for m in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    c = train(digits_config(epochs=2, seed=1))
    assert strip(c.history) != strip(a.history)


def test_unconverged_run_is_marked_diverged_and_keeps_earlier_epochs(tmp_path):
    # one pretraining epoch (fixed depth: nothing to converge), then a solver that cannot converge
    cfg = digits_config(epochs=3, pretrain_epochs=1, max_unconverged_frac=0.5,
                        deq={"solver": "fixed_point", "tol": 1e-12, "max_iter": 2})
    writer = TrialWriter(str(tmp_path), "div", "t1", cfg.flat_params(), provenance(cfg, select_device("cpu")))
    result = train(cfg, writer=writer)
    assert result.status == "diverged" and "unconverged" in result.error
    assert len(result.history) == 2  # the pretraining epoch and the one that diverged
    rows = load(tmp_path / "div").trials
    assert list(rows["epoch"]) == [0, 1] and set(rows["status"]) == {"diverged"}


def test_non_finite_loss_is_marked_diverged(tmp_path, monkeypatch):
    import deqlab.run.loop as loop

    models = []
    real_build = loop.model_for
    monkeypatch.setattr(loop, "model_for", lambda c, s: models.append(real_build(c, s)) or models[-1])

    def blow_up(epoch, metrics):  # a reporter that corrupts the weights after the first epoch
        if epoch == 0:
            with torch.no_grad():
                next(models[0].parameters()).fill_(math.nan)

    cfg = digits_config(epochs=3)
    writer = TrialWriter(str(tmp_path), "nan", "t1", cfg.flat_params(), {})
    result = train(cfg, reporter=blow_up, writer=writer)
    assert result.status == "diverged" and "non-finite" in result.error
    assert len(result.history) == 1 and math.isfinite(result.history[0]["test_acc"])
    rows = load(tmp_path / "nan").trials
    assert list(rows["epoch"]) == [0] and list(rows["status"]) == ["diverged"]


def test_results_files_follow_the_contract(tmp_path):
    cfg = digits_config(epochs=2, depth_states=3, eval_batch=16)
    writer = TrialWriter(str(tmp_path), "contract", "t7", cfg.flat_params(), provenance(cfg, select_device("cpu")))
    result = train(cfg, writer=writer)
    res = load(tmp_path / "contract")
    trials = res.trials
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    for col in ("study", "trial_id", "epoch", "param.deq.solver", "param.deq.init", "train_loss", "test_acc",
                "nfe_fwd", "nfe_bwd", "fwd_time_s", "bwd_time_s", "epoch_time_s", "converged_frac", "residual",
                "seed", "config_hash", "deqlab_version", "torch_version", "device", "num_workers", "started_at"):
        assert col in trials.columns, col
    assert list(trials["test_acc"]) == [m["test_acc"] for m in result.history]
    traces = res.traces
    fwd = traces[(traces.phase == "fwd") & (traces.epoch == 1)]
    bwd = traces[(traces.phase == "bwd") & (traces.epoch == 1)]
    assert len(fwd) >= 2 and len(bwd) >= 2
    assert list(fwd["step"]) == list(range(len(fwd)))
    import pandas as pd

    states = pd.read_parquet(tmp_path / "contract" / "states" / "t7.parquet")
    assert sorted(states["step"].unique()) == [0, 1, 2, 3] and states["sample"].nunique() == 16
    assert len(states["state"].iloc[0]) == 64


@pytest.mark.parametrize("bad,match", [
    ({"epochs": 0}, "epochs"),
    ({"data": {"name": "imagenet"}}, "unknown data set"),
    ({"model": {"name": "mlp", "options": {"depth": 3}}}, "unknown option"),
    ({"deq": {"solver": "anderson", "solver_options": {"memory": 3}}}, "unknown option"),
    ({"optimiser": {}}, "Extra inputs"),
])
def test_bad_config_is_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


@pytest.mark.parametrize("adjoint", [False, True])
def test_neural_ode_baseline_trains_and_counts_backward(adjoint):
    cfg = TrainConfig(epochs=2, seed=0, optim={"lr": 3e-3},
                      model={"name": "neural_ode", "options": {"width": 32, "inner": 64, "adjoint": adjoint}})
    result = train(cfg)
    assert result.status == "completed" and result.final["test_acc"] >= 0.85
    m = result.final
    assert m["nfe_fwd"] >= 6 and m["nfe_bwd"] >= 6  # dopri5: at least one step of 6 stages each way
    assert math.isnan(m["residual"])  # no fixed point to report on


def test_neural_ode_rejects_deq_settings():
    from deqlab.layers import DEQConfig
    from deqlab.models import build

    with pytest.raises(ValueError, match="'neural_ode' has no DEQ layer"):
        build("neural_ode", (4,), 10, DEQConfig(solver="broyden"))
    with pytest.raises(ValueError, match="deq.solver: set, but model .neural_ode. has no DEQ layer"):
        TrainConfig(model={"name": "neural_ode"}, deq={"solver": "broyden"})
