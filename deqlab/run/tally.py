"""What an epoch adds up and times, kept on the device and read once at its end.

On a GPU every `float(loss)`, `bool(isfinite(loss))` or `torch.cuda.synchronize()` per batch stops the host
until the launch queue drains, so the next batch's kernels start late. `Sums` keeps running sums as device
tensors (float64: the same additions, in the same order, as Python floats on the host, so every value is
bit-identical to a per-batch read) and reads them in one transfer; `StageClock` times stages with CUDA event
pairs read at the end of the epoch, and with `time.perf_counter` on CPU, which has no queue to wait for.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch

CHECK_EVERY = 16  # batches between reads of the non-finite count: the only per-batch decision (see loop.py)


class Sums:
    """Named running sums on `device`; `read()` returns them all as Python floats with one host sync."""

    def __init__(self, device: torch.device, names) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.values = {name: torch.zeros((), dtype=dtype, device=device) for name in names}

    def add(self, name: str, value: torch.Tensor, weight: int = 1) -> None:
        """sums[name] += value * weight, on the device (no sync)."""
        total = self.values[name]
        v = value.detach().to(total.dtype)
        total.add_(v * weight if weight != 1 else v)

    def peek(self, name: str) -> float:
        """One sum now (one host sync): for a decision that cannot wait for the epoch's end."""
        return self.values[name].item()

    def read(self) -> dict:
        names = list(self.values)
        return dict(zip(names, torch.stack([self.values[n] for n in names]).tolist()))


class StageClock:
    """Seconds per stage over an epoch. `mark()` is a point in time (perf_counter on CPU, a recorded CUDA
    event on CUDA), `add(stage, start, end)` books the span, `read()` the totals: on CUDA after one wait for
    the last event, so the spans cost no sync while the epoch runs."""

    def __init__(self, device: torch.device, stages, event: Optional[Callable] = None) -> None:
        self.totals = dict.fromkeys(stages, 0.0)
        if event is None and device.type == "cuda":
            event = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        self.event = event  # None: wall clock on the host
        self.spans: list = []

    def mark(self):
        if self.event is None:
            return time.perf_counter()
        e = self.event()
        e.record()
        return e

    def add(self, stage: str, start, end) -> None:
        if self.event is None:
            self.totals[stage] += end - start
        else:
            self.spans.append((stage, start, end))

    def read(self) -> dict:
        if self.spans:
            self.spans[-1][2].synchronize()  # events complete in stream order: the last one waits for all
            for stage, start, end in self.spans:
                self.totals[stage] += start.elapsed_time(end) / 1000.0  # ms -> s
            self.spans.clear()
        return dict(self.totals)
