"""`deqlab bench`'s core on trained digits models: round-robin order, NFE as the loop counts it, speed-ups.

The models are trained here by the run loop itself (one epoch on digits, tiny widths), no Ray: DEQ
against SkipRegDEQ, whose z0 = f(0, x) leaves the solver a fraction of DEQ's iterations.
"""

import copy
import math

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from deqlab.data import load_dataset, make_loaders
from deqlab.report.bench import check_baseline, render_json, render_markdown, summarize
from deqlab.run import TrainConfig, evaluate
from deqlab.run.bench import Contender, time_models
from deqlab.run.loop import _make_optimizer, _train_epoch, model_for

CPU = torch.device("cpu")


def config(init: str, seed: int, jac: float = 0.0) -> TrainConfig:
    return TrainConfig(seed=seed, epochs=2, optim={"lr": 1e-2}, data={"batch_size": 32},
                       model={"name": "mlp", "options": {"width": 32, "inner": None, "cell": "relu_sum",
                                                         "weight_init": "glorot"}},
                       deq={"init": init, "solver": "anderson", "tol": 1e-3, "max_iter": 40, "jac_weight": jac,
                            "skip_weight": 5.0, "skip_norm": "l1", "skip_grad": "both"})


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", subset=640, test_subset=320, seed=0)


def trained(cfg: TrainConfig, splits) -> torch.nn.Module:
    """The run loop's own training (`_train_epoch`), as `deqlab train` runs it."""
    torch.manual_seed(cfg.seed)
    model = model_for(cfg, splits)
    loader, _ = make_loaders(splits, cfg.data.batch_size, seed=cfg.seed)
    opt, sched = _make_optimizer(cfg, model, cfg.epochs * len(loader))
    for _ in range(cfg.epochs):
        _train_epoch(model, loader, opt, sched, cfg, CPU)
    return model.eval()


@pytest.fixture(scope="module")
def models(splits):
    """DEQ and SkipRegDEQ at seeds 0 and 1; the seed-1 DEQ with the Jacobian penalty on."""
    out = []
    for init in ("zeros", "skipreg"):
        for seed in (0, 1):
            cfg = config(init, seed, jac=1.0 if (init, seed) == ("zeros", 1) else 0.0)
            out.append(Contender(f"{init}-{seed}", trained(cfg, splits), cfg, {"init": init}, splits))
    return out


def test_every_model_is_timed_alike_round_robin(models):
    seen = []
    hook = models[0].model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    weights = copy.deepcopy(models[0].model.state_dict())
    torch.set_num_threads(2)  # the caller's setting; timing runs at `threads`
    try:
        result = time_models(models, repeats=3, warmup=1, threads=1)
        assert torch.get_num_threads() == 2  # restored after
    finally:
        hook.remove()
        torch.set_num_threads(1)
    ids = [c.trial_id for c in models]
    n = len(ids)
    assert len(result.order) == 3 * 2 * n  # warm-up untimed: not in the order, not in the samples
    for i, (r, kind, trial) in enumerate(result.order):
        assert r == i // (2 * n) and kind == ("predict", "train_step")[i // n % 2]
        assert trial == ids[(r + i % n) % n]  # each repetition starts one model further on
    counts = pd.DataFrame(result.samples).groupby(["trial_id", "kind"]).size()
    assert set(counts) == {3} and len(counts) == 2 * n
    assert seen == [1] * 8  # threads fixed while timing; 1 warm-up + 3 predictions, and as many steps (a copy)
    assert all(torch.equal(v, models[0].model.state_dict()[k]) for k, v in weights.items())  # not trained on


def test_nfe_is_what_the_loop_counts(models, splits):
    """Prediction NFE per sample equals `evaluate` on the same test batch; a training step's equals the loop's
    `nfe_train_total` for one step on the same training batch (forward + backward + Jacobian penalty)."""
    result = time_models(models, repeats=2, warmup=0)
    got = pd.DataFrame(result.samples).set_index(["trial_id", "kind", "repeat"])["nfe"]
    test = list(DataLoader(splits.test, batch_size=32))
    train = list(DataLoader(splits.train, batch_size=32))
    for c in models:
        for r in range(2):
            ev = evaluate(c.model, [test[r]], CPU)
            assert got[c.trial_id, "predict", r] == pytest.approx(ev["nfe_fwd"], rel=1e-12)
            model = copy.deepcopy(c.model)
            opt, sched = _make_optimizer(c.config, model, 1)
            step = _train_epoch(model, [train[r]], opt, sched, c.config, CPU)
            assert got[c.trial_id, "train_step", r] == pytest.approx(step["nfe_train_total"], rel=1e-12)
    jac = got["zeros-1", "train_step", 0] - got["zeros-0", "train_step", 0]
    assert step["nfe_jac"] == 0 and jac != 0  # the penalty's VJPs are in the seed-1 DEQ's step


