"""The settings that express the published SkipDEQ run as an ordinary study, each checked on its own."""

import copy

import pytest
import torch
from torch import nn

from deqlab.data import load_dataset
from deqlab.layers import DEQConfig
from deqlab.models import DEQ, build, count_parameters
from deqlab.run import TrainConfig
from deqlab.run.loop import _train_epoch
from deqlab.study.spec import StudyError, load_study, parse_study

F64 = torch.float64


class LinearCell(nn.Module):
    """f(z, x) = A z + B x, so z* = (I - A)^-1 B x can be differentiated in closed form."""

    def __init__(self, dim=5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(0.3 * torch.randn(dim, dim, generator=g, dtype=F64) / dim**0.5)
        self.B = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))

    def forward(self, z, x):
        return z @ self.A.T + x @ self.B.T


def skip_grads(norm, grad):
    torch.manual_seed(0)
    cell = LinearCell()
    skip = nn.Linear(5, 5).double()
    deq = DEQ(cell, init="skip", skip_net=skip, solver="anderson", tol=1e-11, max_iter=200,
              skip_weight=2.0, skip_norm=norm, skip_grad=grad)
    x = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    _, info = deq(x)
    info.reg_loss.backward()
    # the same loss through the closed-form equilibrium, differentiated by plain autograd
    z_star = torch.linalg.solve(torch.eye(5, dtype=F64) - cell.A, (x @ cell.B.T).T).T
    diff = skip(x) - z_star
    expected = 2.0 * (diff.abs().mean() if norm == "l1" else diff.pow(2).mean())
    assert float(info.reg_loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-8)
    gA, gB = torch.autograd.grad(expected, (cell.A, cell.B))
    return cell, gA, gB


@pytest.mark.parametrize("norm", ["l1", "mse"])
def test_skip_term_through_z_star_has_the_closed_form_gradient(norm):
    cell, gA, gB = skip_grads(norm, "both")
    assert float((cell.A.grad - gA).norm() / gA.norm()) < 1e-6
    assert float((cell.B.grad - gB).norm() / gB.norm()) < 1e-6


def test_skip_term_through_z0_only_leaves_the_cell_alone():
    cell, gA, _ = skip_grads("l1", "z0")
    assert cell.A.grad is None and cell.B.grad is None and float(gA.norm()) > 0


def test_relu_sum_model_is_the_published_one():
    deq = dict(solver="broyden", tol=5e-3, stop_mode="batch")
    mlp = dict(width=128, inner=None, cell="relu_sum", weight_init="glorot")
    plain = build("mlp", (1, 28, 28), 10, DEQConfig(init="zeros", **deq), **mlp)
    skip = build("mlp", (1, 28, 28), 10, DEQConfig(init="skip", **deq), **mlp)
    assert count_parameters(plain) == 784 * 128 + 128 + 2 * 128 * 128 + 128 * 10 + 10  # 134,538
    assert count_parameters(skip) == 151_050  # the published SkipDEQ's count
    assert all(float(m.bias.detach().abs().max()) == 0 for m in skip.modules() if isinstance(m, nn.Linear) and m.bias is not None)
    f = plain.deq.f
    z, x = torch.randn(3, 128), torch.randn(3, 128)
    assert torch.allclose(f(z, x), torch.relu(z @ f.W.weight.T) + torch.relu(x @ f.U.weight.T))
    with pytest.raises(ValueError, match="inner: null"):
        build("mlp", (1, 28, 28), 10, width=8, inner=16, cell="relu_sum")


