"""The DEQ layer: z* = f(z*, x), with the init modes that define DEQ, SkipDEQ and SkipRegDEQ.

>>> import torch
>>> from torch import nn
>>> class Cell(nn.Module):
...     def __init__(self):
...         super().__init__(); self.lin = nn.Linear(4, 4)
...     def forward(self, z, x):
...         return torch.tanh(0.5 * self.lin(z) + x)
>>> deq = DEQ(Cell(), solver="anderson", tol=1e-6)
>>> z, info = deq(torch.randn(3, 4))
>>> z.shape, info.converged_frac
(torch.Size([3, 4]), 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
from torch import nn

from .. import backward as bw
from ..solvers import residual_norms, solve
from ..solvers import solver_options as validate_solver_options
from ..solvers.base import STOP_MODES

Tensor = torch.Tensor
INIT_MODES = ("zeros", "skip", "skipreg")
InitMode = Literal["zeros", "skip", "skipreg"]


@dataclass
class DEQInfo:
    """What one forward pass cost and reached; `backward` fills in after loss.backward().

    NFE counts are batched calls of f (a JVP or VJP counts as one).
    `nfe_fwd_per_sample` is the mean over the batch of the evaluations each
    sample took part in (a frozen sample stops counting), plus the calls outside
    the solver (skipreg's f(0, x), the application that carries the gradient).
    `nfe_solver_per_sample` is the solver's share alone (the paper's convention
    adds its residual call and final call to it).
    """

    nfe_fwd: int
    nfe_fwd_per_sample: float
    residual: Tensor
    converged_frac: float
    trace: list
    skip_mse: Tensor
    jac_loss: Tensor
    reg_loss: Tensor
    trace_mean: list = field(default_factory=list)
    backward: bw.BackwardRecord = field(default_factory=bw.BackwardRecord)
    nfe_solver_per_sample: Optional[float] = None

    @property
    def nfe_bwd(self) -> int:
        return self.backward.nfe

    @property
    def nfe_jac(self) -> int:
        """The Jacobian penalty's VJPs: its forward probes, and their backward passes once run."""
        return self.backward.nfe_jac


SKIP_NORMS = ("mse", "l1")
SKIP_GRADS = ("z0", "both")


