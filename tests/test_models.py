"""DEQ layer init modes, fixed depth, the model zoo, and the SkipDEQ NFE effect in a real run."""

import pytest
import torch
from torch import nn

from deqlab.data import load_dataset, make_loaders
from deqlab.layers import DEQ, INIT_MODES, DEQConfig
from deqlab.models import MODELS, ConvDEQ, build, count_parameters
from deqlab.solvers import SOLVERS


class Cell(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        with torch.no_grad():
            self.lin.weight.mul_(0.5)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("init", INIT_MODES)
def test_every_init_mode_with_every_solver(init, solver):
    torch.manual_seed(0)
    skip = nn.Linear(8, 8) if init == "skip" else None
    deq = DEQ(Cell(), init=init, solver=solver, tol=1e-5, max_iter=100, skip_net=skip)
    x = torch.randn(4, 8)
    z, info = deq(x)
    assert z.shape == x.shape and info.converged_frac == 1.0
    loss = z.pow(2).sum() + info.reg_loss
    loss.backward()
    assert all(p.grad is not None for p in deq.f.parameters())
    if init == "skip":
        assert skip.weight.grad is not None and float(skip.weight.grad.norm()) > 0
        assert float(info.skip_mse.detach()) > 0
    if init == "zeros":
        assert float(info.skip_mse) == 0.0
    # solver NFE plus the application that carries the gradient, plus skipreg's f(0, x)
    extra = 1 + (init == "skipreg")
    assert extra + 1 <= info.nfe_fwd_per_sample <= info.nfe_fwd  # frozen samples stop counting, batch calls don't
    assert info.nfe_bwd > 0


def test_eval_mode_skips_the_gradient_application():
    deq = DEQ(Cell(), solver="anderson", tol=1e-6)
    x = torch.randn(4, 8)
    with torch.no_grad():
        z, info = deq(x)
    assert info.nfe_fwd == len(info.trace)  # anderson: one evaluation per check, nothing else
    z2, info2 = deq(x)
    assert info2.nfe_fwd == info.nfe_fwd + 1
    assert torch.allclose(z, z2, atol=1e-5)


def test_fixed_depth_is_k_explicit_applications():
    torch.manual_seed(0)
    cell = Cell()
    deq = DEQ(cell, fixed_depth=3)
    x = torch.randn(2, 8)
    z, info = deq(x)
    expected = torch.zeros_like(x)
    for _ in range(3):
        expected = cell(expected, x)
    assert torch.allclose(z, expected)
    assert info.nfe_fwd == 4  # 3 applications + 1 to report the residual
    z.sum().backward()
    assert cell.lin.weight.grad is not None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"init": "warm"}, "'zeros', 'skip' or 'skipreg'"),
        ({"init": "skip"}, "needs skip_net"),
        ({"skip_net": nn.Linear(8, 8)}, "only used with init='skip'"),
        ({"solver": "lbfgs"}, "valid solvers"),
        ({"solver_options": {"beta": 2.0}}, "invalid option.*beta"),
        ({"backward": "ift"}, "valid modes"),
        ({"fixed_depth": 0}, "fixed_depth"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"skip_weight": -0.1}, "skip_weight"),
    ],
)
def test_bad_configuration_is_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DEQ(Cell(), **kwargs)


@pytest.mark.parametrize("name,shape,kwargs", [
    ("mlp", (4, 1, 8, 8), {"width": 16, "inner": 32}),
    ("conv", (4, 1, 8, 8), {"channels": 8}),
    ("multiscale", (4, 1, 8, 8), {"channels": 8}),
])
@pytest.mark.parametrize("init", INIT_MODES)
def test_zoo_models_train_a_step(name, shape, kwargs, init):
    torch.manual_seed(0)
    model = build(name, shape[1:], 10, DEQConfig(init=init, solver="anderson", tol=1e-3, max_iter=30), **kwargs)
    logits, info = model(torch.randn(*shape))
    assert logits.shape == (4, 10)
    loss = nn.functional.cross_entropy(logits, torch.arange(4)) + info.reg_loss
    loss.backward()
    assert info.converged_frac > 0.5
    assert all(p.grad is not None for n, p in model.named_parameters() if "skip" not in n or init == "skip")


