"""Limited-memory ("good") Broyden on g(z) = f(z) - z.

The inverse Jacobian estimate is H = -I + sum_i u_i v_i^T with at most
`memory` rank-one terms, stored as rows of fixed [B, memory, D] buffers
allocated once, so storage is 2 * memory vectors per sample however large
max_iter is. When the buffer is full a sample's history restarts from H = -I:
overwriting the oldest term instead (as TorchDEQ's ring buffer does when its
memory is smaller than max_iter) leaves the later terms built on an H that no
longer exists, and was measured to diverge on a hard float32 problem. A sample
whose residual grows tenfold past its best also restarts.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import SolverOptions, Tracker, batched_dot, coefficients, combine, safe_divide
from .line_search import step_with_backtracking


class BroydenOptions(SolverOptions):
    memory: int = Field(30, ge=1, le=500, description="rank-one updates kept before the history restarts")
    line_search: bool = Field(False, description="backtrack on ||f(z)-z||; each trial is a counted evaluation")
    max_backtracks: int = Field(3, ge=1, le=20, description="halvings tried per step when line_search")


def broyden(tracker: Tracker, z, max_iter: int, opts: BroydenOptions):
    """Iterations <= max_iter; one evaluation each, plus backtracking trials if enabled."""
    shape = z.shape
    b = shape[0]
    x = z.reshape(b, -1)
    d = x.shape[1]
    mem = opts.memory
    U = x.new_zeros(b, mem, d)
    V = x.new_zeros(b, mem, d)
    count = torch.zeros(b, dtype=torch.long, device=x.device)  # terms in use per sample
    rows = torch.arange(b, device=x.device)
    backtracks = opts.max_backtracks if opts.line_search else 0

    def matvec(v, k):  # H v
        return -v + combine(coefficients(V[:, :k], v), U[:, :k])

    def rmatvec(v, k):  # v^T H
        return -v + combine(coefficients(U[:, :k], v), V[:, :k])

    fx = tracker.evaluate(x.view(shape)).reshape(b, -1)
    g = fx - x
    best_norm = g.norm(dim=1)
    restarts = 0
    for it in range(max_iter):
        k = int(count.max())
        if it > 0:
            x_new, fx = step_with_backtracking(tracker, x, g, -matvec(g, k), shape, backtracks)
            g_new = fx - x_new
            dx, dg = x_new - x, g_new - g
            x, g = x_new, g_new
        tracker.check(x.view(shape), fx.view(shape))
        if tracker.done or it == max_iter - 1:
            break
        if it > 0:
            vT = rmatvec(dx, k)
            u = safe_divide(dx - matvec(dg, k), batched_dot(vT, dg)[:, None])
            ok = torch.isfinite(u).all(dim=1) & torch.isfinite(vT).all(dim=1) & tracker.active
            slot = count.clamp_max(mem - 1)
            U[rows, slot] = torch.where(ok[:, None], u, U[rows, slot])
            V[rows, slot] = torch.where(ok[:, None], vT, V[rows, slot])
            count = count + ok.long()
        gnorm = g.norm(dim=1)
        best_norm = torch.minimum(best_norm, gnorm)
        reset = (count >= mem) | ~torch.isfinite(gnorm)
        if bool(reset.any()):
            restarts += int(reset.sum())
            U[reset] = 0
            V[reset] = 0
            count = torch.where(reset, torch.zeros_like(count), count)
    stored = (U.numel() + V.numel()) // (b * d)
    return tracker.result(stored_vectors=stored, restarts=restarts)
