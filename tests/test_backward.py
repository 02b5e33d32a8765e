"""Gradients through the fixed point against closed forms, finite differences and counted VJPs."""

import pytest
import torch
from torch import nn

from deqlab.layers import DEQ, backward_options, jacobian_penalty
from deqlab.solvers import SOLVERS

ALL = sorted(SOLVERS)
F64 = torch.float64


class LinearCell(nn.Module):
    """f(z, x) = A z + B x: z* = (I - A)^-1 B x, so every gradient has a closed form."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(0.3 * torch.randn(dim, dim, generator=g, dtype=F64) / dim**0.5)
        self.B = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))

    def forward(self, z, x):
        return z @ self.A.T + x @ self.B.T


class CountVJP(torch.autograd.Function):
    """Identity whose backward counts the VJPs pushed through it."""

    calls = 0

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        CountVJP.calls += 1
        return g


class TanhCell(nn.Module):
    def __init__(self, dim=5, scale=0.5, seed=0, count=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(dim, dim, generator=g, dtype=F64)
        self.W = nn.Parameter(scale * W / torch.linalg.matrix_norm(W, ord=2))
        self.count = count

    def forward(self, z, x):
        out = torch.tanh(z @ self.W.T + x)
        return CountVJP.apply(out) if self.count else out


def closed_form_grads(cell, x, w):
    dim = x.shape[1]
    eye = torch.eye(dim, dtype=F64)
    with torch.no_grad():
        z_star = torch.linalg.solve(eye - cell.A, (x @ cell.B.T).T).T
        g = torch.linalg.solve((eye - cell.A).T, w.T)  # adjoint, one column per sample
    return g @ z_star, g @ x  # dL/dA, dL/dB for L = sum(w * z*)


@pytest.mark.parametrize("solver", ALL)
def test_implicit_gradient_matches_closed_form(solver):
    cell = LinearCell()
    deq = DEQ(cell, solver=solver, tol=1e-10, max_iter=300)
    x = torch.randn(3, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(3, 6, dtype=F64, generator=torch.Generator().manual_seed(2))
    z, info = deq(x)
    (z * w).sum().backward()
    gA, gB = closed_form_grads(cell, x, w)
    assert float((cell.A.grad - gA).norm() / gA.norm()) <= 1e-4
    assert float((cell.B.grad - gB).norm() / gB.norm()) <= 1e-4
    assert info.nfe_bwd > 0 and info.backward.converged_frac == 1.0


@pytest.mark.parametrize("adjoint", ["fixed_point", "broyden", "newton_krylov", "continuous"])
def test_implicit_with_a_different_adjoint_solver(adjoint):
    cell = LinearCell(seed=3)
    deq = DEQ(cell, solver="anderson", tol=1e-10, max_iter=300, backward="implicit",
              backward_options={"solver": adjoint, "tol": 1e-10})
    x = torch.randn(2, 6, dtype=F64)
    w = torch.randn(2, 6, dtype=F64)
    z, info = deq(x)
    (z * w).sum().backward()
    gA, _ = closed_form_grads(cell, x, w)
    assert float((cell.A.grad - gA).norm() / gA.norm()) <= 1e-4


@pytest.mark.parametrize("solver", ["anderson", "broyden", "newton_krylov"])
def test_gradcheck_small_nonlinear_deq(solver):
    cell = TanhCell()
    deq = DEQ(cell, solver=solver, tol=1e-12, max_iter=200)
    W0 = cell.W.detach().clone()

    def fn(x, W):
        cell.W = None  # swap the parameter for a differentiable input
        del cell._parameters["W"]
        cell.W = W
        try:
            return deq(x)[0]
        finally:
            del cell.W
            cell.W = nn.Parameter(W0.clone())

    x = torch.randn(2, 5, dtype=F64, requires_grad=True)
    W = W0.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x, W), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden", "newton_krylov"])
def test_implicit_backward_nfe_equals_counted_vjps(solver):
    cell = TanhCell(count=True, scale=0.9)
    deq = DEQ(cell, solver=solver, tol=1e-8, max_iter=100)
    x = torch.randn(4, 5, dtype=F64)
    z, info = deq(x)
    CountVJP.calls = 0
    z.sum().backward()
    # every adjoint-solver VJP passes through the cell once, and nfe_bwd includes the final pass to the parameters
    assert CountVJP.calls == info.nfe_bwd
    assert info.nfe_bwd >= 2


def grad_of(deq, x, w):
    deq.zero_grad()
    z, info = deq(x)
    (z * w).sum().backward()
    return deq.f.W.grad.flatten().clone(), info


@pytest.mark.parametrize("mode,options", [("phantom", {"steps": 5, "damping": 0.5}), ("unrolled", {"steps": 5})])
def test_phantom_and_unrolled_point_like_implicit(mode, options):
    cell = TanhCell(dim=16, scale=0.5, seed=4)
    x = torch.randn(8, 16, dtype=F64)
    w = torch.randn(8, 16, dtype=F64)
    exact, _ = grad_of(DEQ(cell, solver="anderson", tol=1e-10), x, w)
    approx, info = grad_of(DEQ(cell, solver="anderson", tol=1e-10, backward=mode, backward_options=options), x, w)
    cos = float(torch.dot(exact, approx) / (exact.norm() * approx.norm()))
    assert cos > 0.9
    assert info.nfe_bwd == options["steps"]  # one VJP per differentiated application


def test_unrolled_with_many_steps_converges_to_implicit():
    cell = TanhCell(dim=8, scale=0.5, seed=5)
    x = torch.randn(4, 8, dtype=F64)
    w = torch.randn(4, 8, dtype=F64)
    exact, _ = grad_of(DEQ(cell, solver="anderson", tol=1e-12), x, w)
    unrolled, _ = grad_of(DEQ(cell, solver="anderson", tol=1e-12, backward="unrolled",
                              backward_options={"steps": 60}), x, w)
    assert float((unrolled - exact).norm() / exact.norm()) < 1e-8


def test_jacobian_penalty_matches_frobenius_norm():
    torch.manual_seed(0)
    dim = 10
    A = torch.randn(dim, dim, dtype=F64)
    z_in = torch.randn(1, dim, dtype=F64, requires_grad=True)
    fz = z_in @ A.T
    est, n = jacobian_penalty(fz, z_in, probes=4000)
    exact = float(A.pow(2).sum() / dim)
    assert n == 4000
    assert abs(float(est) - exact) / exact < 0.05


def test_jacobian_regularisation_reaches_the_parameters():
    cell = TanhCell(dim=6, scale=0.8)
    deq = DEQ(cell, solver="anderson", tol=1e-8, jac_weight=1.0, jac_probes=2)
    z, info = deq(torch.randn(3, 6, dtype=F64))
    assert info.nfe_jac == 2 and float(info.jac_loss.detach()) > 0
    info.reg_loss.backward()
    assert float(cell.W.grad.norm()) > 0


@pytest.mark.parametrize(
    "mode,options,match",
    [
        ("ift", {}, "valid modes: implicit, phantom, unrolled"),
        ("phantom", {"k": 3}, "unknown option.*'k'.*valid options: steps, damping"),
        ("phantom", {"damping": 0.0}, "invalid option.*damping"),
        ("implicit", {"solver": "newton"}, "unknown adjoint solver"),
        ("implicit", {"solver": "anderson", "solver_options": {"memory": 3}}, "unknown option.*'memory'"),
    ],
)
def test_bad_backward_options(mode, options, match):
    with pytest.raises(ValueError, match=match):
        backward_options(mode, options)


def test_implicit_backward_leaves_no_reference_cycle():
    import gc

    deq = DEQ(TanhCell(), solver="anderson", tol=1e-8)
    x = torch.randn(3, 5, dtype=F64)

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    for _ in range(3):
        z, info = deq(x)
        z.sum().backward()
    del z, info
    before = live_tensors()
    for _ in range(50):
        z, info = deq(x)
        z.sum().backward()
    del z, info
    assert live_tensors() == before


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e4])
def test_adjoint_accuracy_does_not_depend_on_gradient_scale(scale):
    # f(z, x) = (2/3) z + b + x/3: dL/db = 3 * scale * n for L = scale * sum(z*)
    cell = nn.Linear(1, 1).double()
    with torch.no_grad():
        cell.weight.fill_(2 / 3)
        cell.bias.zero_()
    affine = _Affine(cell)
    deq = DEQ(affine, solver="continuous", tol=1e-2,
              solver_options={"rtol": 1e-2, "atol": 1e-2})
    z, info = deq(torch.arange(1.0, 11.0, dtype=F64).reshape(-1, 1))
    (scale * z.sum()).backward()
    assert info.backward.converged_frac == 1.0
    assert abs(float(affine.lin.bias.grad) / (30 * scale) - 1) < 0.02


class _Affine(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, z, x):
        return self.lin(z) + x / 3