class DEQ(nn.Module):
    """Deep equilibrium layer over any cell f(z, x) (an nn.Module).

    init: "zeros" (DEQ), "skip" (SkipDEQ: `skip_net(x)` predicts z0), "skipreg"
    (SkipRegDEQ: z0 = f(0, x), no extra network). Skip modes add
    `skip_weight * d(z0, z*)` to `info.reg_loss`, d the mean squared (`skip_norm
    ="mse"`) or absolute (`"l1"`, the published code's) difference. With
    `skip_grad="z0"` z* is detached, so only z0 is pulled toward the
    equilibrium; `"both"` also differentiates through z* (by the backward mode),
    pulling the equilibrium toward the explicit guess, which is what makes the
    published SkipDEQ cheap to solve. `jac_weight > 0` adds the
    Hutchinson Jacobian penalty. `fixed_depth=k` replaces the solve by k
    explicit applications (pretraining); set it to None to switch to solving.
    """

    def __init__(
        self,
        f: nn.Module,
        *,
        init: InitMode = "zeros",
        solver: str = "anderson",
        tol: float = 1e-4,
        max_iter: int = 50,
        stop_mode: str = "rel",
        solver_options: Optional[dict] = None,
        backward: str = "implicit",
        backward_options: Optional[dict] = None,
        skip_net: Optional[nn.Module] = None,
        skip_weight: float = 0.01,
        skip_norm: str = "mse",
        skip_grad: str = "z0",
        jac_weight: float = 0.0,
        jac_probes: int = 1,
        fixed_depth: Optional[int] = None,
        z_shape: Optional[Callable[[Tensor], tuple]] = None,
    ):
        super().__init__()
        if init not in INIT_MODES:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INIT_MODES)}")
        if init == "skip" and skip_net is None:
            raise ValueError("init='skip' needs skip_net, the explicit network that predicts z0 from x")
        if init != "skip" and skip_net is not None:
            raise ValueError(f"skip_net is only used with init='skip', not {init!r}")
        if stop_mode not in STOP_MODES:
            raise ValueError(f"unknown stop_mode {stop_mode!r}; valid: {', '.join(STOP_MODES)}")
        if skip_norm not in SKIP_NORMS:
            raise ValueError(f"unknown skip_norm {skip_norm!r}; valid: {', '.join(SKIP_NORMS)}")
        if skip_grad not in SKIP_GRADS:
            raise ValueError(f"unknown skip_grad {skip_grad!r}; valid: {', '.join(SKIP_GRADS)}")
        if fixed_depth is not None and fixed_depth < 1:
            raise ValueError(f"fixed_depth must be >= 1 or None, got {fixed_depth}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        for name, value in (("skip_weight", skip_weight), ("jac_weight", jac_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        self.f = f
        self.skip_net = skip_net
        self.init = init
        self.solver = solver
        self.solver_opts = validate_solver_options(solver, solver_options)  # validates now, not mid-study
        self.solver_kwargs = self.solver_opts.model_dump(exclude_unset=True)
        self.tol = tol
        self.max_iter = max_iter
        self.stop_mode = stop_mode
        self.backward_opts = bw.backward_options(backward, backward_options)
        adjoint = self.backward_opts
        if isinstance(adjoint, bw.ImplicitOptions) and adjoint.solver is None and adjoint.solver_options:
            validate_solver_options(solver, adjoint.solver_options)  # adjoint inherits the forward solver
        self.skip_weight = skip_weight
        self.skip_norm = skip_norm
        self.skip_grad = skip_grad
        self.jac_weight = jac_weight
        self.jac_probes = jac_probes
        self.fixed_depth = fixed_depth
        self.z_shape = z_shape

    def initial_state(self, x: Tensor, count: Callable[[], None]) -> Tensor:
        shape = tuple(self.z_shape(x)) if self.z_shape is not None else tuple(x.shape)
        zeros = x.new_zeros(shape)
        if self.init == "zeros":
            return zeros
        if self.init == "skip":
            return self.skip_net(x)
        count()
        return self.f(zeros, x)

    def forward(self, x: Tensor) -> tuple[Tensor, DEQInfo]:
        calls = [0]

        def count():
            calls[0] += 1

        def fx(z):
            return self.f(z, x)

        record = bw.BackwardRecord()
        z0 = self.initial_state(x, count)
        if self.init == "skipreg" and z0.requires_grad:
            bw.count_backward(z0, record)  # the skip term's (or pretraining's) VJP through f(0, x)
        if self.fixed_depth is not None:
            return self._fixed_depth(fx, z0, calls[0], record)

        result = solve(fx, z0.detach(), solver=self.solver, tol=self.tol, max_iter=self.max_iter,
                       stop_mode=self.stop_mode, **self.solver_kwargs)
        z_star = result.z
        jac_loss = x.new_zeros(())
        if torch.is_grad_enabled():
            z_in = z_star.detach().requires_grad_()
            fz = fx(z_in)
            calls[0] += 1
            if self.jac_weight > 0:
                jac_loss, _ = bw.jacobian_penalty(fz, z_in, self.jac_probes, record)
            fwd = bw.ForwardSolverConfig(self.solver, self.tol, self.max_iter, self.solver_kwargs)
            z, extra = bw.attach(fx, z_in, fz, self.backward_opts, fwd, record)
            calls[0] += extra
        else:
            z = z_star
        skip_mse = self._skip_distance(z0, z if self.skip_grad == "both" else z_star)
        solver_per_sample = float(result.sample_nfe.float().mean())
        return z, DEQInfo(
            nfe_fwd=result.nfe + calls[0],
            nfe_fwd_per_sample=solver_per_sample + calls[0],
            residual=result.residual,
            converged_frac=result.converged_frac,
            trace=result.trace,
            skip_mse=skip_mse,
            jac_loss=jac_loss,
            reg_loss=self.skip_weight * skip_mse + self.jac_weight * jac_loss,
            trace_mean=result.trace_mean,
            backward=record,
            nfe_solver_per_sample=solver_per_sample,
        )

    def _fixed_depth(self, fx, z0: Tensor, calls: int, record: bw.BackwardRecord) -> tuple[Tensor, DEQInfo]:
        """Pretraining: k explicit applications, each VJP counted by a hook when backward runs."""
        z = z0
        for _ in range(self.fixed_depth):
            z = fx(z)
            if z.requires_grad:
                bw.count_backward(z, record)
        calls += self.fixed_depth
        skip_mse = self._skip_distance(z0, z)
        with torch.no_grad():  # one counted evaluation to report how far from equilibrium
            res = residual_norms(z, fx(z), self.stop_mode)
        calls += 1
        return z, DEQInfo(
            nfe_fwd=calls, nfe_fwd_per_sample=float(calls), residual=res,
            converged_frac=float((res <= self.tol).float().mean()), trace=[], skip_mse=skip_mse,
            jac_loss=z.new_zeros(()), reg_loss=self.skip_weight * skip_mse, backward=record,
            nfe_solver_per_sample=float(self.fixed_depth),
        )

    def _skip_distance(self, z0: Tensor, z_star: Tensor) -> Tensor:
        """d(z0, z*): mean squared or mean absolute difference; z* detached unless skip_grad='both'."""
        if self.init == "zeros":
            return z0.new_zeros(())
        target = z_star if self.skip_grad == "both" else z_star.detach()
        diff = z0 - target
        return diff.abs().mean() if self.skip_norm == "l1" else diff.pow(2).mean()
