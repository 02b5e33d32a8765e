"""Whole solves as one compiled graph: the solver's loop is a `while_loop` inside the graph.

A compiled *step* per iteration (compiled.py) still pays, every
iteration, a compiled call (~15-55 us of dynamo guards and wrappers on CPU) and
the host's residual check (~60 us of Tracker bookkeeping): more than f itself at
small sizes. Here fixed_point, anderson, broyden and newton_krylov run their
whole loop inside one graph: the residual test, per-sample freezing, the best
iterate, the per-sample NFE and the trace are tensors carried by
`torch._higher_order_ops.while_loop`, whose condition (an iteration left and a
sample still active) is the only decision the loop makes (newton_krylov: three
nested loops, Newton steps, GMRES cycles and Arnoldi products, whose conditions
are eager's early exits). Inductor's C++ wrapper (`cpp_wrapper`, on CPU) runs
that loop in C++, so an iteration costs its kernels and nothing else; the host
reads the outcome once, after the solve.

The arithmetic is the eager solvers' and `Tracker.check`'s, step for step (same
freezing, same stop test in the same dtype, same best-iterate rule, NFE counted
for the samples active at each evaluation), with three changes of form:
- histories are full-size buffers ([B, m, D]) and the rows not in use are
  masked or zero, so one graph serves every iteration;
- anderson's m x m least-squares system is solved by Gaussian elimination
  unrolled over m inside the graph (the system is symmetric positive definite,
  so no pivoting is needed); eager calls LAPACK, whose call alone cost ~65 us
  per iteration inside a graph;
- newton_krylov judges GMRES's early exit after each product by Givens
  rotations (the least-squares residual in O(k)) where eager solves the
  regularised normal equations every time (in the graph ~60 us per product at
  k = 10, twice the JVP); the step's y is eager's normal equations, solved
  once per cycle. Both residuals are the same minimum up to float64 rounding,
  so the exits agree unless a residual lies within rounding of the inner
  tolerance.
tests/test_compile.py holds them to eager and to the closed forms.

Not fused (compiled.py runs them): `keep` (the correction loss's kept
iterates), an f the loop cannot hold whole (a graph break or a Python side
effect: remembered with its solver by the code of f (of the cell a DEQ's map wraps) and not tried again), and
Broyden past BROYDEN_GRAPH_MAX_ELEMENTS run a compiled step per iteration;
line search, `estimate` (SHINE), continuous, a newton_krylov given its own
`jvp=`, and one whose f dynamo cannot differentiate inside the loop (`_LIFT_BUG`)
run `generic`.
"""

from __future__ import annotations

import warnings

import torch
from torch._higher_order_ops.while_loop import while_loop

from .anderson import mix
from .base import EPS, SolveResult, combine, safe_divide, step_norms
from .broyden import _product  # with `used`: the rows in use of the full-size buffers
from .graph_passes import NewtonKrylovPasses
from .newton_krylov import orthogonalise
from .options import SolveSpec

RECOMPILE_LIMIT = 64


