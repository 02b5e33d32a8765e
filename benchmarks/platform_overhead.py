"""What the platform costs: the same N trainings as a bare loop and as a deqlab study, side by side.

Three runs of the same N configurations (digits, MLP DEQ, sized to ~20 s each
on 2 cores at the default 20 epochs), one after another so nothing competes:

1. bare: `deqlab.run.train(config)` in a plain loop, no Ray, no Parquet;
2. study, num_workers 0: trials train inside Ray Tune trials (Parquet, traces, Optuna bookkeeping);
3. study, num_workers 1: each trial fits a Ray Train TorchTrainer with one worker.

Trials run one at a time with every core (max_concurrent_trials 1,
cpus_per_worker = all), so the only difference is the platform. Prints the
ratio study/bare and the overhead per trial, split in two: the one-off cost of
a study (the trial actor's start and its imports of torch and deqlab, which the
bare loop paid before its timer started, Tune's set-up, the first trial's
warm-up) and the steady cost of each further trial (the time between two
trials' completions against one bare training). Goals: ratio <= 1.1 for
num_workers 0; overhead < 10 s per trial for num_workers 1.

    .venv/bin/python benchmarks/platform_overhead.py [--trials 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

import torch

from deqlab.study import parse_study
from deqlab.study.driver import run_study
from deqlab.study.tuner import start_ray
from deqlab.run import TrainConfig, train


def base(epochs: int) -> dict:
    return {"seed": 0, "epochs": epochs, "data": {"name": "digits", "batch_size": 32},
            "model": {"name": "mlp", "options": {"width": 64, "inner": 128}},
            "deq": {"solver": "anderson", "tol": 1e-4, "max_iter": 40}, "optim": {"lr": 3e-3}}


def study(name: str, epochs: int, seeds: list, workers: int, cpus: float):
    return parse_study({
        "name": name, "base": base(epochs), "space": {"seed": {"grid": seeds}},
        "objectives": [{"metric": "test_acc", "mode": "max"}],
        "search": {"algorithm": "grid", "max_concurrent_trials": 1},
        "trainer": {"num_workers": workers, "cpus_per_worker": cpus},
    })


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20, help="epochs per training (~1 s each on the 2-core machine)")
    args = p.parse_args(argv)
    cpus = os.cpu_count() or 1
    seeds = list(range(args.trials))
    torch.set_num_threads(cpus)

    t0 = time.perf_counter()
    for seed in seeds:
        result = train(TrainConfig(**{**base(args.epochs), "seed": seed}))
        assert result.status == "completed", result.error
    bare = time.perf_counter() - t0
    print(f"bare loop: {args.trials} trainings in {bare:.1f} s ({bare / args.trials:.1f} s each)", flush=True)

    t0 = time.perf_counter()
    start_ray(num_cpus=cpus)
    ray_start = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for workers in (0, 1):
            spec = study(f"overhead_w{workers}", args.epochs, seeds, workers, cpus if workers == 0 else cpus - 0.1)
            done, t0 = [], time.perf_counter()

            def say(line: str, done=done) -> None:  # the driver's line per finished trial: its completion time
                if re.search(r"\] \S+ (completed|pruned|diverged|failed) ", line):
                    done.append(time.perf_counter())

            outcome = run_study(spec, storage, say=say)
            assert not outcome.result_grid.errors, outcome.result_grid.errors
            rows.append((workers, outcome.seconds, [d - t0 for d in done]))
            print(f"study, num_workers {workers}: {outcome.seconds:.1f} s", flush=True)
    each = bare / args.trials
    print(f"\n(ray.init once per study process: {ray_start:.1f} s, not counted below)")
    print("| run | wall (s) | study / bare | overhead per trial (s) | one-off per study (s) | steady per trial (s) | goal |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| bare loop | {bare:.1f} | 1.00 | 0.0 | | | |")
    for workers, wall, done in rows:
        ratio, per_trial = wall / bare, (wall - bare) / args.trials
        one_off = done[0] - each if done else float("nan")
        steady = (done[-1] - done[0]) / (len(done) - 1) - each if len(done) > 1 else float("nan")
        goal = ("ratio <= 1.1: " + ("PASS" if ratio <= 1.1 else "MISS")) if workers == 0 else \
            ("< 10 s per trial: " + ("PASS" if per_trial < 10 else "MISS"))
        print(f"| study, num_workers {workers} | {wall:.1f} | {ratio:.2f} | {per_trial:.1f} | {one_off:.1f} | "
              f"{steady:.1f} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
