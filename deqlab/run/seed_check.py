"""The seed check: a DEQ learns y = 2x, for every init mode and both kinds of solver.

This is the sanity problem of the seed article (Wei, Schäfer, Pal, Rackauckas,
"Composability in Julia: Implementing Deep Equilibrium Models via Neural ODEs",
2021): the cell is two dense layers without activation applied to z + x, trained
on x = 1..10 with targets 2x, and afterwards asked about x = -5 (expect -10).

Why it is a good end-to-end check: the cell is affine in z,
f(z, x) = a (z + x) + c with a = w2 . w1, so its fixed point is
z* = (a x + c) / (1 - a), and z* = 2x exactly when a = 2/3 and c = 0. The
extrapolation to x = -5, far outside the training range, only comes out right
if the solver found the fixed point, the implicit gradient moved the weights the
right way, and (for the skip modes) the regulariser did not get in the way.

What to expect (seed 0, 1000 steps; seeds 0-9 checked, all pass): discrete
solvers land within 0.02 of -10 (skipreg's 0.012 is its regulariser pulling
f(0, x) toward z*, a bias it cannot remove). The continuous solver stops at a
*relative* residual of 1e-2, i.e. |f(z) - z| <= 0.1 at |z| = 10, which leaves
z up to 0.1 / (1 - a) = 0.3 from the exact fixed point; SkipDEQ + continuous is
the loosest row (~0.2). The cell's gain is clipped at init (`limit_gain`), so
no seed starts with a divergent fixed-point iteration.

>>> rows = run_seed_check(inits=("zeros",), solvers=("anderson",), steps=300)
>>> abs(rows[0].prediction + 10) < 0.5
True
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..data import load_dataset
from ..layers import INIT_MODES, DEQConfig
from ..layers.deq import DEQ

#: The probe the article prints and its expected answer.
PROBE_X = -5.0
TARGET = 2 * PROBE_X
#: A model passes when |prediction - TARGET| is below this.
TOLERANCE = 0.5

LEARNING_RATE = 0.05  # Adam, as in the article
DEFAULT_STEPS = 1000  # full-batch steps, as in the article
#: Largest |a| = |w2 . w1| the untrained cell may have (see `LinearCell.limit_gain`).
INIT_GAIN_LIMIT = 0.5

#: Per-solver settings. Discrete solvers solve tightly. The continuous solver
#: mirrors the article's DynamicSS(Tsit5(), abstol = reltol = 1e-2): dopri5 with
#: rtol = atol = 1e-2 and a steady-state test at 1e-2. Its backward pass solves
#: the adjoint fixed point with Anderson, as the article's steady-state adjoint
#: is a nonlinear-solve adjoint, not an ODE integration (and integrating the
#: adjoint with atol = 1e-2 fails once gradients are smaller than 1e-2).
_DISCRETE = {"tol": 1e-5, "max_iter": 50}
SOLVER_SETTINGS: dict[str, dict] = {
    "anderson": _DISCRETE,
    "broyden": _DISCRETE,
    "fixed_point": {"tol": 1e-5, "max_iter": 100},
    "continuous": {
        "tol": 1e-2,
        "max_iter": 50,
        "solver_options": {"method": "dopri5", "rtol": 1e-2, "atol": 1e-2},
        "backward_options": {"solver": "anderson", "tol": 1e-5},
    },
}


class LinearCell(nn.Module):
    """f(z, x) = Linear(5->1)(Linear(1->5)(z + x)): the article's cell, no activation."""

    def __init__(self, hidden: int = 5):
        super().__init__()
        self.inner = nn.Linear(1, hidden)
        self.outer = nn.Linear(hidden, 1)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(z + x))

    def gain(self) -> float:
        """a = w2 . w1, the slope of f in z (|a| < 1: plain iteration converges)."""
        with torch.no_grad():
            return float(self.outer.weight @ self.inner.weight)

    def limit_gain(self, limit: float = INIT_GAIN_LIMIT) -> None:
        """Scale the outer weights so that |a| <= limit.

        PyTorch's default init gives |a| < 1 for most seeds, but not all: with
        |a| >= 1 the fixed point is repelling, plain iteration diverges and the
        first training steps see solver failures (converged=False, best
        iterate). Starting as a contraction keeps every seed on the easy path;
        training then only has to move a to 2/3 without crossing 1.
        """
        a = self.gain()
        if abs(a) > limit:
            with torch.no_grad():
                self.outer.weight.mul_(limit / abs(a))


@dataclass(frozen=True)
class SeedRow:
    """One trained model of the seed check."""

    init: str
    solver: str
    prediction: float  # the model's output at PROBE_X
    nfe_fwd: float  # forward NFE per sample at test time (no grad)
    train_time_s: float
    final_loss: float  # last training step: sum of squares (+ reg_loss for skip modes)
    converged: bool  # the test-time solve met its tolerance
    model: Optional[DEQ] = field(default=None, repr=False, compare=False)

    @property
    def error(self) -> float:
        return abs(self.prediction - TARGET)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.prediction) and self.error < TOLERANCE


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Tensors here have at most 10 elements: intra-op threads only add sync cost.

    Measured on 2 cores: one thread halves the training time of the seed check.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_choices(label: str, values: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"no {label} given; valid: {', '.join(valid)}")
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"unknown {label} {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    return values