def allow_recompiles() -> None:
    """Dynamo builds one graph per f's code, stop mode, options and shape; past its default limit of 8 a
    fullgraph compile fails and a step graph silently runs eagerly, so both compiled forms raise it."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


def owned_outputs(graph):
    """reduce-overhead replays CUDA graphs, whose outputs live in a pool the next replay overwrites; a solve
    keeps its results (and a step's iterates) across calls, so each call starts a new step and its outputs
    are copied out. CPU tensors take the same path, so it runs in the CPU tests; not yet run on a GPU."""
    def call(*args):
        torch.compiler.cudagraph_mark_step_begin()
        out = graph(*args)
        return tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in out) if isinstance(out, tuple) \
            else out.clone()

    return call


# inductor 2.13's own lowering calls a helper it deprecated, once per graph, into the user's log
warnings.filterwarnings("ignore", message=r"`torch\._prims_common\.check` is deprecated", category=FutureWarning)

INF = float("inf")
_LOOPS: dict = {}
_UNTRACEABLE: set = set()  # (f's code, solver) whose loop failed to compile whole (fallback: a compiled step)


# --------------------------------------------------------------------------- the tracker, in the graph
def _start(z0, max_iter: int):
    """Tracker state: it, best_z, best_res, cur_res, active, converged, sample_nfe, trace [max_iter, B]."""
    b = z0.shape[0]
    res = torch.full((b,), INF, dtype=z0.dtype, device=z0.device)
    return (torch.zeros((), dtype=torch.int64, device=z0.device), z0.clone(), res, res.clone(),
            torch.ones(b, dtype=torch.bool, device=z0.device), torch.zeros(b, dtype=torch.bool, device=z0.device),
            torch.zeros(b, dtype=torch.int64, device=z0.device),
            torch.full((max_iter, b), INF, dtype=z0.dtype, device=z0.device))


def _residuals(norms, stop_mode: str):
    """Tracker._residuals in tensors: the same operations in the same dtypes, nan read as inf."""
    if stop_mode == "abs":
        res = norms
    elif stop_mode == "batch":
        sq = norms.double().square().sum(dim=1)
        res = (sq[0].sqrt() / (sq[1].sqrt() + EPS)).to(norms.dtype).expand(norms.shape[1])
    else:
        res = norms[0] / (norms[1] + EPS)  # EPS rounded to the norms' dtype, as NumPy does
    return torch.where(res < INF, res, INF)


def _judge(state, z, fz, tol, stop_mode: str):
    """One evaluation counted for the active samples, then Tracker.check: best iterate, trace, freezing."""
    it, best_z, best_res, cur_res, active, converged, sample_nfe, trace = state
    sample_nfe = sample_nfe + active.to(sample_nfe.dtype)
    res = _residuals(step_norms(z, fz, stop_mode), stop_mode)
    better = (res < best_res) & active
    best_res = torch.where(better, res, best_res)
    best_z = torch.where(better.view(-1, *([1] * (z.dim() - 1))), z, best_z)
    cur_res = torch.where(active, res, cur_res)
    trace = trace.index_copy(0, it.view(1), cur_res.unsqueeze(0))
    newly = (res <= tol) & active
    converged = converged | newly
    active = active & ~newly & (res < INF)
    return (it + 1, best_z, best_res, cur_res, active, converged, sample_nfe, trace)


def _going(max_iter: int):
    def cond(it, best_z, best_res, cur_res, active, *rest):
        return (it < max_iter) & active.any()

    return cond


def _frozen(active, new, old):
    return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)


N_STATE = 8


def _unflat(z0):
    """[B, D] rows back to the solve's shape. The loop body may close over sizes (symbolic ones with a
    dynamic batch) but not over a torch.Size, so the trailing sizes are kept as a tuple."""
    tail = tuple(z0.shape[1:])
    return lambda t: t.view(t.shape[0], *tail)


# --------------------------------------------------------------------------- fixed point
def fixed_point_loop(f, z0, max_iter: int, tol, stop_mode: str, damping: float):
    def body(*carry):
        state, z = carry[:N_STATE], carry[N_STATE]
        fz = f(z)
        state = _judge(state, z, fz, tol, stop_mode)
        nxt = fz if damping == 1.0 else (1 - damping) * z + damping * fz
        return (*state, _frozen(state[4], nxt, z))

    cond = _going(max_iter)
    return while_loop(lambda *c: cond(*c[:N_STATE]), body, (*_start(z0, max_iter), z0.clone()))[:N_STATE]


# --------------------------------------------------------------------------- anderson
def spd_solve(A, b):
    """A^-1 b per sample, A [B, n, n] symmetric positive definite: Gaussian elimination without pivoting,
    unrolled over the static n so inductor fuses it (Cholesky's stability: SPD needs no pivoting)."""
    n = A.shape[-1]
    rows = [A[:, i, :] for i in range(n)]
    rhs = [b[:, i] for i in range(n)]
    for j in range(n):
        for i in range(j + 1, n):
            fac = rows[i][:, j] / rows[j][:, j]
            rows[i] = rows[i] - fac.unsqueeze(1) * rows[j]
            rhs[i] = rhs[i] - fac * rhs[j]
    x = [rhs[0]] * n
    for i in reversed(range(n)):
        acc = rhs[i]
        for k in range(i + 1, n):
            acc = acc - rows[i][:, k] * x[k]
        x[i] = acc / rows[i][:, i]
    return torch.stack(x, dim=1)


def anderson_loop(f, z0, max_iter: int, tol, stop_mode: str, m: int, beta: float, lam: float):
    """anderson.py's iteration: the first step is a plain mixing step, later ones mix over k = min(it, m)
    differences written into slot (it - 1) % m of full [B, m, D] histories (zero rows: gamma 0 there)."""
    b, unflat = z0.shape[0], _unflat(z0)
    x0 = z0.reshape(b, -1)
    eye = torch.eye(m, dtype=torch.float64, device=z0.device)

    def evaluate(state, x):
        fx = f(unflat(x)).reshape(b, -1)
        state = _judge(state, unflat(x), unflat(fx), tol, stop_mode)
        return state, fx - x, fx if beta == 1.0 else torch.lerp(x, fx, beta)

    state, g, mixed = evaluate(_start(z0, max_iter), x0)
    x = _frozen(state[4], mixed, x0)

    def body(*carry):
        state, (x, prev_g, prev_mixed, dF, dG, gram) = carry[:N_STATE], carry[N_STATE:]
        it = state[0]  # evaluations so far: this iteration stores difference number it, in slot (it - 1) % m
        state, g, mixed = evaluate(state, x)
        slot = ((it - 1) % m).view(1)
        filled = it.clamp(max=m).to(torch.float64)  # differences stored (unused rows of gram are 0)
        x_new, dF, dG, gram = mix(dF, dG, gram, g - prev_g, mixed - prev_mixed, g, mixed, slot, filled, eye, lam,
                                  spd_solve, torch.Tensor.index_copy)
        return (*state, _frozen(state[4], x_new, x), g, mixed, dF, dG, gram)

    hist = x0.new_zeros(b, m, x0.shape[1])
    gram = torch.zeros(b, m, m, dtype=torch.float64, device=z0.device)
    cond = _going(max_iter)
    out = while_loop(lambda *c: cond(*c[:N_STATE]), body, (*state, x, g, mixed, hist, hist.clone(), gram))
    return out[:N_STATE]


# --------------------------------------------------------------------------- broyden
def broyden_loop(f, z0, max_iter: int, tol, stop_mode: str, memory: int):
    """broyden.py's iteration with fixed [B, memory, D] buffers: k terms in use (rows >= k masked), term k
    written after each check that the loop goes on from, and every sample restarting when k reaches memory."""
    b, unflat = z0.shape[0], _unflat(z0)
    x0 = z0.reshape(b, -1)
    tiny = torch.finfo(z0.dtype).tiny ** 0.5
    slots = torch.arange(memory, device=z0.device)
    fx = f(z0).reshape(b, -1)
    state = _judge(_start(z0, max_iter), z0, unflat(fx), tol, stop_mode)
    zero = torch.zeros((), dtype=torch.int64, device=z0.device)

    def body(*carry):
        state, (x, g, U, V, k, restarts) = carry[:N_STATE], carry[N_STATE:]
        used = (slots < k).to(x.dtype).view(1, 1, -1)
        active = state[4]
        x_new = _frozen(active, x - _product(g, V, U, used), x)
        fx = f(unflat(x_new)).reshape(b, -1)
        state = _judge(state, unflat(x_new), unflat(fx), tol, stop_mode)
        g_new = fx - x_new
        dx, dg = x_new - x, g_new - g
        vT = _product(dx, U, V, used)
        den = torch.linalg.vecdot(vT, dg)
        den = torch.where(den.abs() > tiny, den, INF)
        terms = torch.stack(((dx - _product(dg, V, U, used)) / den.unsqueeze(1), vT), dim=1)
        ok = torch.isfinite(terms.sum(dim=(1, 2))) & state[4]
        terms = torch.where(ok[:, None, None], terms, 0.0)
        at = k.view(1)
        U = U.index_copy(1, at, terms[:, 0:1])
        V = V.index_copy(1, at, terms[:, 1:2])
        # eager breaks before this update on its last check: a restart counts only if the loop goes on
        going = (state[0] < max_iter) & state[4].any()
        full = (k + 1 == memory) & going
        restarts = restarts + torch.where(full, state[4].sum(), 0)
        k = torch.where(full, 0, k + 1)
        return (*state, x_new, g_new, U, V, k, restarts)

    U = x0.new_zeros(b, memory, x0.shape[1])
    cond = _going(max_iter)
    out = while_loop(lambda *c: cond(*c[:N_STATE]), body, (*state, x0, fx - x0, U, U.clone(), zero, zero + 0))
    return (*out[:N_STATE], out[-1])


# --------------------------------------------------------------------------- newton-krylov
def newton_krylov_loop(f, z0, max_iter: int, tol, stop_mode: str, restart: int, max_restarts: int, inner_tol: float):
    """newton_krylov.py's iteration (without line search) as three nested loops: Newton steps, GMRES cycles,
    Arnoldi products. The Krylov basis V [B, k+1, D] and Hessenberg H [B, k+1, k] (float64) are full-size and
    zero past the rows in use, so every product is eager's sliced one plus exact zeros; the least squares
    is eager's regularised normal equations, padded with identity rows and solved by `spd_solve` (their
    unused entries come out exactly 0). Each JVP is counted for the samples active at it, as
    Tracker.count does; the last carried value is the number of JVPs (eager's stats["jvps"])."""
    b, unflat = z0.shape[0], _unflat(z0)
    x0 = z0.reshape(b, -1)
    n = x0.shape[1]
    k = min(restart, n)
    rows = torch.arange(k + 1, device=z0.device)
    cols = torch.arange(k, device=z0.device)
    zero = torch.zeros((), dtype=torch.int64, device=z0.device)
    fx0 = f(z0).reshape(b, -1)
    state = _judge(_start(z0, max_iter), z0, unflat(fx0), tol, stop_mode)

    def gmres(x, rhs, active):
        """gmres() for A d = rhs with A v = J_f(x) v - v: (d, products made)."""
        target = inner_tol * rhs.norm(dim=1).double()

        def product(v):
            return torch.func.jvp(f, (unflat(x),), (unflat(v),))[1].reshape(b, -1) - v

        def finished(lin_res):
            return ((lin_res <= target) | ~active).all()

        def cycle(c, d, r, done, made):
            beta = r.norm(dim=1)
            beta64 = beta.double()
            V = rhs.new_zeros(b, k + 1, n).index_copy(1, zero.view(1), safe_divide(r, beta[:, None]).unsqueeze(1))
            H = torch.zeros(b, k + 1, k, dtype=torch.float64, device=rhs.device)

            def arnoldi(j, V, H, rot, lin_res, done):
                w = product(V.index_select(1, j.view(1)).squeeze(1))
                h, w = orthogonalise(V, w)  # rows past j are zero: eager's h over V[:, :j+1], then zeros
                hn = w.norm(dim=1)
                column = h.double() + torch.where(rows == j + 1, hn.double().unsqueeze(1), 0.0)
                H = H.index_copy(2, j.view(1), column.unsqueeze(2))
                V = V.index_copy(1, (j + 1).view(1), safe_divide(w, hn[:, None]).unsqueeze(1))
                rot, lin_res = _givens(rot, column, j)
                return j + 1, V, H, rot, lin_res, finished(lin_res)

            rot = torch.stack((torch.ones(b, k + 1, dtype=torch.float64, device=rhs.device),
                               torch.zeros(b, k + 1, dtype=torch.float64, device=rhs.device),
                               torch.where(rows == 0, beta64.unsqueeze(1), 0.0)), dim=1)
            j, V, H, _, _, done = while_loop(lambda j, V, H, rot, lin_res, done: (j < k) & ~done, arnoldi,
                                             (zero.clone(), V, H, rot, beta64.clone(), done.clone()))
            y = _hessenberg_lstsq(H, beta64, cols < j)  # eager's y, once per cycle
            d = d + combine(y.to(rhs.dtype), V[:, :k])
            e = -(H @ y.unsqueeze(2)).squeeze(2) + torch.where(rows == 0, beta64.unsqueeze(1), 0.0)
            r = combine(e.to(rhs.dtype), V)  # the residual without another product, as eager
            return c + 1, d, r, done, made + j

        no = torch.zeros((), dtype=torch.bool, device=rhs.device)
        _, d, _, _, made = while_loop(lambda c, d, r, done, made: (c <= max_restarts) & ~done, cycle,
                                      (zero.clone(), torch.zeros_like(rhs), rhs.clone(), no, zero.clone()))
        return d, made

    def body(*carry):
        state, (x, fx, jvps) = carry[:N_STATE], carry[N_STATE:]
        active = state[4]
        g = torch.where(active[:, None], fx - x, 0.0)
        d, made = gmres(x, -g, active)
        state = (*state[:6], state[6] + made * active.to(state[6].dtype), state[7])  # each JVP, as Tracker.count
        d = torch.where(torch.isfinite(d), d, g)  # broken Krylov solve: a plain step
        x_new = _frozen(active, x + d, x)
        fx_new = f(unflat(x_new)).reshape(b, -1)
        state = _judge(state, unflat(x_new), unflat(fx_new), tol, stop_mode)
        return (*state, x_new, fx_new, jvps + made)

    cond = _going(max_iter)
    out = while_loop(lambda *c: cond(*c[:N_STATE]), body, (*state, x0.clone(), fx0, zero.clone()))
    return (*out[:N_STATE], out[-1])


def _givens(rot, column, j):
    """GMRES's least-squares residual after column j of H, by Givens rotations: rot [B, 3, k+1] holds the
    rotations so far (cos, sin; identity past j) and the rotated beta e1. The rotations apply in turn
    (unrolled over the static k), the new one zeroes H[j+1, j], and |the rotated rhs's entry j+1| is
    min ||beta e1 - H y||: O(k) per product where a solve of the normal equations is O(k^3) (measured
    ~60 us per product in the graph at k = 10, twice the JVP's own time)."""
    cos, sin, g = rot.unbind(1)
    t = list(column.unbind(1))
    for i in range(len(t) - 2):  # rotation i mixes rows i, i+1; exact identity where not made yet
        t[i], t[i + 1] = cos[:, i] * t[i] + sin[:, i] * t[i + 1], cos[:, i] * t[i + 1] - sin[:, i] * t[i]
    t = torch.stack(t, dim=1)
    at, below = j.view(1), (j + 1).view(1)
    a, c = t.index_select(1, at).squeeze(1), t.index_select(1, below).squeeze(1)
    norm = torch.hypot(a, c)
    ok = norm > 0
    cj, sj = torch.where(ok, a / norm, 1.0), torch.where(ok, c / norm, 0.0)
    gj = g.index_select(1, at).squeeze(1)
    g = g.index_copy(1, at, (cj * gj).unsqueeze(1)).index_copy(1, below, (-sj * gj).unsqueeze(1))
    cos = cos.index_copy(1, at, cj.unsqueeze(1))
    sin = sin.index_copy(1, at, sj.unsqueeze(1))
    return torch.stack((cos, sin, g), dim=1), (sj * gj).abs()


def _hessenberg_lstsq(H, beta, used):
    """newton_krylov._hessenberg_lstsq's y on the full [B, k+1, k] H whose columns past `used` are zero: the
    same regularised normal equations on the columns in use (the regulariser's scale their mean diagonal),
    identity on the others (y = 0 there), solved without LAPACK."""
    gram = H.transpose(1, 2) @ H
    scale = (gram.diagonal(dim1=1, dim2=2).sum(dim=1) / used.sum()).clamp_min(1e-300)
    fill = torch.where(used, (1e-14 * scale).unsqueeze(1), 1.0)
    y = spd_solve(gram + torch.diag_embed(fill), beta.unsqueeze(1) * H[:, 0, :])
    return torch.where(torch.isfinite(y), y, 0.0)


# --------------------------------------------------------------------------- running one
def _arguments(spec: SolveSpec) -> tuple:
    o = spec.options
    if spec.solver == "fixed_point":
        return (o.damping,)
    if spec.solver == "anderson":
        return (o.m, o.beta, o.lam)
    if spec.solver == "newton_krylov":
        return (o.restart, o.max_restarts, o.inner_tol)
    return (o.memory,)


LOOPS = {"fixed_point": fixed_point_loop, "anderson": anderson_loop, "broyden": broyden_loop,
         "newton_krylov": newton_krylov_loop}


# Broyden's loop pays, per iteration, a copy of its U and V buffers (a while_loop body cannot write its
# carried tensors in place) and products over all `memory` rows where eager uses the k in use. Measured
# (docs/benchmarks.md, memory 30): the graph is faster up to 32 x 30 x 128 = 122,880 elements per buffer
# and slower from 64 x 30 x 128 on (1.3x eager's time there, 2.6x at 128 x 30 x 256), so larger
# histories run the compiled step instead.
BROYDEN_GRAPH_MAX_ELEMENTS = 1 << 17


def applies(spec: SolveSpec, f, z0, keep: frozenset, extra: dict) -> bool:
    """Whether `run` can take this solve: a fused solver, nothing kept on the host, f traceable so far."""
    if spec.solver not in LOOPS or keep or extra or getattr(f, "_torchdynamo_disable", False):
        return False
    if spec.solver == "newton_krylov" and spec.options.line_search:
        return False  # per-sample backtracking decides on the host
    if spec.solver == "broyden" and (spec.options.line_search or
                                     z0.numel() * spec.options.memory > BROYDEN_GRAPH_MAX_ELEMENTS):
        return False
    code = _code_of(f)
    return code is None or (code, spec.solver) not in _UNTRACEABLE


def _code_of(f):
    """The code a call of f runs first: a function's own, a module's forward, a callable object's __call__
    (None for a C callable such as functools.partial, which is then tried every time); for a wrapper that
    names what it wraps (`__wrapped__`, as a DEQ's solve map names its cell), the wrapped one's."""
    wrapped = getattr(f, "__wrapped__", None)
    if wrapped is not None:
        return _code_of(wrapped)
    if hasattr(f, "__code__"):
        return f.__code__
    call = type(f).forward if isinstance(f, torch.nn.Module) else getattr(type(f), "__call__", None)
    return getattr(call, "__code__", None)


# torch 2.13 leaves a graph holding a while_loop out of inductor's and AOTAutograd's on-disk caches (the
# operator is not marked cacheable), so every process compiled the loop from scratch: 8.7 s for fixed point,
# 12.6 s for Anderson, against 4.7 s and 5.1 s with the cache. Marking it is safe here: the cache key hashes
# the loop's condition and body subgraphs with the rest of the graph (a loop whose body differs only in a
# constant, another damping, misses; tests/test_compile.py), and the operator has no state outside them.
WHILE_LOOP_OP = "torch.ops.higher_order.while_loop"


def _loop(solver: str, mode: str, device_type: str):
    key = (solver, mode, device_type)
    if key not in _LOOPS:
        allow_recompiles()
        from torch._inductor import list_mode_options

        options = dict(list_mode_options(mode))
        if device_type == "cpu":
            options["cpp_wrapper"] = True  # the loop itself in C++: no Python between iterations
        options["unsafe_marked_cacheable_functions"] = {
            **torch._inductor.config.unsafe_marked_cacheable_functions, WHILE_LOOP_OP: torch.__version__}
        if solver == "newton_krylov":
            options["post_grad_custom_pre_pass"] = NewtonKrylovPasses()  # JVPs without zero tangents, f's
            # primal part at the Newton iterate once per GMRES cycle (graph_passes.py)
        graph = torch.compile(LOOPS[solver], fullgraph=True, options=options)
        _LOOPS[key] = owned_outputs(graph) if mode == "reduce-overhead" else graph
    return _LOOPS[key]


# a graph break or a Python side effect in f (a call counter, a print: the loop body must be one graph),
# inductor failing on the graph (torch 2.13 does on some dynamic-shape loops), or too many graphs for one f
# torch 2.13's dynamo, tracing torch.func.jvp inside a while_loop body (newton_krylov), lifts an attribute
# of a tensor f closes over (`W.T`; `W.t()` and F.linear trace) as a real tensor where the loop's aliasing
# check wants a fake one, and asserts: that f runs the generic form
_LIFT_BUG = "Expected FakeTensor, got <class 'torch.Tensor'>"
_NOT_WHOLE = (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UncapturedHigherOrderOpError,
              torch._dynamo.exc.BackendCompilerFailed, torch._dynamo.exc.FailOnRecompileLimitHit)


# The options (damping, beta, lam) are constants of the graph: a float argument would otherwise be traced
# as a symbolic scalar, which inductor cannot read inside a loop body. Only dimensions marked dynamic (a DEQ
# marks its batch dimension) are symbolic: torch 2.13's inductor fails on anderson's and broyden's loops
# when dynamo's automatic dynamic shapes also make a feature dimension symbolic (a second model width in
# the process), so another width or another unmarked batch size gets a static graph of its own. One patch
# object, entered per solve (making one per call cost ~20 us).
_GRAPH_CONFIG = torch._dynamo.config.patch(specialize_float=True, automatic_dynamic_shapes=False)
_TOLS: dict = {}


def _tol(tol: float, z0):
    """tol as a 0-d tensor of the solve's dtype (for the same reason as the options; a tensor also spares a
    graph per tol), cached: the comparison is in that dtype, as NumPy's is on the host."""
    key = (tol, z0.dtype, z0.device)
    if key not in _TOLS:
        _TOLS[key] = torch.tensor(tol, dtype=z0.dtype, device=z0.device)
    return _TOLS[key]


def run(spec: SolveSpec, f, z0) -> SolveResult | None:
    """The whole solve as one graph, or None when f cannot be traced whole (the caller falls back, once
    warned: the fallback is a compiled step per iteration, several times slower at small sizes)."""
    loop = _loop(spec.solver, spec.compile, z0.device.type)
    try:
        with _GRAPH_CONFIG:
            out = loop(f, z0, spec.max_iter, _tol(spec.tol, z0), spec.stop_mode, *_arguments(spec))
    except (*_NOT_WHOLE, AssertionError) as exc:
        if isinstance(exc, AssertionError) and _LIFT_BUG not in str(exc):
            raise
        code = _code_of(f)
        if code is not None:  # not again for this f and solver: a failed compile costs ~0.1 s every time
            _UNTRACEABLE.add((code, spec.solver))
        fallback = "its eager loop with f and its JVPs compiled" if spec.solver == "newton_krylov" else \
            "a compiled step per iteration"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"compile={spec.compile!r}: {spec.solver}'s loop could not be compiled whole with this f "
                      f"({reason}); it runs {fallback} instead", RuntimeWarning, stacklevel=3)
        return None
    return _result(z0, out, spec)


def _result(z0, out, spec: SolveSpec) -> SolveResult:
    """The graph's tracker state as Tracker.result builds it (the trace statistics in NumPy, as eager)."""
    it, best_z, best_res, _cur, _active, converged, sample_nfe, trace = out[:N_STATE]
    n = int(it)  # the one host read of the solve
    rows = trace[:n].numpy(force=True)
    stats = {}  # as the eager solvers report them
    if spec.solver == "anderson":
        stats["stored_vectors"] = 2 * spec.options.m
    if spec.solver == "broyden":
        stats.update(stored_vectors=2 * spec.options.memory, restarts=int(out[-1]))
    if spec.solver == "newton_krylov":  # each JVP is one evaluation on top of the checks' evaluations
        stats["jvps"] = int(out[-1])
        n_eval = n + stats["jvps"]
    else:
        n_eval = n
    if best_z.data_ptr() == z0.data_ptr():
        best_z = best_z.clone()
    return SolveResult(z=best_z, nfe=n_eval, sample_nfe=sample_nfe, residual=best_res, converged=converged,
                       trace=rows.max(axis=1).tolist() if n else [], trace_mean=rows.mean(axis=1).tolist() if n else [],
                       stats=stats)
