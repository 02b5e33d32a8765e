"""What a solver costs beyond f itself, a DEQ training step against plain autograd, and its memory.

    .venv/bin/python benchmarks/overhead.py [--quick] [--only overhead,step,memory] [--repeats N]
    .venv/bin/python benchmarks/overhead.py --compile [MODE] [--only overhead,step]

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

--compile (mode "default" unless named: reduce-overhead, max-autotune) puts the
compiled solve (`solve(..., compile=MODE)`) beside eager in section 1, with its
compile time (the first solve, graphs built) and the graphs built by the timed
solves after it (recompiles, 0 expected), and replaces section 2 by a training
step of the digits MLP DEQ (studies/train_digits.yaml's model) eager vs compiled.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
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

from deqlab.layers import DEQConfig  # noqa: E402
from deqlab.models import MLPDEQ  # noqa: E402
from deqlab.solvers import solve  # noqa: E402

SIZES = ((32, 128), (128, 256))
TOL = 1e-6
DL_SOLVERS = ("fixed_point", "anderson", "broyden", "newton_krylov", "continuous")
TD_SOLVERS = {"fixed_point": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}
GOALS = {"fixed_point": 1.5, "anderson": 2.5, "broyden": 2.5, "newton_krylov": 3.0, "continuous": 3.0}
GOAL_STEP = 1.3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = [time.perf_counter]  # --clock cpu: time.process_time, which a machine shared with other jobs inflates less


def timed(fn, device) -> float:
    sync(device)
    t0 = CLOCK[0]()
    fn()
    sync(device)
    return CLOCK[0]() - t0


def wall(fn, device) -> float:
    """Wall-clock seconds of fn whatever --clock says: compile time is spent in worker processes too."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- 1. overhead per NFE
def tanh_map(batch: int, width: int, device, seed: int = 0):
    """f(z) = tanh(W z + x); f.counted is the same map counting its calls in f.counted.calls.

    Times are taken with f itself: a compiled solve traces f, and a Python side
    effect such as a counter would be traced too (graph breaks, replayed mutations).
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    W = (0.9 * W / torch.linalg.matrix_norm(W, 2)).float().to(device)
    x = torch.randn(batch, width, generator=g).to(device)

    def f(z):
        return torch.tanh(F.linear(z, W) + x)

    def counted(z):
        counted.calls += 1
        return f(z)

    counted.calls = 0
    f.counted = counted
    return f, torch.zeros(batch, width, device=device)


def compiled_run(solver: str, mode: str, graphs: list):
    """Like solvers.deqlab_run with compile=mode; appends each solve's (graphs_compiled, nfe, loop) to `graphs`.

    Its NFE is the solve's own count: a counting wrapper's Python side effect cannot run inside a whole-loop
    graph (it would make the solve fall back to a step per iteration), and tests/test_compile.py holds the
    compiled count to eager's, which a counting wrapper checks."""
    def run(f, z0, tol):
        res = solve(f, z0, solver=solver, tol=tol, max_iter=bench_solvers.MAX_ITER, stop_mode="rel", compile=mode)
        graphs.append((res.stats["graphs_compiled"], res.nfe, res.stats["loop"]))

    return run


