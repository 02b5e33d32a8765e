"""Fixed-point solvers behind one verb: `solve(f, z0, solver=..., tol=..., max_iter=..., **options)`.

`deqlab.solvers.options` (the option models, `solve_spec`) imports no torch;
the rest loads on first use, so validating a configuration stays torch-free.
"""

from .._lazy import lazy_exports
from .options import (DEFAULT_MAX_ITER, DEFAULT_TOL, ODE_METHODS, SOLVER_OPTIONS, STOP_MODES, SolverOptions,
                      SolveSpec, solve_spec, solver_options)

__getattr__ = lazy_exports(__name__, {
    "solve": "registry", "register_solver": "registry", "SOLVERS": "registry",
    "SolveResult": "base", "residual_norms": "base", "autograd_jvp": "newton_krylov",
})

__all__ = [
    "solve", "solve_spec", "solver_options", "register_solver", "SOLVERS", "SOLVER_OPTIONS", "SolveResult",
    "SolveSpec", "SolverOptions", "residual_norms", "autograd_jvp", "ODE_METHODS", "STOP_MODES",
    "DEFAULT_TOL", "DEFAULT_MAX_ITER",
]
