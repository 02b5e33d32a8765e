"""Neural ODE baseline: the same cell integrated over a fixed interval instead of to equilibrium.

Continuous DEQs are sold as "neural ODEs integrated to infinity, but cheaper to
train" (Pal et al.): this model makes that comparison possible inside one
study. It reports the same info record as a DEQ; backward NFE counts the
dynamics' VJPs (direct backprop through the stages) or the dynamics' calls
made during the backward pass (adjoint method).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..layers import backward as bw
from ..layers.config import DEQConfig
from ..layers.deq import DEQInfo
from .base import Model
from .catalog import ODE_METHODS
from .zoo import MLPCell


class _Dynamics(nn.Module):
    """dz/dt = f(z, x) - z: the DEQ cell's flow, so both models share f."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell
        self.x = None
        self.calls = 0
        self.record: bw.BackwardRecord | None = None

    def forward(self, t, z):
        self.calls += 1
        out = self.cell(z, self.x) - z
        if torch.is_grad_enabled() and out.requires_grad and self.record is not None:
            record = self.record

            def count(grad):
                record.nfe += 1
                return grad

            out.register_hook(count)
        return out


class NeuralODE(Model):
    """Dense(in->width), ODE block over [0, t1] with the MLP cell, Dense(width->classes)."""

    def __init__(self, in_dim: int = 784, width: int = 128, inner: int | None = None, num_classes: int = 10,
                 t1: float = 1.0, method: str = "dopri5",
                 rtol: float = 1e-3, atol: float = 1e-3, adjoint: bool = False):
        super().__init__()
        if not t1 > 0:
            raise ValueError(f"t1 must be positive, got {t1}")
        if method not in ODE_METHODS:
            raise ValueError(f"method must be one of {', '.join(ODE_METHODS)}, got {method!r}")
        self.encoder = nn.Linear(in_dim, width)
        self.dynamics = _Dynamics(MLPCell(width, inner))
        self.head = nn.Linear(width, num_classes)
        self.t1, self.method, self.rtol, self.atol, self.adjoint = t1, method, rtol, atol, adjoint

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: Optional[DEQConfig] = None, **options) -> "NeuralODE":
        """`deq` is not used: a neural ODE has no DEQ layer (TrainConfig refuses deq.* settings for it)."""
        return cls(in_dim=math.prod(input_shape), num_classes=classes, **options)

    def forward(self, x):
        from torchdiffeq import odeint, odeint_adjoint

        inj = self.encoder(x.flatten(1))
        dyn = self.dynamics
        record = bw.BackwardRecord()
        dyn.x, dyn.calls, dyn.record = inj, 0, (None if self.adjoint else record)
        t = torch.tensor([0.0, self.t1], dtype=inj.dtype, device=inj.device)
        options = {"step_size": self.t1 / 10} if self.method in ("rk4", "euler") else None
        if self.adjoint and torch.is_grad_enabled():
            z = odeint_adjoint(dyn, torch.zeros_like(inj), t, rtol=self.rtol, atol=self.atol, method=self.method,
                               options=options, adjoint_params=tuple(self.dynamics.parameters()) + (inj,))[-1]
            fwd_calls = dyn.calls
            # inj's gradient arrives when the adjoint solve has finished: every call since is backward work
            inj.register_hook(lambda g: _set(record, dyn.calls - fwd_calls) or g)
        else:
            z = odeint(dyn, torch.zeros_like(inj), t, rtol=self.rtol, atol=self.atol, method=self.method,
                       options=options)[-1]
            fwd_calls = dyn.calls
        zero = inj.new_zeros(())
        nan = torch.full((inj.shape[0],), math.nan, dtype=inj.dtype, device=inj.device)
        return self.head(z), DEQInfo(
            nfe_fwd=fwd_calls, nfe_fwd_per_sample=float(fwd_calls), residual=nan, converged_frac=1.0, trace=[],
            skip_mse=zero, jac_loss=zero, reg_loss=zero, backward=record,
        )


def _set(record: bw.BackwardRecord, n: int) -> None:
    record.nfe = n
