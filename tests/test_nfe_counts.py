"""Every NFE column against an independent count: a counting autograd.Function inside the cell.

The counter sees each batched forward call of f, each first-order VJP (a gradient pushed into
f's output) and each second-order pass (the Jacobian penalty's backward through its own VJP,
seen at f's input side). deqlab's columns must equal these counts exactly.
"""

import pytest
import torch
from torch import nn

from deqlab.data import load_dataset
from deqlab.layers import DEQ
from deqlab.models.zoo import ReluSumCell
from deqlab.run import TrainConfig
from deqlab.run.loop import _train_epoch, evaluate, model_for

F64 = torch.float64


class Counts:
    fwd = vjp = second = 0

    @classmethod
    def reset(cls):
        cls.fwd = cls.vjp = cls.second = 0


class _Out(torch.autograd.Function):
    """Identity on f's output: forward counts a call of f, backward a VJP of f."""

    @staticmethod
    def forward(ctx, t):
        Counts.fwd += 1
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        Counts.vjp += 1
        return g


class _Second(torch.autograd.Function):
    """Identity on a VJP's result: its backward runs only when that VJP is itself differentiated."""

    @staticmethod
    def forward(ctx, g):
        return g.view_as(g)

    @staticmethod
    def backward(ctx, gg):
        Counts.second += 1
        return gg


class _In(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g):
        return _Second.apply(g)


class Counting(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, z, x):
        return _Out.apply(self.cell(_In.apply(z), x))


def relu_deq(**kw):
    torch.manual_seed(0)
    cell = ReluSumCell(8).double()
    with torch.no_grad():
        cell.W.weight.mul_(0.5)
    skip = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).double() if kw.get("init") == "skip" else None
    return DEQ(Counting(cell), skip_net=skip, **{"solver": "broyden", "tol": 1e-6, "stop_mode": "batch", **kw})


