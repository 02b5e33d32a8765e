"""Continuous DEQ: integrate dz/dt = f(z) - z with torchdiffeq until the residual test holds.

The steady state of this ODE is the fixed point. Termination uses torchdiffeq's
event handling: after every accepted step the event function judges the
residual at the step's end state. For FSAL methods (dopri5, bosh3) f at that
state is the step's last stage, so the test costs no extra evaluation (it is
looked up in a small cache keyed by tensor identity); for the others the
state is evaluated once more, and counted. Once every sample has converged or
failed the event fires exactly at the current step end, so the event's root
search runs on time alone and never calls f.

Converged samples get dz/dt = 0 and their value at convergence is what is
returned, so a frozen sample never drifts.
"""

from __future__ import annotations

import math

import torch

from .base import Tracker
from .options import ContinuousOptions


class _Stop(Exception):
    """Raised inside the ODE right-hand side to end integration early."""


class _Dynamics(torch.nn.Module):
    """dz/dt = f(z) - z for active samples, 0 for frozen ones; remembers recent f values."""

    def __init__(self, tracker: Tracker):
        super().__init__()
        self.tracker = tracker
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, t, z):
        fz = self.tracker.evaluate(z)
        dz = fz - z
        # one reduction and one host read judge finiteness (nan and inf propagate into the sum);
        # only a non-finite sum (or an overflowing finite one) pays for the per-sample test
        if not math.isfinite(dz.sum().item()):
            bad = ~torch.isfinite(dz.flatten(1)).all(dim=1) & self.tracker.active
            if bad.any():
                self.tracker.fail(bad)
                if self.tracker.done:
                    raise _Stop
        self.cache = (self.cache + [(z, fz)])[-8:]
        if self.tracker.n_active == self.tracker.batch:
            return dz
        return torch.where(self.tracker.active_mask(z.dim()), dz, torch.zeros_like(z))

    def lookup(self, z):
        for zc, fc in reversed(self.cache):
            if zc is z:
                return fc
        return None


def continuous(tracker: Tracker, z, max_iter: int, opts: ContinuousOptions):
    """Residual checks (the start plus one per accepted step) <= max_iter."""
    from torchdiffeq import odeint_event

    dyn = _Dynamics(tracker)
    state = {"stop_t": None, "last_y": None, "checks": 0}

    def event_fn(t, y):
        if state["stop_t"] is not None:
            return t - state["stop_t"]
        if y is not state["last_y"]:  # a new step end (a rejected step leaves y1 unchanged)
            state["last_y"] = y
            fy = dyn.lookup(y)
            if fy is None:
                fy = tracker.evaluate(y)
            # frozen samples still drift a little (an FSAL stage computed before they froze
            # carries over): judge and keep their frozen values, not the drifted ones
            tracker.check(tracker.keep_frozen(tracker.best_z, y), fy)
            state["checks"] += 1
            if tracker.done or state["checks"] >= max_iter or float(t) >= opts.t_max:
                state["stop_t"] = t
                return t - t
        return t - (t + 1.0)  # negative until stop_t is set

    # Near the steady state the step-size controller leaves residual noise a few
    # times its own tolerance (measured: a plateau at ~2x with rtol = atol = tol),
    # so the ODE tolerances must sit below the steady-state test to reach it.
    rtol = opts.rtol if opts.rtol is not None else tracker.tol / 4
    atol = opts.atol if opts.atol is not None else tracker.tol / 4
    t0 = torch.zeros((), dtype=torch.float64, device=z.device)
    failure = None
    try:
        odeint_event(
            dyn, z, t0, event_fn=event_fn, method=opts.method, rtol=rtol, atol=atol,
            options={"max_num_steps": 20 * max_iter + 100},
        )
    except _Stop:
        pass
    except (AssertionError, RuntimeError, OverflowError, ValueError) as exc:  # dt underflow, non-finite state
        failure = f"{type(exc).__name__}: {exc}"[:200]
    stats = {"ode_method": opts.method, "accepted_steps": max(state["checks"] - 1, 0)}
    if failure:
        stats["failure"] = failure
    return tracker.result(**stats)

