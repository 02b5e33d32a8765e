"""`deqlab demo`: the seed check (y = 2x) for every init mode and solver kind, with its figure."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, csv_list, positive_int

def configure_demo(p: argparse.ArgumentParser) -> None:
    # no deqlab.run.seed_check import here: it loads torch, and `deqlab --help` must stay fast
    p.add_argument("--out", default="demo_out", help="folder for the trajectory figure (default: demo_out)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="full-batch Adam steps per model (default: seed_check.DEFAULT_STEPS, as in the article)")
    p.add_argument("--seed", type=int, default=0, help="torch seed for every model (default: 0)")
    p.add_argument("--workers", type=positive_int, default=default_workers(),
                   help="models trained in parallel processes (default: %(default)s, at most 2)")
    p.add_argument("--inits", type=csv_list, default=("zeros", "skipreg", "skip"),
                   help="comma-separated init modes (default: zeros,skipreg,skip)")
    p.add_argument("--solvers", type=csv_list, default=("anderson", "continuous"),
                   help="comma-separated solvers (default: anderson,continuous)")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def run_demo(args: argparse.Namespace) -> int:
    from ..run import seed_check as sc
    from ..run import seed_figure

    args.steps = args.steps or sc.DEFAULT_STEPS
    inits, solvers = sc.check_inputs(args.inits, args.solvers, args.steps, args.seed)
    print(f"seed check: learn y = 2x on x = 1..10, then predict x = {sc.PROBE_X:g} "
          f"({len(inits) * len(solvers)} models, {args.steps} Adam steps each, seed {args.seed})", flush=True)
    start = time.perf_counter()
    rows = sc.run_seed_check(inits=inits, solvers=solvers, steps=args.steps, seed=args.seed, workers=args.workers)
    print(sc.format_table(rows))
    shown = seed_figure.figure_model(rows)
    path = Path(args.out) / "trajectories.png"
    traj = seed_figure.trajectory_figure(
        shown.model, x=sc.PROBE_X, starts=10, depth=100, path=path, seed=args.seed,
        title=f"{shown.init}/{shown.solver} cell at x = {sc.PROBE_X:g}: 10 starts in [0, 10]",
    )
    settled = traj.values.shape[0] - 1
    print(f"trajectories ({shown.init}/{shown.solver} cell, 10 starts in [0, 10], settled after {settled} "
          f"of at most 100 steps at {float(traj.final.mean()):.4f}): {traj.path}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    print(sc.verdict(rows))
    return EXIT_OK if all(r.passed for r in rows) else EXIT_FAILED
