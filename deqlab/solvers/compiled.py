"""Compiled solves: the whole loop as one graph where possible (`fused`), else a graph per iteration.

`run` first offers the solve to `fused` (fixed_point, anderson, broyden: the
loop itself inside one torch.compile graph, the fastest form). What it
cannot take runs here:
- a *step*: each iteration of fixed_point, anderson and broyden as one
  function of tensors (the freezing mask, the residual norms, the history
  update, the next proposal), compiled once, with the data-dependent
  decisions (the residual test, freezing, the best iterate, the trace, NFE) on
  the host in the same `Tracker` as eager. Used for `keep=` (the correction
  loss), an f the whole loop cannot hold (a graph break or a Python side
  effect), and Broyden's large histories;
- `generic`: the solver's eager loop with f compiled (newton_krylov's JVPs as
  compiled `torch.func.jvp`): newton_krylov, continuous, broyden with line
  search, and SHINE's `estimate=`.

Three rules keep one step graph per shape for the whole solve:
- nothing that changes between iterations is a Python number inside the graph
  (the history slot and its fill are tensors; histories are full-size buffers
  written in place, whose unused rows are zero, so the products equal eager's
  slices);
- the freezing mask that eager applies after a check is applied at the start of
  the next iteration's graph, with the mask the check left;
- the batch dimension goes dynamic on the second size torch.compile sees
  (its automatic dynamic shapes), so a smaller last batch costs one recompile
  per process, not one per epoch. `SolveResult.stats["graphs_compiled"]` counts
  the graphs a solve compiled (0 once warm), `stats["loop"]` which form ran.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import fused as whole
from .anderson import mix
from .base import Tracker, step_norms
from .broyden import _product  # H v and v^T H of the low-rank estimate, as the eager solve computes them
from .options import SolveSpec

_COMPILED: dict = {}


def compiled(fn: Callable, mode: str, dynamic: bool | None = None) -> Callable:
    """torch.compile(fn) in `mode`, made once per process (its graphs are cached by input shape); in
    reduce-overhead its outputs are copied out of the CUDA-graph pool (`fused.owned_outputs`). (torch skips
    CUDA graphs for a graph that mutates its inputs, as anderson's and broyden's steps write their
    histories in place: those would run compiled without CUDA graphs.)
    """
    key = (fn, mode, dynamic)
    if key not in _COMPILED:
        whole.allow_recompiles()
        graph = torch.compile(fn, mode=None if mode == "default" else mode, dynamic=dynamic)
        _COMPILED[key] = whole.owned_outputs(graph) if mode == "reduce-overhead" else graph
    return _COMPILED[key]


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process (dynamo's counter): a recompile adds one."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@torch.library.custom_op("deqlab::batched_solve", mutates_args=())
def _batched_solve(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve_ex(system, rhs)[0] as one opaque op.

    Inductor decomposes solve_ex into lu_factor + lu_solve, and that lu_solve
    was measured at ~440 us per call on a [32, 5, 5] system (eager solve_ex:
    tens of us); an opaque op keeps eager's path.
    """
    return torch.linalg.solve_ex(system.contiguous(), rhs.contiguous())[0]  # inductor may hand over a strided rhs


@_batched_solve.register_fake
def _(system, rhs):
    return torch.empty_like(rhs)


# --------------------------------------------------------------------------- fixed point
def _fp_step(f, z_prev, z_prop, mask, damping: float, stop_mode: str):
    z = torch.where(mask, z_prop, z_prev)
    fz = f(z)
    nxt = fz if damping == 1.0 else (1 - damping) * z + damping * fz
    return z, fz, step_norms(z, fz, stop_mode), nxt


def fixed_point(tracker: Tracker, z, max_iter: int, opts, mode: str):
    step = compiled(_fp_step, mode)
    prop = z.clone()  # not z itself: aliased inputs would compile a second graph for the first call
    for it in range(max_iter):
        z, fz, norms, prop = step(tracker.f, z, prop, tracker.active_mask(z.dim()), opts.damping, tracker.stop_mode)
        tracker.count()
        tracker.check(z, fz, norms)
        if tracker.done or it == max_iter - 1:
            break
    return tracker.result()


# --------------------------------------------------------------------------- anderson
def _aa_first(f, z, beta: float, stop_mode: str):
    fz = f(z)
    x, fx = z.flatten(1), fz.flatten(1)
    return fz, step_norms(z, fz, stop_mode), fx - x, fx if beta == 1.0 else torch.lerp(x, fx, beta)


