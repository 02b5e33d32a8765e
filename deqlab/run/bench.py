"""Trained models timed side by side: prediction and one training step, round-robin in one process.

A speed-up is a ratio of wall-clock times, and times taken hours apart on a
shared machine compare load, not models. `time_models` therefore times every
model in the same process, interleaved repetition by repetition (the starting
model rotates each repetition), after untimed warm-up rounds, with the torch
thread count fixed, so whatever load the machine has hits every model alike.

Each repetition `r`, for every model:
- **prediction**: the forward solve of test batch `r` (eval mode, no grad),
  as `deqlab evaluate` / the loop's `evaluate` run it;
- **training step**: forward, loss (cross-entropy + skip term + Jacobian
  penalty: `loop.forward_loss`), backward and the optimiser step (clip, step,
  schedule: the loop's `_step`) on training batch `r`, with the trial's
  TrainConfig. Each step starts from the trained weights, a fresh optimiser
  and the trial's seed (untimed), so every repetition times the same
  computation the trained model costs, not a model drifting away from it.

Batches come unshuffled from each trial's own data, so models trained on the
same data see the same batch in the same repetition (the ratios pair them by
repetition). Inputs are on the device before the clock starts, as in the loop.
`deqlab bench` (deqlab/cli/bench.py) loads the models of a study and hands
them here; the ratios and their intervals are deqlab/report/bench.py's.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from ..data import load_dataset, make_loaders
from .config import TrainConfig
from .env import select_device, sync
from .loop import _make_optimizer, _step, forward_loss

KINDS = ("predict", "train_step")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Contender:
    """One trained model to time: its trial, the group it is compared in, the model and how it was trained.

    `data`: the splits to draw batches from; None loads the trial's own data set
    (`config.data`, seeded with `config.seed`, as the run loaded it).
    """

    trial_id: str
    model: nn.Module
    config: TrainConfig
    group: Mapping[str, str] = field(default_factory=dict)
    data: Optional[object] = None

    @property
    def seed(self) -> int:
        return self.config.seed


@dataclass
class BenchResult:
    """Every timed call (`samples`: one dict per model, repetition and kind) and how they were taken.

    `order` is the sequence the timed calls ran in: (repetition, kind, trial_id).
    """

    samples: list[dict]
    order: list[tuple[int, str, str]]
    batch: Optional[int]
    repeats: int
    warmup: int
    threads: int
    device: str
    clock: str

    @property
    def settings(self) -> dict:
        return {"batch": self.batch, "repeats": self.repeats, "warmup": self.warmup, "threads": self.threads,
                "device": self.device, "clock": self.clock}


class _Timed:
    """A contender made ready to time: its batches on the device, a predicting copy and a training copy."""

    def __init__(self, c: Contender, splits, batch: Optional[int], repeats: int, device: torch.device):
        self.c = c
        size = batch or c.config.data.batch_size
        train_loader, test_loader = make_loaders(splits, size, seed=c.config.seed, shuffle=False)
        self.test = _first_batches(test_loader, repeats, device)
        self.train = _first_batches(train_loader, repeats, device)
        self.batch = size
        self.predictor = c.model.to(device).eval()
        self.trainer = copy.deepcopy(self.predictor).train()
        for m in (self.predictor, self.trainer):
            m.set_fixed_depth(None)  # trained models solve (pretraining's fixed depth is over)
        self.weights = copy.deepcopy(self.trainer.state_dict())

    def predict(self, r: int) -> tuple[Callable[[], None], Callable[[], float]]:
        x, _ = self.test[r % len(self.test)]
        out = {}

        def call():
            with torch.no_grad():
                out["info"] = self.predictor(x)[1]
        return call, lambda: float(out["info"].nfe_fwd_per_sample)

    def train_step(self, r: int) -> tuple[Callable[[], None], Callable[[], float]]:
        x, y = self.train[r % len(self.train)]
        cfg = self.c.config
        self.trainer.load_state_dict(self.weights)
        opt, sched = _make_optimizer(cfg, self.trainer, 1)
        torch.manual_seed(cfg.seed)  # the Jacobian penalty's probes: the same every repetition
        out = {}

        def call():
            _, loss, info = forward_loss(self.trainer, x, y)
            loss.backward()
            _step(self.trainer, opt, sched, cfg, None, loss)
            out["info"] = info
        return call, lambda: float(out["info"].nfe_fwd_per_sample + out["info"].nfe_bwd + out["info"].nfe_jac)


def _first_batches(loader, n: int, device: torch.device) -> list:
    out = []
    for x, y in loader:
        out.append((x.to(device), y.to(device)))
        if len(out) == n:
            break
    if not out:
        raise ValueError("a data split has no samples to time")
    return out


def time_models(contenders: Sequence[Contender], *, batch: Optional[int] = None, repeats: int = 20,
                warmup: int = 2, threads: int = 1, device: str = "cpu", clock: str = "wall",
                kinds: Sequence[str] = KINDS) -> BenchResult:
    """Time prediction and one training step of every contender, round-robin; see the module docstring.

    `batch`: samples per call (None: each trial's `data.batch_size`, its training
    batch). `threads`: torch's intra-op threads while timing (restored after).
    `clock`: "wall" (perf_counter) or "cpu" (this process's CPU time, steadier
    on a shared machine; CPU only).
    """
    if not contenders:
        raise ValueError("no models to time")
    ids = [c.trial_id for c in contenders]
    if len(set(ids)) != len(ids):
        raise ValueError(f"trial ids repeat: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"repeats and threads must be >= 1 and warmup >= 0 (got {repeats}, {threads}, {warmup})")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
    dev = select_device(device)
    if clock == "cpu" and dev.type != "cpu":
        raise ValueError("clock 'cpu' times this process's CPU, not the GPU's work: use clock 'wall' on cuda")
    now = CLOCKS[clock]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data: dict = {}
        timed = [_Timed(c, _splits(c, data), batch, repeats, dev) for c in contenders]
        samples, order = [], []
        for r in range(-warmup, repeats):
            start = r % len(timed)  # rotate: no model always runs first (or right after the same one)
            turn = timed[start:] + timed[:start]
            for kind in kinds:
                for position, t in enumerate(turn):
                    call, nfe = getattr(t, kind)(max(r, 0))
                    sync(dev)
                    t0 = now()
                    call()
                    sync(dev)
                    elapsed = now() - t0
                    if r < 0:
                        continue  # warm-up: untimed
                    order.append((r, kind, t.c.trial_id))
                    samples.append({"trial_id": t.c.trial_id, "seed": t.c.seed, **dict(t.c.group), "kind": kind,
                                    "repeat": r, "position": position, "batch": t.batch, "time_s": elapsed,
                                    "nfe": nfe()})
    finally:
        torch.set_num_threads(previous)
    return BenchResult(samples, order, batch, repeats, warmup, threads, str(dev), clock)


def _splits(c: Contender, cache: dict):
    """The contender's data: given, or its trial's data set, loaded once per (data settings, seed)."""
    if c.data is not None:
        return c.data
    d = c.config.data
    key = (d.model_dump_json(), c.config.seed if d.subset or d.test_subset else None)  # seed: which subset
    if key not in cache:
        cache[key] = load_dataset(d.name, data_dir=d.data_dir, subset=d.subset, test_subset=d.test_subset,
                                  normalize=d.normalize, seed=c.config.seed)
    return cache[key]


__all__ = ["Contender", "BenchResult", "time_models", "KINDS"]
