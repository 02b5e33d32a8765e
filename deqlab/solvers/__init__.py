"""Fixed-point solvers behind one verb: `solve(f, z0, solver=..., tol=..., max_iter=..., **options)`.

>>> import torch
>>> from deqlab.solvers import solve
>>> res = solve(torch.cos, torch.zeros(1, 1, dtype=torch.float64), solver="anderson", tol=1e-10)
>>> round(float(res.z), 6), bool(res.converged.all())
(0.739085, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from .anderson import AndersonOptions, anderson
from .base import STOP_MODES, SolveResult, SolverOptions, Tracker, residual_norms, validate_options
from .broyden import BroydenOptions, broyden
from .continuous import ODE_METHODS, ContinuousOptions, continuous
from .fixed_point import FixedPointOptions, fixed_point
from .newton_krylov import NewtonKrylovOptions, autograd_jvp, newton_krylov


@dataclass(frozen=True)
class SolverSpec:
    run: Callable
    options: type[SolverOptions]


SOLVERS: dict[str, SolverSpec] = {}


def register_solver(name: str, run: Callable, options: type[SolverOptions]) -> None:
    """Add a solver; a name is registered once (no silent overwrite)."""
    if name in SOLVERS:
        raise ValueError(f"solver {name!r} is already registered")
    SOLVERS[name] = SolverSpec(run, options)


register_solver("fixed_point", fixed_point, FixedPointOptions)
register_solver("anderson", anderson, AndersonOptions)
register_solver("broyden", broyden, BroydenOptions)
register_solver("newton_krylov", newton_krylov, NewtonKrylovOptions)
register_solver("continuous", continuous, ContinuousOptions)


def solver_options(solver: str, options: Optional[dict] = None) -> SolverOptions:
    """Validate options for a solver; unknown names and keys are errors that list the valid ones."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    return validate_options(SOLVERS[solver].options, options, f"solver {solver!r}")


def solve(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    solver: str = "anderson",
    tol: float = 1e-4,
    max_iter: int = 50,
    stop_mode: str = "rel",
    jvp: Optional[Callable] = None,
    **options,
) -> SolveResult:
    """Find z = f(z) for a batch (dim 0 indexes samples); never differentiable, never raises on bad numerics.

    `max_iter` bounds the residual checks (iterations, the start included): for
    fixed_point and anderson that is also the bound on NFE; broyden and
    newton_krylov spend extra counted evaluations on line search and JVPs;
    continuous checks once per accepted ODE step. `jvp(z, v) -> J_f(z) v` may be
    given to newton_krylov for a map whose Jacobian product is cheaper than AD
    (e.g. an affine adjoint map).
    """
    opts = solver_options(solver, options)
    if stop_mode not in STOP_MODES:
        raise ValueError(f"unknown stop_mode {stop_mode!r}; valid: {', '.join(STOP_MODES)}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have a non-empty batch dimension, got shape {tuple(z0.shape)}")
    if jvp is not None and solver != "newton_krylov":
        raise ValueError(f"jvp= is only used by newton_krylov, not {solver!r}")
    tracker = Tracker(f, z0, tol, stop_mode)
    with torch.no_grad():
        extra = {"jvp": jvp} if jvp is not None else {}
        return SOLVERS[solver].run(tracker, z0.detach(), max_iter, opts, **extra)


__all__ = [
    "solve", "solver_options", "register_solver", "SOLVERS", "SolveResult", "SolverOptions",
    "residual_norms", "autograd_jvp", "ODE_METHODS",
]