def overhead_table(batch: int, width: int, device, repeats: int, compile_mode: str | None = None) -> list[dict]:
    """One row per solver: NFE, us per NFE and x bare f for deqlab (eager, and compiled if asked) and TorchDEQ."""
    f, z0 = tanh_map(batch, width, device)
    libs = ("deqlab", "compiled", "torchdeq") if compile_mode else ("deqlab", "torchdeq")
    graphs = {s: [] for s in DL_SOLVERS}
    runs = {}
    for s in DL_SOLVERS:
        runs[("deqlab", s)] = bench_solvers.deqlab_run(s)
        if compile_mode:
            runs[("compiled", s)] = compiled_run(s, compile_mode, graphs[s])
        if s in TD_SOLVERS:
            runs[("torchdeq", s)] = bench_solvers.torchdeq_run(TD_SOLVERS[s])
    nfe, first = {}, {}
    for key, run in runs.items():  # first call (a compiled solve compiles), count, warm up; all untimed
        first[key] = wall(lambda: run(f, z0, TOL), device)
        if key[0] == "compiled":
            nfe[key] = graphs[key[1]][0][1]
        else:
            f.counted.calls = 0
            run(f.counted, z0, TOL)
            nfe[key] = f.counted.calls
        run(f, z0, TOL)
    n_bare = 50
    times = {key: [] for key in runs}
    bare, bare_compiled = [], []
    f_compiled = torch.compile(f, mode=None if compile_mode == "default" else compile_mode) if compile_mode else None
    with torch.no_grad():
        if f_compiled:
            f_compiled(z0)
        for _ in range(repeats):  # round-robin, so machine noise hits every row alike
            bare.append(timed(lambda: [f(z0) for _ in range(n_bare)], device) / n_bare)
            if f_compiled:  # the floor of a compiled step: one call of a compiled f alone
                bare_compiled.append(timed(lambda: [f_compiled(z0) for _ in range(n_bare)], device) / n_bare)
            for key, run in runs.items():
                times[key].append(timed(lambda: run(f, z0, TOL), device))
    t_bare = statistics.median(bare)
    rows = []
    for s in DL_SOLVERS:
        row = {"solver": s, "bare_us": 1e6 * t_bare}
        if compile_mode:
            row["bare_compiled_us"] = 1e6 * statistics.median(bare_compiled)
        for lib in libs:
            if (lib, s) in runs:
                per = statistics.median(times[(lib, s)]) / nfe[(lib, s)]
                row[lib] = {"nfe": nfe[(lib, s)], "us": 1e6 * per, "x": per / t_bare}
        if compile_mode:
            # graphs[s]: the first solve, the warm-up, the timed solves
            row["compiled"].update(compile_s=first[("compiled", s)], graphs=graphs[s][0][0],
                                   recompiles=sum(g for g, _, _ in graphs[s][1:]), loop=graphs[s][0][2])
        rows.append(row)
    return rows


SPLIT_ITERS = (1, 50)


def split_table(batch: int, width: int, device, repeats: int, mode: str) -> list[dict]:
    """A solve's cost split into a fixed part per solve and a part per iteration, eager and compiled: each
    solver run with tol 1e-30 (no sample converges) for 1 and for 50 iterations, round-robin; the slope is the
    cost of one more iteration, the intercept what a solve pays however short (validation, the compiled
    call's guards and wrappers, reading the result). Per-NFE figures at n iterations are intercept / n +
    slope: what the whole-loop graph leaves is the per-solve part, not the iterations."""
    f, z0 = tanh_map(batch, width, device)
    runs = {(s, m, n): (lambda s=s, m=m, n=n: solve(f, z0, solver=s, tol=1e-30, max_iter=n, compile=m))
            for s in ("fixed_point", "anderson", "broyden") for m in ("none", mode) for n in SPLIT_ITERS}
    loops = {}
    for key, run in runs.items():
        run()
        loops[key] = run().stats.get("loop", "eager")
    times = {key: [] for key in runs}
    bare = []
    with torch.no_grad():
        for _ in range(repeats):
            bare.append(timed(lambda: [f(z0) for _ in range(50)], device) / 50)
            for key, run in runs.items():
                times[key].append(timed(run, device))
    t_bare = statistics.median(bare)
    rows = []
    for s in ("fixed_point", "anderson", "broyden"):
        for m in ("none", mode):
            lo, hi = (statistics.median(times[(s, m, n)]) for n in SPLIT_ITERS)
            slope = (hi - lo) / (SPLIT_ITERS[1] - SPLIT_ITERS[0])
            rows.append({"solver": s, "mode": m, "bare_us": 1e6 * t_bare, "iter_us": 1e6 * slope,
                         "solve_us": 1e6 * (lo - slope * SPLIT_ITERS[0]), "loop": loops[(s, m, 1)]})
    return rows


