"""What a solver costs beyond f itself, a DEQ training step against plain autograd, and its memory.

    .venv/bin/python benchmarks/overhead.py [--quick] [--only overhead,step,memory] [--repeats N]

Needs the `bench` extra (torchdeq==0.1.0; it drives TorchDEQ through
benchmarks/solvers.py). One CPU thread; a CUDA section follows when CUDA is
present. Everything is measured in one run, warm-up untimed, times are medians.

1. Overhead per evaluation: f(z) = tanh(W z + x) (||W||_2 = 0.9, x ~ N(0, 1),
   float32, z0 = 0, tol 1e-6, stop_mode rel) at batch 32 / width 128 and
   batch 128 / width 256. Per solver: NFE (calls of f counted by a wrapper),
   microseconds per NFE (solve time / NFE) and that over one bare call of f.
2. Training step of the MLP DEQ (tanh cell, implicit backward) against the same
   model unrolled by plain autograd to the DEQ's total number of evaluations.
3. Peak memory of one training step as the forward NFE grows (tighter tol,
   wider cell) for implicit, phantom and unrolled (autograd through every
   forward evaluation): torch.cuda.max_memory_allocated on CUDA; on CPU the
   peak RSS growth of a fresh subprocess per configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import solvers as bench_solvers  # noqa: E402  (benchmarks/solvers.py: the TorchDEQ driver)

SIZES = ((32, 128), (128, 256))
TOL = 1e-6
DL_SOLVERS = ("fixed_point", "anderson", "broyden", "newton_krylov", "continuous")
TD_SOLVERS = {"fixed_point": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}
GOALS = {"fixed_point": 1.5, "anderson": 2.5, "broyden": 2.5, "newton_krylov": 3.0, "continuous": 3.0}
GOAL_STEP = 1.3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- 1. overhead per NFE
def tanh_map(batch: int, width: int, device, seed: int = 0):
    """f(z) = tanh(W z + x), counting its calls in f.calls."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    W = (0.9 * W / torch.linalg.matrix_norm(W, 2)).float().to(device)
    x = torch.randn(batch, width, generator=g).to(device)

    def f(z):
        f.calls += 1
        return torch.tanh(F.linear(z, W) + x)

    f.calls = 0
    return f, torch.zeros(batch, width, device=device)


def overhead_table(batch: int, width: int, device, repeats: int) -> list[dict]:
    """One row per solver: NFE, us per NFE and x bare f for deqlab and TorchDEQ (same f, same run)."""
    f, z0 = tanh_map(batch, width, device)
    runs = {(lib, s): (bench_solvers.deqlab_run(s) if lib == "deqlab" else bench_solvers.torchdeq_run(TD_SOLVERS[s]))
            for s in DL_SOLVERS for lib in ("deqlab", "torchdeq") if lib == "deqlab" or s in TD_SOLVERS}
    nfe = {}
    for key, run in runs.items():  # count, and warm up (untimed)
        f.calls = 0
        run(f, z0, TOL)
        nfe[key] = f.calls
        run(f, z0, TOL)
    n_bare = 50
    times = {key: [] for key in runs}
    bare = []
    with torch.no_grad():
        for _ in range(repeats):  # round-robin, so machine noise hits every row alike
            bare.append(timed(lambda: [f(z0) for _ in range(n_bare)], device) / n_bare)
            for key, run in runs.items():
                times[key].append(timed(lambda: run(f, z0, TOL), device))
    t_bare = statistics.median(bare)
    rows = []
    for s in DL_SOLVERS:
        row = {"solver": s, "bare_us": 1e6 * t_bare}
        for lib in ("deqlab", "torchdeq"):
            if (lib, s) in runs:
                per = statistics.median(times[(lib, s)]) / nfe[(lib, s)]
                row[lib] = {"nfe": nfe[(lib, s)], "us": 1e6 * per, "x": per / t_bare}
        rows.append(row)
    return rows


def print_overhead(rows: list[dict], batch: int, width: int, device) -> None:
    print(f"\n== overhead per NFE | {device.type} | batch {batch}, width {width}, tol {TOL:g}, "
          f"bare f {rows[0]['bare_us']:.1f} us")
    print("| solver | deqlab NFE | us per NFE | x bare f | goal (b32/w128) | TorchDEQ NFE | us per NFE | x bare f |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        d, t = r["deqlab"], r.get("torchdeq")
        goal = GOALS[r["solver"]]
        verdict = f"<= {goal}x {'PASS' if d['x'] <= goal else 'MISS'}" if (batch, width) == SIZES[0] else "-"
        td = f"{t['nfe']} | {t['us']:.0f} | {t['x']:.1f}x" if t else "- | - | -"
        print(f"| {r['solver']} | {d['nfe']} | {d['us']:.0f} | {d['x']:.1f}x | {verdict} | {td} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 15, --quick 5)")
    ap.add_argument("--only", default="overhead,step,memory", help="comma-separated sections")
    args = ap.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    only = set(args.only.split(","))
    torch.set_num_threads(1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    from importlib.metadata import version
    print(f"deqlab overhead | torch {torch.__version__} | TorchDEQ {version('torchdeq')} | CPU threads "
          f"{torch.get_num_threads()} | devices {', '.join(d.type for d in devices)} | median of {repeats}")
    for device in devices:
        if "overhead" in only:
            for batch, width in SIZES:
                print_overhead(overhead_table(batch, width, device, repeats), batch, width, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
