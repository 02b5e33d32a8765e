"""The seed MLP DEQ on MNIST: test accuracy per epoch and the depth profile.

The seed article (julialang.org/blog/2021/10/DEQ, "DEQ to classify the digits
of MNIST"): Dense 784->100, a DEQ over the cell Dense(100->500, tanh) ->
Dense(500->100), Dense 100->10; the steady state found by Tsit5 with abstol =
reltol = 0.1, started from z0 = cell(x); Adam 3e-4, batch 128, no auxiliary loss.

deqlab's `mlp` model with its defaults has exactly these widths. Its cell
injects the input after the MLP, f(z, x) = net(z) + x, where the seed's is
g(z, x) = net(z + x); the two are the same model in other coordinates: with
w = z + x the seed's iteration z <- net(z + x) is w <- net(w) + x, step for step
(same residuals ||z_{k+1} - z_k||), and the seed's start cell(x) = net(x) is
w0 = net(x) + x = f(0, x), deqlab's `skipreg` start (with skip_weight 0: no
auxiliary loss). The only difference left is that deqlab's head reads w =
z* + x, i.e. the seed's head plus a linear skip from the encoded input.

The depth profile is the forward relative residual ||f(z_k) - z_k|| / ||f(z_k)||
after each solver step on a fixed test batch (the first --profile-batch test
images), taken from `deqlab.run.diagnostics.residual_traces`; by default with plain
fixed-point iteration (step k = k applications of the cell: the network
unrolled to depth k) and a tight tolerance, so the table shows how fast the
trained layer actually converges, and also with the training solver.

    .venv/bin/python benchmarks/seed_mlp_mnist.py                      # 20,000 train images, 3 epochs (~1.5 min, 1 core)
    .venv/bin/python benchmarks/seed_mlp_mnist.py --subset 0 --epochs 5 --out seed_mlp_out   # full MNIST, PNG plots

With --out the run also records `depth_states` (the hidden states after k =
0..K plain applications of the cell from the model's z0, on the fixed test
batch, each epoch) into a results folder the dashboard reads
(`--out/results/seed_mlp_mnist`), and draws the seed article's picture from
them: the states projected on two principal components (one basis for every
depth, fitted on all of them), one panel per depth, coloured by digit class,
the clusters forming as depth grows (`depth_states.png`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from deqlab.report.views import pca_states
from deqlab.data import DataError, fetch, load_dataset, make_loaders
from deqlab.results import TrialWriter, load_states
import deqlab.run.loop as loop
from deqlab.layers import DEQConfig
from deqlab.run import TrainConfig, provenance, select_device, train
from deqlab.run.diagnostics import residual_traces
from deqlab.run.loop import model_for


def load(subset: int | None, test_subset: int | None, seed: int):
    kwargs = dict(subset=subset, test_subset=test_subset, seed=seed, flatten=True)
    try:
        return load_dataset("mnist", **kwargs)
    except DataError:
        fetch("mnist")
        return load_dataset("mnist", **kwargs)


@contextlib.contextmanager
def solver_swapped(deq, solver: str, tol: float, max_iter: int, options: dict | None = None):
    """Temporarily run the trained DEQ layer with another forward solver (for the profile)."""
    saved = deq.cfg
    deq.cfg = DEQConfig(**{**saved.model_dump(), "solver": solver, "solver_options": options or {}, "tol": tol,
                           "max_iter": max_iter})
    try:
        yield deq
    finally:
        deq.cfg = saved


def depth_profile(model, x, y, solver: str | None = None, tol: float | None = None, max_iter: int | None = None):
    """(max residual per step, mean residual per step) on batch x; None fields keep the trained solver."""
    deq = model.deq
    if solver is None:
        (mx, mean), _ = residual_traces(model, x, y)
        return mx, mean
    with solver_swapped(deq, solver, tol, max_iter):
        (mx, mean), _ = residual_traces(model, x, y)
    return mx, mean


def table(title: str, mx: list, mean: list) -> str:
    lines = [title, "", "| step | max residual | mean residual |", "|---:|---:|---:|"]
    lines += [f"| {k} | {a:.3e} | {b:.3e} |" for k, (a, b) in enumerate(zip(mx, mean))]
    return "\n".join(lines)


def plot(path: Path, profiles: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, (mx, mean)) in enumerate(profiles.items()):
        color = f"C{i}"
        ax.semilogy(range(len(mx)), mx, "-o", ms=3, color=color, label=f"{label}: max")
        ax.semilogy(range(len(mean)), mean, "--", color=color, label=f"{label}: mean")
    ax.set_xlabel("solver step")
    ax.set_ylabel("relative residual ||f(z)-z|| / ||f(z)||")
    ax.set_title("Seed MLP DEQ on MNIST: forward residual vs step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_states(path: Path, states) -> None:
    """The seed article's picture: hidden states over depth on two shared principal components, by class.

    Panels at depths 0, 1, 2, 4, 8, ... and the last: the clusters form in the first few applications.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    proj, ratio = pca_states(states)
    steps = sorted(proj["step"].unique())
    picks = sorted({k for k in [0] + [2 ** i for i in range(8)] if k < steps[-1]} | {steps[-1]})
    fig, axes = plt.subplots(1, len(picks), figsize=(3 * len(picks), 3.2), sharex=True, sharey=True)
    for ax, k in zip(list(axes) if len(picks) > 1 else [axes], picks):
        rows = proj[proj["step"] == k]
        for label in sorted(rows["label"].unique(), key=int):
            sel = rows[rows["label"] == label]
            ax.scatter(sel["pc1"], sel["pc2"], s=8, color=f"C{int(label)}", label=label, alpha=0.8)
        ax.set_title(f"depth {k}" + (" (z0)" if k == 0 else ""))
        ax.set_xticks([])
        ax.set_yticks([])
    axes_list = list(axes) if len(picks) > 1 else [axes]
    axes_list[-1].legend(title="digit", fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"Seed MLP DEQ hidden states over depth (PCA, {100 * ratio.sum():.0f}% of variance)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", type=int, default=20000, help="training images (0: all 60,000)")
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all 10,000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--solver", default="continuous", help="training solver (seed: Tsit5 steady state; here dopri5)")
    p.add_argument("--tol", type=float, default=0.1, help="training solver tolerance (seed: 0.1)")
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--init", default="skipreg", choices=("zeros", "skip", "skipreg"),
                   help="skipreg = the seed's start z0 = cell(x)")
    p.add_argument("--skip-weight", type=float, default=0.0, help="auxiliary loss weight (seed: none)")
    p.add_argument("--profile-solver", default="fixed_point")
    p.add_argument("--profile-tol", type=float, default=1e-6)
    p.add_argument("--profile-steps", type=int, default=30)
    p.add_argument("--profile-batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: leave the other cores alone)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth-states", type=int, default=30, help="depths recorded for the PCA picture (with --out)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for depth_profile.png/.csv, depth_states.png and the run's results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    splits = load(args.subset or None, args.test_subset or None, args.seed)
    cfg = TrainConfig(
        seed=args.seed, epochs=args.epochs, eval_batch=args.profile_batch,
        depth_states=args.depth_states if args.out is not None else 0,
        data={"name": "mnist", "batch_size": args.batch_size}, optim={"lr": args.lr},
        model={"name": "mlp"},  # defaults: 784 -> 100, cell 100 -> 500 tanh -> 100, 100 -> 10
        deq={"init": args.init, "skip_weight": args.skip_weight, "solver": args.solver, "tol": args.tol,
             "max_iter": args.max_iter,
             # the continuous solver's adjoint as a linear steady-state problem, as DeepEquilibriumNetworks.jl does
             "backward_options": {"solver": "anderson"} if args.solver == "continuous" else {}},
    )
    params = sum(q.numel() for q in model_for(cfg, splits).parameters())
    print(f"MNIST {len(splits.train)} train / {len(splits.test)} test; seed MLP DEQ ({params:,} parameters), "
          f"{args.solver} tol {args.tol}, init {args.init}, Adam {args.lr}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    print("| epoch | test acc % | test loss | train loss | fwd NFE (test) | bwd NFE | converged | epoch time (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    model_box = {}

    def report(epoch, m):
        print(f"| {epoch + 1} | {100 * m['test_acc']:.2f} | {m['test_loss']:.4f} | {m['train_loss']:.4f} | "
              f"{m['nfe_fwd']:.1f} | {m['nfe_bwd']:.1f} | {m['converged_frac']:.3f} | {m['epoch_time_s']:.1f} |",
              flush=True)

    # train() builds the model and does not return it: wrap its builder to keep a handle on the
    # trained model for the profile (same build, same seed, nothing else changes)
    def keep(config, data, _build=loop.model_for):
        model_box["model"] = _build(config, data)
        return model_box["model"]

    writer = None
    if args.out is not None:
        trial = f"train-{cfg.config_hash()}"
        writer = TrialWriter(str(args.out / "results"), "seed_mlp_mnist", trial, cfg.flat_params(),
                             provenance(cfg, select_device(cfg.device)))
    with mock.patch.object(loop, "model_for", keep):
        result = train(cfg, report, data=splits, writer=writer)
    wall = time.perf_counter() - t0
    print(f"\nstatus {result.status}; train + eval {wall:.0f} s")
    if result.status != "completed":
        print(f"run ended early: {result.error}")

    model = model_box["model"]
    x, y = next(iter(make_loaders(splits, args.profile_batch, seed=args.seed, shuffle=False)[1]))
    profiles = {
        f"{args.profile_solver} (tol {args.profile_tol:g})":
            depth_profile(model, x, y, args.profile_solver, args.profile_tol, args.profile_steps),
        f"training solver {args.solver} (tol {args.tol:g})": depth_profile(model, x, y),
    }
    for label, (mx, mean) in profiles.items():
        print()
        print(table(f"Depth profile, {label}, first {len(x)} test images:", mx, mean))
    mx, _ = next(iter(profiles.values()))
    if len(mx) > 1 and mx[0] > 0 and mx[-1] > 0:
        rate = math.exp(math.log(mx[-1] / mx[0]) / (len(mx) - 1))
        print(f"\nmean contraction of the max residual per fixed-point step: {rate:.3f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "depth_profile.csv", "w") as fh:
            fh.write("profile,step,residual_max,residual_mean\n")
            for label, (mxs, means) in profiles.items():
                for k, (a, b) in enumerate(zip(mxs, means)):
                    fh.write(f"\"{label}\",{k},{a:.6e},{b:.6e}\n")
        plot(args.out / "depth_profile.png", profiles)
        plot_states(args.out / "depth_states.png", load_states(writer.base, writer.trial_id))
        print(f"wrote {args.out / 'depth_profile.png'}, {args.out / 'depth_profile.csv'}, "
              f"{args.out / 'depth_states.png'} and the results in {writer.base}")
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