def print_split(rows: list[dict], batch: int, width: int, device) -> None:
    print(f"\n== per iteration and per solve (tol 1e-30, {SPLIT_ITERS[0]} and {SPLIT_ITERS[1]} iterations) | {device.type} |"
          f" batch {batch}, width {width}, bare f {rows[0]['bare_us']:.1f} us")
    print("| solver | compile | loop | us per iteration | x bare f | us per solve | per NFE at 14 NFE (x bare f) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        at14 = r["solve_us"] / 14 + r["iter_us"]
        print(f"| {r['solver']} | {r['mode']} | {r['loop']} | {r['iter_us']:.1f} | {r['iter_us'] / r['bare_us']:.2f}x |"
              f" {r['solve_us']:.0f} | {at14:.0f} ({at14 / r['bare_us']:.2f}x) |", flush=True)


def profile_compiled(batch: int, width: int, mode: str, top: int = 8) -> None:
    """torch.profiler over 5 warm compiled solves per solver: the ops and wrappers that take the time."""
    from torch.profiler import profile

    f, z0 = tanh_map(batch, width, torch.device("cpu"))
    for s in DL_SOLVERS:
        run = compiled_run(s, mode, [])
        run(f, z0, TOL)
        run(f, z0, TOL)
        with profile() as prof:
            for _ in range(5):
                run(f, z0, TOL)
        print(f"\n== profile | compile={mode} | {s} | batch {batch}, width {width} | 5 solves, top {top} by self CPU")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))


def _verdict(solver: str, x: float, batch: int, width: int) -> str:
    """The goal column: the goals are set at the first size only."""
    if (batch, width) != SIZES[0]:
        return "-"
    goal = GOALS[solver]
    return f"<= {goal}x {'PASS' if x <= goal else 'MISS'}"


