"""Data-parallel training over an initialised torch.distributed process group.

Ray Train (or torchrun) sets the group up; this module only needs it to exist.
Gradients and the step's loss travel in one flat all-reduce per step: the loss
rides along so that a non-finite loss on any replica is seen by all of them
and they stop together instead of one rank waiting forever in a collective.
A DDP wrapper would do the same bucketing, but it hides the model behind
`.module` and cannot carry the loss; DEQ models here are small enough that
one flat buffer per step is not the bottleneck.

Every collective runs on the device the process group serves, chosen from the
group's backend, not from where a tensor happens to live: NCCL (Ray Train with
`use_gpu`) accepts only CUDA tensors and fails on a CPU one with "No backend
type associated with device type cpu"; gloo takes CPU tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


def served_device_types(backend: str) -> list[str]:
    """Device types a backend string serves: "nccl" -> [cuda], "gloo" -> [cpu, cuda], "cuda:gloo" -> [cuda],
    "cpu:gloo,cuda:nccl" -> [cpu, cuda]."""
    if ":" in backend:
        return [part.split(":", 1)[0].strip() for part in backend.split(",")]
    return list(dist.Backend.backend_capability.get(backend.lower(), ["cpu"]))


def group_device(backend: str, local_rank: int = 0) -> torch.device:
    """The device a group's collectives take: the CPU when the backend serves it (gloo: metrics stay on the
    host), else the accelerator of this process (`cuda:<local rank>` for NCCL)."""
    types = served_device_types(backend)
    if "cpu" in types:
        return torch.device("cpu")
    return torch.device(types[0], local_rank)


def _local_rank() -> int:
    """This process's GPU index on its node: Ray Train and torchrun both set LOCAL_RANK."""
    try:
        from ray import train

        return train.get_context().get_local_rank()
    except Exception:  # not inside Ray Train (torchrun, tests)
        return int(os.environ.get("LOCAL_RANK", 0))


def to_group(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor on the group's device (the same tensor when it is there already)."""
    return t.to(device)


@dataclass(frozen=True)
class Replicas:
    rank: int
    world_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_process_group(cls) -> "Replicas":
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("no torch.distributed process group: start the workers with Ray Train or torchrun")
        backend = dist.get_backend_config() if hasattr(dist, "get_backend_config") else dist.get_backend()
        return cls(dist.get_rank(), dist.get_world_size(), group_device(str(backend), _local_rank()))

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Start every replica from rank 0's weights (seeded inits already agree; this makes it certain)."""
        for t in list(model.parameters()) + list(model.buffers()):
            on_group = to_group(t.data, self.device)
            dist.broadcast(on_group, src=0)
            if on_group is not t.data:
                t.data.copy_(on_group)

    def average_gradients(self, model: nn.Module, loss: torch.Tensor) -> float:
        """All-reduce mean of every gradient and the loss; returns the mean loss over replicas."""
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0])])
        flat = to_group(flat, self.device)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is None:
                p.grad = flat[offset:offset + n].view_as(p).to(p.device, copy=True)
            else:
                p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n
        return float(flat[-1])

    def mean(self, values: dict) -> dict:
        """Average scalar metrics over replicas (each saw its own shard)."""
        keys = sorted(values)
        t = to_group(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64), self.device)
        dist.all_reduce(t)
        t /= self.world_size
        return dict(zip(keys, t.tolist()))

    def weight_spread(self, model: nn.Module) -> float:
        """Largest difference of any weight between replicas: 0.0 when they are in sync."""
        flat = to_group(torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]), self.device)
        hi, lo = flat.clone(), -flat
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MAX)
        return float((hi + lo).max()) if flat.numel() else 0.0


__all__ = ["Replicas", "group_device", "served_device_types"]
