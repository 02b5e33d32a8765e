"""Limited-memory ("good") Broyden on g(z) = f(z) - z.

The inverse Jacobian estimate is H = -I + U V^T with at most `memory` rank-one
terms kept in a fixed ring buffer, so storage is 2 * memory vectors per sample
however large max_iter is (the buffers are allocated once, up front).
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import SolverOptions, Tracker, batched_dot, safe_divide
from .line_search import step_with_backtracking


class BroydenOptions(SolverOptions):
    memory: int = Field(20, ge=1, le=500, description="rank-one updates kept (ring buffer)")
    line_search: bool = Field(False, description="backtrack on ||f(z)-z||; each trial is a counted evaluation")
    max_backtracks: int = Field(3, ge=1, le=20, description="halvings tried per step when line_search")


def _matvec(U, VT, v):
    """H v with H = -I + U V^T."""
    return -v + torch.bmm(U, torch.bmm(VT, v.unsqueeze(2))).squeeze(2)


def _rmatvec(U, VT, v):
    """v^T H."""
    return -v + torch.bmm(VT.transpose(1, 2), torch.bmm(U.transpose(1, 2), v.unsqueeze(2))).squeeze(2)


def broyden(tracker: Tracker, z, max_iter: int, opts: BroydenOptions):
    """Iterations <= max_iter; one evaluation each, plus backtracking trials if enabled."""
    shape = z.shape
    b = shape[0]
    x = z.reshape(b, -1)
    d = x.shape[1]
    mem = opts.memory
    U = x.new_zeros(b, d, mem)
    VT = x.new_zeros(b, mem, d)
    backtracks = opts.max_backtracks if opts.line_search else 0
    fx = tracker.evaluate(x.view(shape)).reshape(b, -1)
    g = fx - x
    n_updates = 0
    for it in range(max_iter):
        if it > 0:
            p = -_matvec(U, VT, g)
            x_new, fx = step_with_backtracking(tracker, x, g, p, shape, backtracks)
            g_new = fx - x_new
            dx, dg = x_new - x, g_new - g
            x, g = x_new, g_new
        tracker.check(x.view(shape), fx.view(shape))
        if tracker.done or it == max_iter - 1:
            break
        if it > 0:
            vT = _rmatvec(U, VT, dx)
            denom = batched_dot(vT, dg)
            u = safe_divide(dx - _matvec(U, VT, dg), denom[:, None])
            ok = torch.isfinite(u).all(dim=1, keepdim=True) & torch.isfinite(vT).all(dim=1, keepdim=True) & (denom != 0)[:, None]
            slot = n_updates % mem
            U[:, :, slot] = torch.where(ok, u, torch.zeros_like(u))
            VT[:, slot] = torch.where(ok, vT, torch.zeros_like(vT))
            n_updates += 1
        # a sample that produced non-finite values restarts from H = -I
        bad = ~torch.isfinite(g).all(dim=1)
        if bad.any():
            U[bad] = 0
            VT[bad] = 0
    stored = (U.numel() + VT.numel()) // (b * d)
    return tracker.result(stored_vectors=stored, broyden_updates=n_updates)
