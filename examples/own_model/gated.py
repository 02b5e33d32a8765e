"""A DEQ whose cell the zoo does not have: a gated, contractive update f(z, u) = (1 - g) * z + g * tanh(W z + u),
the gate g = sigmoid(V u) chosen by the input, W kept at Frobenius norm <= 0.9 (so f is a contraction in z
and every solver finds its fixed point). Named in a study as `model: {name: "gated:GatedDEQ"}`."""

import math

import torch
from torch import nn

from deqlab.layers import DEQ
from deqlab.models import DEQModel


class GatedCell(nn.Module):
    """Each unit moves toward its update tanh(W z + u) by its own input-chosen step g: the equilibrium is
    z* = tanh(W z* + u) wherever g > 0, reached faster where the gate is open. ||W||_2 <= ||W||_F <= 0.9
    and tanh is 1-Lipschitz, so f is a 0.9-contraction in z however training moves W."""

    def __init__(self, width: int):
        super().__init__()
        self.W = nn.Linear(width, width, bias=False)
        self.V = nn.Linear(width, width)
        nn.init.normal_(self.W.weight, std=0.5 / math.sqrt(width))  # ||W|| ~ 0.5 x 2: contractive at the start

    def forward(self, z, u):
        w = self.W.weight
        w = w * (0.9 / torch.clamp(torch.linalg.matrix_norm(w), min=0.9))
        g = torch.sigmoid(self.V(u))
        return (1 - g) * z + g * torch.tanh(z @ w.T + u)


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
