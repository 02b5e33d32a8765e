"""Compiled solves (`compile=`) against eager and closed forms: same NFE, fixed point, freezing, gradients.

torch.compile on CPU costs seconds per graph, so every test here reuses one
problem family and its shapes (the compiled steps are cached per process) and
the eager/compiled pairs are solved once per module. No test skips when the
inductor C++ toolchain is missing: the first test says so, and the compile
errors are the failures; only a platform without dynamo skips.
"""

import pytest
import torch
from torch import nn

from deqlab.layers import DEQ, DEQConfig
from deqlab.solvers import SOLVERS, solve
from deqlab.solvers.compiled import graphs_compiled
from closed_forms import Counted, LinearCell

# compile genuinely unavailable (a Python dynamo does not support): skip, saying so; a missing
# C++ compiler is not that, it fails (test_inductor_has_its_cpp_compiler)
pytestmark = pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(),
                                reason="torch.compile is not supported on this Python/platform")

ALL = sorted(SOLVERS)
F64 = torch.float64
RADII = torch.tensor([0.1, 0.9, 0.1, 0.9], dtype=F64)  # samples 0, 2 easy, 1, 3 hard


def affine(batch=4, dim=8, seed=0):
    """f(z) = A_i z + b_i with ||A_i||_2 = RADII[i]: z* = (I - A_i)^-1 b_i per sample."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(4, dim, dim, generator=g, dtype=F64)
    A = (RADII / torch.linalg.matrix_norm(A, ord=2)).view(4, 1, 1) * A
    b = torch.randn(4, dim, generator=g, dtype=F64)
    A, b = A[:batch], b[:batch]
    z_star = torch.linalg.solve(torch.eye(dim, dtype=F64) - A, b)
    return (lambda z: (A @ z.unsqueeze(2)).squeeze(2) + b), z_star


# small histories, so that anderson's ring wraps around and broyden restarts within the solve
OPTIONS = {"anderson": {"m": 3}, "broyden": {"memory": 4}}


def test_inductor_has_its_cpp_compiler():
    """Inductor builds CPU kernels with a C++ compiler: without one every compiled solve fails, so say which."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        cxx = get_cpp_compiler()
    except Exception as exc:  # inductor's own error names what it looked for
        pytest.fail(f"torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH: {exc}")
    assert cxx, "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"


# the solvers whose whole loop is one graph (deqlab.solvers.fused); the others compile f and their JVPs
WHOLE = ("anderson", "broyden", "fixed_point", "newton_krylov")


@pytest.fixture(scope="module")
def pairs():
    """Each solver's eager and compiled solve of the same problem, with independently counted calls.

    A counting wrapper's Python side effect cannot live inside a whole-loop graph, so the whole-loop
    solvers are counted eagerly and their compiled NFE is held to that count; the others count both."""
    out = {}
    for solver in ALL:
        f, z_star = affine()
        runs = {}
        for mode in ("none", "default"):
            counted = Counted(f)
            g = f if (mode != "none" and solver in WHOLE) else counted
            res = solve(g, torch.zeros(4, 8, dtype=F64), solver=solver, tol=1e-10, max_iter=500, compile=mode,
                        **OPTIONS.get(solver, {}))
            runs[mode] = (res, counted.calls if g is counted else None)
        out[solver] = (runs["none"], runs["default"], z_star)
    return out


@pytest.mark.parametrize("solver", ALL)
def test_compiled_solve_equals_eager_and_the_closed_form(pairs, solver):
    (eager, eager_calls), (comp, comp_calls), z_star = pairs[solver]
    assert comp.stats["compile"] == "default"
    assert comp.stats["loop"] == ("graph" if solver in WHOLE else "generic")
    assert eager.nfe == eager_calls and comp.nfe == (eager_calls if solver in WHOLE else comp_calls)
    assert abs(comp.nfe - eager.nfe) <= 1
    assert (comp.sample_nfe - eager.sample_nfe).abs().max() <= 1
    assert bool(comp.converged.all()) and bool(eager.converged.all())
    assert float((comp.z - z_star).abs().max()) <= 1e-8
    assert float((comp.z - eager.z).abs().max()) <= 1e-8
    assert abs(len(comp.trace) - len(eager.trace)) <= 1
    if solver != "newton_krylov":  # one Newton step solves an affine map, easy and hard alike
        easy, hard = comp.sample_nfe[[0, 2]], comp.sample_nfe[[1, 3]]  # converged samples froze
        assert int(easy.max()) < int(hard.min())
    assert torch.allclose(comp.residual, eager.residual, rtol=0.5, atol=1e-12)
    if solver == "broyden":
        assert comp.stats["restarts"] == eager.stats["restarts"] > 0
    if solver == "newton_krylov":  # JVPs and evaluations, per sample too: exactly eager's
        assert comp.nfe == eager.nfe and torch.equal(comp.sample_nfe, eager.sample_nfe)
        assert comp.stats["jvps"] == eager.stats["jvps"] > 0 and comp.trace == pytest.approx(eager.trace, abs=1e-12)
    if solver == "anderson":
        assert eager.nfe > OPTIONS["anderson"]["m"] + 1  # the history ring wrapped around


