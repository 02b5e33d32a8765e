"""DEQConfig: every setting of a DEQ layer, with its one default, validated once and without torch.

A study's `deq:` section, `TrainConfig.deq`, the zoo models and `DEQ(cell, cfg)`
all hold this object. Validation resolves the settings the layer uses on every
pass into typed values: `forward` (the solve: solver, tol, max_iter, stop mode
and the solver's options object), `backward_options` (the gradient mode's
options) and `adjoint` (the implicit mode's solve, inheriting what it does not
set from the forward one). The layer reads them as they are, never re-validating.
The model is frozen: a changed setting is a new DEQConfig, validated again.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..solvers.options import (DEFAULT_MAX_ITER, DEFAULT_TOL, SOLVER_OPTIONS, CompileMode, SolveSpec, StopMode,
                               estimate_solvers, solve_spec, solver_options, validate_options)

InitMode = Literal["zeros", "skip", "skipreg"]
INIT_MODES = ("zeros", "skip", "skipreg")
REUSE_MODES = ("none", "epoch")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImplicitOptions(_Options):
    mode: Literal["implicit"] = "implicit"
    solver: Optional[str] = Field(None, description="adjoint solver; default: the forward solver")
    tol: Optional[float] = Field(None, gt=0.0, description="default: the forward tol")
    max_iter: Optional[int] = Field(None, ge=1, description="default: the forward max_iter")
    solver_options: dict = Field(default_factory=dict, description="default: the forward options if same solver")


class PhantomOptions(_Options):
    mode: Literal["phantom"] = "phantom"
    steps: int = Field(5, ge=1, le=200)
    damping: float = Field(0.5, gt=0.0, le=1.0)


class UnrolledOptions(_Options):
    mode: Literal["unrolled"] = "unrolled"
    steps: int = Field(5, ge=1, le=200)


class JFBOptions(_Options):
    """Jacobian-free backprop (Fung et al., AAAI 2022): the gradient through one application of f at z*."""

    mode: Literal["jfb"] = "jfb"


class ShineOptions(_Options):
    """SHINE (Ramzi et al., ICLR 2022): the forward quasi-Newton inverse Jacobian applied to the loss gradient."""

    mode: Literal["shine"] = "shine"
    fallback_ratio: Optional[float] = Field(
        1.3, gt=0.0, description="a sample whose estimate ||-H^T v|| exceeds this times ||v|| takes v instead "
        "(JFB), as the published SHINE code does; null: never")
    no_estimate: Literal["error", "implicit"] = Field(
        "error", description="a forward solver that keeps no estimate: refused in validation (error), or the "
        "implicit adjoint solve instead (implicit, your explicit choice)")


BackwardOptions = Union[ImplicitOptions, PhantomOptions, UnrolledOptions, JFBOptions, ShineOptions]
BACKWARD_MODES: dict[str, type[BaseModel]] = {
    "implicit": ImplicitOptions,
    "phantom": PhantomOptions,
    "unrolled": UnrolledOptions,
    "jfb": JFBOptions,
    "shine": ShineOptions,
}


class CorrectionOptions(_Options):
    """The fixed-point correction loss (Bai et al., CVPR 2022, DEQ-Flow): the task loss on `steps` intermediate
    iterates of the forward solve, evenly spaced over max_iter, each through one differentiated application of
    f, the j-th of n = steps + 1 states (z* last, weight 1) weighted `weight * gamma^(n - j)`."""

    weight: float = Field(1.0, gt=0.0, description="scales every correction term; 1 is the paper's loss")
    steps: int = Field(ge=0, le=100, description="intermediate iterates the loss is applied to (0: none, so a "
                                                 "study may search deq.correction.steps over 0 and k)")
    gamma: float = Field(0.8, gt=0.0, le=1.0, description="decay towards the start of the solve (0.8: the paper's)")


def correction_checks(steps: int, max_iter: int) -> list[int]:
    """The residual checks (1-based) whose best iterate the correction uses: `steps` of n = steps + 1 states
    evenly spaced over max_iter, the last being the solve's end (TorchDEQ's `n_states` indexing)."""
    n = steps + 1
    delta = max_iter // n
    at = [(j + 1) * delta for j in range(n)] if max_iter % n == 0 else [max_iter - (n - j - 1) * delta for j in range(n)]
    return at[:-1]


def backward_options(mode: str, options: Optional[dict] = None) -> BackwardOptions:
    """Validate a backward mode and its options; unknown names/keys list the valid ones."""
    if mode not in BACKWARD_MODES:
        raise ValueError(f"unknown backward mode {mode!r}; valid modes: {', '.join(BACKWARD_MODES)}")
    options = {k: v for k, v in (options or {}).items() if k != "mode"}
    opts = validate_options(BACKWARD_MODES[mode], options, f"backward {mode!r}", ignore=("mode",))
    if isinstance(opts, ImplicitOptions) and opts.solver is not None:
        if opts.solver not in SOLVER_OPTIONS:
            raise ValueError(f"unknown adjoint solver {opts.solver!r}; valid solvers: {', '.join(SOLVER_OPTIONS)}")
        solver_options(opts.solver, opts.solver_options)
    return opts


class DEQConfig(BaseModel):
    """What a DEQ layer does: init mode, forward solve, gradient mode, regularisers. Unknown keys are errors.

    init: "zeros" (DEQ), "skip" (SkipDEQ: a skip network predicts z0), "skipreg"
    (SkipRegDEQ: z0 = f(0, x)). Skip modes add `skip_weight * d(z0, z*)` to the
    loss, d the mean squared (`skip_norm="mse"`) or absolute (`"l1"`, the
    published code's) difference, differentiated through z0 only
    (`skip_grad="z0"`) or through z* as well (`"both"`). `jac_weight > 0` adds
    the Hutchinson Jacobian penalty with `jac_probes` probes. `correction` adds
    the fixed-point correction loss on intermediate iterates (`CorrectionOptions`).
    `backward: shine` needs a solver that keeps an inverse-Jacobian estimate
    (broyden, anderson) unless `backward_options.no_estimate` is "implicit".
    `compile` runs the forward solve as torch.compile graphs (same results as eager): the whole loop as
    one graph where the solver and f allow (deqlab.solvers.fused), else a compiled step per iteration.
    The implicit adjoint solve stays eager: its map is an autograd VJP on the forward pass's graph, which
    no compiled graph can hold, and a compiled step around it measured slower than eager (docs/benchmarks.md).

    reuse: "none", or "epoch" (fixed-point reuse: the training loop starts each training sample's solve
    from the z* it reached in its previous epoch; the init's guess the first time). `reuse_eval: true`
    does the same for the test samples (off by default, so test NFE stays comparable across trials).
    The layer itself only takes a start (`DEQ.start_from`); the buffer is the run's (docs/design.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    init: InitMode = "zeros"
    solver: str = "anderson"
    solver_options: dict = Field(default_factory=dict)
    tol: float = Field(DEFAULT_TOL, gt=0)
    max_iter: int = Field(DEFAULT_MAX_ITER, ge=1)
    stop_mode: StopMode = "rel"
    compile: CompileMode = Field("none", description="torch.compile mode of the forward solve (its whole "
                                                    "loop as one graph where possible; deqlab.solvers.compiled); "
                                                    "none: eager. The adjoint solve stays eager")
    backward: str = "implicit"
    backward_options: dict = Field(default_factory=dict)
    skip_weight: float = Field(0.01, ge=0)
    skip_norm: Literal["mse", "l1"] = Field("mse", description="skip term: mean squared or mean absolute z0 - z*")
    skip_grad: Literal["z0", "both"] = Field("z0", description="skip term differentiated through z0 only "
                                                               "(z* detached) or through z* as well")
    jac_weight: float = Field(0.0, ge=0)
    jac_probes: int = Field(1, ge=1)
    correction: Optional[CorrectionOptions] = Field(None, description="the fixed-point correction loss; "
                                                                        "null: none")
    reuse: Literal["none", "epoch"] = Field("none", description="start each training solve from the sample's "
                                                                "z* of the previous epoch ('epoch') or not")
    reuse_eval: bool = Field(False, description="with reuse: epoch, test samples also start from their previous z*")

    _forward: SolveSpec = PrivateAttr()
    _backward: BackwardOptions = PrivateAttr()
    _adjoint: Optional[SolveSpec] = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self):
        """Validate the solver and gradient settings once, into the typed values the layer uses."""
        if self.reuse_eval and self.reuse == "none":
            raise ValueError("deq.reuse_eval: true needs deq.reuse: epoch (evaluation reuses only what training "
                             "does)")
        self._forward = solve_spec(self.solver, self.tol, self.max_iter, self.stop_mode, self.solver_options,
                                   self.compile)
        self._backward = backward_options(self.backward, self.backward_options)
        b = self._backward
        if isinstance(b, ShineOptions) and not SOLVER_OPTIONS[self.solver].keeps_estimate:
            if b.no_estimate == "error":
                raise ValueError(
                    f"backward 'shine' reuses the forward solver's inverse-Jacobian estimate, which only "
                    f"{' and '.join(estimate_solvers())} keep, not {self.solver!r}: use one of those, or "
                    "backward_options {no_estimate: implicit} to solve the adjoint system instead")
            b = ImplicitOptions()  # the user's explicit choice: the implicit adjoint solve, its defaults
        if self.correction is not None and self.correction.steps >= self.max_iter:
            raise ValueError(f"correction.steps ({self.correction.steps}) must be below max_iter ({self.max_iter}):"
                             " its iterates are spread over the solve's checks")
        if isinstance(b, ImplicitOptions):
            solver = b.solver or self.solver
            inherit = not b.solver_options and solver == self.solver  # the forward options object itself
            self._adjoint = solve_spec(solver, b.tol if b.tol is not None else self.tol,
                                       b.max_iter if b.max_iter is not None else self.max_iter, "abs",
                                       self._forward.options if inherit else b.solver_options, "none")
        return self

    def changed(self) -> list[str]:
        """The settings that differ from their defaults (compared by value, not `model_fields_set`: a dumped
        and rebuilt config sets every field)."""
        defaults = DEQConfig().model_dump()
        return [k for k, v in self.model_dump().items() if v != defaults[k]]

    @property
    def forward(self) -> SolveSpec:
        """The forward solve, validated: handed to `solve()` as it is."""
        return self._forward

    @property
    def backward_mode(self) -> BackwardOptions:
        """The gradient mode's options, validated."""
        return self._backward

    @property
    def adjoint(self) -> Optional[SolveSpec]:
        """The implicit mode's adjoint solve (stop test "abs" on the normalised system; also shine's when the
        forward solver keeps no estimate and `no_estimate: implicit` says so); None otherwise."""
        return self._adjoint

    @property
    def uses_estimate(self) -> bool:
        """Backward shine on a solver that keeps an inverse-Jacobian estimate: the solve must return it."""
        return isinstance(self._backward, ShineOptions) and SOLVER_OPTIONS[self.solver].keeps_estimate

    @property
    def correction_checks(self) -> list[int]:
        """The residual checks whose best iterates the correction loss uses ([] without correction)."""
        c = self.correction
        return correction_checks(c.steps, self.max_iter) if c is not None and c.steps else []


__all__ = ["DEQConfig", "INIT_MODES", "REUSE_MODES", "BACKWARD_MODES", "BackwardOptions", "ImplicitOptions",
           "PhantomOptions", "UnrolledOptions", "JFBOptions", "ShineOptions", "CorrectionOptions", "backward_options",
           "correction_checks"]