def _aa_step(f, z_prev, prop, mask, dF, dG, gram, prev_g, prev_mixed, slot, k, eye, beta: float, lam: float,
             stop_mode: str):
    """Freeze, evaluate, judge, then anderson.py's update over the full [B, m] history (unused rows 0).

    The new differences and Gram row go into row `slot` ([1]) of dF, dG, gram in place (`anderson.mix`).
    """
    z = torch.where(mask, prop.view_as(z_prev), z_prev)
    fz = f(z)
    norms = step_norms(z, fz, stop_mode)
    x, fx = z.flatten(1), fz.flatten(1)
    g = fx - x
    mixed = fx if beta == 1.0 else torch.lerp(x, fx, beta)
    x_new, *_ = mix(dF, dG, gram, g - prev_g, mixed - prev_mixed, g, mixed, slot, k, eye, lam,
                    lambda system, rhs: _batched_solve(system, rhs.unsqueeze(2)).squeeze(2), torch.Tensor.index_copy_)
    return z, fz, norms, x_new, g, mixed


def anderson(tracker: Tracker, z, max_iter: int, opts, mode: str):
    b, m = z.shape[0], opts.m
    d = z[0].numel()
    fz, norms, g, prop = compiled(_aa_first, mode)(tracker.f, z, opts.beta, tracker.stop_mode)
    tracker.count()
    tracker.check(z, fz, norms)
    if tracker.done or max_iter == 1:
        return tracker.result(stored_vectors=2 * m)
    step = compiled(_aa_step, mode)
    dF = z.new_zeros(b, m, d)
    dG = z.new_zeros(b, m, d)
    gram = torch.zeros(b, m, m, dtype=torch.float64, device=z.device)
    eye = torch.eye(m, dtype=torch.float64, device=z.device)
    slots = [torch.tensor([i], device=z.device) for i in range(m)]
    fills = [torch.tensor(float(k), dtype=torch.float64, device=z.device) for k in range(1, m + 1)]
    mixed, prop = prop, prop.clone()  # distinct tensors: aliased inputs would compile a graph of their own
    for it in range(1, max_iter):
        slot = (it - 1) % m
        z, fz, norms, prop, g, mixed = step(
            tracker.f, z, prop, tracker.active_mask(z.dim()), dF, dG, gram, g, mixed, slots[slot],
            fills[min(it, m) - 1], eye, opts.beta, opts.lam, tracker.stop_mode)
        tracker.count()
        tracker.check(z, fz, norms)
        if tracker.done:
            break
    return tracker.result(stored_vectors=2 * m)


# --------------------------------------------------------------------------- broyden
def _br_first(f, z, stop_mode: str):
    fz = f(z)
    return fz, step_norms(z, fz, stop_mode), (fz - z).flatten(1)


def _br_step(f, z, g, dx, dg, U, V, mask, slot, tiny: float, stop_mode: str):
    """The previous iteration's rank-one term into row `slot` of U, V (in place), then broyden.py's full step.

    U, V have one row more than the memory, kept at zero: `slot` ([1]) points there when
    no term is due, so every iteration writes (in place, not a rewrite of the buffers).
    """
    x = z.flatten(1)
    active = mask.reshape(-1)
    vT = _product(dx, U, V)
    den = torch.linalg.vecdot(vT, dg)
    den = torch.where(den.abs() > tiny, den, torch.inf)
    terms = torch.stack(((dx - _product(dg, V, U)) / den.unsqueeze(1), vT), dim=1)
    ok = torch.isfinite(terms.sum(dim=(1, 2))) & active & (slot < U.shape[1] - 1)
    terms = torch.where(ok[:, None, None], terms, 0.0)
    U.index_copy_(1, slot, terms[:, 0:1])
    V.index_copy_(1, slot, terms[:, 1:2])
    x_new = torch.where(active[:, None], x - _product(g, V, U), x)
    z_new = x_new.view_as(z)
    fz = f(z_new)
    g_new = fz.flatten(1) - x_new
    return z_new, fz, step_norms(z_new, fz, stop_mode), g_new, x_new - x, g_new - g


