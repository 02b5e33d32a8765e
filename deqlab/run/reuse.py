"""Fixed-point reuse (`deq.reuse: epoch`): each sample's solve starts from the z* it reached last time.

The buffer holds one state per sample this process sees, on the run's device, keyed by the sample's index
in its split (the loaders yield it: `make_loaders(indexed=True)`). A sample not seen yet starts from the
init's guess (zeros, SkipDEQ's skip network, SkipRegDEQ's f(0, x)); the DEQ layer takes the start through
`DEQ.start_from` and hands back `DEQInfo.z_star`. A Ray Train replica holds only its own shard's rows (its
samples are fixed across epochs: `data.loading.FixedShardSampler`). The buffer is part of the run's
checkpoint, so a resumed run starts where the interrupted one left off.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..layers.deq import DEQ, DEQInfo


def deq_layer(model: nn.Module) -> DEQ:
    """The model's one DEQ layer; a ValueError (one line) when it has none or several."""
    layers = [m for m in model.modules() if isinstance(m, DEQ)]
    if len(layers) != 1:
        raise ValueError(f"deq.reuse needs a model with exactly one DEQ layer; {type(model).__name__} has "
                         f"{len(layers)}")
    return layers[0]


class ReuseBuffer:
    """z* per sample, for the sample indices `indices` (all `n` of a split when None).

    Rows are allocated at the first `keep`, when the state's shape and dtype are known;
    `nbytes` counts the states, the seen flags and the index map.
    """

    def __init__(self, n: int, device: torch.device, indices: Optional[Sequence[int]] = None):
        self.device = torch.device(device)
        rows = torch.full((n,), -1, dtype=torch.long)
        own = torch.arange(n) if indices is None else torch.as_tensor(sorted(set(int(i) for i in indices)))
        rows[own] = torch.arange(len(own))
        self.rows = rows.to(self.device)
        self.count = len(own)
        self.values: Optional[torch.Tensor] = None
        self.seen = torch.zeros(self.count, dtype=torch.bool, device=self.device)

    @property
    def nbytes(self) -> int:
        states = self.values.numel() * self.values.element_size() if self.values is not None else 0
        return states + self.seen.numel() * self.seen.element_size() + self.rows.numel() * self.rows.element_size()

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.rows[idx.to(self.device)]
        if bool((rows < 0).any()):
            raise IndexError("fixed-point reuse: a sample outside this replica's shard")
        return rows

    def lookup(self, idx: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """(kept states, known flags) for these samples; a row not kept yet holds zeros (no states at all
        before the first `keep`)."""
        rows = self._rows(idx)
        return (self.values[rows] if self.values is not None else None), self.seen[rows]

    def keep(self, idx: torch.Tensor, z: torch.Tensor, converged: Optional[torch.Tensor] = None) -> None:
        """Store these samples' z* (detached). A sample that did not reach tol (`converged` False) has no
        fixed point to keep: it is marked unseen, and starts from the init's guess next time."""
        rows = self._rows(idx)
        if self.values is None:
            self.values = z.new_zeros((self.count, *z.shape[1:])).to(self.device)
        self.values[rows] = z.detach().to(self.device, self.values.dtype)
        self.seen[rows] = True if converged is None else converged.to(self.device, torch.bool)

    def state_dict(self) -> dict:
        return {"values": self.values.cpu() if self.values is not None else None, "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        values = state.get("values")
        self.values = values.to(self.device) if values is not None else None
        self.seen = state["seen"].to(self.device)


class Reuse:
    """A model's DEQ layer and the buffer its starts come from; `starts(idx)` around the model's forward
    pass, `keep(idx, info)` after it."""

    def __init__(self, model: nn.Module, n: int, device: torch.device, indices: Optional[Sequence[int]] = None):
        self.layer = deq_layer(model)
        self.buffer = ReuseBuffer(n, device, indices)

    @contextmanager
    def starts(self, idx: torch.Tensor) -> Iterator[None]:
        """The layer's next forward pass starts these samples from their kept z* (the others, and a batch
        with none kept, from the layer's own first guess)."""
        z_prev, known = self.buffer.lookup(idx)
        if z_prev is None or not bool(known.any()):
            yield  # nothing kept for this batch: the layer's own first guess, unchanged
            return
        with self.layer.start_from(z_prev, known):
            yield

    def keep(self, idx: torch.Tensor, info: DEQInfo) -> None:
        if info.z_star is not None:
            self.buffer.keep(idx, info.z_star, info.converged)


__all__ = ["ReuseBuffer", "Reuse", "deq_layer"]
