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
from .base import InverseJacobian, Tracker, shape_views
from .options import AndersonOptions


def anderson(tracker: Tracker, z, max_iter: int, opts: AndersonOptions, *, estimate: bool = False):
    """One evaluation per iteration; NFE <= max_iter. Storage: 2*m vectors per sample.

    The history keeps dG (differences of g = f(x) - x) for the Gram matrix and
    dF = dX + beta dG, the differences of the mixed point x + beta g, so the
    update x + beta g - dF gamma is one fused product (with beta = 1 the mixed
    point is f(x) itself). The Gram row of the new difference and the
    right-hand side come from one batched product. ~40 torch ops per
    iteration: each costs ~4-8 us of dispatch on CPU, which is what this
    solver's per-evaluation overhead is made of at small sizes.

    With `estimate`, the result carries the inverse Jacobian of g that the last
    step applied: x_new = x - H g with H = -beta I + dF (dG^T dG + lam I)^-1 dG^T
    (the multisecant matrix of Anderson mixing, H dG = dX up to lam), and a frozen
    sample keeps its history slots (two `where`s per iteration while some are
    frozen) so its estimate is the one it stopped with, not overwritten by zero
    differences.
    """
    shape = z.shape
    b = shape[0]
    x = z.reshape(b, -1)
    d = x.shape[1]
    unflat, flat = shape_views(shape)
    m, beta = opts.m, opts.beta
    dF = x.new_zeros(b, m, d)  # rows: (x + beta g)_{i+1} - (x + beta g)_i
    dG = x.new_zeros(b, m, d)  # rows: g_{i+1} - g_i
    gram = torch.zeros(b, m, m, dtype=torch.float64, device=x.device)
    eye = torch.eye(m, dtype=torch.float64, device=x.device)
    prev_g = prev_mixed = None
    n_stored = 0
    for it in range(max_iter):
        xs = unflat(x)
        fxs = tracker.evaluate(xs)
        tracker.check(xs, fxs)
        fx = flat(fxs)
        if tracker.done or it == max_iter - 1:
            break
        g = fx - x
        mixed = fx if beta == 1.0 else torch.lerp(x, fx, beta)  # x + beta g
        if prev_g is None:
            x_new = mixed
        else:
            slot = n_stored % m
            dg = g - prev_g
            dmixed = mixed - prev_mixed
            if estimate and tracker.n_active < b:
                act = tracker.active_mask(2)
                dg, dmixed = torch.where(act, dg, dG[:, slot]), torch.where(act, dmixed, dF[:, slot])
            dG[:, slot] = dg
            dF[:, slot] = dmixed
            n_stored += 1
            k = min(n_stored, m)
            rows = dG if k == m else dG[:, :k]
            c = (torch.stack((dg, g), dim=1) @ rows.transpose(1, 2)).double()  # [B, 2, k]
            row = c[:, 0]
            gram[:, slot, :k] = row
            gram[:, :k, slot] = row
            gamma = _regularised_solve(gram if k == m else gram[:, :k, :k], c[:, 1], opts.lam, eye[:k, :k])
            hist = dF if k == m else dF[:, :k]
            gamma = gamma.to(x.dtype, memory_format=torch.contiguous_format)  # LAPACK: column-major, 10x slower bmm
            x_new = torch.baddbmm(mixed.unsqueeze(1), gamma.unsqueeze(1), hist, alpha=-1).squeeze(1)
        prev_g, prev_mixed = g, mixed
        x = flat(tracker.keep_frozen(xs, unflat(x_new)))
    inverse = _inverse_estimate(dF, dG, gram, min(n_stored, m), beta, opts.lam, eye) if estimate else None
    return tracker.result(inverse, stored_vectors=2 * m)


def _inverse_estimate(dF, dG, gram, k: int, beta: float, lam: float, eye) -> InverseJacobian:
    """H = -beta I + dF M^-1 dG^T, M the regularised Gram matrix the last step solved with: Q = M^-1 dG."""
    if k == 0:
        return InverseJacobian(beta, dF[:, :0], dG[:, :0])
    rows = dG[:, :k]
    q = torch.linalg.solve_ex(_system(gram[:, :k, :k], lam, eye[:k, :k]), rows.double())[0]
    return InverseJacobian(beta, dF[:, :k], torch.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0).to(rows.dtype))


def _system(gram: torch.Tensor, lam: float, eye: torch.Tensor, filled=None) -> torch.Tensor:
    """G + (lam*scale + 1e-300) I per sample, scale = mean diag(G): never singular since its diagonal is > 0.

    `filled` (a tensor): G is a full m x m buffer of which that many slots are in use, the others zero
    (the compiled forms): the scale is the mean over the filled slots, so the filled block is eager's system
    and an unused slot (zero row and right-hand side) gets gamma 0."""
    diag = gram.diagonal(dim1=1, dim2=2)
    scale = (diag.mean(dim=1) if filled is None else diag.sum(dim=1) / filled).view(-1, 1, 1)
    return torch.addcmul(gram + 1e-300 * eye, scale, lam * eye)


def mix(dF, dG, gram, dg, dmixed, g, mixed, slot, filled, eye, lam: float, solve, write):
    """One Anderson update over full [B, m] histories, for the compiled forms: the new differences and Gram
    row into slot `slot` ([1]) with `write` (Tensor.index_copy_ in place, or index_copy inside a while_loop
    body, which may not write its inputs), the regularised system solved by `solve(system, rhs [B, m])`.
    Returns (x_new, dF, dG, gram)."""
    dG = write(dG, 1, slot, dg.unsqueeze(1))
    dF = write(dF, 1, slot, dmixed.unsqueeze(1))
    c = (torch.stack((dg, g), dim=1) @ dG.transpose(1, 2)).double()  # [B, 2, m]
    row = c[:, 0]
    gram = write(gram, 1, slot, row.unsqueeze(1))
    gram = write(gram, 2, slot, row.unsqueeze(2))
    gamma = solve(_system(gram, lam, eye, filled), c[:, 1])
    gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0).to(mixed.dtype)
    return torch.baddbmm(mixed.unsqueeze(1), gamma.unsqueeze(1), dF, alpha=-1).squeeze(1), dF, dG, gram


def _regularised_solve(gram: torch.Tensor, rhs: torch.Tensor, lam: float, eye: torch.Tensor) -> torch.Tensor:
    """(G + (lam*scale + 1e-300) I)^-1 rhs per sample; a failed system gives gamma = 0.

    A zero pivot or an overflow shows as a non-finite solution, which becomes
    0 (a plain step).
    """
    sol = torch.linalg.solve_ex(_system(gram, lam, eye), rhs.unsqueeze(2))[0].squeeze(2)  # [B, k, 1] rhs: fast path
    return torch.nan_to_num(sol, nan=0.0, posinf=0.0, neginf=0.0)
