"""Backtracking on the residual norm, shared by Broyden and Newton-Krylov.

Every trial point is a real evaluation of f and is counted as one.
"""

from __future__ import annotations

import torch

from .base import Tracker, shape_views


def step_with_backtracking(tracker: Tracker, x, g, p, shape, max_backtracks: int, shrink: float = 0.5, c: float = 1e-4):
    """Take x + s p with s halved per sample until ||g|| decreases enough.

    x, g, p are [B, D]. Returns (x_new, f(x_new)) as [B, D]. With max_backtracks=0
    this is a full step with one evaluation.
    """
    b = x.shape[0]
    unflat, flat = shape_views(shape)
    if max_backtracks == 0:  # a full step: no norms, no step sizes
        x_try = flat(tracker.keep_frozen(unflat(x), unflat(x + p)))
        return x_try, flat(tracker.evaluate(unflat(x_try)))
    s = torch.ones(b, 1, dtype=x.dtype, device=x.device)
    gnorm = g.norm(dim=1)
    for j in range(max_backtracks + 1):
        x_try = tracker.keep_frozen(x.view(shape), (x + s * p).view(shape)).reshape(b, -1)
        fx_try = tracker.evaluate(x_try.view(shape)).reshape(b, -1)
        if j == max_backtracks:
            break
        gnew = (fx_try - x_try).norm(dim=1)
        ok = (gnew <= (1 - c * s.squeeze(1)) * gnorm) | ~tracker.active
        if bool(ok.all()):
            break
        s = torch.where(ok[:, None], s, s * shrink)
    return x_try, fx_try