def step(deq):
    x = torch.randn(6, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    Counts.reset()
    z, info = deq(x)
    fwd_calls = Counts.fwd
    Counts.vjp_fwd = Counts.vjp  # newton_krylov's forward JVPs pass through the counter's backward too
    ((z ** 2).sum() + info.reg_loss + sum(c * (s ** 2).sum() for c, s in info.correction)).backward()
    return info, fwd_calls


@pytest.mark.parametrize("mode,options", [("implicit", {}), ("implicit", {"solver": "newton_krylov", "max_iter": 2}),
                                          ("phantom", {"steps": 4}), ("unrolled", {"steps": 3}), ("jfb", {}),
                                          ("shine", {})])
@pytest.mark.parametrize("init", ["zeros", "skipreg"])
def test_forward_and_backward_nfe_equal_the_cells_own_count(mode, options, init):
    info, fwd_calls = step(relu_deq(init=init, backward=mode, backward_options=options, skip_weight=1.0))
    assert fwd_calls == info.nfe_fwd
    assert info.nfe_fwd_per_sample == info.nfe_fwd  # batch stop mode: every sample takes part in every call
    # implicit: adjoint VJPs + the final VJP to the parameters; skipreg adds the skip term's VJP through f(0, x)
    assert Counts.vjp == info.nfe_bwd
    assert Counts.second == 0 and info.nfe_jac == 0
    if mode != "implicit":  # jfb and shine: the one VJP through f at z*
        assert info.nfe_bwd == options.get("steps", 1) + (init == "skipreg")


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden", "newton_krylov", "continuous"])
@pytest.mark.parametrize("mode", ["jfb", "shine"])
def test_jfb_and_shine_cost_one_vjp_with_every_solver(solver, mode):
    """shine with a solver that keeps no estimate runs only by the user's choice, as the implicit solve."""
    options = {"no_estimate": "implicit"} if mode == "shine" and solver not in ("anderson", "broyden") else {}
    info, fwd_calls = step(relu_deq(solver=solver, backward=mode, backward_options=options))
    assert fwd_calls == info.nfe_fwd
    assert Counts.vjp - Counts.vjp_fwd == info.nfe_bwd
    assert info.nfe_bwd == 1 or (options and info.nfe_bwd > 1)


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden", "newton_krylov", "continuous"])
def test_correction_counts_one_application_and_one_vjp_per_kept_iterate(solver):
    plain, plain_calls = step(relu_deq(solver=solver, tol=1e-12, max_iter=9, backward="jfb"))
    info, fwd_calls = step(relu_deq(solver=solver, tol=1e-12, max_iter=9, backward="jfb",
                                    correction={"steps": 2}))
    kept = len(info.correction)
    assert fwd_calls == info.nfe_fwd == plain.nfe_fwd + kept
    assert Counts.vjp - Counts.vjp_fwd == info.nfe_bwd == 1 + kept
    assert kept == len([c for c in (3, 6) if c <= len(info.trace)]) >= 1  # checks 3 and 6 of 9, those reached


@pytest.mark.parametrize("init", ["zeros", "skipreg"])
def test_pretraining_counts_one_vjp_per_application(init):
    deq = relu_deq(init=init, fixed_depth=5, skip_weight=1.0)
    info, fwd_calls = step(deq)
    assert fwd_calls == info.nfe_fwd == 5 + 1 + (init == "skipreg")  # applications, residual report, f(0, x)
    assert Counts.vjp == info.nfe_bwd == 5 + (init == "skipreg")


@pytest.mark.parametrize("probes", [1, 3])
def test_jacobian_penalty_counts_its_vjps_and_their_backward(probes):
    info, fwd_calls = step(relu_deq(jac_weight=1.0, jac_probes=probes))
    assert fwd_calls == info.nfe_fwd
    assert Counts.vjp == info.nfe_bwd + probes  # the probes' VJPs run in the forward pass
    assert Counts.second == probes  # and each is differentiated once in the backward pass
    assert info.nfe_jac == 2 * probes


def test_epoch_columns_equal_the_counts():
    """The per-epoch columns of a real training run (pretraining and DEQ epochs, jac reg on)."""
    cfg = TrainConfig(seed=0, epochs=1, data={"name": "digits", "subset": 96, "test_subset": 40, "batch_size": 32},
                      model={"name": "mlp", "options": {"width": 16, "inner": None, "cell": "relu_sum"}},
                      deq={"solver": "broyden", "tol": 1e-3, "stop_mode": "batch", "jac_weight": 1.0,
                           "init": "skipreg", "skip_weight": 1.0, "skip_grad": "both"})
    check_epoch_columns(cfg)


def test_epoch_columns_with_shine_and_the_correction_loss_equal_the_counts():
    cfg = TrainConfig(seed=0, epochs=1, data={"name": "digits", "subset": 96, "test_subset": 40, "batch_size": 32},
                      model={"name": "mlp", "options": {"width": 16, "inner": None, "cell": "relu_sum"}},
                      deq={"solver": "anderson", "tol": 1e-6, "max_iter": 12, "stop_mode": "batch", "jac_weight": 1.0,
                           "init": "skipreg", "skip_weight": 1.0, "backward": "shine",
                           "correction": {"weight": 0.5, "steps": 3}})
    model, xb = check_epoch_columns(cfg)
    _, info = model(xb)
    assert len(info.correction) == 3  # checks 3, 6, 9 of 12 reached: their terms were in the counted epoch


def check_epoch_columns(cfg):
    splits = load_dataset("digits", subset=96, test_subset=40, seed=0, flatten=True)
    model = model_for(cfg, splits)
    model.deq.f = Counting(model.deq.f)
    train_loader = torch.utils.data.DataLoader(splits.train, batch_size=32)
    test_loader = torch.utils.data.DataLoader(splits.test, batch_size=40)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for depth in (4, None):  # a pretraining epoch, then a DEQ epoch
        model.set_fixed_depth(depth)
        Counts.reset()
        m = _train_epoch(model, train_loader, opt, None, cfg, torch.device("cpu"))
        jac = 0 if depth else 2 * 3  # one probe per batch: its VJP and its backward
        assert m["train_nfe_fwd"] * 3 == Counts.fwd
        assert m["nfe_bwd"] * 3 == Counts.vjp - jac / 2
        assert m["nfe_jac"] * 3 == jac and Counts.second == jac / 2
        assert m["nfe_train_total"] * 3 == Counts.fwd + Counts.vjp + Counts.second
        Counts.reset()
        t = evaluate(model, test_loader, torch.device("cpu"))
        assert t["nfe_test_total"] == t["nfe_fwd"] == Counts.fwd  # one test batch: prediction is forward only
        solver_calls = Counts.fwd - 1  # all but skipreg's f(0, x)
        assert t["nfe_fwd_paper"] == (depth if depth else solver_calls) + 2
    return model, next(iter(train_loader))[0]