@pytest.mark.parametrize("bad,match", [
    ({"model": {"name": "mlp", "options": {"cell": "gru"}}}, "model.options.cell"),
    ({"deq": {"skip_norm": "l2"}}, "skip_norm"),
    ({"deq": {"skip_grad": "zstar"}}, "skip_grad"),
    ({"optim": {"accumulate": 0}}, "accumulate"),
    ({"model": {"name": "neural_ode"}, "deq": {"solver": "broyden", "tol": 0.1}}, "deq.solver, deq.tol: set, but"),
    ({"model": {"name": "neural_ode"}, "pretrain_epochs": 2}, "pretrain_epochs: set, but"),
])
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_neural_ode_config_survives_its_own_dump():
    """Ray Train workers rebuild the config from its dump, which spells out every deq default."""
    cfg = TrainConfig(model={"name": "neural_ode", "options": {"width": 8}})
    assert TrainConfig(**cfg.model_dump(mode="json")) == cfg


def _params_after_one_epoch(batch, accumulate, n=32):
    cfg = TrainConfig(seed=0, data={"batch_size": batch}, optim={"accumulate": accumulate},
                      model={"name": "mlp", "options": {"width": 8, "inner": None}},
                      deq={"solver": "anderson", "tol": 1e-10, "max_iter": 100})
    splits = load_dataset("digits", subset=n, seed=0, flatten=True)
    torch.manual_seed(0)
    model = build("mlp", splits.input_shape, 10, cfg.deq, width=8, inner=None).double()
    data = torch.utils.data.TensorDataset(splits.train.tensors[0].double(), splits.train.tensors[1])
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _train_epoch(model, loader, opt, None, cfg, torch.device("cpu"))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_gradient_accumulation_equals_the_large_batch():
    big = _params_after_one_epoch(32, 1)
    assert torch.allclose(_params_after_one_epoch(8, 4), big, atol=1e-8)  # one step of 4 micro-batches
    assert not torch.allclose(_params_after_one_epoch(8, 1), big, atol=1e-4)  # four steps differ
    # 32 = 3 x 12 short: 12 + 12 then 8 alone; the short group is averaged over its own micro-batches
    assert torch.allclose(_params_after_one_epoch(12, 3, n=24), _params_after_one_epoch(24, 1, n=24), atol=1e-8)


def test_paper_study_validates_with_the_published_settings():
    spec = load_study("studies/skipdeq_mnist_paper.yaml")
    assert len(spec.grid()) == 18
    cfg = spec.train_config({"deq.init": "skip", "deq.jac_weight": 1.0, "seed": 6171})
    assert (cfg.deq.solver, cfg.deq.tol, cfg.deq.stop_mode, cfg.deq.max_iter) == ("broyden", 0.005, "batch", 50)
    assert (cfg.deq.skip_norm, cfg.deq.skip_weight, cfg.deq.skip_grad) == ("l1", 5.0, "both")
    assert (cfg.optim.name, cfg.optim.schedule, cfg.optim.accumulate, cfg.data.batch_size) == ("adamw", "cosine", 6, 32)
    assert cfg.data.normalize is False and cfg.model.options["cell"] == "relu_sum" and cfg.epochs == 25
    raw = load_study("studies/skipdeq_mnist_paper.yaml").model_dump(mode="json")
    bad = copy.deepcopy(raw)
    bad["base"]["deq"]["skip_norm"] = "huber"
    with pytest.raises(StudyError, match="skip_norm"):
        parse_study(bad, "paper")


@pytest.mark.parametrize("init", ["zeros", "skip", "skipreg"])
@pytest.mark.parametrize("solver", ["newton_krylov", "continuous"])
def test_seed_tutorial_study_runs_the_replicas_settings(init, solver):
    """studies/seed_tutorial.yaml grids exactly the runs behind the tutorial table (the replica's configs)."""
    import sys

    sys.path.insert(0, "benchmarks")
    from tutorial_replica import config

    spec = load_study("studies/seed_tutorial.yaml")
    (point,) = [p for p in spec.grid() if (p["deq.init"], p["deq.solver"], p["seed"]) == (init, solver, 1)]
    assert spec.train_config(point) == config(init, solver, seed=1, subset=2000, test_subset=500)
