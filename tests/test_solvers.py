"""Every registered solver against closed forms, with NFE counted independently."""

import pytest
import torch

from deqlab.solvers import SOLVERS, residual_norms, solve
from closed_forms import Counted

ALL = sorted(SOLVERS)
DTYPES = [torch.float32, torch.float64]


def linear_problem(dtype, batch=4, dim=16, norm=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64)
    A = norm * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]
    b = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - A, b)
    A, b = A.to(dtype), b.to(dtype)
    return (lambda z: (A @ z.unsqueeze(2)).squeeze(2) + b), z_star


def tanh_problem(dtype, batch=8, dim=32, norm=0.8, seed=1):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    W = norm * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z = torch.zeros(batch, dim, dtype=torch.float64)
    for _ in range(500):  # float64 reference: contraction 0.8 -> 1e-48 after 500 steps
        z = torch.tanh(z @ W.T + x)
    W, x = W.to(dtype), x.to(dtype)
    return (lambda z: torch.tanh(z @ W.T + x)), z


def rel_err(z, ref):
    return float(((z.double() - ref).norm(dim=1) / ref.norm(dim=1)).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ALL)
def test_linear_contraction_matches_linalg_solve(solver, dtype):
    f, z_star = linear_problem(dtype)
    res = solve(f, torch.zeros(4, 16, dtype=dtype), solver=solver, tol=1e-6, max_iter=300)
    assert res.z.dtype == dtype and res.residual.dtype == dtype
    assert bool(res.converged.all())
    assert rel_err(res.z, z_star) <= 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ALL)
def test_tanh_map_matches_float64_reference(solver, dtype):
    f, z_ref = tanh_problem(dtype)
    res = solve(f, torch.zeros(8, 32, dtype=dtype), solver=solver, tol=1e-6, max_iter=300)
    assert res.z.dtype == dtype
    assert bool(res.converged.all())
    assert rel_err(res.z, z_ref) <= 1e-4
    # the reported residual is the residual of the returned z, recomputed here
    assert torch.allclose(res.residual, residual_norms(res.z, f(res.z), "rel"), rtol=1e-3, atol=1e-7)


WITH_OPTIONS = [(s, {}) for s in ALL] + [
    ("broyden", {"line_search": True}),
    ("newton_krylov", {"line_search": True}),
    ("fixed_point", {"damping": 0.7}),
    ("continuous", {"method": "dopri8"}),  # not FSAL: the step-end check is an extra, counted evaluation
]


@pytest.mark.parametrize("solver,options", WITH_OPTIONS, ids=[f"{s}-{o}" for s, o in WITH_OPTIONS])
def test_nfe_equals_counted_calls(solver, options):
    f, _ = tanh_problem(torch.float64, norm=0.95)
    counted = Counted(f)
    res = solve(counted, torch.zeros(8, 32, dtype=torch.float64), solver=solver, tol=1e-8, max_iter=200, **options)
    assert res.nfe == counted.calls
    assert int(res.sample_nfe.max()) <= res.nfe
    assert len(res.trace) >= 1


@pytest.mark.parametrize("solver", ALL)
def test_newton_krylov_counts_jvps_and_nfe_is_bounded_for_plain_methods(solver):
    f, _ = linear_problem(torch.float64, norm=0.9)
    counted = Counted(f)
    res = solve(counted, torch.zeros(4, 16, dtype=torch.float64), solver=solver, tol=1e-12, max_iter=7)
    assert res.nfe == counted.calls
    if solver in ("fixed_point", "anderson"):
        assert res.nfe <= 7
    if solver == "newton_krylov":
        assert res.stats["jvps"] > 0 and res.nfe >= res.stats["jvps"]
    if solver == "continuous":
        assert len(res.trace) <= 7


def mixed_problem(dim=24):
    """Rows 0, 2 contract by 0.1, rows 1, 3 by 0.97: same map family, very different difficulty."""
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    c = torch.tensor([0.1, 0.97, 0.1, 0.97], dtype=torch.float64).view(4, 1)
    x = torch.randn(4, dim, generator=g, dtype=torch.float64)
    return lambda z: c * torch.tanh(z @ Q.T) + x


@pytest.mark.parametrize("solver", ALL)
def test_converged_samples_freeze(solver):
    f = mixed_problem()
    counted = Counted(f)
    res = solve(counted, torch.zeros(4, 24, dtype=torch.float64), solver=solver, tol=1e-8, max_iter=500)
    assert bool(res.converged.all())
    easy, hard = res.sample_nfe[[0, 2]], res.sample_nfe[[1, 3]]
    assert int(easy.max()) < int(hard.min()), res.sample_nfe.tolist()
    assert int(hard.max()) == res.nfe == counted.calls