def test_the_whole_loop_graph_is_cached_on_disk_and_keyed_by_its_body(monkeypatch, tmp_path):
    """A new process (here: dynamo reset) loads the loop from inductor's on-disk cache rather than compiling
    it again; a loop whose body differs only in a constant (the damping) is another entry, not that one."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    f, z_star = affine()
    seen = []
    for damping in (0.5, 0.8, 0.8):
        torch._dynamo.reset()  # forget the compiled code, as a new process has none
        before = dict(counters["inductor"])
        res = solve(f, torch.zeros(4, 8, dtype=F64), solver="fixed_point", tol=1e-10, max_iter=500,
                    compile="default", damping=damping)
        eager = solve(f, torch.zeros(4, 8, dtype=F64), solver="fixed_point", tol=1e-10, max_iter=500,
                      damping=damping)
        assert res.stats["loop"] == "graph" and res.nfe == eager.nfe
        assert float((res.z - z_star).abs().max()) <= 1e-8
        seen.append({k: counters["inductor"][k] - before.get(k, 0)
                     for k in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass")})
    assert seen == [{"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 1, "fxgraph_cache_bypass": 0},
                    {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 1, "fxgraph_cache_bypass": 0},
                    {"fxgraph_cache_hit": 1, "fxgraph_cache_miss": 0, "fxgraph_cache_bypass": 0}], seen
    torch._dynamo.reset()


@pytest.mark.parametrize("solver", ["fixed_point"])  # the others share the mechanism (~10-35 s each to compile)
def test_a_smaller_last_batch_compiles_once_not_every_epoch(solver):
    seen = []
    for epoch in range(3):
        for batch in (4, 3):
            f, z_star = affine(batch)
            res = solve(f, torch.zeros(batch, 8, dtype=F64), solver=solver, tol=1e-10, max_iter=200,
                        compile="default")
            assert float((res.z - z_star).abs().max()) <= 1e-8
            seen.append(res.stats["graphs_compiled"])
    assert seen[2:] == [0, 0, 0, 0], seen  # epochs 2 and 3: every graph reused


def test_compile_modes_are_validated_everywhere():
    with pytest.raises(ValueError, match="unknown compile mode 'fast'.*default, reduce-overhead, max-autotune"):
        solve(torch.cos, torch.zeros(1, 1), compile="fast")
    with pytest.raises(ValueError, match="compile"):
        DEQConfig(compile="fast")
    assert DEQConfig().forward.compile == "none"
    cfg = DEQConfig(compile="reduce-overhead")
    assert cfg.forward.compile == "reduce-overhead" and cfg.adjoint.compile == "none"  # an autograd VJP: eager


def test_reduce_overhead_runs_on_cpu_like_eager():
    """CUDA graphs need CUDA; on CPU the mode must still give eager's answer (it compiles without them)."""
    f, z_star = affine()
    res = solve(f, torch.zeros(4, 8, dtype=F64), solver="fixed_point", tol=1e-10, max_iter=200,
                compile="reduce-overhead")
    eager = solve(f, torch.zeros(4, 8, dtype=F64), solver="fixed_point", tol=1e-10, max_iter=200)
    assert res.nfe == eager.nfe and float((res.z - z_star).abs().max()) <= 1e-8


# broyden's compiled solve is checked above and its adjoint runs as anderson's does (f outside the graph);
# left out here for time (~25 s of compiling)
@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "newton_krylov", "continuous"])
def test_compiled_deq_gradient_matches_closed_form(solver):
    cell = LinearCell(dim=8)
    deq = DEQ(cell, solver=solver, tol=1e-10, max_iter=300, compile="default")
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 8, dtype=F64, generator=g), torch.randn(4, 8, dtype=F64, generator=g)
    z, info = deq(x)
    (z * w).sum().backward()
    eye = torch.eye(8, dtype=F64)
    with torch.no_grad():
        z_star = torch.linalg.solve(eye - cell.A, (x @ cell.B.T).T).T
        adj = torch.linalg.solve((eye - cell.A).T, w.T)
    gA, gB = adj @ z_star, adj @ x
    assert float((z - z_star).abs().max()) <= 1e-8
    assert float((cell.A.grad - gA).norm() / gA.norm()) <= 1e-6
    assert float((cell.B.grad - gB).norm() / gB.norm()) <= 1e-6
    assert info.nfe_bwd > 0 and info.backward.converged_frac == 1.0


