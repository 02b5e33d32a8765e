"""Small objects the solver, gradient and compile tests share: a linear cell with closed forms, a call counter."""

import torch
from torch import nn

F64 = torch.float64


class LinearCell(nn.Module):
    """f(z, x) = A z + B x: z* = (I - A)^-1 B x, so every gradient has a closed form."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(0.3 * torch.randn(dim, dim, generator=g, dtype=F64) / dim**0.5)
        self.B = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))

    def forward(self, z, x):
        return z @ self.A.T + x @ self.B.T


class Counted:
    """Wraps f and counts calls, independently of the solver's own bookkeeping."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, z):
        self.calls += 1
        return self.f(z)