@pytest.mark.parametrize("solver", ALL)
def test_map_without_fixed_point_abs(solver):
    res = solve(lambda z: z + 1, torch.zeros(3, 2), solver=solver, tol=1e-4, max_iter=40, stop_mode="abs")
    assert not bool(res.converged.any())
    assert bool(torch.isfinite(res.z).all()) and bool(torch.isfinite(res.residual).all())


@pytest.mark.parametrize("solver", ALL)
def test_map_without_fixed_point_rel(solver):
    # f(z) = z + 1 + |z| has no fixed point and its relative residual never drops below 1/2
    res = solve(lambda z: z + 1 + z.abs(), torch.zeros(3, 2), solver=solver, tol=1e-4, max_iter=40)
    assert not bool(res.converged.any())
    assert bool(torch.isfinite(res.z).all())
    assert float(res.residual.min()) >= 0.49


@pytest.mark.parametrize("solver", ALL)
def test_nan_from_the_start_returns_start_point(solver):
    z0 = torch.zeros(3, 2)
    res = solve(lambda z: torch.log(z - 1), z0, solver=solver, tol=1e-4, max_iter=20)
    assert not bool(res.converged.any())
    assert torch.equal(res.z, z0)
    assert bool(torch.isinf(res.residual).all())  # honest: no finite iterate, never NaN


@pytest.mark.parametrize("solver", ALL)
def test_blow_up_returns_best_finite_iterate(solver):
    f = lambda z: z * z + 1  # noqa: E731  (no real fixed point; iterates overflow to inf, then NaN)
    res = solve(f, torch.zeros(3, 2), solver=solver, tol=1e-4, max_iter=60)
    assert not bool(res.converged.any())
    assert bool(torch.isfinite(res.z).all())
    assert not bool(torch.isnan(res.residual).any())
    # the returned z is the best one seen: its residual is what was reported
    assert torch.allclose(res.residual, residual_norms(res.z, f(res.z), "rel"))


def test_unknown_solver_lists_valid_names():
    with pytest.raises(ValueError, match="valid solvers: .*anderson.*broyden.*continuous"):
        solve(torch.cos, torch.zeros(1, 1), solver="andersen")


@pytest.mark.parametrize(
    "solver,options,match",
    [
        ("anderson", {"memory": 5}, "unknown option.*'memory'.*valid options: m, beta, lam"),
        ("broyden", {"m": 5}, "unknown option.*'m'.*valid options: memory"),
        ("anderson", {"m": 0}, "invalid option.*m"),
        ("continuous", {"method": "rk45"}, "invalid option.*method"),
        ("fixed_point", {"damping": 1.5}, "invalid option.*damping"),
    ],
)
def test_bad_options_are_errors(solver, options, match):
    with pytest.raises(ValueError, match=match):
        solve(torch.cos, torch.zeros(1, 1), solver=solver, **options)


@pytest.mark.parametrize("kwargs", [{"tol": 0}, {"max_iter": 0}, {"stop_mode": "relative"}, {"jvp": lambda z, v: v}])
def test_bad_arguments_are_errors(kwargs):
    with pytest.raises(ValueError):
        solve(torch.cos, torch.zeros(1, 1), solver="anderson", **kwargs)


def test_stop_modes_differ_by_scale():
    # fixed point ~1e3: the abs test needs far more accuracy than the rel test
    f = lambda z: 0.5 * z + 500.0  # noqa: E731
    z0 = torch.zeros(1, 1, dtype=torch.float64)
    rel = solve(f, z0, solver="fixed_point", tol=1e-4, max_iter=200, stop_mode="rel")
    abs_ = solve(f, z0, solver="fixed_point", tol=1e-4, max_iter=200, stop_mode="abs")
    assert rel.converged.all() and abs_.converged.all()
    assert abs_.nfe > rel.nfe
    assert abs(float(abs_.z) - 1000.0) <= 2e-4  # |f(z) - z| = |z - 1000| / 2


def test_broyden_memory_is_bounded_whatever_max_iter():
    f, _ = tanh_problem(torch.float64, norm=0.99)
    stored, restarts = [], []
    for max_iter in (10, 100, 1000):
        res = solve(f, torch.zeros(8, 32, dtype=torch.float64), solver="broyden", tol=1e-30, max_iter=max_iter, memory=8)
        stored.append(res.stats["stored_vectors"])
        restarts.append(res.stats["restarts"])
    assert stored == [16, 16, 16]  # measured from the allocated buffers
    assert restarts[0] < restarts[1] < restarts[2]  # the history restarted instead of growing


