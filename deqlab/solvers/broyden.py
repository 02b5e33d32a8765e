"""Limited-memory ("good") Broyden on g(z) = f(z) - z.

The inverse Jacobian estimate is H = -I + sum_i u_i v_i^T with at most
`memory` rank-one terms, stored as rows of fixed [B, memory, D] buffers
allocated once, so storage is 2 * memory vectors per sample however large
max_iter is. When the buffer is full a sample's history restarts from H = -I:
overwriting the oldest term instead (as TorchDEQ's ring buffer does when its
memory is smaller than max_iter) leaves the later terms built on an H that no
longer exists, and was measured to diverge on a hard float32 problem.
"""

from __future__ import annotations

import torch
from .base import InverseJacobian, Tracker, shape_views
from .line_search import step_with_backtracking
from .options import BroydenOptions


def broyden(tracker: Tracker, z, max_iter: int, opts: BroydenOptions, *, estimate: bool = False):
    """Iterations <= max_iter; one evaluation each, plus backtracking trials if enabled.

    Every sample writes its i-th rank-one term into slot i, a zero term where
    its update is skipped (a degenerate denominator, a non-finite term, a
    frozen sample): a zero term leaves H unchanged, and a shared slot keeps the
    history length on the host, so no iteration waits on the device to learn
    it (per-sample counts cost two host syncs and ~40 more torch ops per
    iteration). A non-finite residual fails the sample in the tracker, so its
    history no longer matters. With `estimate`, the result carries H as it stands
    (the terms in use: every secant pair before the last step, since the last
    restart; a frozen sample's terms stop at its freezing), as its views, no copy.
    """
    shape = z.shape
    b = shape[0]
    unflat, flat = shape_views(shape)
    x = flat(z)
    d = x.shape[1]
    mem = opts.memory
    U = x.new_zeros(b, mem, d)
    V = x.new_zeros(b, mem, d)
    backtracks = opts.max_backtracks if opts.line_search else 0
    tiny = torch.finfo(x.dtype).tiny ** 0.5
    fx = flat(tracker.evaluate(unflat(x)))
    g = fx - x
    k = 0  # rank-one terms in use, the same for every sample
    restarts = 0
    for it in range(max_iter):
        Uk, Vk = U[:, :k], V[:, :k]
        if it > 0:
            x_new, fx = step_with_backtracking(tracker, x, g, -_product(g, Vk, Uk), shape, backtracks)
            g_new = fx - x_new
            dx, dg = x_new - x, g_new - g
            x, g = x_new, g_new
        tracker.check(unflat(x), unflat(fx))
        if tracker.done or it == max_iter - 1:
            break
        if it > 0:
            vT = _product(dx, Uk, Vk)  # dx^T H
            den = torch.linalg.vecdot(vT, dg)
            den = torch.where(den.abs() > tiny, den, torch.inf)  # degenerate: u = 0, no update
            terms = torch.stack(((dx - _product(dg, Vk, Uk)) / den.unsqueeze(1), vT), dim=1)  # (u, v)
            ok = torch.isfinite(terms.sum(dim=(1, 2))) & tracker.active
            terms = torch.where(ok[:, None, None], terms, 0.0)
            U[:, k] = terms[:, 0]
            V[:, k] = terms[:, 1]
            k += 1
            if k == mem:  # history full: every sample restarts from H = -I
                k = 0
                restarts += tracker.n_active
    stored = (U.numel() + V.numel()) // (b * d)
    inverse = InverseJacobian(1.0, U[:, :k], V[:, :k]) if estimate else None
    return tracker.result(inverse, stored_vectors=stored, restarts=restarts)


def _product(v, A, B, used=None):
    """-v + sum_i (v . a_i) b_i per sample: H v with (A, B) = (V, U), v^T H with (U, V).

    `used` ([1, 1, rows], 0 or 1): only the rows in use count (a compiled loop's full-size buffers)."""
    c = v.unsqueeze(1) @ A.transpose(1, 2)
    return torch.bmm(c if used is None else c * used, B).squeeze(1) - v