def test_compiled_deq_passes_gradcheck():
    torch.manual_seed(0)
    cell = nn.Sequential(nn.Linear(5, 5)).to(F64)
    with torch.no_grad():
        cell[0].weight.mul_(0.5 / torch.linalg.matrix_norm(cell[0].weight, ord=2))

    class Tanh(nn.Module):
        def forward(self, z, x):
            return torch.tanh(cell(z) + x)

    deq = DEQ(Tanh(), solver="fixed_point", tol=1e-12, max_iter=200, compile="default")
    x = torch.randn(2, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: deq(x)[0], (x,), eps=1e-6, atol=1e-6, rtol=1e-4)
    before = graphs_compiled()  # forward and adjoint graphs are built; another input reuses them all
    x2 = torch.randn(2, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: deq(x)[0], (x2,), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert graphs_compiled() == before


def test_kept_iterates_and_the_shine_estimate_equal_eager():
    """`keep=` (the correction loss) through the fused loop, `estimate=` (SHINE) through the eager loop, f compiled."""
    f, _ = affine()
    z0 = torch.zeros(4, 8, dtype=F64)
    for kwargs in ({"keep": (2, 4)}, {"estimate": True}):
        eager = solve(f, z0, "anderson", tol=1e-10, max_iter=500, m=3, **kwargs)
        comp = solve(f, z0, "anderson", tol=1e-10, max_iter=500, m=3, compile="default", **kwargs)
        assert comp.nfe == eager.nfe and len(comp.iterates) == len(eager.iterates) == (2 if "keep" in kwargs else 0)
        for a, b in zip(comp.iterates, eager.iterates):
            assert float((a - b).abs().max()) <= 1e-10
        if "estimate" in kwargs:
            v = torch.randn(4, 8, dtype=F64, generator=torch.Generator().manual_seed(5))
            assert torch.allclose(comp.estimate.adjoint(v), eager.estimate.adjoint(v), atol=1e-10)


def tanh_map(shape, dtype, seed=3):
    """A nonlinear map on samples of any shape: f(z) = tanh(A vec(z) + x), ||A||_2 = 0.9."""
    g = torch.Generator().manual_seed(seed)
    d = int(torch.tensor(shape[1:]).prod())
    A = torch.randn(d, d, generator=g, dtype=F64)
    A = (0.9 * A / torch.linalg.matrix_norm(A, ord=2)).to(dtype)
    x = torch.randn(shape, generator=g, dtype=F64).to(dtype)
    return lambda z: torch.tanh((z.reshape(z.shape[0], -1) @ A.T).view(z.shape) + x)


@pytest.mark.parametrize("solver, stop_mode, options", [
    ("anderson", "abs", {"m": 3, "beta": 0.8}),
    ("fixed_point", "batch", {"damping": 0.7}),
])
def test_whole_loop_graph_equals_eager_in_float32_other_stop_modes_and_shapes(solver, stop_mode, options):
    """The graph's stop test, freezing and counts are Tracker's in the solve's dtype: float32 samples of
    shape [2, 4], the abs and batch tests and the solvers' options give eager's NFE, per-sample NFE,
    convergence and trace (the same arithmetic; only the reduction order of a norm may differ)."""
    f = tanh_map((5, 2, 4), torch.float32)
    z0 = torch.zeros(5, 2, 4)
    eager = solve(f, z0, solver, tol=1e-5, max_iter=60, stop_mode=stop_mode, **options)
    comp = solve(f, z0, solver, tol=1e-5, max_iter=60, stop_mode=stop_mode, compile="default", **options)
    assert comp.stats["loop"] == "graph"
    assert bool(eager.converged.all()) and 5 < eager.nfe < 60
    assert comp.nfe == eager.nfe and torch.equal(comp.sample_nfe, eager.sample_nfe)
    assert torch.equal(comp.converged, eager.converged)
    assert comp.z.shape == z0.shape and float((comp.z - eager.z).abs().max()) <= 1e-6
    # residuals of float32 iterates near their rounding floor (~4e-6 here) differ by the products' summation
    # order (measured: up to 0.8%); the NFE and freezing above are exact
    assert comp.residual.dtype == torch.float32 and torch.allclose(comp.residual, eager.residual, rtol=2e-2)
    assert len(comp.trace) == len(eager.trace)
    assert all(abs(a - b) <= 2e-2 * b + 1e-7 for a, b in zip(comp.trace + comp.trace_mean,
                                                             eager.trace + eager.trace_mean))
    if stop_mode == "batch":  # one residual for the batch: every sample stops together
        assert len(set(comp.sample_nfe.tolist())) == 1


def test_an_f_the_graph_cannot_hold_falls_back_to_a_step_per_iteration_once_warned():
    """A Python side effect in f (a call counter) cannot run inside a while_loop graph: the solve warns,
    runs the compiled step instead with eager's results, and does not try that f's code again."""
    f, z_star = affine()
    counted = Counted(f)
    with pytest.warns(RuntimeWarning, match="could not be compiled whole"):
        res = solve(counted, torch.zeros(4, 8, dtype=F64), "fixed_point", tol=1e-10, max_iter=200, compile="default")
    assert res.stats["loop"] == "step" and res.nfe == counted.calls
    assert float((res.z - z_star).abs().max()) <= 1e-8
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = solve(Counted(f), torch.zeros(4, 8, dtype=F64), "fixed_point", tol=1e-10, max_iter=200,
                      compile="default")
    assert again.stats["loop"] == "step" and again.nfe == res.nfe


class _NoisyCell(LinearCell):
    """LinearCell with a Python side effect in forward: no while_loop graph can hold it."""

    calls = 0

    def forward(self, z, x):
        type(self).calls += 1
        return super().forward(z, x)


def test_one_deqs_untraceable_cell_leaves_another_deqs_solve_whole(monkeypatch):
    """The fallback is remembered per cell: every DEQ hands its solve the same lambda, and keying on that
    lambda's code sent every later DEQ of the process to the step once one cell could not be traced."""
    import deqlab.layers.deq as deq_module

    loops = []

    def spy(*args, **kwargs):
        res = solve(*args, **kwargs)
        loops.append(res.stats["loop"])
        return res

    monkeypatch.setattr(deq_module, "solve", spy)
    x = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    for cell in (_NoisyCell(), LinearCell()):
        deq = DEQ(cell, DEQConfig(solver="fixed_point", tol=1e-10, max_iter=200, compile="default"))
        with torch.no_grad(), pytest.warns(RuntimeWarning) if isinstance(cell, _NoisyCell) else _nothing():
            z, _ = deq(x)
        z_star = torch.linalg.solve(torch.eye(6, dtype=F64) - cell.A, (x @ cell.B.T).T).T
        assert float((z - z_star).abs().max()) <= 1e-8
    assert loops == ["step", "graph"], loops


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_broyden_with_a_large_history_runs_the_compiled_step(monkeypatch):
    """Past BROYDEN_GRAPH_MAX_ELEMENTS per history buffer the whole-loop graph is slower than a step
    (its buffers are copied every iteration): the step runs, with eager's results."""
    from deqlab.solvers import fused
    from deqlab.solvers.options import solve_spec

    spec = solve_spec("broyden", 1e-6, 50, "rel", {}, "default")  # memory 30
    assert fused.applies(spec, torch.sin, torch.zeros(32, 128), frozenset(), {})
    assert not fused.applies(spec, torch.sin, torch.zeros(64, 128), frozenset(), {})
    monkeypatch.setattr(fused, "BROYDEN_GRAPH_MAX_ELEMENTS", 4 * 8 * 4 - 1)  # the affine problem's 4 x 8 x 4
    f, z_star = affine()
    res = solve(f, torch.zeros(4, 8, dtype=F64), "broyden", tol=1e-10, max_iter=500, memory=4, compile="default")
    eager = solve(f, torch.zeros(4, 8, dtype=F64), "broyden", tol=1e-10, max_iter=500, memory=4)
    assert res.stats["loop"] == "step" and res.nfe == eager.nfe and res.stats["restarts"] == eager.stats["restarts"]
    assert float((res.z - z_star).abs().max()) <= 1e-8


def test_a_compiled_deq_builds_one_forward_graph_for_training_last_batch_and_evaluation():
    """A DEQ marks the batch dimension of its solve dynamic and hands it x detached: the first training
    batch's graph also serves a smaller last batch and evaluation (no grad), with eager's fixed point."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 5).to(F64)
    with torch.no_grad():
        lin.weight.mul_(0.6 / torch.linalg.matrix_norm(lin.weight, ord=2))

    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, z, x):
            return torch.tanh(self.lin(z) + x)

    cell = Cell()
    comp = DEQ(cell, solver="anderson", tol=1e-10, max_iter=100, compile="default")
    eager = DEQ(cell, solver="anderson", tol=1e-10, max_iter=100)
    built = []
    for batch, grad in ((6, True), (6, True), (4, True), (7, False), (6, True)):
        x = torch.randn(batch, 5, dtype=F64, requires_grad=True)
        before = graphs_compiled()
        with torch.set_grad_enabled(grad):
            z, info = comp(x)
        built.append(graphs_compiled() - before)
        with torch.set_grad_enabled(grad):
            z_eager, info_eager = eager(x)
        assert info.nfe_fwd == info_eager.nfe_fwd and float((z - z_eager).abs().max()) <= 1e-9
        if grad:
            z.sum().backward()
    assert built == [1, 0, 0, 0, 0], built  # one graph: the last batch and evaluation reuse it


def test_a_sample_that_blows_up_fails_in_the_graph_as_in_eager():
    """A sample whose iterates overflow to inf and nan leaves the active set at its first non-finite
    residual, keeps its best finite iterate, and does not stop the others, exactly as eager's Tracker."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 8, 8, dtype=F64, generator=g) * 0.1
    A[2] *= 40  # sample 2: exp of a growing map, inf within a few iterations
    b = torch.randn(6, 8, dtype=F64, generator=g)
    f = lambda z: torch.exp((A @ z.unsqueeze(2)).squeeze(2)) + b  # noqa: E731
    z0 = torch.zeros(6, 8, dtype=F64)
    eager = solve(f, z0, "anderson", tol=1e-10, max_iter=60)
    comp = solve(f, z0, "anderson", tol=1e-10, max_iter=60, compile="default")
    assert comp.stats["loop"] == "graph"
    assert comp.converged.tolist() == eager.converged.tolist() == [True, True, False, True, True, True]
    assert comp.nfe == eager.nfe and torch.equal(comp.sample_nfe, eager.sample_nfe)
    assert int(comp.sample_nfe[2]) < int(comp.sample_nfe.max())  # the blown-up sample stopped early
    assert bool(torch.isfinite(comp.z).all()) and torch.allclose(comp.z, eager.z, atol=1e-12)
    assert float(comp.residual[2]) == pytest.approx(float(eager.residual[2]), rel=1e-12)


def varied_tanh_map(shape, dtype, seed=4):
    """f(z) = tanh(s_i A vec(z) + x_i), ||A||_2 = 0.9, s_i from 0.1 to 1 across the batch: samples that
    need different numbers of Newton steps. F.linear, not `A.T`: see the next test."""
    g = torch.Generator().manual_seed(seed)
    d = int(torch.tensor(shape[1:]).prod())
    A = torch.randn(d, d, generator=g, dtype=F64)
    A = (0.9 * A / torch.linalg.matrix_norm(A, ord=2)).to(dtype)
    s = torch.linspace(0.1, 1.0, shape[0], dtype=F64).to(dtype).view(-1, *([1] * (len(shape) - 1)))
    x = torch.randn(shape, generator=g, dtype=F64).to(dtype)
    return lambda z: torch.tanh(s * torch.nn.functional.linear(z.reshape(z.shape[0], -1), A).view(z.shape) + x)


@pytest.mark.parametrize("dtype, shape, tol, stop_mode", [
    (F64, (6, 8), 1e-11, "rel"),
    (torch.float32, (5, 2, 4), 1e-5, "abs"),
])
def test_newton_krylov_graph_equals_eager(dtype, shape, tol, stop_mode):
    """Newton-Krylov as one graph (nested Newton, GMRES-cycle and Arnoldi loops) against eager on a map whose
    samples converge at different Newton steps, with a small restart so that GMRES restarts and exits cycles
    early: the same Newton steps, JVPs (each counted for the samples active at it), per-sample NFE,
    convergence and trace. The graph judges each product's least-squares residual by Givens rotations where
    eager solves the normal equations: on these problems the two agree far from the inner tolerance."""
    f = varied_tanh_map(shape, dtype)
    z0 = torch.zeros(shape, dtype=dtype)
    opts = dict(restart=3, max_restarts=2, inner_tol=1e-4)
    eager = solve(f, z0, "newton_krylov", tol=tol, max_iter=30, stop_mode=stop_mode, **opts)
    comp = solve(f, z0, "newton_krylov", tol=tol, max_iter=30, stop_mode=stop_mode, compile="default", **opts)
    assert comp.stats["loop"] == "graph"
    assert bool(eager.converged.all()) and len(set(eager.sample_nfe.tolist())) > 1  # samples froze apart
    steps = len(eager.trace) - 1
    assert eager.stats["jvps"] > opts["restart"] * steps  # some Newton step ran a second GMRES cycle
    assert comp.nfe == eager.nfe and comp.stats["jvps"] == eager.stats["jvps"]
    assert torch.equal(comp.sample_nfe, eager.sample_nfe) and torch.equal(comp.converged, eager.converged)
    assert len(comp.trace) == len(eager.trace)
    assert comp.z.shape == z0.shape and comp.z.dtype == dtype
    close = 1e-9 if dtype == F64 else 2e-5
    assert float((comp.z - eager.z).abs().max()) <= close
    assert float((f(comp.z) - comp.z).abs().max()) <= 10 * tol
    assert comp.trace[:-1] == pytest.approx(eager.trace[:-1], rel=1e-3)  # before the rounding floor


def test_newton_krylov_with_an_attribute_of_a_closed_over_tensor_falls_back_once_warned():
    """torch 2.13's dynamo cannot trace torch.func.jvp inside a loop body when f reads an attribute of a
    tensor it closes over (`A.T`, as tanh_map does): the solve warns and runs the eager loop with f and its
    JVPs compiled, with eager's results."""
    f = tanh_map((4, 8), F64, seed=5)
    z0 = torch.zeros(4, 8, dtype=F64)
    with pytest.warns(RuntimeWarning, match="could not be compiled whole"):
        comp = solve(f, z0, "newton_krylov", tol=1e-10, max_iter=30, compile="default")
    eager = solve(f, z0, "newton_krylov", tol=1e-10, max_iter=30)
    assert comp.stats["loop"] == "generic" and comp.nfe == eager.nfe and bool(comp.converged.all())
    assert float((comp.z - eager.z).abs().max()) <= 1e-10


def test_compiled_newton_krylov_deq_runs_one_graph_and_gets_the_closed_form_gradient(monkeypatch):
    """A DEQ with solver newton_krylov and compile="default": its forward solve is one graph (F.linear
    traces where LinearCell's `A.T` falls back), with eager's NFE, and the implicit gradient is the
    closed form's. The DEQ leaves the batch static for this solver: a smaller batch compiles its own graph."""
    from deqlab.solvers import fused

    monkeypatch.setattr(fused, "_UNTRACEABLE", set())  # a DEQ's map is one lambda: an earlier fallback sticks
    solved = []
    real = fused.run
    monkeypatch.setattr(fused, "run", lambda *args: solved.append(real(*args)) or solved[-1])

    class Linear(nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.A, self.B = cell.A, cell.B

        def forward(self, z, x):
            return torch.nn.functional.linear(z, self.A) + torch.nn.functional.linear(x, self.B)

    base = LinearCell(dim=8)
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 8, dtype=F64, generator=g), torch.randn(4, 8, dtype=F64, generator=g)
    out = {}
    for mode in ("none", "default"):
        base.zero_grad()
        deq = DEQ(Linear(base), solver="newton_krylov", tol=1e-10, max_iter=50, compile=mode)
        z, info = deq(x)
        (z * w).sum().backward()
        out[mode] = (z.detach(), info.nfe_fwd, base.A.grad.clone(), base.B.grad.clone())
    assert len(solved) == 1 and solved[0] is not None and solved[0].stats.get("jvps", 0) > 0
    eye = torch.eye(8, dtype=F64)
    with torch.no_grad():
        z_star = torch.linalg.solve(eye - base.A, (x @ base.B.T).T).T
        adj = torch.linalg.solve((eye - base.A).T, w.T)
    gA, gB = adj @ z_star, adj @ x
    z, nfe, grad_a, grad_b = out["default"]
    assert nfe == out["none"][1]
    assert float((z - z_star).abs().max()) <= 1e-8 and float((z - out["none"][0]).abs().max()) <= 1e-10
    assert float((grad_a - gA).norm() / gA.norm()) <= 1e-6 and float((grad_b - gB).norm() / gB.norm()) <= 1e-6
    assert torch.allclose(grad_a, out["none"][2], rtol=1e-9, atol=1e-12)
