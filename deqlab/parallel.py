"""Data-parallel training over an initialised torch.distributed process group.

Ray Train (or torchrun) sets the group up; this module only needs it to exist.
Gradients and the step's loss travel in one flat all-reduce per step: the loss
rides along so that a non-finite loss on any replica is seen by all of them
and they stop together instead of one rank waiting forever in a collective.
A DDP wrapper would do the same bucketing, but it hides the model behind
`.module` and cannot carry the loss; DEQ models here are small enough that
one flat buffer per step is not the bottleneck.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Replicas:
    rank: int
    world_size: int

    @classmethod
    def from_process_group(cls) -> "Replicas":
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("no torch.distributed process group: start the workers with Ray Train or torchrun")
        return cls(dist.get_rank(), dist.get_world_size())

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Start every replica from rank 0's weights (seeded inits already agree; this makes it certain)."""
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)

    def average_gradients(self, model: nn.Module, loss: torch.Tensor) -> float:
        """All-reduce mean of every gradient and the loss; returns the mean loss over replicas."""
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is None:
                p.grad = flat[offset:offset + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n
        return float(flat[-1])

    def mean(self, values: dict) -> dict:
        """Average scalar metrics over replicas (each saw its own shard)."""
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        t /= self.world_size
        return dict(zip(keys, t.tolist()))

    def weight_spread(self, model: nn.Module) -> float:
        """Largest difference of any weight between replicas: 0.0 when they are in sync."""
        flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        hi, lo = flat.clone(), -flat
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MAX)
        return float((hi + lo).max()) if flat.numel() else 0.0


__all__ = ["Replicas"]
