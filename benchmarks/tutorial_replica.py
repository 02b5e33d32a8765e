"""The DeepEquilibriumNetworks.jl MNIST tutorial on a CPU, replicated with deqlab.

Conv DEQ on 2,500 MNIST images (2,000 train / 500 test), batch 32, Adam 5e-4,
2 epochs of fixed-depth-5 pretraining then 3 DEQ epochs, at most 10 solver
iterations, loss = cross-entropy + 0.01 * mse(z*, z0), for init zeros / skip /
skipreg, each with Newton-Krylov and the continuous solver (steady-state and
ODE tolerances 0.01, as in the tutorial). The adjoint is solved by Anderson, as
the tutorial solves it as a linear steady-state problem rather than an ODE.

Reference (../shared/REFERENCE_RESULTS.md): conv SkipRegDEQ with Newton-Krylov
reached 73.8% in ~4,760 s on a CPU; the goal is at least that accuracy in a
tenth of the time on 2 cores.

    .venv/bin/python benchmarks/tutorial_replica.py [--channels 16] [--inits zeros skip skipreg]
"""

from __future__ import annotations

import argparse
import sys
import time

from deqlab.data import DataError, fetch, load_dataset
from deqlab.train import TrainConfig, train

LABEL = {"zeros": "DEQ", "skip": "SkipDEQ", "skipreg": "SkipRegDEQ"}
SOLVERS = {
    "newton_krylov": {"restart": 5, "max_restarts": 0},
    "continuous": {"rtol": 0.01, "atol": 0.01},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--inits", nargs="+", default=["zeros", "skip", "skipreg"], choices=list(LABEL))
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        splits = load_dataset("mnist", subset=2000, test_subset=500, seed=args.seed)
    except DataError:
        fetch("mnist")
        splits = load_dataset("mnist", subset=2000, test_subset=500, seed=args.seed)
    print(f"MNIST {len(splits.train)} train / {len(splits.test)} test, conv DEQ with {args.channels} channels", flush=True)
    rows = []
    t_all = time.perf_counter()
    for solver in args.solvers:
        for init in args.inits:
            cfg = TrainConfig(
                seed=args.seed, epochs=3, pretrain_epochs=2, pretrain_depth=5,
                data={"name": "mnist", "batch_size": 32}, optim={"lr": 5e-4},
                model={"name": "conv", "options": {"channels": args.channels}},
                deq={"init": init, "solver": solver, "solver_options": SOLVERS[solver], "tol": 0.01,
                     "max_iter": 10, "skip_weight": 0.01, "backward_options": {"solver": "anderson"}},
            )
            t0 = time.perf_counter()
            result = train(cfg, data=splits)
            wall = time.perf_counter() - t0
            last = result.history[-1]
            rows.append((LABEL[init], solver, result.status, last["test_acc"], wall, last["nfe_fwd"], last["nfe_bwd"],
                         last["infer_time_s"] * 32))
            print(f"  {LABEL[init]:<11} {solver:<14} {result.status:<9} acc {last['test_acc']:.3f}  train+eval {wall:6.1f} s"
                  f"  fwd NFE {last['nfe_fwd']:.1f}  bwd NFE {last['nfe_bwd']:.1f}"
                  f"  predict {last['infer_time_s'] * 32 * 1e3:.1f} ms/batch", flush=True)
    print()
    print("| model | solver | test acc % | train + eval time (s) | fwd NFE | bwd NFE | predict (ms/batch) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, solver, status, acc, wall, nf, nb, pr in rows:
        print(f"| {name} | {solver} | {100 * acc:.1f} | {wall:.0f} | {nf:.1f} | {nb:.1f} | {pr * 1e3:.1f} |")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; reference: SkipRegDEQ Newton-Krylov 73.8% in ~4,760 s (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