def test_zoo_seed_sizes_and_unknown_name():
    seed_mlp = build("mlp", (1, 28, 28), 10)  # 784 -> 100, cell 100 -> 500 tanh -> 100, 100 -> 10
    assert count_parameters(seed_mlp) == 784 * 100 + 100 + (100 * 500 + 500) + (500 * 100 + 100) + 100 * 10 + 10
    paper_mlp = build("mlp", (784,), 10, width=128, inner=None)
    assert count_parameters(paper_mlp) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    with pytest.raises(ValueError, match="valid: " + ", ".join(MODELS)):
        build("resnet", (784,), 10)


def test_conv_deq_normalises_each_channel_like_the_tutorial():
    # DeepEquilibriumNetworks.jl's MNIST tutorial uses GroupNorm(C, C) in the down-block and before
    # the pool; with 4 groups the trained cell drifted to non-contractive (spectral radius ~1.6 on
    # MNIST at 64 channels) and Newton-Krylov diverged, so the default must be per-channel.
    model = ConvDEQ(channels=16)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 2 and all(m.num_groups == m.num_channels == 16 for m in norms)
    assert all(m.num_groups == 4 for m in ConvDEQ(channels=16, groups=4).modules()
               if isinstance(m, nn.GroupNorm))
    with pytest.raises(ValueError, match="groups must divide channels"):
        ConvDEQ(channels=16, groups=5)


def test_conv_deq_weight_init_follows_lux_by_default():
    # Lux (DeepEquilibriumNetworks.jl) draws conv/dense weights Glorot-uniform with zero biases; on the
    # tutorial replica that scored 78.4% against 65.0% with PyTorch's defaults, so glorot is the default
    torch.manual_seed(0)
    model = ConvDEQ(channels=16, deq=DEQConfig(init="skip"))
    for layer in [model.down[0], model.down[3], model.head, model.deq.skip_net[0]]:
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # drawn over the whole range, not left small
        assert torch.count_nonzero(layer.bias) == 0
    # the DEQ cell keeps its small std-0.01 draw (contractive at the start)
    assert model.deq.f.conv1.weight.std().item() == pytest.approx(0.01, rel=0.2)
    torch.manual_seed(0)
    plain = ConvDEQ(channels=16, weight_init="torch")
    assert torch.count_nonzero(plain.head.bias) == 10
    assert plain.head.weight.abs().max() <= 1 / 16 ** 0.5  # PyTorch's Kaiming-uniform(a=sqrt(5)) bound
    with pytest.raises(ValueError, match="weight_init must be one of glorot, torch"):
        ConvDEQ(channels=16, weight_init="he")