def broyden(tracker: Tracker, z, max_iter: int, opts, mode: str):
    b, mem = z.shape[0], opts.memory
    d = z[0].numel()
    fz, norms, g = compiled(_br_first, mode)(tracker.f, z, tracker.stop_mode)
    tracker.count()
    step = compiled(_br_step, mode)
    U = z.new_zeros(b, mem + 1, d)  # + the zero row that a step without a term writes to
    V = z.new_zeros(b, mem + 1, d)
    slots = [torch.tensor([i], device=z.device) for i in range(mem + 1)]
    dx, dg = torch.zeros_like(g), torch.zeros_like(g)  # distinct: aliased inputs compile a graph of their own
    tiny = torch.finfo(z.dtype).tiny ** 0.5
    pending, k, restarts = mem, 0, 0  # pending: the row the next step writes (mem: none, the zero row)
    for it in range(max_iter):
        if it > 0:
            z, fz, norms, g, dx, dg = step(tracker.f, z, g, dx, dg, U, V, tracker.active_mask(z.dim()),
                                           slots[pending], tiny, tracker.stop_mode)
            tracker.count()
        tracker.check(z, fz, norms)
        if tracker.done or it == max_iter - 1:
            break
        if it > 0:
            pending, k = k, k + 1
            if k == mem:  # history full: every sample restarts from H = -I (the pending term is dropped)
                pending, k = mem, 0
                restarts += tracker.n_active
                U.zero_()
                V.zero_()
    return tracker.result(stored_vectors=2 * mem, restarts=restarts)  # as eager: the zero row stores nothing


# --------------------------------------------------------------------------- the rest
def _call(f, z):
    return f(z)


def _jvp(f, z, v):
    return torch.func.jvp(f, (z,), (v,))[1]


def compiled_jvp(f, mode: str) -> Callable:
    """J_f(z) v by torch.func.jvp inside one compiled graph (measured 186 us against 478 us for eager
    dual tensors at batch 32, width 128); an f that forward AD cannot trace falls back to
    newton_krylov.autograd_jvp for the rest of the solve. Static shapes: torch 2.13 cannot trace
    torch.func.jvp with a dynamic batch dimension (it retried and failed on every call), so
    each batch size gets its own graph."""
    from .newton_krylov import autograd_jvp

    call, eager, state = compiled(_jvp, mode, dynamic=False), autograd_jvp(f), {"compiled": True}

    def jvp(z, v):
        if state["compiled"]:
            try:
                return call(f, z, v)
            except (RuntimeError, NotImplementedError):
                state["compiled"] = False
        return eager(z, v)

    return jvp


FUSED = {"fixed_point": fixed_point, "anderson": anderson, "broyden": broyden}


def run(spec: SolveSpec, f, z0, eager_run: Callable, extra: dict, keep: frozenset = frozenset()):
    """One solve in `spec.compile` mode: a fused loop when the solver has one, else `generic`.

    `extra`: the eager solver's keywords (`jvp`, `estimate`); `keep` as `solve`'s, kept by the Tracker.
    """
    before = graphs_compiled()
    if whole.applies(spec, f, z0, keep, extra):
        res = whole.run(spec, f, z0)
        if res is not None:
            res.stats.update(compile=spec.compile, loop="graph", graphs_compiled=graphs_compiled() - before)
            return res
    fused = FUSED.get(spec.solver)
    if (spec.solver == "broyden" and spec.options.line_search) or extra.get("estimate"):
        fused = None  # per-sample backtracking decides on the host; the SHINE estimate is built eagerly
    if fused is not None:
        tracker = Tracker(f, z0, spec.tol, spec.stop_mode, keep)
        res = fused(tracker, z0, spec.max_iter, spec.options, spec.compile)
    else:
        res = generic(spec, f, z0, eager_run, extra, keep)
    res.stats.update(compile=spec.compile, loop="step" if fused is not None else "generic",
                     graphs_compiled=graphs_compiled() - before)
    return res


def generic(spec: SolveSpec, f, z0, eager_run: Callable, extra: dict, keep: frozenset = frozenset()):
    """The solver's eager loop with f compiled (newton_krylov's JVPs too, unless the caller gave its own).

    The residual norms stay eager too: three ops cost less than one call of a
    compiled graph on CPU (measured: ~45 us per call on this project's machine).
    """
    call = compiled(_call, spec.compile)
    tracker = Tracker(lambda z: call(f, z), z0, spec.tol, spec.stop_mode, keep)
    if spec.solver == "newton_krylov" and "jvp" not in extra:
        extra = {**extra, "jvp": compiled_jvp(f, spec.compile)}
    return eager_run(tracker, z0, spec.max_iter, spec.options, **extra)
