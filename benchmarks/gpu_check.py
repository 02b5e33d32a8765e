"""The GPU path in one command (`make gpu-check`), under 5 minutes on one GPU; prints one table.

    .venv/bin/python benchmarks/gpu_check.py [--epochs 2]

What it runs, each a row of the table:

- a study with `num_workers: 1, use_gpu: true`: Ray Train's group is NCCL, which takes only CUDA
  tensors, so a collective on a host tensor (metrics, weight spread) fails the trial;
- 4 function trials of 0.25 GPU each at once on the one GPU (`gpus_per_worker: 0.25`): all complete,
  all on the GPU, and they overlap in time;
- every solver of deqlab on CUDA vs CPU on one seeded layer f(z) = tanh(W z + U x + b): converged,
  NFE, time per solve;
- the per-epoch training time of the MLP DEQ on the GPU vs the CPU (same config, same data), with
  the training batches in pinned host memory (asynchronous host-to-GPU copies).

Without CUDA it exits with status 2 and says so: nothing here is meaningful on a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

TINY = {"seed": 0, "data": {"name": "digits", "batch_size": 64}, "model": {"name": "mlp", "options": {"width": 64}},
        "deq": {"tol": 1e-3, "max_iter": 30}, "optim": {"lr": 3e-3}}


def row(check: str, ok: bool, value: str, detail: str = "") -> dict:
    return {"check": check, "ok": ok, "value": value, "detail": detail}


def render(rows: list[dict]) -> str:
    """One aligned text table: check | ok | value | detail."""
    cells = [("check", "ok", "value", "detail")] + [(r["check"], "ok" if r["ok"] else "FAIL", r["value"], r["detail"])
                                                  for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- solvers


def make_layer(device: torch.device, dim: int = 256, batch: int = 512, seed: int = 0):
    """f(z) = tanh(W z + U x + b) with ||W||_2 = 0.9 (a contraction), float32, on `device`."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=g)
    w = 0.9 * w / torch.linalg.matrix_norm(w, ord=2)
    u, b = torch.randn(dim, dim, generator=g) / dim ** 0.5, torch.randn(dim, generator=g) * 0.1
    x = torch.randn(batch, dim, generator=g)
    w, u, b, x = (t.to(device) for t in (w, u, b, x))
    inj = x @ u.T + b
    return lambda z: torch.tanh(z @ w.T + inj), torch.zeros(batch, dim, device=device)


def time_solver(name: str, device: torch.device, repeats: int = 3, **layer) -> dict:
    """Median wall time of one solve (synchronised), its NFE and whether every sample converged."""
    from deqlab.solvers import solve

    f, z0 = make_layer(device, **layer)
    times, result = [], None
    for _ in range(repeats + 1):  # the first run warms up CUDA kernels and allocator
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = solve(f, z0, solver=name, tol=1e-4, max_iter=100)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"time_s": statistics.median(times[1:]), "nfe": result.nfe, "converged": bool(result.converged.all())}


def solver_rows(gpu: torch.device, **layer) -> list[dict]:
    from deqlab.solvers import SOLVERS

    rows = []
    for name in SOLVERS:
        on_gpu, on_cpu = time_solver(name, gpu, **layer), time_solver(name, torch.device("cpu"), **layer)
        rows.append(row(f"solver {name} ({gpu.type})", on_gpu["converged"],
                        f"{on_gpu['time_s'] * 1e3:.1f} ms/solve, {on_gpu['nfe']} NFE",
                        f"cpu {on_cpu['time_s'] * 1e3:.1f} ms ({on_cpu['time_s'] / on_gpu['time_s']:.1f}x)"))
    return rows


# --------------------------------------------------------------------------- training time


def epoch_times(device: torch.device, epochs: int, base: dict = TINY) -> list[float]:
    """Per-epoch training time of the MLP DEQ on `device` (the first epoch included: it pays the warm-up)."""
    from deqlab.run import TrainConfig, train

    result = train(TrainConfig(**{**base, "epochs": epochs}), device=device)
    return [m["epoch_time_s"] for m in result.history]


