"""Model zoo used by the studies: encoder -> DEQ layer -> head, by name.

Each model's forward returns (logits, DEQInfo) so the training loop reads cost
and convergence the same way for all of them; each takes its DEQ layer's
settings as one DEQConfig and is built from the data's shape by `for_data`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..layers.config import DEQConfig
from ..layers.deq import DEQ
from .base import DEQModel
from .catalog import MLP_CELLS, NORMS, WEIGHT_INITS


def normalise_cell(cell: nn.Module, norm: str) -> nn.Module:
    """The cell with every Linear and Conv2d weight reparametrised (`model.options.norm`), in place.

    "weight": weight norm (w = g v / ||v||, per output unit; the function is unchanged at
    initialisation, training then moves g and v). "spectral": spectral norm (w / sigma, sigma the
    largest singular value of w, or of a conv kernel reshaped to out x in*k*k, estimated by one power
    iteration per training forward pass), which makes each Linear 1-Lipschitz, so an MLP cell
    (tanh(Wz + x), W2 tanh(W1 z) + x, relu(Wz) + relu(Ux)) is at most 1-Lipschitz in z; for a k x k
    convolution the reshaped norm bounds the operator's only within a factor k (docs/design.md).
    PyTorch's parametrizations keep the state dict's names stable, so a checkpoint loads into a
    model rebuilt with the same option.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm == "none":
        return cell
    wrap = nn.utils.parametrizations.weight_norm if norm == "weight" else nn.utils.parametrizations.spectral_norm
    for m in list(cell.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            wrap(m)
    return cell


class MLPCell(nn.Module):
    """f(z, x) = W2 tanh(W1 z) + x (inner width given) or tanh(W z + x) (inner None)."""

    def __init__(self, width: int, inner: Optional[int] = None):
        super().__init__()
        if inner:
            self.net = nn.Sequential(nn.Linear(width, inner), nn.Tanh(), nn.Linear(inner, width))
            self.squash = False
        else:
            self.net = nn.Linear(width, width)
            self.squash = True

    def forward(self, z, x):
        out = self.net(z) + x
        return torch.tanh(out) if self.squash else out


class ReluSumCell(nn.Module):
    """f(z, x) = relu(W z) + relu(U x), no biases: the published SkipDEQ MNIST-dense cell.

    (DeepEquilibriumNetworks.jl's `Parallel(+, Dense(w, w, relu; bias=false), Dense(w, w, relu; bias=false))`.)
    """

    def __init__(self, width: int):
        super().__init__()
        self.W = nn.Linear(width, width, bias=False)
        self.U = nn.Linear(width, width, bias=False)

    def forward(self, z, x):
        return torch.relu(self.W(z)) + torch.relu(self.U(x))


class MLPDEQ(DEQModel):
    """The seed MLP: Dense(in->width), DEQ over the cell with input injection, Dense(width->classes).

    Defaults are the seed article's (784->100, cell 100->500 tanh->100, 100->10);
    `inner=None` gives the paper's single-layer tanh cell (784->128, 128->128).
    `cell="relu_sum"` is the published code's instead: encoder Dense(in, width,
    relu), cell relu(W z) + relu(U x) without bias, skip net Dense(width, width,
    relu) (`inner` must then be None). `weight_init="glorot"` draws every layer
    as Lux does (Glorot-uniform, zero biases), as the published models were.
    `norm` normalises the cell's weights after they are drawn (`normalise_cell`).
    """

    def __init__(self, in_dim: int = 784, width: int = 100, inner: Optional[int] = 500, num_classes: int = 10,
                 cell: str = "tanh", weight_init: str = "torch", deq: Optional[DEQConfig] = None, norm: str = "none"):
        super().__init__()
        deq = deq if deq is not None else DEQConfig()
        if cell not in MLP_CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(MLP_CELLS)}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got {weight_init!r}")
        skip = None
        if cell == "relu_sum":
            if inner:
                raise ValueError("cell 'relu_sum' is single-layer: set inner: null")
            self.encoder = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU())
            f = ReluSumCell(width)
            if deq.init == "skip":
                skip = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        else:
            self.encoder = nn.Linear(in_dim, width)
            f = MLPCell(width, inner)
            if deq.init == "skip":
                skip = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.deq = DEQ(f, deq, skip_net=skip)
        self.head = nn.Linear(width, num_classes)
        if weight_init == "glorot":
            _glorot_init([self])
        normalise_cell(f, norm)

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> "MLPDEQ":
        return cls(in_dim=math.prod(input_shape), num_classes=classes, deq=deq, **options)

    def injection(self, x):
        return self.encoder(x.flatten(1))  # images or flat rows alike

    def readout(self, z):
        return self.head(z)


