"""Anderson acceleration (type II, Walker-Ni difference form) with per-sample histories.

The small least-squares problem min ||g_k - dG gamma|| is solved through its
normal equations in float64 with Tikhonov regularisation *relative* to the
Gram matrix's scale: an absolute lam (TorchDEQ's default 1e-4) dominates the
system once residuals are small and the method stalls; a relative one keeps
the system solvable (never singular) at every scale. The Gram matrix is kept
up to date one row per iteration instead of being rebuilt.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import SolverOptions, Tracker, coefficients, combine


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
    dX = x.new_zeros(b, m, d)  # rows: x_{i+1} - x_i
    dG = x.new_zeros(b, m, d)  # rows: g_{i+1} - g_i
    gram = torch.zeros(b, m, m, dtype=torch.float64, device=x.device)
    prev_x = prev_g = None
    n_stored = 0
    for it in range(max_iter):
        fx = tracker.evaluate(x.view(shape)).reshape(b, -1)
        tracker.check(x.view(shape), fx.view(shape))
        if tracker.done or it == max_iter - 1:
            break
        g = fx - x
        if prev_x is not None:
            slot = n_stored % m
            dX[:, slot] = x - prev_x
            dG[:, slot] = g - prev_g
            n_stored += 1
            k = min(n_stored, m)
            row = coefficients(dG[:, :k], dG[:, slot]).double()
            gram[:, slot, :k] = row
            gram[:, :k, slot] = row
        prev_x, prev_g = x, g
        k = min(n_stored, m)
        if k == 0:
            x_new = x + beta * g
        else:
            gamma = _regularised_solve(gram[:, :k, :k], coefficients(dG[:, :k], g).double(), opts.lam).to(x.dtype)
            correction = combine(gamma, dX[:, :k] + beta * dG[:, :k])
            x_new = x + beta * g - correction
        x = tracker.keep_frozen(x.view(shape), x_new.view(shape)).reshape(b, -1)
    return tracker.result(stored_vectors=2 * m)


def _regularised_solve(gram: torch.Tensor, rhs: torch.Tensor, lam: float) -> torch.Tensor:
    """(G + lam*scale*I)^-1 rhs per sample; a sample whose system fails gets gamma = 0 (a plain step)."""
    k = gram.shape[-1]
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    sol, info = torch.linalg.solve_ex(gram + (lam * scale + 1e-300)[:, None, None] * eye, rhs)
    ok = (info == 0) & torch.isfinite(sol).all(dim=1)
    return torch.where(ok[:, None], sol, torch.zeros_like(sol))
