"""The seed check's picture: the trained cell's fixed-point trajectories from several starts (the article's
figure), drawn with matplotlib's Agg canvas only when a path is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..layers.deq import DEQ
from .seed_check import PROBE_X, TARGET, SeedRow, predict


@dataclass(frozen=True)
class Trajectories:
    """Plain fixed-point iteration z_{k+1} = f(z_k, x) from several starts."""

    values: torch.Tensor  # [steps + 1, starts]; row 0 holds the starting points, steps <= depth
    prediction: float  # the DEQ's own output at x
    x: float
    path: Optional[Path]

    @property
    def final(self) -> torch.Tensor:
        return self.values[-1]



def figure_model(rows: Sequence[SeedRow]) -> SeedRow:
    """The row whose model the trajectory figure shows: plain DEQ with a tight (discrete) solver if trained.

    A tight solver's prediction is the cell's fixed point itself, so the
    plotted trajectories level off exactly on the prediction line.
    """
    def rank(r: SeedRow) -> tuple:
        return (r.init != "zeros", r.solver == "continuous")

    usable = [r for r in rows if r.model is not None]
    if not usable:
        raise ValueError("no trained model to plot")
    return min(usable, key=rank)


def fixed_point_trajectories(
    model: DEQ, x: float = PROBE_X, starts: int = 10, depth: int = 100, seed: int = 0, stop_tol: Optional[float] = 1e-6,
) -> torch.Tensor:
    """[steps + 1, starts]: z_0 ~ U[0, 10] (seeded), then z_{k+1} = f(z_k, x), at most `depth` applications.

    Like the article's trajectory, iteration stops early once every start has
    settled (|z_{k+1} - z_k| <= stop_tol * (1 + |z_k|) for all of them); with
    `stop_tol=None` it always runs the full depth.
    """
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise ValueError(f"starts must be an integer >= 1, got {starts!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(starts, 1, generator=gen) * 10.0
    xs = torch.full((starts, 1), float(x))
    values = [z.reshape(-1)]
    with torch.no_grad():
        for _ in range(depth):
            z_next = model.f(z, xs)
            values.append(z_next.reshape(-1))
            settled = stop_tol is not None and bool(((z_next - z).abs() <= stop_tol * (1 + z.abs())).all())
            z = z_next
            if settled:
                break
    return torch.stack(values)


def trajectory_figure(
    model: DEQ,
    x: float = PROBE_X,
    starts: int = 10,
    depth: int = 100,
    path: Optional[str | Path] = None,
    seed: int = 0,
    title: Optional[str] = None,
    stop_tol: Optional[float] = 1e-6,
) -> Trajectories:
    """Plot z against depth for `starts` random starting points and save a PNG at `path`.

    Like the article's figure: every trajectory of the trained cell at x levels
    off at the same value, the DEQ's prediction; iteration ends early once all
    have settled (see `fixed_point_trajectories`). Returns the trajectories (and
    the path, None if `path` was None, in which case nothing is drawn).
    """
    values = fixed_point_trajectories(model, x, starts, depth, seed, stop_tol)
    prediction, _ = predict(model, x)
    out = None
    if path is not None:
        # A bare Figure renders with the Agg canvas: no pyplot, no global backend switch.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(7, 4.5), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        steps = range(values.shape[0])
        for j in range(values.shape[1]):
            ax.plot(steps, values[:, j].numpy(), lw=1.2, alpha=0.85)
        ax.axhline(prediction, color="black", ls="--", lw=1, label=f"DEQ prediction {prediction:.3f}")
        if x == PROBE_X:
            ax.axhline(TARGET, color="red", ls=":", lw=1, label=f"target 2x = {TARGET:g}")
        ax.set_xlabel("depth (fixed-point iterations z ← f(z, x))")
        ax.set_ylabel("z")
        ax.set_title(title or f"Trained cell at x = {x:g}: {starts} starts in [0, 10]")
        ax.set_xlim(0, values.shape[0] - 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out, format="png")
    return Trajectories(values=values, prediction=prediction, x=float(x), path=out)


__all__ = ["Trajectories", "figure_model", "fixed_point_trajectories", "trajectory_figure"]
