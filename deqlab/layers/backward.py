"""Gradients through a fixed point, and the Jacobian regulariser.

Every mode starts from the same place: the solver's z* detached, `z_in` made a
leaf that requires grad, and one application `fz = f(z_in)` recorded by
autograd. That application is what carries the gradient to f's parameters and
input; the modes differ only in what they do with it:

- implicit: the backward of an identity on fz replaces the incoming gradient v by the solution g of
  the adjoint fixed point g = J^T g + v (J = df/dz at z*), found by any
  registered solver; each VJP is one counted evaluation. Convergence is judged
  by the residual relative to ||v|| (see `_attach_implicit`).
- phantom: k damped steps z <- (1-a) z + a f(z) from z*, differentiated by
  autograd (Geng et al. 2021): cheap, approximate.
- unrolled: k plain applications of f from z*, differentiated by autograd
  (truncated backprop; phantom with damping 1).
- jfb: fz itself (Fung et al. 2022): v goes straight through the one application,
  as if J were 0; unrolled with one step, named. On a linear cell its gradient is
  (I - J)^T times the implicit one (tests/test_backward.py).
- shine: like implicit, but g is not solved for: it is the forward quasi-Newton
  solver's own inverse-Jacobian estimate applied to v, g = -H^T v (Ramzi et al.
  2022), so the backward pass costs the one final VJP. A sample whose g is longer
  than `fallback_ratio * ||v||` takes g = v (JFB), as the published code does.

Backward NFE is counted where it happens: hooks on the tensors whose VJPs the
backward pass computes increment `BackwardRecord.nfe`, and the implicit mode
counts each adjoint VJP plus the final VJP that carries g to the parameters
and input. The Jacobian penalty's VJPs (one per probe in the forward pass, one
second-order pass per probe in the backward pass) go to `BackwardRecord.nfe_jac`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..solvers import SolveSpec, solve
from .config import DEQConfig, ImplicitOptions, JFBOptions, PhantomOptions, ShineOptions

Tensor = torch.Tensor


@dataclass
class BackwardRecord:
    """Filled in while the backward pass runs (after loss.backward())."""

    nfe: int = 0
    nfe_jac: int = 0  # the Jacobian penalty's VJPs: forward probes plus their backward passes
    residual: Optional[float] = None  # adjoint solve: max final residual over the batch
    converged_frac: Optional[float] = None
    trace: Optional[list] = None
    trace_mean: Optional[list] = None
    fallback_frac: Optional[float] = None  # shine: the share of samples that took JFB's g = v instead


def count_backward(t: Tensor, record: BackwardRecord, field: str = "nfe") -> None:
    """Count one VJP (in `record.<field>`) when autograd pushes a gradient through t."""

    def hook(grad):
        setattr(record, field, getattr(record, field) + 1)
        return grad

    t.register_hook(hook)


def attach(
    f: Callable[[Tensor], Tensor],
    z_in: Tensor,
    fz: Tensor,
    cfg: DEQConfig,
    record: BackwardRecord,
    estimate=None,
) -> tuple[Tensor, int]:
    """Build the differentiable output from fz = f(z_in) by `cfg`'s backward mode; returns (output, extra forward NFE).

    `estimate`: the forward solve's `InverseJacobian` (shine; None where the solver keeps none and the config
    chose the implicit solve instead)."""
    opts = cfg.backward_mode
    if isinstance(opts, ImplicitOptions) or (isinstance(opts, ShineOptions) and estimate is None):
        return _attach_implicit(z_in, fz, cfg.adjoint, record), 0
    if isinstance(opts, ShineOptions):
        return _attach_shine(fz, estimate, opts.fallback_ratio, record), 0
    if isinstance(opts, JFBOptions):
        count_backward(fz, record)
        return fz, 0
    damping = opts.damping if isinstance(opts, PhantomOptions) else 1.0
    count_backward(fz, record)
    z = fz if damping == 1.0 else (1 - damping) * z_in + damping * fz
    for _ in range(opts.steps - 1):
        fz = f(z)
        count_backward(fz, record)
        z = fz if damping == 1.0 else (1 - damping) * z + damping * fz
    return z, opts.steps - 1


class _AdjointGradient(torch.autograd.Function):
    """Identity on fz whose backward replaces v by the adjoint solution g = J^T g + v.

    A Function rather than a hook on fz: a hook whose closure needs fz makes a
    reference cycle through autograd's C++ side that the garbage collector
    cannot see (measured: two tensors leaked per step), while the Function's
    context belongs to the output node, which nothing upstream refers to.
    """

    @staticmethod
    def forward(ctx, fz, solve_adjoint):
        ctx.solve_adjoint = solve_adjoint
        return fz.view_as(fz)

    @staticmethod
    def backward(ctx, v):
        if v is None:  # an undefined gradient: nothing to solve
            return None, None
        return ctx.solve_adjoint(v), None


def _attach_implicit(z_in: Tensor, fz: Tensor, adjoint: SolveSpec, record: BackwardRecord) -> Tensor:
    """The adjoint solve as `adjoint` (DEQConfig.adjoint, validated once) says: stop test "abs", see below."""

    def solve_adjoint(v: Tensor) -> Tensor:
        def vjp(g: Tensor) -> Tensor:
            return torch.autograd.grad(fz, z_in, g, retain_graph=True)[0]

        # Solve for u = g / ||v|| and judge |u - J^T u - v/||v|||: the linear system's relative
        # residual. Scale-free like "rel", but not fooled by an iterate that blew up along J^T's
        # top eigenvector (whose ||f(u) - u|| / ||f(u)|| looks small), which "rel" would keep;
        # and an ODE adjoint's absolute tolerance means the same at every gradient scale.
        scale = v.flatten(1).norm(dim=1).clamp_min(torch.finfo(v.dtype).tiny).view(-1, *([1] * (v.dim() - 1)))
        v_hat = v / scale

        def adjoint_map(u: Tensor) -> Tensor:
            return vjp(u) + v_hat

        # the adjoint map is affine, so its Jacobian-vector product is one VJP
        jvp = (lambda u, w: vjp(w)) if adjoint.solver == "newton_krylov" else None
        # eager even under deq.compile (DEQConfig): autograd.grad on the forward pass's graph cannot be traced
        res = solve(adjoint_map, v_hat, adjoint, jvp=jvp)
        record.nfe += res.nfe + 1  # + the VJP that carries g through fz to the parameters and input
        record.residual = float(res.residual.max())
        record.converged_frac = res.converged_frac
        record.trace = res.trace
        record.trace_mean = res.trace_mean
        return res.z * scale

    return _AdjointGradient.apply(fz, solve_adjoint)


def _attach_shine(fz: Tensor, estimate, fallback_ratio: Optional[float], record: BackwardRecord) -> Tensor:
    """g = -H^T v from the forward solver's estimate (no VJP), then the one counted VJP through fz."""

    def apply_estimate(v: Tensor) -> Tensor:
        g = estimate.adjoint(v)
        if fallback_ratio is not None:
            norm_g, norm_v = g.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1)
            off = (norm_g > fallback_ratio * norm_v) | ~torch.isfinite(norm_g)
            g = torch.where(off.view(-1, *([1] * (v.dim() - 1))), v, g)
            record.fallback_frac = float(off.float().mean())
        record.nfe += 1  # the VJP that carries g through fz to the parameters and input
        return g

    return _AdjointGradient.apply(fz, apply_estimate)


def jacobian_penalty(fz: Tensor, z_in: Tensor, probes: int = 1,
                     record: Optional[BackwardRecord] = None) -> tuple[Tensor, int]:
    """Hutchinson estimate of ||df/dz||_F^2 / dim, averaged over the batch (Bai et al. 2021).

    Returns (penalty, VJPs spent now). The penalty is differentiable
    (create_graph), so its own backward costs a second-order pass per probe;
    with a record, each probe's VJP is added to `record.nfe_jac` now and its
    backward pass when autograd runs it.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    total = fz.new_zeros(())
    for _ in range(probes):
        eps = torch.randn_like(fz)
        (vjp,) = torch.autograd.grad(fz, z_in, eps, create_graph=True, retain_graph=True)
        if record is not None:
            record.nfe_jac += 1
            if vjp.requires_grad:
                count_backward(vjp, record, "nfe_jac")
        total = total + vjp.pow(2).flatten(1).sum(dim=1).mean() / vjp[0].numel()
    return total / probes, probes
