"""Every solver's options, and one solve's settings validated once, without importing torch.

A configuration (`deqlab validate`, a study's probe of its space, a DEQConfig)
checks solver names and options here; the solvers themselves import torch and
receive the validated objects. `solve_spec` is the one place a solve's settings
are judged: a `SolveSpec` handed to `solve()` is used as it is.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_TOL = 1e-4
DEFAULT_MAX_ITER = 30  # the one default of solve(), DEQConfig and every study
StopMode = Literal["rel", "abs", "batch"]
STOP_MODES = get_args(StopMode)
#: torch.compile's modes for a solve's per-iteration step ("none": eager, the default)
CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = get_args(CompileMode)


class SolverOptions(BaseModel):
    """Base of every solver's options: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the solver builds a quasi-Newton inverse Jacobian and returns it on `solve(estimate=True)` (SHINE)
    keeps_estimate: ClassVar[bool] = False


class FixedPointOptions(SolverOptions):
    damping: float = Field(1.0, gt=0.0, le=1.0, description="z <- (1-a) z + a f(z); 1 is undamped")


class AndersonOptions(SolverOptions):
    keeps_estimate: ClassVar[bool] = True
    m: int = Field(5, ge=1, le=50, description="history size (number of stored differences)")
    beta: float = Field(1.0, gt=0.0, le=1.0, description="mixing: 1 takes the extrapolated f, <1 damps")
    lam: float = Field(1e-8, ge=0.0, description="Tikhonov weight relative to the Gram matrix scale")


class BroydenOptions(SolverOptions):
    keeps_estimate: ClassVar[bool] = True
    memory: int = Field(30, ge=1, le=500, description="rank-one updates kept before the history restarts")
    line_search: bool = Field(False, description="backtrack on ||f(z)-z||; each trial is a counted evaluation")
    max_backtracks: int = Field(3, ge=1, le=20, description="halvings tried per step when line_search")


class NewtonKrylovOptions(SolverOptions):
    restart: int = Field(10, ge=1, le=100, description="GMRES Krylov dimension per cycle (JVPs per cycle)")
    max_restarts: int = Field(1, ge=0, le=50, description="extra GMRES cycles when the inner tolerance is not met")
    inner_tol: float = Field(1e-3, gt=0.0, lt=1.0, description="GMRES stops when ||J d + g|| <= inner_tol ||g||")
    line_search: bool = Field(False, description="backtrack on ||f(z)-z||; each trial is a counted evaluation")
    max_backtracks: int = Field(3, ge=1, le=20)


ODEMethod = Literal["dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8"]
ODE_METHODS = get_args(ODEMethod)


class ContinuousOptions(SolverOptions):
    method: ODEMethod = Field(
        "dopri5", description="adaptive torchdiffeq method (dopri5 is the Tsit5-like default)"
    )
    rtol: Optional[float] = Field(None, gt=0.0, description="ODE relative tolerance; default: tol / 4")
    atol: Optional[float] = Field(None, gt=0.0, description="ODE absolute tolerance; default: tol / 4")
    t_max: float = Field(
        1e5, gt=0.0,
        description="give up past this time: without a steady state (dz/dt = 1) adaptive steps grow "
        "tenfold per step and float rounding would soon make f(z) == z",
    )


#: solver name -> its options model; `register_solver` adds to it
SOLVER_OPTIONS: dict[str, type[SolverOptions]] = {
    "fixed_point": FixedPointOptions,
    "anderson": AndersonOptions,
    "broyden": BroydenOptions,
    "newton_krylov": NewtonKrylovOptions,
    "continuous": ContinuousOptions,
}


def estimate_solvers() -> list[str]:
    """The solvers that keep an inverse-Jacobian estimate (the ones SHINE works with)."""
    return [name for name, model in SOLVER_OPTIONS.items() if model.keeps_estimate]


@dataclass(frozen=True)
class SolveSpec:
    """One solve's settings, validated once (by `solve_spec`): what a DEQ hands the solver every pass."""

    solver: str
    tol: float
    max_iter: int
    stop_mode: str
    options: SolverOptions
    compile: str = "none"


def solve_spec(solver: str = "anderson", tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
               stop_mode: str = "rel", options: dict | SolverOptions | None = None,
               compile: str = "none") -> SolveSpec:
    """Validate a solve's settings; unknown names and keys are errors that list the valid ones.

    `options` may already be the solver's options object (kept as it is). `compile`
    is a torch.compile mode for the per-iteration step, or "none" (eager).
    """
    if isinstance(options, SolverOptions):
        if not isinstance(options, _options_model(solver)):
            raise ValueError(f"{type(options).__name__} are not options of solver {solver!r}")
    else:
        options = solver_options(solver, options)
    if stop_mode not in STOP_MODES:
        raise ValueError(f"unknown stop_mode {stop_mode!r}; valid: {', '.join(STOP_MODES)}")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")
    return SolveSpec(solver, tol, max_iter, stop_mode, options, compile)


def solver_options(solver: str, options: Optional[dict] = None) -> SolverOptions:
    """Validate options for a solver; unknown names and keys are errors that list the valid ones."""
    return validate_options(_options_model(solver), options, f"solver {solver!r}")


def _options_model(solver: str) -> type[SolverOptions]:
    if solver not in SOLVER_OPTIONS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVER_OPTIONS)}")
    return SOLVER_OPTIONS[solver]


def validate_options(model: type[BaseModel], options: dict | None, what: str, ignore: tuple = ()) -> BaseModel:
    """Build `model` from `options`; unknown keys and bad values raise ValueError naming the valid keys."""
    options = dict(options or {})
    fields = [k for k in model.model_fields if k not in ignore]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for {what}; valid options: {valid}")
    try:
        return model(**options)
    except ValidationError as exc:
        raise ValueError(f"invalid option for {what}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError, model=None) -> str:
    """One line per pydantic error: `key.path: message`, joined by '; '. With the validated `model`
    (a pydantic class), an unknown key also lists the valid ones and the nearest match."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: " + (_unknown_key(model, e["loc"]) if model is not None
                                                            and e["type"] == "extra_forbidden" else e["msg"])
                     for e in exc.errors())


def _unknown_key(model, loc) -> str:
    for part in loc[:-1]:  # down to the section holding the unknown key
        field = model.model_fields.get(part) if isinstance(part, str) else None
        kinds = (field.annotation, *typing.get_args(field.annotation)) if field is not None else ()
        sub = next((k for k in kinds if isinstance(k, type) and hasattr(k, "model_fields")), None)
        if sub is None:
            return "unknown key"
        model = sub
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    return f"unknown key; valid: {', '.join(valid)}" + (f"; did you mean {close[0]!r}?" if close else "")
