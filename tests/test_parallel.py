"""The NCCL device rule, simulated on CPU: every collective must run on the device the group serves.

A real 2-process gloo group does the arithmetic; the group is presented to deqlab as NCCL (the backend Ray
Train uses with `use_gpu`), and its collectives are wrapped to refuse, with NCCL's own message, any tensor
that was not moved to the group's device first. `to_group` (the copy to the GPU) is replaced by a marker
subclass standing for "on cuda:<local rank>". A collective on a tensor made on the host fails as it would
under NCCL, so this test fails on code that all-reduces CPU tensors.
"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from deqlab.run.parallel import Replicas, group_device, served_device_types


def test_group_device_follows_the_backend():
    assert served_device_types("nccl") == ["cuda"]
    assert group_device("nccl", 3) == torch.device("cuda", 3)
    assert group_device("cuda:nccl", 1) == torch.device("cuda", 1)
    assert group_device("gloo", 2) == torch.device("cpu")
    assert group_device("cpu:gloo,cuda:gloo", 1) == torch.device("cpu")
    assert group_device("cpu:gloo,cuda:nccl", 1) == torch.device("cpu")  # metrics stay on the host there
    assert group_device("cuda:gloo", 0) == torch.device("cuda", 0)


class OnGroupDevice(torch.Tensor):
    """A tensor standing for one on the simulated GPU (subclasses survive torch ops)."""


def _simulate_nccl(rank: int, seen: list) -> None:
    import deqlab.run.parallel as parallel

    real_all_reduce, real_broadcast = dist.all_reduce, dist.broadcast

    def check(t):
        if not isinstance(t, OnGroupDevice):
            raise RuntimeError("No backend type associated with device type cpu")
        seen.append(type(t).__name__)

    def all_reduce(t, *a, **k):
        check(t)
        return real_all_reduce(t.as_subclass(torch.Tensor), *a, **k)

    def broadcast(t, *a, **k):
        check(t)
        return real_broadcast(t.as_subclass(torch.Tensor), *a, **k)

    def to_group(t, device):
        assert device == torch.device("cuda", rank), device  # chosen from the group, this process's GPU
        return t.detach().clone().as_subclass(OnGroupDevice) if not isinstance(t, OnGroupDevice) else t

    dist.all_reduce, dist.broadcast = all_reduce, broadcast
    dist.get_backend_config = lambda *a, **k: "cuda:nccl"
    dist.get_backend = lambda *a, **k: "nccl"
    parallel.to_group = to_group


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    seen = []
    _simulate_nccl(rank, seen)
    rep = Replicas.from_process_group()
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(float(rank + 1))  # rank 0: 1.0, rank 1: 2.0
    spread = rep.weight_spread(model)
    loss = (model(torch.ones(1, 2)) ** 2).sum()  # d/dw = 2 * (2w) * 1 = 4w: rank 0 -> 4, rank 1 -> 8
    loss.backward()
    mean_loss = rep.average_gradients(model, loss)
    means = rep.mean({"a": float(rank), "b": 10.0 * rank})
    rep.broadcast_parameters(model)
    torch.save({"spread": spread, "grad": model.weight.grad.tolist(), "loss": mean_loss, "means": means,
                "weight": model.weight.detach().tolist(), "seen": len(seen), "device": str(rep.device)},
               os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_collectives_run_on_the_nccl_groups_device():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(init_file, tmp), nprocs=2, join=True)
        out = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    for r, o in enumerate(out):
        assert o["device"] == f"cuda:{r}"
        assert o["spread"] == 1.0  # |2 - 1|
        assert o["grad"] == [[6.0, 6.0]]  # mean of 4 and 8
        assert o["loss"] == pytest.approx((4.0 + 16.0) / 2)  # losses (2w)^2: 4 and 16
        assert o["means"] == {"a": 0.5, "b": 5.0}
        assert o["weight"] == [[1.0, 1.0]]  # rank 0's weights everywhere
        assert o["seen"] == 5  # 2 (spread) + 1 (gradients) + 1 (means) + 1 (broadcast of the one weight)