def print_compiled(rows: list[dict], batch: int, width: int, device, mode: str) -> None:
    print(f"\n== overhead per NFE, eager vs compile={mode} | {device.type} | batch {batch}, width {width}, "
          f"tol {TOL:g}, bare f {rows[0]['bare_us']:.1f} us, the same f compiled alone "
          f"{rows[0]['bare_compiled_us']:.1f} us")
    print("| solver | NFE eager / compiled | eager us per NFE | x bare f | compiled loop | compiled us per NFE |"
          " x bare f | goal (b32/w128) | compile s | graphs | recompiles | TorchDEQ NFE | x bare f |")
    print("|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        d, c, t = r["deqlab"], r["compiled"], r.get("torchdeq")
        verdict = _verdict(r["solver"], c["x"], batch, width)
        td = f"{t['nfe']} | {t['x']:.1f}x" if t else "- | -"
        print(f"| {r['solver']} | {d['nfe']} / {c['nfe']} | {d['us']:.0f} | {d['x']:.1f}x | {c['loop']} | {c['us']:.0f} |"
              f" {c['x']:.1f}x | {verdict} | {c['compile_s']:.1f} | {c['graphs']} | {c['recompiles']} | {td} |",
              flush=True)


def print_overhead(rows: list[dict], batch: int, width: int, device) -> None:
    print(f"\n== overhead per NFE | {device.type} | batch {batch}, width {width}, tol {TOL:g}, "
          f"bare f {rows[0]['bare_us']:.1f} us")
    print("| solver | deqlab NFE | us per NFE | x bare f | goal (b32/w128) | TorchDEQ NFE | us per NFE | x bare f |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        d, t = r["deqlab"], r.get("torchdeq")
        verdict = _verdict(r["solver"], d["x"], batch, width)
        td = f"{t['nfe']} | {t['us']:.0f} | {t['x']:.1f}x" if t else "- | - | -"
        print(f"| {r['solver']} | {d['nfe']} | {d['us']:.0f} | {d['x']:.1f}x | {verdict} | {td} |")


# --------------------------------------------------------------------------- 2. training step
def mlp_deq(width: int, device, norm: float = 0.9, slow: bool = False, **deq) -> MLPDEQ:
    """The MLP DEQ (784 -> width, cell tanh(W z + x), width -> 10) with its cell scaled to ||W||_2 = norm.

    slow=True makes W symmetric and the encoder 10x smaller, so tanh stays near
    linear and the contraction near `norm`: many iterations, for the memory table.
    """
    torch.manual_seed(0)
    model = MLPDEQ(width=width, inner=None, deq=DEQConfig(**deq)).to(device)
    with torch.no_grad():
        W = model.deq.f.net.weight
        if slow:
            W.copy_((W + W.T) / 2)
            model.encoder.weight.mul_(0.1)
            model.encoder.bias.mul_(0.1)
        W.mul_(norm / torch.linalg.matrix_norm(W.double(), 2).item())
    return model


def unrolled_logits(model: MLPDEQ, x: torch.Tensor, depth: int) -> torch.Tensor:
    """The same model as an explicit network: `depth` applications of the cell from z = 0, plain autograd."""
    u = model.encoder(x.flatten(1))
    z = torch.zeros_like(u)
    for _ in range(depth):
        z = model.deq.f(z, u)
    return model.head(z)


def train_step(model: MLPDEQ, x, y, opt, depth: int | None = None) -> dict:
    """One step (forward, cross-entropy, backward, Adam); depth=None solves, an int unrolls."""
    opt.zero_grad(set_to_none=True)
    if depth is None:
        logits, info = model(x)
    else:
        logits, info = unrolled_logits(model, x, depth), None
    F.cross_entropy(logits, y).backward()
    opt.step()
    return {"fwd": info.nfe_fwd, "bwd": info.nfe_bwd} if info else {"fwd": depth, "bwd": depth}


def step_table(device, repeats: int, batch: int = 32, width: int = 128, tol: float = TOL) -> list[dict]:
    """DEQ training step (implicit backward) vs the same model unrolled to the DEQ's forward NFE."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 784, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    rows = []
    for solver in ("fixed_point", "anderson", "broyden"):
        model = mlp_deq(width, device, solver=solver, tol=tol, max_iter=100)
        opt = torch.optim.Adam(model.parameters(), lr=0.0)  # lr 0: every repeat does the same step
        nfe = train_step(model, x, y, opt)
        depth = nfe["fwd"]
        train_step(model, x, y, opt, depth)
        t_deq, t_unr = [], []
        for _ in range(repeats):
            t_deq.append(timed(lambda: train_step(model, x, y, opt), device))
            t_unr.append(timed(lambda: train_step(model, x, y, opt, depth), device))
        rows.append({"solver": solver, "fwd": nfe["fwd"], "bwd": nfe["bwd"], "deq_ms": 1e3 * statistics.median(t_deq),
                     "unrolled_ms": 1e3 * statistics.median(t_unr)})
    return rows


def print_steps(rows: list[dict], device) -> None:
    print(f"\n== training step | {device.type} | MLP DEQ, batch 32, width 128, tol {TOL:g}, implicit backward"
          f" (adjoint = forward solver) vs unrolled to the same forward NFE")
    print("| solver | forward NFE | backward VJPs (DEQ) | DEQ step ms | unrolled step ms | ratio | goal <= 1.3x |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["deq_ms"] / r["unrolled_ms"]
        print(f"| {r['solver']} | {r['fwd']} | {r['bwd']} | {r['deq_ms']:.2f} | {r['unrolled_ms']:.2f} | {ratio:.2f}x |"
              f" {'PASS' if ratio <= GOAL_STEP else 'MISS'} |")


def digits_step_table(device, repeats: int, mode: str, batch: int = 32) -> list[dict]:
    """studies/train_digits.yaml's model (64 -> 64, cell 64 -> 128 -> 64, skipreg, tol 1e-3), eager vs compiled.

    A training step on the first `batch` digits, then one on the last 7 (a smaller last batch,
    as 1797 digits in batches of 32 give), then the timed rounds; `recompiles` counts graphs
    built after those two steps.
    """
    from sklearn.datasets import load_digits

    from deqlab.solvers.compiled import graphs_compiled

    data = load_digits()
    x_all = torch.tensor(data.data / 16.0, dtype=torch.float32, device=device)
    y_all = torch.tensor(data.target, device=device)
    x, y, x_last, y_last = x_all[:batch], y_all[:batch], x_all[-7:], y_all[-7:]
    rows = []
    for solver in ("fixed_point", "anderson", "broyden"):
        models, opts, first, graphs, nfe = {}, {}, {}, {}, {}
        for c in ("none", mode):
            torch.manual_seed(0)
            deq = DEQConfig(init="skipreg", solver=solver, tol=1e-3, max_iter=30, compile=c)
            models[c] = MLPDEQ(in_dim=64, width=64, inner=128, deq=deq).to(device)
            opts[c] = torch.optim.Adam(models[c].parameters(), lr=0.0)  # lr 0: every repeat does the same step
            g0 = graphs_compiled()
            first[c] = wall(lambda: train_step(models[c], x, y, opts[c]), device)
            train_step(models[c], x_last, y_last, opts[c])
            graphs[c] = graphs_compiled() - g0
            nfe[c] = train_step(models[c], x, y, opts[c])
        g1 = graphs_compiled()
        times = {c: [] for c in models}
        for _ in range(repeats):
            for c in models:
                times[c].append(timed(lambda: train_step(models[c], x, y, opts[c]), device))
        rows.append({"solver": solver, "nfe": nfe, "eager_ms": 1e3 * statistics.median(times["none"]),
                     "compiled_ms": 1e3 * statistics.median(times[mode]), "compile_s": first[mode],
                     "graphs": graphs[mode], "recompiles": graphs_compiled() - g1})
    return rows


def print_digits_steps(rows: list[dict], device, mode: str) -> None:
    print(f"\n== training step | {device.type} | digits MLP DEQ (train_digits.yaml: 64 -> 64, cell 64 -> 128 -> 64,"
          f" skipreg, tol 1e-3, implicit backward), batch 32, Adam; eager vs compile={mode}")
    print("| solver | NFE fwd / bwd eager | compiled | eager step ms | compiled step ms | compiled / eager |"
          " first step s (compile) | graphs | recompiles after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        e, c = r["nfe"]["none"], r["nfe"][mode]
        print(f"| {r['solver']} | {e['fwd']} / {e['bwd']} | {c['fwd']} / {c['bwd']} | {r['eager_ms']:.2f} |"
              f" {r['compiled_ms']:.2f} | {r['compiled_ms'] / r['eager_ms']:.2f}x | {r['compile_s']:.1f} |"
              f" {r['graphs']} | {r['recompiles']} |", flush=True)


# --------------------------------------------------------------------------- 3. memory
MEM_CONFIGS = [(w, tol) for w in (256, 1024) for tol in (1e-2, 1e-4, 1e-6)]
MEM_MODES = ("implicit", "phantom", "unrolled")
MEM_BATCH = 128


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _memory_model(width: int, tol: float, mode: str, device) -> MLPDEQ:
    backward = "implicit" if mode == "unrolled" else mode
    return mlp_deq(width, device, slow=True, solver="fixed_point", tol=tol, max_iter=300, backward=backward)


def _memory_batch(device):
    g = torch.Generator().manual_seed(1)
    return torch.randn(MEM_BATCH, 784, generator=g).to(device), torch.randint(0, 10, (MEM_BATCH,), generator=g).to(device)


def memory_step(width: int, tol: float, mode: str, depth: int, device) -> float:
    """Peak memory of one training step above what was held just before it, in MiB."""
    model = _memory_model(width, tol, mode, device)
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    x, y = _memory_batch(device)
    depth = depth if mode == "unrolled" else None
    train_step(model, x[:2], y[:2], opt, depth)  # warm-up on 2 samples: Adam state, lazy initialisation
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        train_step(model, x, y, opt, depth)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the peak is this step's
    before = _rss_mb()
    train_step(model, x, y, opt, depth)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def memory_rows(device):
    """One row per (width, tol), as measured; on CPU each cell is a fresh subprocess, so no peak hides another."""
    for width, tol in MEM_CONFIGS:
        x, _ = _memory_batch(device)
        with torch.no_grad():
            nfe = _memory_model(width, tol, "implicit", device)(x)[1].nfe_fwd  # includes the grad-carrying call
        row = {"width": width, "tol": tol, "nfe": nfe}
        for mode in MEM_MODES:
            if device.type == "cuda":
                row[mode] = memory_step(width, tol, mode, nfe, device)
            else:
                cmd = [sys.executable, __file__, "--memory-child", json.dumps([width, tol, mode, nfe])]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                row[mode] = float(out.splitlines()[-1])
        yield row


def print_memory(device) -> None:
    how = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS growth, fresh process per cell"
    print(f"\n== memory of one training step | {device.type} | MLP DEQ, batch {MEM_BATCH}, symmetric W,"
          f" ||W|| 0.9, encoder x0.1, fixed_point,"
          f" MiB above the state before the step ({how}); unrolled = autograd through every forward evaluation")
    print("| width | tol | forward NFE | implicit MiB | phantom (5 steps) MiB | unrolled MiB | unrolled MiB per NFE |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in memory_rows(device):
        print(f"| {r['width']} | {r['tol']:g} | {r['nfe']} | {r['implicit']:.1f} | {r['phantom']:.1f} |"
              f" {r['unrolled']:.1f} | {r['unrolled'] / r['nfe']:.2f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 15, --quick 5)")
    ap.add_argument("--only", default="overhead,step,memory", help="comma-separated sections (with --compile also "
                                                                  "split: per-iteration and per-solve cost)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU time (for a loaded machine; CPU runs only)")
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    choices=("default", "reduce-overhead", "max-autotune"),
                    help="add the compiled solve beside eager (section 1) and a digits training step (section 2)")
    ap.add_argument("--profile", action="store_true", help="with --compile: torch.profiler of each compiled solve")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)  # [width, tol, mode]: one CPU memory cell
    args = ap.parse_args(argv)
    if args.memory_child:
        torch.set_num_threads(1)
        print(memory_step(*json.loads(args.memory_child), torch.device("cpu")))
        return 0
    repeats = args.repeats or (5 if args.quick else 15)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    only = set(args.only.split(","))
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available() and args.clock == "wall"
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if cuda else [])
    from importlib.metadata import version
    print(f"deqlab overhead | torch {torch.__version__} | TorchDEQ {version('torchdeq')} | CPU threads "
          f"{torch.get_num_threads()} | devices {', '.join(d.type for d in devices)} | median of {repeats}"
          f" | clock {args.clock}")
    if args.compile:
        print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for device in devices:
        if "overhead" in only:
            for batch, width in SIZES:
                if args.compile:
                    rows = overhead_table(batch, width, device, repeats, args.compile)
                    print_compiled(rows, batch, width, device, args.compile)
                else:
                    print_overhead(overhead_table(batch, width, device, repeats), batch, width, device)
        if args.compile and "split" in only:
            print_split(split_table(*SIZES[0], device, repeats, args.compile), *SIZES[0], device)
        if args.compile and args.profile and device.type == "cpu":
            profile_compiled(*SIZES[0], args.compile)
        if "step" in only:
            if args.compile:
                print_digits_steps(digits_step_table(device, repeats, args.compile), device, args.compile)
            else:
                print_steps(step_table(device, repeats), device)
        if "memory" in only:
            print_memory(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
