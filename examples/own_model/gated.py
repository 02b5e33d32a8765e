"""A DEQ whose cell the zoo does not have: an input-gated update f(z, u) = g * tanh(W z + u) + (1 - g) * tanh(u),
the gate g = sigmoid(V u) chosen by the input, W kept at Frobenius norm <= 0.9 (so f is a 0.9-contraction in z
and every solver, forward and adjoint, finds its fixed point). Named in a study as
`model: {name: "gated:GatedDEQ"}`."""

import math

import torch
from torch import nn

from deqlab.layers import DEQ
from deqlab.models import DEQModel


class GatedCell(nn.Module):
    """The input decides, unit by unit, how much of the state's recurrence tanh(W z + u) it lets in (g) and
    how much of the plain injection tanh(u) it keeps. df/dz = diag(g * tanh') W with ||W||_2 <= ||W||_F <= 0.9,
    so f is a 0.9-contraction in z however training moves W."""

    def __init__(self, width: int):
        super().__init__()
        self.W = nn.Linear(width, width, bias=False)
        self.V = nn.Linear(width, width)
        nn.init.normal_(self.W.weight, std=0.5 / math.sqrt(width))  # ||W|| ~ 0.5 x 2: contractive at the start

    def forward(self, z, u):
        w = self.W.weight
        w = w * (0.9 / torch.clamp(torch.linalg.matrix_norm(w), min=0.9))
        g = torch.sigmoid(self.V(u))
        return g * torch.tanh(z @ w.T + u) + (1 - g) * torch.tanh(u)


class GatedDEQ(DEQModel):
    """Linear encoder -> DEQ over the gated cell -> linear readout. `deq` is the study's DEQConfig: solver,
    backward mode, init (SkipDEQ needs the skip network built below), regularisers."""

    def __init__(self, input_shape, classes, deq, width: int = 32):
        super().__init__()
        self.encoder = nn.Linear(math.prod(input_shape), width)
        skip = nn.Sequential(nn.Linear(width, width), nn.Tanh()) if deq.init == "skip" else None
        self.deq = DEQ(GatedCell(width), deq, skip_net=skip)
        self.head = nn.Linear(width, classes)

    def injection(self, x):
        return self.encoder(x.flatten(1))

    def readout(self, z):
        return self.head(z)