def test_anderson_survives_singular_history():
    # a constant map makes every residual difference identical: the Gram matrix is singular
    f = lambda z: torch.ones_like(z)  # noqa: E731
    res = solve(f, torch.zeros(2, 5), solver="anderson", tol=1e-6, max_iter=10, m=4)
    assert bool(res.converged.all()) and torch.allclose(res.z, torch.ones(2, 5))


def test_continuous_reports_ode_steps_and_converges_like_discrete():
    f, z_ref = tanh_problem(torch.float64)
    res = solve(f, torch.zeros(8, 32, dtype=torch.float64), solver="continuous", tol=1e-6, max_iter=300, method="bosh3")
    assert res.converged.all() and rel_err(res.z, z_ref) <= 1e-4
    assert res.stats["ode_method"] == "bosh3" and res.stats["accepted_steps"] == len(res.trace) - 1


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
def test_batch_stop_mode_judges_the_whole_batch_at_once(solver):
    # z -> 0.5 z + c with fixed points 2000 and 2; the small sample starts 200 away. Batch-level, the
    # big sample dominates both Frobenius norms, so the batch stops while the small sample's own
    # relative residual is still far above tol (the published SkipDEQ code's stop test).
    c = torch.tensor([[1000.0], [1.0]], dtype=torch.float64)
    f = lambda z: 0.5 * z + c  # noqa: E731
    z0 = torch.tensor([[0.0], [202.0]], dtype=torch.float64)
    tol = 1e-3
    res = solve(f, z0, solver=solver, tol=tol, max_iter=100, stop_mode="batch")
    assert res.converged.all()
    assert int(res.sample_nfe[0]) == int(res.sample_nfe[1]) == res.nfe
    fz = f(res.z)
    batch = float((fz - res.z).norm() / fz.norm())
    assert batch <= tol
    assert torch.allclose(res.residual, torch.full((2,), batch, dtype=torch.float64), rtol=1e-6)
    if solver == "fixed_point":  # the linear solvers land exactly; plain iteration leaves sample 1 behind
        per_sample = ((fz - res.z).abs() / fz.abs()).squeeze(1)
        assert float(per_sample[1]) > 10 * tol
        rel = solve(f, z0, solver=solver, tol=tol, max_iter=100, stop_mode="rel")
        assert rel.nfe > res.nfe


@pytest.mark.parametrize("stop_mode", ["rel", "abs", "batch"])
def test_host_side_residuals_match_residual_norms_on_image_shaped_states(stop_mode):
    # the tracker judges on the host from per-sample norms; on [B, C, H, W] states and a sample
    # that converges early (frozen) its residuals, trace and per-sample NFE must still be exact
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).view(3, 1, 1, 1)
    b = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    f = Counted(lambda z: scale * z + b)
    z0 = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    res = solve(f, z0, solver="fixed_point", tol=1e-8, max_iter=200, stop_mode=stop_mode)
    assert res.converged.all() and res.nfe == f.calls
    assert torch.allclose(res.residual, residual_norms(res.z, f.f(res.z), stop_mode), rtol=1e-6, atol=1e-300)
    if stop_mode != "batch":  # the contraction-0.1 sample freezes first and stops counting
        assert int(res.sample_nfe[0]) < int(res.sample_nfe[2]) == res.nfe
    assert res.trace[-1] <= 1e-8 and len(res.trace) == res.nfe


def test_kept_iterates_are_the_best_after_the_asked_checks():
    """Fixed-point iteration on z -> 0.5 z + 1 from 0: check i judges z_{i-1} = 2 - 2^(2-i), each better than before."""
    res = solve(lambda z: 0.5 * z + 1, torch.zeros(2, 1, dtype=torch.float64), "fixed_point", tol=1e-30,
                stop_mode="abs", max_iter=10, keep=(1, 4, 10, 11))
    assert [float(t[0]) for t in res.iterates] == [0.0, 2 - 2 ** -2, 2 - 2 ** -8]  # check 11 never happens


@pytest.mark.parametrize("solver", ["fixed_point", "newton_krylov", "continuous"])
def test_an_estimate_only_from_the_solvers_that_keep_one(solver):
    with pytest.raises(ValueError, match="keeps no inverse-Jacobian estimate; these do: anderson, broyden"):
        solve(torch.cos, torch.zeros(1, 1), solver, estimate=True)
    assert solve(torch.cos, torch.zeros(1, 1), "broyden").estimate is None  # not asked: none kept