def test_skipreg_predicts_faster_than_deq(models):
    """Fewer solver iterations is a faster prediction: the time ratio follows the NFE ratio, with intervals."""
    result = time_models(models, repeats=6, warmup=1, clock="cpu")
    table = summarize(result.samples, ["init"], {"init": "zeros"}, result.settings)
    f = table.frame.set_index("init")
    nfe_ratio = f.loc["zeros", "nfe_fwd"] / f.loc["skipreg", "nfe_fwd"]
    assert nfe_ratio > 2.5  # measured 3.2 (DEQ 11.3, SkipRegDEQ 3.6 per sample)
    speedup = f.loc["skipreg", "predict_time_s_speedup"]
    samples = pd.DataFrame(result.samples)
    times = samples[samples["kind"] == "predict"].groupby("init")["time_s"].mean()
    assert speedup == pytest.approx(times["zeros"] / times["skipreg"])  # baseline mean / row mean
    assert 1.3 < speedup < nfe_ratio  # measured 1.9-2.1: the injection and readout cost the same in both
    for over in ("repeats", "seeds"):  # 6 repetitions paired, 2 seeds paired
        lo, hi = f.loc["skipreg", f"predict_time_s_speedup_lo_{over}"], f.loc["skipreg",
                                                                             f"predict_time_s_speedup_hi_{over}"]
        assert lo <= speedup <= hi and lo > 1
    assert f.loc["skipreg", "nfe_train_total"] < f.loc["zeros", "nfe_train_total"]
    assert f.loc["skipreg", "train_step_time_s_speedup_lo_repeats"] > 1  # measured 1.8-2.1 [1.6-1.9, ...]
    assert f.loc["zeros", "predict_time_s_speedup"] == 1 and math.isnan(f.loc["zeros",
                                                                               "predict_time_s_speedup_lo_seeds"])
    text = render_markdown(table)
    assert "| SkipRegDEQ | 2 |" in text and "speed-up vs DEQ" in text
    assert '"predict_time_s_speedup"' in render_json(table)


def test_per_seed_rows_compare_each_seed_with_its_baseline(models):
    result = time_models(models, repeats=2, warmup=0, kinds=("predict",))
    table = summarize(result.samples, ["init", "seed"], {"init": "zeros"}, result.settings)
    f = table.frame
    assert list(zip(f["init"], f["seed"])) == [("zeros", 0), ("zeros", 1), ("skipreg", 0), ("skipreg", 1)]
    assert f["n"].tolist() == [1, 1, 1, 1] and "train_step_time_s_mean" not in f
    samples = pd.DataFrame(result.samples).groupby("trial_id")["time_s"].mean()
    for seed in (0, 1):
        row = f[(f["init"] == "skipreg") & (f["seed"] == seed)].iloc[0]
        assert row["predict_time_s_speedup"] == pytest.approx(samples[f"zeros-{seed}"] / samples[f"skipreg-{seed}"])
        assert math.isnan(row["predict_time_s_speedup_lo_seeds"])  # one model a side: no interval over seeds
        assert row["predict_time_s_speedup_lo_repeats"] <= row["predict_time_s_speedup_hi_repeats"]


def test_bad_requests_are_one_clear_error(models):
    result = time_models(models[:1], repeats=1, warmup=0, kinds=("predict",))
    with pytest.raises(ValueError, match="no row matches the baseline init=skip; values present: init: zeros"):
        summarize(result.samples, ["init"], {"init": "skip"})
    groups = [c.group for c in models]  # what `deqlab bench` checks before it times anything
    with pytest.raises(ValueError, match="no row matches the baseline init=skip; values present: init: skipreg, zeros"):
        check_baseline(groups, ["init"], {"init": "skip"})
    with pytest.raises(ValueError, match="baseline names solver, which is not a group column; group columns: init"):
        check_baseline(groups, ["init"], {"solver": "anderson"})
    check_baseline(groups, ["init"], {"init": "zeros"})
    with pytest.raises(ValueError, match="group by solver: the samples carry init"):
        summarize(result.samples, ["solver"])
    with pytest.raises(ValueError, match="trial ids repeat: zeros-0"):
        time_models([models[0], models[0]])
    with pytest.raises(ValueError, match="clock must be one of wall, cpu"):
        time_models(models[:1], clock="gpu")


def test_table_of_hand_made_timings():
    """Closed forms on timings written by hand: ratio of means, ms without exponents, values from files as text."""
    samples = [{"trial_id": t, "seed": 0, "init": init, "kind": "predict", "repeat": r, "time_s": time, "nfe": nfe}
               for t, init, time, nfe in (("a", "zeros", 1.0, 3.0), ("b", "x\x1b[2J|y", 0.25, 2.0)) for r in (0, 1)]
    table = summarize(samples, ["init"], {"init": "zeros"}, {"repeats": 2})
    text = render_markdown(table)
    assert "| DEQ | 1 | 1000 | 3.00 | 1.00× [–] [–] |" in text
    assert "| x\\\\x1b\\[2J\\|y | 1 | 250 | 2.00 | 4.00× [4.00, 4.00] [–] |" in text  # escaped: one cell, no colour
    assert "\x1b" not in text and "mean over 2 repetitions" in text
