"""DEQ vs SkipDEQ vs SkipRegDEQ side by side: training time, prediction time and NFE ratios.

The paper's MNIST fully connected experiment (Pal, Edelman, Rackauckas, arXiv 2201.12240; figures in docs/reproductions.md),
shortened for a 2-core machine: Dense 784->128, a tanh DEQ cell 128->128, linear
128->10, skip weight 0.01, batch 32, continuous solver (dopri5, steady-state
tolerance 0.005), Adam 1e-3. All three variants train on the same data with the
same seed in one process, one after the other, so their ratios are comparable
even on a noisy machine.

    .venv/bin/python benchmarks/skipdeq_speedup.py                 # MNIST if fetchable, else digits
    .venv/bin/python benchmarks/skipdeq_speedup.py --epochs 25 --subset 0 --seeds 6171 3859 2961   # the paper's run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from deqlab.data import DataError, fetch, load_dataset
from deqlab.run import TrainConfig, train

INITS = ("zeros", "skip", "skipreg")
LABEL = {"zeros": "DEQ", "skip": "SkipDEQ", "skipreg": "SkipRegDEQ"}


def pick_data(name: str, subset: int | None):
    if name in ("auto", "mnist"):
        try:
            return load_dataset("mnist", subset=subset, test_subset=subset and max(subset // 5, 500), flatten=True)
        except DataError:
            try:
                fetch("mnist")
                return load_dataset("mnist", subset=subset, test_subset=subset and max(subset // 5, 500), flatten=True)
            except DataError as exc:
                if name == "mnist":
                    raise
                print(f"MNIST not available ({exc}); using the embedded digits", file=sys.stderr)
    return load_dataset("digits", flatten=True)


def small(splits, n: int = 320):
    """The first n images of each split: enough for a warm-up pass."""
    import dataclasses

    from torch.utils.data import TensorDataset

    cut = lambda ds: TensorDataset(*(t[:n] for t in ds.tensors))  # noqa: E731
    return dataclasses.replace(splits, train=cut(splits.train), test=cut(splits.test))


def config(args, seed: int, init: str, epochs: int) -> TrainConfig:
    return TrainConfig(
        seed=seed, epochs=epochs, optim={"lr": 1e-3}, data={"batch_size": 32},
        model={"name": "mlp", "options": {"width": 128, "inner": None}},
        deq={"init": init, "solver": args.solver, "tol": args.tol, "max_iter": args.max_iter,
             "skip_weight": 0.01, "jac_weight": args.jac,
             "backward_options": {} if args.adjoint == "same" else {"solver": args.adjoint}},
    )


def run(args) -> list[dict]:
    splits = pick_data(args.data, args.subset or None)
    # untimed warm-up of every variant: the first training in a process pays one-time costs (allocator,
    # kernels, lazy imports) that would otherwise land on whichever model runs first (measured: DEQ first
    # took 11.9 s against 5 s for the skip variants on the same work)
    for init in INITS:
        train(config(args, 0, init, 1), data=small(splits))
    print(f"data: {splits.name}, {len(splits.train)} train / {len(splits.test)} test, "
          f"{args.epochs} epochs, solver {args.solver}, tol {args.tol}, adjoint {args.adjoint}, jac_weight {args.jac}, "
          f"threads {torch.get_num_threads()}")
    rows = []
    for seed in args.seeds:
        for init in INITS:
            cfg = config(args, seed, init, args.epochs)
            t0 = time.perf_counter()
            result = train(cfg, data=splits)
            wall = time.perf_counter() - t0
            h = result.history
            rows.append({
                "seed": seed, "init": init, "status": result.status,
                "test_acc": h[-1]["test_acc"], "nfe_fwd": h[-1]["nfe_fwd"], "nfe_bwd": h[-1]["nfe_bwd"],
                "train_s": sum(m["epoch_time_s"] for m in h),
                "predict_s_per_batch": h[-1]["infer_time_s"] * 32,
                "wall_s": wall,
            })
            r = rows[-1]
            print(f"  seed {seed} {LABEL[init]:<11} acc {r['test_acc']:.4f}  test NFE {r['nfe_fwd']:.2f}  "
                  f"bwd NFE {r['nfe_bwd']:.2f}  train {r['train_s']:.1f}s  predict {r['predict_s_per_batch'] * 1e3:.2f} ms/batch",
                  flush=True)
    return rows


def summarise(rows: list[dict]) -> str:
    def agg(init, key):
        vals = [r[key] for r in rows if r["init"] == init]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    lines = ["| model | test acc % | test NFE | backward NFE | train time (s) | predict (ms/batch) |",
             "|---|---|---|---|---|---|"]
    for init in INITS:
        acc, nfe, bnfe, tr, pr = (agg(init, k) for k in ("test_acc", "nfe_fwd", "nfe_bwd", "train_s", "predict_s_per_batch"))
        lines.append(f"| {LABEL[init]} | {100 * acc[0]:.2f} +- {100 * acc[1]:.2f} | {nfe[0]:.2f} +- {nfe[1]:.2f} | "
                     f"{bnfe[0]:.2f} | {tr[0]:.1f} +- {tr[1]:.1f} | {1e3 * pr[0]:.2f} |")
    base = {k: agg("zeros", k)[0] for k in ("nfe_fwd", "train_s", "predict_s_per_batch", "test_acc")}
    lines.append("")
    lines.append("| ratio DEQ / variant | NFE | training time | prediction time | accuracy diff (points) |")
    lines.append("|---|---|---|---|---|")
    for init in ("skip", "skipreg"):
        v = {k: agg(init, k)[0] for k in base}
        lines.append(f"| {LABEL[init]} | {base['nfe_fwd'] / v['nfe_fwd']:.2f}x | {base['train_s'] / v['train_s']:.2f}x | "
                     f"{base['predict_s_per_batch'] / v['predict_s_per_batch']:.2f}x | "
                     f"{100 * (v['test_acc'] - base['test_acc']):+.2f} |")
    lines.append("")
    lines.append("published (25 epochs, full MNIST, GPU): 4.6x fewer NFE, 3.0x / 4.0x faster training, "
                 "3.8x faster prediction, accuracy within 0.2 points")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto")
    p.add_argument("--subset", type=int, default=6000, help="training images (0: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[6171])
    p.add_argument("--solver", default="continuous")
    p.add_argument("--tol", type=float, default=0.005)
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--jac", type=float, default=0.0, help="Jacobian regularisation weight (paper: 0 or 1)")
    p.add_argument("--adjoint", default="anderson",
                   help="adjoint solver of the implicit backward; 'same' = the forward solver. Default anderson: "
                        "DeepEquilibriumNetworks.jl's continuous DEQs also solve the adjoint as a linear "
                        "steady-state problem, not by integrating an ODE")
    args = p.parse_args(argv)
    rows = run(args)
    print()
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
