"""Anderson acceleration (type II, Walker-Ni difference form) with per-sample histories.

The small least-squares problem min ||g_k - dG gamma|| is solved through its
normal equations in float64 with Tikhonov regularisation *relative* to the
Gram matrix's scale: an absolute lam (TorchDEQ's default 1e-4) dominates the
system once residuals are small and the method stalls; a relative one keeps
the system solvable (never singular) at every scale.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import SolverOptions, Tracker


class AndersonOptions(SolverOptions):
    m: int = Field(5, ge=1, le=50, description="history size (number of stored differences)")
    beta: float = Field(1.0, gt=0.0, le=1.0, description="mixing: 1 takes the extrapolated f, <1 damps")
    lam: float = Field(1e-8, ge=0.0, description="Tikhonov weight relative to the Gram matrix scale")


def anderson(tracker: Tracker, z, max_iter: int, opts: AndersonOptions):
    """One evaluation per iteration; NFE <= max_iter. Storage: 2*m vectors per sample."""
    shape = z.shape
    b = shape[0]
    x = z.reshape(b, -1)
    d = x.shape[1]
    m, beta = opts.m, opts.beta
    dX = x.new_zeros(b, d, m)
    dG = x.new_zeros(b, d, m)
    prev_x = prev_g = None
    n_stored = 0
    for it in range(max_iter):
        fx = tracker.evaluate(x.view(shape)).reshape(b, -1)
        tracker.check(x.view(shape), fx.view(shape))
        if tracker.done or it == max_iter - 1:
            break
        g = fx - x
        if prev_x is not None:
            col = (n_stored) % m
            dX[:, :, col] = x - prev_x
            dG[:, :, col] = g - prev_g
            n_stored += 1
        prev_x, prev_g = x, g
        k = min(n_stored, m)
        if k == 0:
            step = beta * g
        else:
            gamma = _least_squares(dG[:, :, :k], g, opts.lam)
            step = beta * g - torch.bmm(dX[:, :, :k] + beta * dG[:, :, :k], gamma.unsqueeze(2)).squeeze(2)
        x_new = x + step
        # a sample whose extrapolation went non-finite falls back to a damped plain step
        bad = ~torch.isfinite(x_new).all(dim=1, keepdim=True)
        x_new = torch.where(bad, x + beta * g, x_new)
        x = tracker.keep_frozen(x.view(shape), x_new.view(shape)).reshape(b, -1)
    return tracker.result(stored_vectors=2 * m)


def _least_squares(dG: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """gamma = argmin ||g - dG gamma||^2 + lam*scale*||gamma||^2 per sample, in float64."""
    A = dG.double()
    gram = A.transpose(1, 2) @ A  # [B, k, k]
    rhs = (A.transpose(1, 2) @ g.double().unsqueeze(2)).squeeze(2)
    k = gram.shape[-1]
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    reg = (lam * scale + 1e-300)[:, None, None] * eye
    sol, info = torch.linalg.solve_ex(gram + reg, rhs)
    ok = (info == 0) & torch.isfinite(sol).all(dim=1)
    sol = torch.where(ok[:, None], sol, torch.zeros_like(sol))
    return sol.to(g.dtype)
