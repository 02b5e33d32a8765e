"""Plain (optionally damped) fixed-point iteration: the baseline every DEQ paper reports."""

from __future__ import annotations

from .base import Tracker
from .options import FixedPointOptions


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