def check_inputs(inits: Sequence[str], solvers: Sequence[str], steps: int, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate `run_seed_check`'s arguments up front (ValueError naming the bad value)."""
    inits = _check_choices("init", inits, INIT_MODES)
    solvers = _check_choices("solver", solvers, tuple(SOLVER_SETTINGS))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return inits, solvers


def seed_deq(init: str, solver: str, seed: int = 0) -> DEQ:
    """The seed-check DEQ for one init mode and solver, initialised from `seed`.

    The cell is drawn first, so every init mode and solver starts from the same
    cell weights for a given seed; SkipDEQ's skip network (Linear(1, 1), which
    can represent 2x exactly) is drawn after it.
    """
    _check_choices("init", (init,), INIT_MODES)
    _check_choices("solver", (solver,), tuple(SOLVER_SETTINGS))
    torch.manual_seed(seed)
    cell = LinearCell()
    cell.limit_gain()
    skip_net = nn.Linear(1, 1) if init == "skip" else None
    settings = SOLVER_SETTINGS[solver]
    cfg = DEQConfig(init=init, solver=solver, tol=settings["tol"], max_iter=settings["max_iter"],
                    solver_options=settings.get("solver_options", {}), backward="implicit",
                    backward_options=settings.get("backward_options", {}))
    return DEQ(cell, cfg, skip_net=skip_net)


def train_model(model: DEQ, steps: int = DEFAULT_STEPS, lr: float = LEARNING_RATE) -> float:
    """Full-batch Adam on x = 1..10, loss = sum of squares + info.reg_loss; returns the last loss."""
    splits = load_dataset("y2x")
    x, y = splits.train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_value = math.nan
    for _ in range(steps):
        opt.zero_grad()
        z, info = model(x)
        loss = (z - y).pow(2).sum() + info.reg_loss
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
    return loss_value


def predict(model: DEQ, x: float = PROBE_X):
    """(prediction, info) of the model at one input, without gradients."""
    with torch.no_grad():
        z, info = model(torch.tensor([[float(x)]]))
    return float(z.reshape(())), info


def train_one(init: str, solver: str, steps: int = DEFAULT_STEPS, seed: int = 0) -> SeedRow:
    """Build, train and probe one model (single-threaded); the unit of work of `run_seed_check`."""
    with _single_thread():
        model = seed_deq(init, solver, seed)
        start = time.perf_counter()
        loss = train_model(model, steps)
        elapsed = time.perf_counter() - start
        model.eval()
        prediction, info = predict(model)
    return SeedRow(
        init=init, solver=solver, prediction=prediction, nfe_fwd=info.nfe_fwd_per_sample,
        train_time_s=elapsed, final_loss=loss, converged=info.converged_frac == 1.0, model=model,
    )


def run_seed_check(
    inits: Sequence[str] = ("zeros", "skipreg", "skip"),
    solvers: Sequence[str] = ("anderson", "continuous"),
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    workers: int = 1,
) -> list[SeedRow]:
    """Train one model per (init, solver) from the same seed; one row each, inits outer, solvers inner.

    `workers > 1` trains models in that many spawned processes (each model is
    seeded on its own and trained on one thread, so the rows are the same as
    with `workers=1`; only the wall time changes). The tiny model cannot use
    two cores inside one training run, but six independent runs can.
    """
    inits, solvers = check_inputs(inits, solvers, steps, seed)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    tasks = [(init, solver) for init in inits for solver in solvers]
    if workers == 1 or len(tasks) == 1:
        return [train_one(init, solver, steps, seed) for init, solver in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: forking a process whose torch thread pools already ran can hang.
    ctx = multiprocessing.get_context("spawn")
    # longest first (continuous solves cost several times a discrete one), so the pool ends together
    order = sorted(range(len(tasks)), key=lambda i: tasks[i][1] != "continuous")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures = {i: pool.submit(train_one, *tasks[i], steps, seed) for i in order}
        return [futures[i].result() for i in range(len(tasks))]


def format_table(rows: Sequence[SeedRow]) -> str:
    """Plain-text table: init, solver, prediction at -5, |error|, forward NFE, train time, loss."""
    header = ("init", "solver", f"pred({PROBE_X:g})", "|error|", "fwd NFE", "train s", "final loss", "ok")
    body = [
        (
            r.init, r.solver, f"{r.prediction:.4f}", f"{r.error:.4f}", f"{r.nfe_fwd:.1f}",
            f"{r.train_time_s:.1f}", f"{r.final_loss:.3g}", "yes" if r.passed else "NO",
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    left = {0, 1}  # text columns left-aligned, numbers right-aligned

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(b) for b in body)])


def verdict(rows: Sequence[SeedRow]) -> str:
    """One line: passed or failed, with the worst model."""
    if not rows:
        return "seed check: no models were trained"
    worst = max(rows, key=lambda r: r.error if math.isfinite(r.error) else math.inf)
    failed = [r for r in rows if not r.passed]
    what = f"worst |error| {worst.error:.3g} ({worst.init}/{worst.solver})"
    if failed:
        names = ", ".join(f"{r.init}/{r.solver}" for r in failed)
        return f"seed check FAILED: {len(failed)} of {len(rows)} models miss {TARGET:g} at x = {PROBE_X:g} by >= {TOLERANCE} ({names}); {what}"
    return f"seed check passed: all {len(rows)} models map x = {PROBE_X:g} to {TARGET:g} within {TOLERANCE}; {what}"


__all__ = [
    "PROBE_X", "TARGET", "TOLERANCE", "DEFAULT_STEPS", "SOLVER_SETTINGS", "LinearCell", "SeedRow",
    "check_inputs", "seed_deq", "train_one", "train_model", "predict", "run_seed_check", "format_table", "verdict",
]
