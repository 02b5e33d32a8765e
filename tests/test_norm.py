"""`model.options.norm`: spectral norm bounds the cell's Lipschitz constant as docs/design.md claims (measured:
singular values and the cell's Jacobian), weight norm leaves the function unchanged at initialisation, and a
trained normalised model comes back from its checkpoint giving the recorded numbers."""

import pytest
import torch
from study_factory import TINY
from torch import nn

import deqlab
from deqlab.models.zoo import ConvDEQ, MLPDEQ
from deqlab.results import load
from deqlab.run.checkpoint import Checkpointing
from deqlab.run.config import CheckpointSpec, TrainConfig
from deqlab.run.one import run_one
from deqlab.run.saved import evaluate_saved

MLP_CELLS = [{"inner": None}, {"inner": 24}, {"inner": None, "cell": "relu_sum"}]


def _sigma(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2))


def _layers(module, kind=(nn.Linear, nn.Conv2d)):
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("options", MLP_CELLS)
def test_spectral_norm_makes_the_mlp_cell_1_lipschitz(options):
    torch.manual_seed(0)
    model = MLPDEQ(in_dim=64, width=16, norm="spectral", **options)
    cell = model.deq.f
    with torch.no_grad():  # weights far from contractive: without the norm the cell would not be 1-Lipschitz
        for m in _layers(cell):
            m.parametrizations.weight.original.mul_(5.0)
    x = torch.randn(32, 64)
    for _ in range(30):  # training passes: one power iteration each
        model(x)
    model.eval()
    for m in _layers(cell):
        assert _sigma(m.parametrizations.weight.original) > 2.0  # the raw weight
        assert _sigma(m.weight) == pytest.approx(1.0, abs=1e-3)  # normalised: its largest singular value is 1
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # the cell's Jacobian in z at random points: its norm bounds the local Lipschitz constant
        z, u = torch.randn(16, generator=gen), 3 * torch.randn(16, generator=gen)
        jac = torch.autograd.functional.jacobian(lambda v: cell(v[None], u[None])[0], z)
        assert _sigma(jac) <= 1.0 + 1e-3
    plain = MLPDEQ(in_dim=64, width=16, **options)
    with torch.no_grad():
        for m in _layers(plain.deq.f):
            m.weight.mul_(5.0 / _sigma(m.weight))
    z, u = 0.1 * torch.randn(16, generator=gen), torch.zeros(16)
    jac = torch.autograd.functional.jacobian(lambda v: plain.deq.f(v[None], u[None])[0], z)
    assert _sigma(jac) > 1.5  # the same cell without the norm is not (the check above can fail)


def test_spectral_norm_of_a_conv_cell_normalises_its_reshaped_kernels():
    torch.manual_seed(0)
    model = ConvDEQ(channels=4, norm="spectral")
    x = torch.randn(2, 1, 28, 28)
    for _ in range(30):
        model(x)
    model.eval()
    convs = _layers(model.deq.f, nn.Conv2d)
    assert len(convs) == 2
    for m in convs:
        assert _sigma(m.weight) == pytest.approx(1.0, abs=1e-3)  # out x in*3*3: bounds the conv within 3x


def test_weight_norm_keeps_the_initial_function_and_trains_direction_and_length():
    torch.manual_seed(0)
    plain = MLPDEQ(in_dim=64, width=16, inner=24)
    torch.manual_seed(0)
    normed = MLPDEQ(in_dim=64, width=16, inner=24, norm="weight")
    x = torch.randn(8, 64)
    assert torch.allclose(plain(x)[0], normed(x)[0], atol=1e-5)
    names = {k for k in normed.state_dict() if k.startswith("deq.f.")}
    assert names == {f"deq.f.net.{i}.{p}" for i in (0, 2) for p in
                     ("bias", "parametrizations.weight.original0", "parametrizations.weight.original1")}
    g = normed.deq.f.net[0].parametrizations.weight.original0
    assert g.shape == (24, 1)  # one length per output unit


def test_an_unknown_norm_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="model.options.norm: 'batch' is not one of none, weight, spectral"):
        TrainConfig(model={"name": "mlp", "options": {"norm": "batch"}})


@pytest.mark.parametrize("norm", ["weight", "spectral"])
def test_a_trained_normalised_model_comes_back_from_its_checkpoint(tmp_path, norm):
    config = TrainConfig.model_validate({**TINY, "epochs": 1, "device": "cpu",
                                         "model": {"name": "mlp", "options": {"width": 16, "inner": 32,
                                                                              "norm": norm}}})
    run_one(config, study="n", trial_id="t", storage=str(tmp_path), reporter=lambda e, m: None,
            checkpointing=Checkpointing(CheckpointSpec()), local_checkpoints=True)
    model, loaded = deqlab.load_model(tmp_path / "n", "t")
    assert loaded.model.options["norm"] == norm
    assert any("parametrizations.weight" in k for k in model.state_dict())
    row = load(tmp_path / "n").trials.query("epoch == 0").iloc[0]
    out = evaluate_saved(tmp_path / "n", "t")
    assert (out["test_acc"], out["nfe_fwd"]) == (row.test_acc, row.nfe_fwd)  # bit for bit
