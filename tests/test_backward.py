"""Gradients through the fixed point against closed forms, finite differences and counted VJPs."""

import pytest
import torch
from torch import nn

from deqlab.layers import DEQ, backward_options, jacobian_penalty
from deqlab.solvers import SOLVERS, solve
from closed_forms import LinearCell

ALL = sorted(SOLVERS)
F64 = torch.float64


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
        ("ift", {}, "valid modes: implicit, phantom, unrolled, jfb, shine"),
        ("jfb", {"steps": 1}, "unknown option.*'steps'.*valid options: \\(none\\)"),
        ("shine", {"no_estimate": "jfb"}, "invalid option.*no_estimate"),
        ("shine", {"fallback_ratio": 0}, "invalid option.*fallback_ratio"),
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


# ---- JFB, SHINE and the fixed-point correction against closed forms on the linear cell ----------------------

def linear_setup(dim=6, batch=3, seed=0):
    cell = LinearCell(dim=dim, seed=seed)
    x = torch.randn(batch, dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(batch, dim, dtype=F64, generator=torch.Generator().manual_seed(2))
    return cell, x, w


def implicit_adjoint(cell, w):
    """g = (I - A)^-T w per sample (rows): the exact adjoint, dL/dA = g^T z*, dL/dB = g^T x."""
    eye = torch.eye(cell.A.shape[0], dtype=F64)
    with torch.no_grad():
        return torch.linalg.solve((eye - cell.A).T, w.T).T


def layer_grads(cell, x, w, **settings):
    cell.zero_grad()
    z, info = DEQ(cell, **settings)(x)
    (z * w).sum().backward()
    return cell.A.grad.clone(), cell.B.grad.clone(), z.detach(), info


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("solver", ALL)
def test_jfb_gradient_is_the_implicit_one_times_i_minus_j(solver):
    """JFB's adjoint is w itself, the implicit one g = (I - A)^-T w: so dL/dA_jfb = (I - A)^T dL/dA_implicit
    (and the same for B), and its bias dL/dA_jfb - dL/dA_implicit is exactly -A^T dL/dA_implicit."""
    cell, x, w = linear_setup()
    gA, gB, z, info = layer_grads(cell, x, w, solver=solver, tol=1e-10, max_iter=300, backward="jfb")
    g = implicit_adjoint(cell, w)
    imp_A, imp_B = g.T @ z, g.T @ x
    I_minus_AT = torch.eye(6, dtype=F64) - cell.A.detach().T
    assert rel(gA, I_minus_AT @ imp_A) < 1e-9 and rel(gB, I_minus_AT @ imp_B) < 1e-9
    bias = gA - imp_A
    assert rel(bias, -cell.A.detach().T @ imp_A) < 1e-6  # z* from the solve, g exact: tol-limited
    assert float(bias.norm()) > 0.05 * float(imp_A.norm())  # a real bias, not a rounding
    assert info.nfe_bwd == 1


def projector(rows):
    """Orthogonal projector onto the span of rows [k, D]."""
    if rows.shape[0] == 0:
        return torch.zeros(rows.shape[1], rows.shape[1], dtype=rows.dtype)
    q, _ = torch.linalg.qr(rows.T)
    return q @ q.T


@pytest.mark.parametrize("dim,m,max_iter,tol", [(4, 5, 300, 1e-12), (6, 3, 8, 1e-12), (6, 2, 8, 1e-12),
                                                (6, 3, 30, 1e-5)])
def test_shine_with_anderson_is_the_implicit_adjoint_on_its_history(dim, m, max_iter, tol):
    """Anderson's estimate H = -I + dF (dG^T dG)^-1 dG^T (lam = 0) satisfies H dG = dX = J^-1 dG on a linear cell, and
    is -I off span(dG): so SHINE's adjoint is g = P g_implicit + (I - P) w, P the projector onto the stored
    residual differences. Its bias (I - P)(w - g_implicit) is at most JFB's, and 0 once the history spans R^d.
    The last case stops samples at different checks (abs residual, inputs 1e-4 to 1): a sample frozen early
    keeps the history it stopped with while the others go on."""
    cell, x, w = linear_setup(dim)
    if tol > 1e-12:
        x = x * torch.tensor([[1e-4], [1.0], [1.0]], dtype=F64)
    opts = {"m": m, "lam": 0.0}
    settings = dict(solver="anderson", tol=tol, max_iter=max_iter, stop_mode="abs")
    gA, gB, z, info = layer_grads(cell, x, w, solver_options=opts, backward="shine",
                                  backward_options={"fallback_ratio": None}, **settings)
    with torch.no_grad():
        res = solve(lambda t: cell(t, x), torch.zeros_like(x), estimate=True, **settings, **opts)
        plain = solve(lambda t: cell(t, x), torch.zeros_like(x), **settings, **opts)
    assert torch.equal(res.z, plain.z) and res.nfe == plain.nfe  # keeping the estimate changes nothing in the solve
    if tol > 1e-12:
        assert int(res.sample_nfe[0]) + m < res.nfe  # sample 0 froze more than m iterations before the end
        assert float(res.estimate.Q[0].norm()) > 0
    z = res.z  # the layer's z* (its output is f(z*)): the same deterministic solve
    g_imp = implicit_adjoint(cell, w)
    eye = torch.eye(dim, dtype=F64)
    g = torch.stack([projector(res.estimate.Q[b]) @ g_imp[b] + (eye - projector(res.estimate.Q[b])) @ w[b]
                     for b in range(len(w))])
    assert rel(gA, g.T @ z) < 1e-10 and rel(gB, g.T @ x) < 1e-10
    shine_bias, jfb_bias = (g - g_imp).norm(dim=1), (w - g_imp).norm(dim=1)
    assert bool((shine_bias <= jfb_bias + 1e-12).all())
    if res.estimate.Q.shape[1] >= dim:  # the history spans R^d: SHINE is exact
        assert rel(gA, g_imp.T @ z) < 1e-10
    else:
        assert float(shine_bias.min()) > 1e-3 * float(jfb_bias.max())
    assert info.nfe_bwd == 1


def test_shine_with_broyden_applies_the_solvers_own_inverse():
    """Broyden keeps no multisecant property, so SHINE's bias is what its H misses: g = -H^T w with H = -I + U^T V
    rebuilt densely here, bias -(H - J^-1)^T w (J = A - I). On a scalar cell one secant pair makes H exact."""
    cell, x, w = linear_setup()
    gA, _, z, info = layer_grads(cell, x, w, solver="broyden", tol=1e-10, max_iter=300, backward="shine",
                                 backward_options={"fallback_ratio": None})
    with torch.no_grad():
        res = solve(lambda t: cell(t, x), torch.zeros_like(x), "broyden", tol=1e-10, max_iter=300, estimate=True)
    z = res.z
    eye = torch.eye(6, dtype=F64)
    H = -eye + res.estimate.P.transpose(1, 2) @ res.estimate.Q  # [B, D, D]: -I + sum_i u_i v_i^T
    g = -(H.transpose(1, 2) @ w.unsqueeze(2)).squeeze(2)
    assert rel(gA, g.T @ z) < 1e-10
    J_inv = torch.linalg.inv(cell.A.detach() - eye)
    bias = g - implicit_adjoint(cell, w)
    assert rel(bias, -((H - J_inv).transpose(1, 2) @ w.unsqueeze(2)).squeeze(2)) < 1e-6
    assert info.nfe_bwd == 1

    scalar, xs, ws = linear_setup(dim=1)
    gA, gB, z, _ = layer_grads(scalar, xs, ws, solver="broyden", tol=1e-12, max_iter=50, backward="shine",
                               backward_options={"fallback_ratio": None})
    g_imp = implicit_adjoint(scalar, ws)
    assert rel(gA, g_imp.T @ z) < 1e-10 and rel(gB, g_imp.T @ xs) < 1e-10


def test_shine_falls_back_to_jfb_per_sample_past_its_ratio():
    """A ratio no estimate passes: every sample takes g = w, SHINE's gradient becomes JFB's."""
    cell, x, w = linear_setup()
    jfb, _, _, _ = layer_grads(cell, x, w, solver="anderson", tol=1e-10, backward="jfb")
    gA, _, _, info = layer_grads(cell, x, w, solver="anderson", tol=1e-10, backward="shine",
                                 backward_options={"fallback_ratio": 1e-6})
    assert rel(gA, jfb) < 1e-12 and info.backward.fallback_frac == 1.0
    _, _, _, info = layer_grads(cell, x, w, solver="anderson", tol=1e-10, backward="shine")
    assert info.backward.fallback_frac == 0.0  # this well-posed cell: the published ratio 1.3 never fires


@pytest.mark.parametrize("solver", ["fixed_point", "newton_krylov", "continuous"])
def test_shine_without_an_estimate_is_refused_or_implicit_when_asked(solver):
    with pytest.raises(ValueError, match="only anderson and broyden keep, not '" + solver):
        DEQ(LinearCell(), solver=solver, backward="shine")
    cell, x, w = linear_setup()
    gA, _, z, _ = layer_grads(cell, x, w, solver=solver, tol=1e-10, max_iter=300, backward="shine",
                              backward_options={"no_estimate": "implicit"})
    gA_exact, _ = closed_form_grads(cell, x, w)
    assert rel(gA, gA_exact) < 1e-4


def test_correction_adds_its_closed_form_to_the_gradient():
    """Fixed-point iteration from 0 on f = A z + B x: z_m = sum_{t<m} A^t B x, checked at z_{i-1} in check i.
    steps=2 over max_iter 12 keeps checks 4 and 8 (z_3, z_7); the terms weight * gamma^(3 - j) * w . f(z_i)
    add weight * gamma^(3-j) * W^T z_i to dL/dA and W^T X to dL/dB, and 2 applications and 2 VJPs to the NFE."""
    cell, x, w = linear_setup()
    settings = dict(solver="fixed_point", tol=1e-30, stop_mode="abs", max_iter=12)
    base_A, base_B, _, base = layer_grads(cell, x, w, **settings)
    cell.zero_grad()
    z, info = DEQ(cell, correction={"weight": 0.5, "steps": 2}, **settings)(x)
    loss = (z * w).sum() + sum(c * (s * w).sum() for c, s in info.correction)
    loss.backward()
    with torch.no_grad():
        A, Bx = cell.A, x @ cell.B.T
        iterates = [torch.zeros_like(x)]
        for _ in range(8):
            iterates.append(iterates[-1] @ A.T + Bx)
    weights = [0.5 * 0.8 ** 2, 0.5 * 0.8]
    assert [c for c, _ in info.correction] == pytest.approx(weights, abs=0.0)
    extra_A = sum(c * w.T @ iterates[m] for c, m in zip(weights, (3, 7)))
    assert rel(cell.A.grad - base_A, extra_A) < 1e-12
    assert rel(cell.B.grad - base_B, sum(weights) * w.T @ x) < 1e-12
    assert info.nfe_fwd == base.nfe_fwd + 2 and info.nfe_bwd == base.nfe_bwd + 2


def test_correction_keeps_only_the_iterates_a_converged_solve_reached():
    cell, x, _ = linear_setup()
    _, info = DEQ(cell, solver="anderson", tol=1e-3, max_iter=30, correction={"steps": 5})(x)
    assert 0 < len(info.correction) < 5  # checks 5, 10, ..., 25: Anderson stops before most
    n = len(info.correction) + 1
    assert [c for c, _ in info.correction] == pytest.approx([0.8 ** (n - j) for j in range(1, n)])
    with torch.no_grad():
        _, info = DEQ(cell, solver="anderson", correction={"steps": 5})(x)
    assert info.correction == []  # no gradient, no correction: test NFE stays comparable
