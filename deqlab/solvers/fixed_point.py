"""Plain (optionally damped) fixed-point iteration: the baseline every DEQ paper reports."""

from __future__ import annotations

from pydantic import Field

from .base import SolverOptions, Tracker


class FixedPointOptions(SolverOptions):
    damping: float = Field(1.0, gt=0.0, le=1.0, description="z <- (1-a) z + a f(z); 1 is undamped")


def fixed_point(tracker: Tracker, z, max_iter: int, opts: FixedPointOptions):
    """One evaluation per iteration; NFE <= max_iter."""
    a = opts.damping
    for it in range(max_iter):
        fz = tracker.evaluate(z)
        tracker.check(z, fz)
        if tracker.done or it == max_iter - 1:
            break
        z = tracker.keep_frozen(z, fz if a == 1.0 else (1 - a) * z + a * fz)
    return tracker.result()