class ConvCell(nn.Module):
    """f(z, u) = tanh(conv2(tanh(conv1(z)) + u)): two 3x3 convs, no bias, u the injected input.

    The injection tanh(conv(x)) does not depend on z, so the model computes it
    once per forward instead of once per solver step (the tutorial's
    Parallel(+) cell, evaluated the cheap way).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, z, u):
        return torch.tanh(self.conv2(torch.tanh(self.conv1(z)) + u))


def _small_init(module: nn.Module, std: float) -> None:
    """Small weights keep the cell contractive at the start, so early solves converge."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _glorot_init(modules) -> None:
    """Lux's defaults (Glorot-uniform weights, zero biases), which DeepEquilibriumNetworks.jl's models get.

    PyTorch's default (Kaiming-uniform with a=sqrt(5), uniform biases) draws the
    head 2.3x smaller; with Adam at 5e-4 over the tutorial's 315 steps the
    weights move little, so the scale they start at shows in the accuracy.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def _down_block(in_channels: int, channels: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3), nn.GELU(), nn.GroupNorm(groups, channels),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1),
    )


class _Injection(nn.Module):
    """u = tanh(conv(h)): the input injection, computed once per forward."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, h):
        return torch.tanh(self.conv(h))


class ConvDEQ(DEQModel):
    """The seed conv model (DeepEquilibriumNetworks.jl's MNIST tutorial).

    Down-block (3x3 conv, GELU, group norm, 4x4 stride-2 conv), a DEQ cell of
    two 3x3 convs with tanh and input injection (weights std 0.01), then group
    norm + ReLU, global mean pool and a linear head. The ReLU after the norm
    matters: a group-normalised map has (near) zero spatial mean, so pooling it
    directly leaves the head almost nothing to read (measured: ~24% on MNIST).

    `groups=None` (default) normalises each channel on its own, as the
    tutorial's `GroupNorm(C, C)` does. It matters for the equilibrium: with
    fewer groups the pooled features read the channels' relative means, so
    training grows the state's scale and the cell stops being contractive
    (measured at 64 channels after the tutorial's 2 pretraining epochs:
    groups=4 left a Jacobian spectral radius up to 1.6 and mean |z*| 0.53, and
    10 Newton-Krylov iterations left 71% of the test samples unconverged;
    per-channel norm kept it at 0.45 and |z*| 0.06, every solver converged
    in <= 9 evaluations, and test accuracy after pretraining rose from 35% to
    51%).

    `weight_init="glorot"` (default) initialises the down-block, the skip
    network and the head as Lux does (Glorot-uniform, zero biases); `"torch"`
    keeps PyTorch's defaults. Measured on the tutorial replica (64 channels,
    SkipRegDEQ, Newton-Krylov, seed 0): 78.4% with glorot against 65.0% with
    PyTorch's defaults. The DEQ cell is drawn with std `init_std` either way, then
    normalised when `norm` says so (`normalise_cell`).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, num_classes: int = 10,
                 groups: Optional[int] = None, init_std: float = 0.01, weight_init: str = "glorot",
                 deq: Optional[DEQConfig] = None, norm: str = "none"):
        super().__init__()
        deq = deq if deq is not None else DEQConfig()
        groups = channels if groups is None else groups
        if groups < 1 or channels % groups:
            raise ValueError(f"groups must divide channels ({channels}), got {groups}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got {weight_init!r}")
        self.down = _down_block(in_channels, channels, groups)
        self.inject = _Injection(channels)
        cell = ConvCell(channels)
        _small_init(cell, init_std)
        _small_init(self.inject, init_std)
        skip = None
        if deq.init == "skip":
            skip = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU())
        self.deq = DEQ(cell, deq, skip_net=skip)
        self.classifier = nn.Sequential(nn.GroupNorm(groups, channels), nn.ReLU())
        self.head = nn.Linear(channels, num_classes)
        if weight_init == "glorot":
            _glorot_init([self.down, self.head] + ([skip] if skip is not None else []))
        normalise_cell(cell, norm)

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> "ConvDEQ":
        return cls(in_channels=input_shape[0], num_classes=classes, deq=deq, **options)

    def injection(self, x):
        return self.inject(self.down(x))

    def readout(self, z):
        return self.head(self.classifier(z).mean(dim=(2, 3)))


class MultiscaleCell(nn.Module):
    """Two resolutions updated together and fused (a small MDEQ-style cell).

    The state is the concatenation of both branches flattened, so every solver
    sees one tensor per sample.
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.c, self.size = channels, size
        self.hi = ConvCell(channels)
        self.lo = ConvCell(channels)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.up = nn.Conv2d(channels, channels, 1)

    def split(self, z):
        b, c, s = z.shape[0], self.c, self.size
        n_hi = c * s * s
        return z[:, :n_hi].view(b, c, s, s), z[:, n_hi:].view(b, c, s // 2, s // 2)

    def forward(self, z, x):
        z_hi, z_lo = self.split(z)
        x_hi, x_lo = self.split(x)
        h = self.hi(z_hi, x_hi)
        l = self.lo(z_lo, x_lo)
        h2 = h + nn.functional.interpolate(self.up(l), scale_factor=2.0)
        l2 = l + self.down(h)
        return torch.cat([h2.flatten(1), l2.flatten(1)], dim=1)


class MultiscaleDEQ(DEQModel):
    """Small multiscale DEQ: the conv down-block feeds a two-resolution equilibrium (`norm`: `normalise_cell`)."""

    def __init__(self, in_channels: int = 1, channels: int = 16, num_classes: int = 10, image_size: int = 28,
                 groups: int = 4, init_std: float = 0.01, deq: Optional[DEQConfig] = None, norm: str = "none"):
        super().__init__()
        deq = deq if deq is not None else DEQConfig()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        s = image_size // 2
        self.down = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1), nn.GroupNorm(groups, channels),
        )
        self.down_lo = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        cell = MultiscaleCell(channels, s)
        _small_init(cell, init_std)
        skip = None
        if deq.init == "skip":
            n = channels * s * s + channels * (s // 2) ** 2
            skip = nn.Sequential(nn.Linear(n, n // 8), nn.Tanh(), nn.Linear(n // 8, n))
            _small_init(skip, init_std)
        self.deq = DEQ(cell, deq, skip_net=skip)
        self.head = nn.Linear(2 * channels, num_classes)
        self.norm_hi = nn.Sequential(nn.GroupNorm(groups, channels), nn.ReLU())  # see ConvDEQ: norm, then ReLU, then pool
        self.norm_lo = nn.Sequential(nn.GroupNorm(groups, channels), nn.ReLU())
        self.cell = normalise_cell(cell, norm)

    @classmethod
    def for_data(cls, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> "MultiscaleDEQ":
        return cls(in_channels=input_shape[0], image_size=input_shape[-1], num_classes=classes, deq=deq, **options)

    def injection(self, x):
        h = self.down(x)
        return torch.cat([h.flatten(1), self.down_lo(h).flatten(1)], dim=1)

    def readout(self, z):
        z_hi, z_lo = self.cell.split(z)
        pooled = torch.cat([self.norm_hi(z_hi).mean(dim=(2, 3)), self.norm_lo(z_lo).mean(dim=(2, 3))], dim=1)
        return self.head(pooled)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLPDEQ", "ReluSumCell", "ConvDEQ", "MultiscaleDEQ", "count_parameters", "normalise_cell"]
