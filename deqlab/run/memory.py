"""An epoch's peak memory (`peak_mem_bytes`), measured the way the device allows (docs/design.md, "Peak memory").

CUDA: `torch.cuda.max_memory_allocated`, reset at the start of every epoch: the most bytes of tensors the
caching allocator held at once (parameters, optimiser state, batches, activations, solver histories; not
the allocator's cached reserve nor the CUDA context).

CPU (Linux): the process's peak resident set size over the epoch, `VmHWM` in /proc/self/status after
resetting it at the start of the epoch (writing 5 to /proc/self/clear_refs). It counts everything the
process holds: the interpreter and torch's libraries, the data set in memory, memory freed earlier that
the C allocator kept, so compare it between trials of one machine rather than as the model's bytes.
Elsewhere (no /proc, or the reset refused) it is `getrusage`'s peak since the process started, which
cannot be reset (`PeakMemory.source` says which).
"""

from __future__ import annotations

import re
import resource
import sys

import torch

_STATUS = "/proc/self/status"
_CLEAR = "/proc/self/clear_refs"


def _vm_hwm() -> int:
    with open(_STATUS) as f:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError("no VmHWM line")
    return int(match.group(1)) * 1024


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR, "w") as f:
            f.write("5")
        _vm_hwm()
        return True
    except OSError:
        return False


def _ru_maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, kB on Linux


class PeakMemory:
    """`start()` at the beginning of an epoch, `read()` at its end: the epoch's peak in bytes."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.source = "cuda" if self.device.type == "cuda" else None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.source = "rss_epoch" if _reset_hwm() else "rss_process"

    def read(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        return float(_vm_hwm() if self.source == "rss_epoch" else _ru_maxrss())


__all__ = ["PeakMemory"]
