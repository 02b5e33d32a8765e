"""Continuous DEQ vs neural ODE, side by side: training, backward and prediction time, NFE.

The paper's headline (Pal, Edelman, Rackauckas, arXiv 2201.12240; figures in docs/reproductions.md): continuous
DEQs train 2-4x cheaper than neural ODEs, the backward pass 4.2-8.7x. Here both
models share everything but how the cell's flow dz/dt = f(z, x) - z is used, on
MNIST dense (Dense 784->128, tanh cell 128->128, Dense 128->10), batch 32, Adam
1e-3, same data and seed:

- continuous DEQ: integrated from z0 until the steady-state test passes
  (dopri5, relative residual `--tol`), implicit gradient (adjoint by Anderson,
  a linear fixed point), for init zeros and skipreg;
- neural ODE: integrated over [0, `--t1`] (dopri5, rtol = atol = `--node-tol`),
  backward by backpropagating through the solver's stages (direct) and by
  torchdiffeq's adjoint method.

Every f evaluation is counted where it happens (forward ODE stages, adjoint
VJPs, the adjoint method's backward integration). Prints one table and the
ratios neural ODE / continuous DEQ.

    .venv/bin/python benchmarks/cdeq_vs_node.py                       # 6,000 MNIST images, 2 epochs
    .venv/bin/python benchmarks/cdeq_vs_node.py --data digits --epochs 5
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from deqlab.run import TrainConfig, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from skipdeq_speedup import pick_data, small  # noqa: E402  (same data choice as the SkipDEQ benchmark)


def configs(args) -> dict:
    common = dict(seed=args.seed, epochs=args.epochs, optim={"lr": 1e-3}, data={"batch_size": 32})
    deq = dict(solver="continuous", tol=args.tol, max_iter=50, skip_weight=0.01, backward_options={"solver": "anderson"})
    node = dict(name="neural_ode", options={"width": 128, "inner": None, "t1": args.t1,
                                            "rtol": args.node_tol, "atol": args.node_tol})
    return {
        "continuous DEQ": TrainConfig(**common, model={"name": "mlp", "options": {"width": 128, "inner": None}},
                                      deq={**deq, "init": "zeros"}),
        "continuous SkipRegDEQ": TrainConfig(**common, model={"name": "mlp", "options": {"width": 128, "inner": None}},
                                             deq={**deq, "init": "skipreg"}),
        "neural ODE (direct)": TrainConfig(**common, model=node),
        "neural ODE (adjoint)": TrainConfig(**common, model={**node, "options": {**node["options"], "adjoint": True}}),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto")
    p.add_argument("--subset", type=int, default=6000, help="training images (0: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=6171)
    p.add_argument("--tol", type=float, default=0.005, help="continuous DEQ steady-state tolerance (paper: 0.005)")
    p.add_argument("--t1", type=float, default=1.0, help="neural ODE integration interval [0, t1]")
    p.add_argument("--node-tol", type=float, default=1e-3, help="neural ODE rtol = atol")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = pick_data(args.data, args.subset or None)
    print(f"data: {splits.name}, {len(splits.train)} train / {len(splits.test)} test, {args.epochs} epochs, "
          f"seed {args.seed}, {torch.get_num_threads()} thread(s)", flush=True)
    # untimed warm-up of every model on a few images: one-time costs must not land on whichever runs first
    for cfg in configs(args).values():
        train(cfg.model_copy(update={"epochs": 1}), data=small(splits))
    rows = {}
    for label, cfg in configs(args).items():
        t0 = time.perf_counter()
        result = train(cfg, data=splits)
        h = result.history
        if not h:
            print(f"  {label}: {result.status} before its first epoch ({result.error})")
            continue
        rows[label] = r = {
            "status": result.status, "acc": h[-1]["test_acc"], "nfe_fwd": h[-1]["nfe_fwd"], "nfe_bwd": h[-1]["nfe_bwd"],
            "train_s": sum(m["epoch_time_s"] for m in h), "fwd_s": sum(m["fwd_time_s"] for m in h),
            "bwd_s": sum(m["bwd_time_s"] for m in h), "predict_ms": 1e3 * 32 * h[-1]["infer_time_s"],
            "wall_s": time.perf_counter() - t0,
        }
        print(f"  {label:<22} {r['status']:<9} acc {r['acc']:.4f}  NFE fwd {r['nfe_fwd']:.1f} bwd {r['nfe_bwd']:.1f}  "
              f"train {r['train_s']:.1f}s (fwd {r['fwd_s']:.1f}s, bwd {r['bwd_s']:.1f}s)  "
              f"predict {r['predict_ms']:.2f} ms/batch", flush=True)
    print()
    print("| model | test acc % | fwd NFE (test) | bwd NFE (train) | train time (s) | forward (s) | backward (s) | predict (ms/batch) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {100 * r['acc']:.2f} | {r['nfe_fwd']:.1f} | {r['nfe_bwd']:.1f} | {r['train_s']:.1f} | "
              f"{r['fwd_s']:.1f} | {r['bwd_s']:.1f} | {r['predict_ms']:.2f} |")
    print()
    print("| ratio neural ODE / continuous DEQ | training time | backward time | prediction time |")
    print("|---|---:|---:|---:|")
    for node in ("neural ODE (direct)", "neural ODE (adjoint)"):
        for deq in ("continuous DEQ", "continuous SkipRegDEQ"):
            if node in rows and deq in rows:
                a, b = rows[node], rows[deq]
                print(f"| {node} / {deq} | {a['train_s'] / b['train_s']:.2f}x | {a['bwd_s'] / b['bwd_s']:.2f}x | "
                      f"{a['predict_ms'] / b['predict_ms']:.2f}x |")
    print("\npublished (CIFAR-10 multiscale, GPU): continuous DEQs train 2-4x cheaper, backward 4.2-8.7x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
