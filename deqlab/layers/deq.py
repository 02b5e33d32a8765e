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

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..solvers import residual_norms, solve
from . import backward as bw
from .config import DEQConfig

Tensor = torch.Tensor


@dataclass
class DEQInfo:
    """What one forward pass cost and reached; `backward` fills in after loss.backward().

    NFE counts are batched calls of f (a JVP or VJP counts as one).
    `nfe_fwd_per_sample` is the mean over the batch of the evaluations each
    sample took part in (a frozen sample stops counting), plus the calls outside
    the solver (skipreg's f(0, x), the application that carries the gradient).
    `nfe_solver_per_sample` is the solver's share alone (the paper's convention
    adds its residual call and final call to it). `correction`: (weight, f(z_i))
    for the fixed-point correction's kept iterates z_i, each a counted
    application whose VJP is counted in `nfe_bwd`; the training loss adds
    `weight * loss(readout(f(z_i)))` for each.
    `z_star` is the solver's fixed point, detached, and `converged` which samples reached tol (what
    fixed-point reuse keeps); `reused_frac` the fraction of the batch that started from a kept z*
    (`DEQ.start_from`).
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
    correction: list = field(default_factory=list)
    z_star: Optional[Tensor] = None
    converged: Optional[Tensor] = None
    reused_frac: float = 0.0

    @property
    def nfe_bwd(self) -> int:
        return self.backward.nfe

    @property
    def nfe_jac(self) -> int:
        """The Jacobian penalty's VJPs: its forward probes, and their backward passes once run."""
        return self.backward.nfe_jac


