"""The solver table and `solve()`, the one verb every caller uses.

>>> import torch
>>> from deqlab.solvers import solve
>>> res = solve(torch.cos, torch.zeros(1, 1, dtype=torch.float64), solver="anderson", tol=1e-10)
>>> round(float(res.z), 6), bool(res.converged.all())
(0.739085, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from .anderson import anderson
from .base import SolveResult, Tracker
from .broyden import broyden
from .continuous import continuous
from .fixed_point import fixed_point
from .newton_krylov import newton_krylov
from .options import (DEFAULT_MAX_ITER, DEFAULT_TOL, SOLVER_OPTIONS, SolverOptions, SolveSpec, estimate_solvers,
                      solve_spec)


@dataclass(frozen=True)
class SolverSpec:
    run: Callable
    options: type[SolverOptions]


SOLVERS: dict[str, SolverSpec] = {}


def register_solver(name: str, run: Callable, options: type[SolverOptions]) -> None:
    """Add a solver (and its options to the torch-free table); a name is registered once (no silent overwrite)."""
    if name in SOLVERS:
        raise ValueError(f"solver {name!r} is already registered")
    SOLVERS[name] = SolverSpec(run, options)
    SOLVER_OPTIONS[name] = options


for _name, _run in (("fixed_point", fixed_point), ("anderson", anderson), ("broyden", broyden),
                    ("newton_krylov", newton_krylov), ("continuous", continuous)):
    SOLVERS[_name] = SolverSpec(_run, SOLVER_OPTIONS[_name])


def solve(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    solver: Union[str, SolveSpec] = "anderson",
    tol: Optional[float] = None,
    max_iter: Optional[int] = None,
    stop_mode: Optional[str] = None,
    jvp: Optional[Callable] = None,
    keep: Sequence[int] = (),
    estimate: bool = False,
    compile: Optional[str] = None,
    **options,
) -> SolveResult:
    """Find z = f(z) for a batch (dim 0 indexes samples); never differentiable, never raises on bad numerics.

    `solver` is a name (then `tol` (default 1e-4), `max_iter` (30), `stop_mode`
    ("rel") and the solver's `**options` are validated here) or a `SolveSpec`
    validated once by `solve_spec` (a DEQ's, every forward pass), used as it is.
    `max_iter` bounds the residual checks (iterations, the start included): for
    fixed_point and anderson that is also the bound on NFE; broyden and
    newton_krylov spend extra counted evaluations on line search and JVPs;
    continuous checks once per accepted ODE step. `jvp(z, v) -> J_f(z) v` may be
    given to newton_krylov for a map whose Jacobian product is cheaper than AD
    (e.g. an affine adjoint map). `keep`: residual-check numbers (1-based) after which
    the best iterate is kept in `SolveResult.iterates` (the fixed-point correction's
    states). `estimate=True` asks a solver whose options say `keeps_estimate` (broyden,
    anderson) for its inverse-Jacobian estimate in `SolveResult.estimate` (SHINE).
    `compile` ("none", "default", "reduce-overhead", "max-autotune") runs each
    iteration as a torch.compile graph, f included (`deqlab.solvers.compiled`):
    same NFE, freezing, best iterate and trace as eager.
    """
    if isinstance(solver, SolveSpec):
        given = [k for k, v in (("tol", tol), ("max_iter", max_iter), ("stop_mode", stop_mode),
                                ("compile", compile)) if v is not None]
        if given or options:
            raise ValueError(f"{', '.join(given + sorted(options))}: set in the SolveSpec, not next to it")
        spec = solver
    else:
        spec = solve_spec(solver, DEFAULT_TOL if tol is None else tol,
                          DEFAULT_MAX_ITER if max_iter is None else max_iter,
                          "rel" if stop_mode is None else stop_mode, options,
                          "none" if compile is None else compile)
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have a non-empty batch dimension, got shape {tuple(z0.shape)}")
    if jvp is not None and spec.solver != "newton_krylov":
        raise ValueError(f"jvp= is only used by newton_krylov, not {spec.solver!r}")
    if estimate and not spec.options.keeps_estimate:
        raise ValueError(f"solver {spec.solver!r} keeps no inverse-Jacobian estimate; these do: "
                         f"{', '.join(estimate_solvers())}")
    with torch.no_grad():
        extra = {"jvp": jvp} if jvp is not None else {}
        if estimate:
            extra["estimate"] = True
        if spec.compile != "none":
            from .compiled import run

            # z0 itself when it is already detached: a DEQ marks its batch dimension dynamic on that tensor
            return run(spec, f, z0.detach() if z0.requires_grad else z0, SOLVERS[spec.solver].run, extra,
                       frozenset(keep))
        tracker = Tracker(f, z0, spec.tol, spec.stop_mode, frozenset(keep))
        return SOLVERS[spec.solver].run(tracker, z0.detach(), spec.max_iter, spec.options, **extra)