def _train_and_measure(init, steps=80):
    torch.manual_seed(0)
    splits = load_dataset("digits", flatten=True)
    train, test = make_loaders(splits, batch_size=64, seed=0)
    model = build("mlp", splits.input_shape, 10, DEQConfig(init=init, solver="anderson", tol=1e-4, max_iter=60,
                                                           skip_weight=1.0), width=32, inner=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    done = 0
    while done < steps:
        for xb, yb in train:
            logits, info = model(xb)
            loss = nn.functional.cross_entropy(logits, yb) + info.reg_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    nfe, correct = [], 0
    with torch.no_grad():
        for xb, yb in test:
            logits, info = model(xb)
            nfe.append(info.nfe_fwd_per_sample)
            correct += int((logits.argmax(1) == yb).sum())
    return sum(nfe) / len(nfe), correct / len(splits.test)


def test_skip_modes_cut_forward_nfe_after_training():
    base_nfe, base_acc = _train_and_measure("zeros")
    for init in ("skip", "skipreg"):
        nfe, acc = _train_and_measure(init)
        assert nfe < base_nfe, (init, nfe, base_nfe)
        assert acc > 0.8, (init, acc)
    assert base_acc > 0.8


def test_catalog_names_what_each_constructor_takes():
    """models/catalog.py (torch-free, what a config is checked against) agrees with the zoo constructors."""
    import inspect

    from deqlab.models.catalog import DEQ_MODELS, MLP_CELLS, NORMS, WEIGHT_INITS
    from deqlab.models.factory import CLASSES

    derived = {"deq", "in_dim", "in_channels", "num_classes", "image_size"}  # build() sets these from the data
    for name, info in MODELS.items():
        params = set(inspect.signature(CLASSES[name]).parameters) - derived
        assert set(info.options) == params, name
        assert ("deq" in inspect.signature(CLASSES[name]).parameters) == (name in DEQ_MODELS), name
    assert MODELS["mlp"].choices == {"cell": MLP_CELLS, "norm": NORMS, "weight_init": WEIGHT_INITS}
    assert all(MODELS[name].choices["norm"] == NORMS for name in DEQ_MODELS)  # every zoo cell takes a norm


def test_a_configs_tolerance_reaches_the_solver_unchanged_and_options_are_validated_once(monkeypatch):
    """DEQConfig validates the solver settings once; a forward and backward pass re-validate nothing."""
    from pydantic import BaseModel

    import deqlab.solvers.base as base
    import deqlab.solvers.options as options
    import deqlab.solvers.registry as registry

    cfg = DEQConfig(solver="broyden", solver_options={"memory": 7}, tol=3.7e-6, max_iter=41, stop_mode="abs",
                    backward_options={"solver": "anderson", "solver_options": {"m": 3}, "tol": 2.5e-5})
    deq = DEQ(Cell(), cfg)
    tols, validations = [], []
    real_tracker = base.Tracker
    monkeypatch.setattr(registry, "Tracker", lambda f, z0, tol, mode, keep=frozenset(): tols.append((tol, mode)) or
                        real_tracker(f, z0, tol, mode, keep))
    for name in ("validate_options", "solve_spec", "solver_options"):
        real = getattr(options, name)
        monkeypatch.setattr(options, name, lambda *a, _real=real, _name=name, **k: validations.append(_name) or
                            _real(*a, **k))
    monkeypatch.setattr(registry, "solve_spec", options.solve_spec)
    for model in options.SOLVER_OPTIONS.values():
        monkeypatch.setattr(model, "__init__", lambda self, **k: validations.append("init") or
                            BaseModel.__init__(self, **k))
    z, info = deq(torch.randn(4, 8))
    (z.pow(2).sum() + info.reg_loss).backward()
    assert tols == [(3.7e-6, "abs"), (2.5e-5, "abs")]  # forward, then the adjoint (its own "abs" test)
    assert validations == []
    assert deq.cfg.forward.options.memory == 7 and deq.cfg.forward.max_iter == 41
    assert deq.cfg.adjoint.options.m == 3


def test_models_switch_pretraining_and_give_states_over_depth():
    torch.manual_seed(0)
    model = build("mlp", (1, 8, 8), 10, DEQConfig(init="skipreg"), width=16, inner=None)
    x = torch.randn(3, 1, 8, 8)
    model.set_fixed_depth(2)
    _, info = model(x)
    assert info.nfe_fwd == 2 + 1 + 1  # applications, residual report, skipreg's f(0, x)
    model.set_fixed_depth(None)
    states = model.depth_states(x, 3)
    assert len(states) == 4 and model.training
    inj = model.injection(x)
    assert torch.allclose(states[1], model.deq.f(states[0], inj)) and states[0].shape == (3, 16)
    with pytest.raises(ValueError, match="no DEQ layer"):
        build("neural_ode", (1, 8, 8), 10, width=8).set_fixed_depth(3)