class DEQ(nn.Module):
    """Deep equilibrium layer over any cell f(z, x) (an nn.Module), configured by a DEQConfig.

    `DEQ(cell, cfg)`, or `DEQ(cell, solver=..., tol=...)` which builds the
    DEQConfig from its keywords (the settings and their meaning: DEQConfig).
    init "skip" needs `skip_net`, the explicit network that predicts z0 from x.
    The forward pass hands `cfg.forward`, validated once, to the solver.
    `fixed_depth=k` (or `set_fixed_depth(k)`) replaces the solve by k explicit
    applications (pretraining); `None` switches back to solving. `z_shape(x)` gives the state's shape when
    it differs from the injection's. `start_from(z, known)` makes the next pass start from a kept z*
    (fixed-point reuse).
    """

    def __init__(self, f: nn.Module, cfg: Optional[DEQConfig] = None, *, skip_net: Optional[nn.Module] = None,
                 fixed_depth: Optional[int] = None, z_shape: Optional[Callable[[Tensor], tuple]] = None,
                 **settings):
        super().__init__()
        if cfg is not None and settings:
            raise ValueError(f"{', '.join(sorted(settings))}: set in the DEQConfig, not next to it")
        cfg = cfg if cfg is not None else DEQConfig(**settings)
        if cfg.init == "skip" and skip_net is None:
            raise ValueError("init='skip' needs skip_net, the explicit network that predicts z0 from x")
        if cfg.init != "skip" and skip_net is not None:
            raise ValueError(f"skip_net is only used with init='skip', not {cfg.init!r}")
        self.f = f
        self.skip_net = skip_net
        self.cfg = cfg
        self.set_fixed_depth(fixed_depth)
        self.z_shape = z_shape
        self._start: Optional[tuple[Tensor, Tensor]] = None

    @contextmanager
    def start_from(self, z_prev: Tensor, known: Tensor) -> Iterator[None]:
        """The next forward pass starts sample i from `z_prev[i]` where `known[i]`, from the init's guess
        elsewhere (fixed-point reuse). The init runs on the unknown samples only: a reused start costs no
        evaluation of f or of the skip network, and the skip term covers only the samples the init predicted.
        Pretraining (fixed depth) ignores it."""
        self._start = (z_prev, known)
        try:
            yield
        finally:
            self._start = None

    def set_fixed_depth(self, depth: Optional[int]) -> None:
        """Unroll `depth` explicit applications instead of solving (pretraining); None: solve."""
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise ValueError(f"fixed_depth must be an integer >= 1 or None, got {depth!r}")
        self.fixed_depth = depth

    def initial_state(self, x: Tensor, count: Callable[[], None]) -> Tensor:
        shape = tuple(self.z_shape(x)) if self.z_shape is not None else tuple(x.shape)
        zeros = x.new_zeros(shape)
        if self.cfg.init == "zeros":
            return zeros
        if self.cfg.init == "skip":
            return self.skip_net(x)
        count()
        return self.f(zeros, x)

    @torch.no_grad()
    def unrolled_states(self, x: Tensor, k_max: int) -> list[Tensor]:
        """States after k = 0..k_max plain applications of the cell from z0 (the depth view), not counted."""
        z = self.initial_state(x, lambda: None)
        states = [z]
        for _ in range(k_max):
            z = self.f(z, x)
            states.append(z)
        return states

    def forward(self, x: Tensor) -> tuple[Tensor, DEQInfo]:
        """z* and what it cost. A cell with parametrized weights (`model.options.norm`: weight or spectral
        norm) computes them once per pass, not once per evaluation: every solver step, the backward pass and
        the skip term see one function, and spectral norm runs one power iteration per training pass."""
        with parametrize.cached():
            return self._solve(x)

    def _solve(self, x: Tensor) -> tuple[Tensor, DEQInfo]:
        calls = [0]

        def count():
            calls[0] += 1

        def fx(z):
            return self.f(z, x)

        record = bw.BackwardRecord()
        start, self._start = self._start, None
        z0, cold = self._first_guess(x, count, start if self.fixed_depth is None else None)
        if self.cfg.init == "skipreg" and z0.requires_grad:
            bw.count_backward(z0, record)  # the skip term's (or pretraining's) VJP through f(0, x)
        if self.fixed_depth is not None:
            return self._fixed_depth(fx, z0, calls[0], record)

        cfg = self.cfg
        grad = torch.is_grad_enabled()
        result = solve(self._solve_map(x), self._solve_start(z0), cfg.forward,
                       keep=cfg.correction_checks if grad else (), estimate=grad and cfg.uses_estimate)
        z_star = result.z
        jac_loss = x.new_zeros(())
        correction = []
        if torch.is_grad_enabled():
            z_in = z_star.detach().requires_grad_()
            fz = fx(z_in)
            calls[0] += 1
            if cfg.jac_weight > 0:
                jac_loss, _ = bw.jacobian_penalty(fz, z_in, cfg.jac_probes, record)
            z, extra = bw.attach(fx, z_in, fz, cfg, record, result.estimate)
            calls[0] += extra
            correction = self._correction(fx, result.iterates, record)
            calls[0] += len(correction)
        else:
            z = z_star
        skip_mse = self._skip_distance(z0, z if cfg.skip_grad == "both" else z_star, cold)
        solver_per_sample = float(result.sample_nfe.float().mean())
        cold_frac = 1.0 if cold is None else float(cold.float().mean())
        # skipreg's f(0, x) on part of the batch: each sample takes part in it with the cold fraction
        unshared = 1.0 - cold_frac if cfg.init == "skipreg" and cold_frac > 0 else 0.0
        return z, DEQInfo(
            nfe_fwd=result.nfe + calls[0],
            nfe_fwd_per_sample=solver_per_sample + calls[0] - unshared,
            residual=result.residual,
            converged_frac=result.converged_frac,
            trace=result.trace,
            skip_mse=skip_mse,
            jac_loss=jac_loss,
            reg_loss=cfg.skip_weight * skip_mse + cfg.jac_weight * jac_loss,
            trace_mean=result.trace_mean,
            backward=record,
            nfe_solver_per_sample=solver_per_sample,
            correction=correction,
            z_star=z_star.detach(),
            converged=result.converged,
            reused_frac=1.0 - cold_frac,
        )

    def _solve_map(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """f(., x) for the forward solve, which never differentiates: x detached, so that a compiled solve
        sees the same input in training and evaluation (a requires_grad flip would build a graph of its
        own), and, compiled, its batch dimension marked dynamic with z0's (`_solve_start`), so the first
        graph also serves the last, smaller batch and the test batches (one compile instead of three)."""
        solve_map = lambda z, x=self._dynamic_batch(x.detach()): self.f(z, x)  # noqa: E731
        # every DEQ's map is this lambda: a compiled solve's fallback memory keys on the cell it wraps instead
        solve_map.__wrapped__ = self.f
        return solve_map

    def _solve_start(self, z0: Tensor) -> Tensor:
        return self._dynamic_batch(z0.detach())

    def _dynamic_batch(self, t: Tensor) -> Tensor:
        """Not for newton_krylov: torch 2.13's inductor fails on its whole-loop graph (JVPs inside nested
        loops) with a dynamic batch, so each batch size compiles a graph of its own (deqlab.solvers.fused)."""
        if self.cfg.forward.compile != "none" and self.cfg.forward.solver != "newton_krylov":
            torch._dynamo.maybe_mark_dynamic(t, 0)
        return t

    def _first_guess(self, x: Tensor, count: Callable[[], None],
                     start: Optional[tuple[Tensor, Tensor]]) -> tuple[Tensor, Optional[Tensor]]:
        """z0, and which samples the init computed (None: all, no start given)."""
        if start is None:
            return self.initial_state(x, count), None
        z_prev, known = start
        cold = ~known.to(device=x.device, dtype=torch.bool)
        z0 = z_prev.detach().to(x.dtype).clone()
        if bool(cold.any()):
            z0[cold] = self.initial_state(x[cold], count)  # index_put: gradients reach the init's samples
        return z0, cold

    def _correction(self, fx, iterates: list, record: bw.BackwardRecord) -> list:
        """(weight, f(z_i)) per kept iterate: of n = len(iterates) + 1 states (z* last, weight 1), the j-th weighs
        `weight * gamma^(n - j)`; a solve that stopped early kept fewer, so n shrinks with it."""
        c = self.cfg.correction
        n = len(iterates) + 1
        out = []
        for j, z_i in enumerate(iterates, start=1):
            state = fx(z_i.detach())
            bw.count_backward(state, record)
            out.append((c.weight * c.gamma ** (n - j), state))
        return out

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
            res = residual_norms(z, fx(z), self.cfg.stop_mode)
        calls += 1
        return z, DEQInfo(
            nfe_fwd=calls, nfe_fwd_per_sample=float(calls), residual=res,
            converged_frac=float((res <= self.cfg.tol).float().mean()), trace=[], skip_mse=skip_mse,
            jac_loss=z.new_zeros(()), reg_loss=self.cfg.skip_weight * skip_mse, backward=record,
            nfe_solver_per_sample=float(self.fixed_depth),
        )

    def _skip_distance(self, z0: Tensor, z_star: Tensor, cold: Optional[Tensor] = None) -> Tensor:
        """d(z0, z*): mean squared or mean absolute difference; z* detached unless skip_grad='both'.
        With reuse only the samples the init predicted (`cold`) count; the others add 0 to the mean."""
        if self.cfg.init == "zeros":
            return z0.new_zeros(())
        target = z_star if self.cfg.skip_grad == "both" else z_star.detach()
        diff = z0 - target
        if cold is not None:
            diff = diff * cold.view(-1, *(1,) * (diff.dim() - 1)).to(diff.dtype)
        return diff.abs().mean() if self.cfg.skip_norm == "l1" else diff.pow(2).mean()
