"""A progress line while trials run: each running trial's latest epoch and an ETA for the study.

The study otherwise prints only when a trial ends, and a long trial is many
minutes of silence. `Heartbeat.update` is fed every epoch report and returns
a line at most every `interval_s` seconds:

    [running 2:14] t_a1 epoch 3/10, t_b2 epoch 1/10; 4 of 12 trials started; ETA ~9 min (no pruning assumed)

The ETA is the epochs still to run (the running trials' rest, plus every
trial not started yet at the mean length of those seen) over the epoch rate
so far across all workers. Pruning (ASHA) only shortens a study, so the ETA
is an upper estimate.
"""

from __future__ import annotations

import time
from typing import Callable, Optional


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes}:{s:02d}"


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Heartbeat:
    """Latest epoch per trial and the study's epoch rate; see the module notes."""

    def __init__(self, total_trials: int, interval_s: float = 30.0, clock: Callable[[], float] = time.perf_counter):
        self.total, self.interval, self.clock = total_trials, interval_s, clock
        self.restart()

    def restart(self) -> None:
        """Forget the clocks (a restored study brings this object back from another process)."""
        self.t0 = self.last = self.clock()
        self.epochs: dict[str, tuple[int, int]] = {}  # trial -> (epochs done, epochs in all)
        self.finished: set[str] = set()

    def finish(self, trial_id: str) -> None:
        """A trial ended (completed, pruned or failed): nothing left to run for it."""
        self.finished.add(trial_id)

    def update(self, trial_id: str, epoch: Optional[int], epochs_total: int) -> Optional[str]:
        """Record that `trial_id` finished epoch `epoch` (0-based); a progress line when one is due."""
        if epoch is None:
            return None
        self.epochs[trial_id] = (int(epoch) + 1, max(epochs_total, int(epoch) + 1))
        now = self.clock()
        if now - self.last < self.interval:
            return None
        self.last = now
        return self.line(now)

    def line(self, now: float) -> str:
        running = [(t, d, n) for t, (d, n) in self.epochs.items() if t not in self.finished and d < n]
        shown = ", ".join(f"{t} epoch {d}/{n}" for t, d, n in running[:4])
        shown += f" (+{len(running) - 4} more)" if len(running) > 4 else ""
        done = sum(d for d, _ in self.epochs.values())  # epochs actually run (a pruned trial's too)
        mean_len = sum(n for d, n in self.epochs.values()) / max(1, len(self.epochs))
        left = sum(n - d for t, (d, n) in self.epochs.items() if t not in self.finished)
        left += max(0, self.total - len(self.epochs)) * mean_len
        elapsed = now - self.t0
        eta = f"ETA ~{_eta(left * elapsed / done)} (no pruning assumed)" if done and elapsed > 0 else "ETA unknown"
        return (f"[running {_clock(elapsed)}] {shown or 'waiting for the first epoch of the running trials'}; "
                f"{len(self.epochs)} of {self.total} trials started; {eta}")