def pinned_batches(device: torch.device) -> bool:
    """Does training on `device` load its batches in pinned memory (what makes non_blocking copies async)?"""
    from deqlab.data import load_dataset, make_loaders

    splits = load_dataset("digits", subset=64, test_subset=32, flatten=True)
    xb, _ = next(iter(make_loaders(splits, 32, pin_memory=device.type == "cuda")[0]))
    return xb.is_pinned()


def training_rows(gpu: torch.device, epochs: int) -> list[dict]:
    on_gpu, on_cpu = epoch_times(gpu, epochs), epoch_times(torch.device("cpu"), epochs)
    g, c = statistics.median(on_gpu[1:] or on_gpu), statistics.median(on_cpu[1:] or on_cpu)
    pinned = pinned_batches(gpu)
    return [row("MLP DEQ epoch time", True, f"gpu {g:.2f} s", f"cpu {c:.2f} s ({c / g:.1f}x), median of epochs 2..{epochs}"),
            row("pinned host memory for H2D copies", pinned, "yes" if pinned else "no")]


# --------------------------------------------------------------------------- studies


def _study(name: str, storage: str, trainer: dict, seeds: int, epochs: int):
    from deqlab.results import load
    from deqlab.study import parse_study
    from deqlab.study.driver import run_study
    from deqlab.study.summary import final_rows

    spec = parse_study({"name": name, "base": {**TINY, "epochs": epochs}, "space": {"seed": {"grid": list(range(seeds))}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}],
                        "search": {"algorithm": "grid", "max_concurrent_trials": seeds}, "trainer": trainer}, name)
    t0 = time.perf_counter()
    outcome = run_study(spec, storage, say=lambda line: None)
    rows = load(outcome.path, traces=False).trials
    return final_rows(rows), rows, time.perf_counter() - t0


def nccl_row(storage: str, epochs: int) -> dict:
    final, rows, seconds = _study("nccl", storage, {"num_workers": 1, "use_gpu": True, "gpus_per_worker": 1}, 1, epochs)
    ok = len(final) == 1 and (final.status == "completed").all() and final.device.str.startswith("cuda").all()
    error = final.error.dropna().iloc[0] if "error" in final and final.error.notna().any() else ""
    return row("Ray Train num_workers 1, use_gpu (NCCL)", bool(ok), f"{final.status.iloc[0] if len(final) else '-'}",
               error or f"{seconds:.0f} s, device {final.device.iloc[0] if len(final) else '-'}")


def overlap(rows) -> float:
    """Largest number of trials whose [first epoch start, last epoch end] intervals overlap at one instant."""
    spans = []
    for _, t in rows[rows.epoch >= 0].groupby("trial_id"):
        end = time.mktime(time.strptime(t.started_at.iloc[0], "%Y-%m-%dT%H:%M:%S%z")) + t.epoch_time_s.sum()
        spans.append((end - t.epoch_time_s.sum(), end))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = best = 0
    for _, step in events:
        live += step
        best = max(best, live)
    return best


def fractional_row(storage: str, epochs: int) -> dict:
    trainer = {"num_workers": 0, "use_gpu": True, "gpus_per_worker": 0.25, "cpus_per_worker": 1}
    final, rows, seconds = _study("quarter", storage, trainer, 4, epochs)
    ok = len(final) == 4 and (final.status == "completed").all() and final.device.str.startswith("cuda").all()
    return row("4 trials x 0.25 GPU on one GPU", bool(ok), f"{(final.status == 'completed').sum()}/4 completed",
               f"{seconds:.0f} s, up to {overlap(rows):.0f} at once")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each training run (default 3)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False); this check needs "
              "one GPU. Nothing was run.", file=sys.stderr)
        return 2
    import ray

    from deqlab.study.tuner import start_ray

    gpu = torch.device("cuda", 0)
    t0 = time.perf_counter()
    rows = solver_rows(gpu) + training_rows(gpu, args.epochs)
    start_ray(num_cpus=os.cpu_count(), num_gpus=1)
    try:
        with tempfile.TemporaryDirectory(prefix="deqlab-gpu-check-") as storage:
            rows += [nccl_row(storage, args.epochs), fractional_row(storage, args.epochs)]
    finally:
        ray.shutdown()
    print(f"deqlab GPU check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}), "
          f"{time.perf_counter() - t0:.0f} s\n")
    print(render(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
