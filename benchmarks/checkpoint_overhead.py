"""What checkpoints cost: seconds and bytes per checkpoint, and a quickstart-size study with and without them.

1. Per checkpoint, for the quickstart's MLP on digits and the SkipDEQ paper's MNIST MLP
   (studies/skipdeq_mnist_paper.yaml; needs `deqlab data get mnist`): the run's state after one optimiser
   step (so Adam's moments exist) captured, serialised and written as a checkpoint folder (what a trial
   hands Ray), then stored in the study the way `deqlab train` does (copy + rename); median of --repeats.
2. The quickstart study (studies/quickstart.yaml: 12 TPE trials of 3 epochs on digits, num_workers 0)
   run with `checkpoint: {every: 1, keep: 2}` (the default: 36 checkpoints) and with `every: 0`,
   alternating, --studies times each; prints each wall time and the median ratio (goal: < 1.03).

    .venv/bin/python benchmarks/checkpoint_overhead.py [--repeats 20] [--studies 2] [--skip-study]
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


def per_checkpoint(study_file: str, repeats: int) -> tuple[float, float, int, int]:
    """(median s to write a checkpoint folder, median s to store it in a study, bytes, parameters)."""
    from deqlab.results import StudyStore
    from deqlab.results import checkpoints as files
    from deqlab.run import checkpoint
    from deqlab.run.loop import _Run
    from deqlab.run.env import select_device
    from deqlab.study import load_study

    spec = load_study(ROOT / study_file)
    config = spec.train_config(spec.grid()[0] if spec.search.algorithm == "grid" else {})
    torch.manual_seed(config.seed)
    run = _Run.prepare(config, None, None, select_device("cpu"))
    xb, yb = next(iter(run.train_loader))
    logits, info = run.model(xb)
    (torch.nn.functional.cross_entropy(logits, yb) + info.reg_loss).backward()
    run.opt.step()  # Adam's moments now exist, as in every checkpoint after the first step
    meta = {"study": "bench", "trial_id": "t", "train_config": config.model_dump(mode="json"), "tune_config": {}}
    write, store_s, size = [], [], 0
    with tempfile.TemporaryDirectory() as root:
        store = StudyStore.of(root, "bench")
        for k in range(repeats):
            t0 = time.perf_counter()
            with checkpoint.written(run, k, meta) as folder:
                t1 = time.perf_counter()
                files.persist(store, "t", folder, k, keep=2)
                t2 = time.perf_counter()
                size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
            write.append(t1 - t0)
            store_s.append(t2 - t1)
    params = sum(p.numel() for p in run.model.parameters())
    return statistics.median(write), statistics.median(store_s), size, params


def study_seconds(every: int) -> float:
    import yaml

    from deqlab.study import parse_study
    from deqlab.study.driver import run_study

    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw["checkpoint"] = {"every": every, "keep": 2} if every else {"every": 0}
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        run_study(parse_study(raw, "quickstart"), root, say=lambda line: None)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--skip-study", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, file in (("quickstart MLP (digits)", "studies/quickstart.yaml"),
                       ("paper MLP (MNIST)", "studies/skipdeq_mnist_paper.yaml")):
        try:
            write, store, size, params = per_checkpoint(file, args.repeats)
        except Exception as exc:  # MNIST not fetched
            print(f"{name}: skipped ({type(exc).__name__}: {exc})")
            continue
        print(f"{name}: {params} parameters, checkpoint {size / 1e6:.3f} MB; write {1e3 * write:.1f} ms, "
              f"store in the study {1e3 * store:.1f} ms (median of {args.repeats})")
    if args.skip_study:
        return
    from deqlab.study.tuner import start_ray

    start_ray(num_cpus=os.cpu_count())
    times = {1: [], 0: []}
    for _ in range(args.studies):
        for every in (1, 0):
            times[every].append(study_seconds(every))
            print(f"quickstart study, checkpoint every {every}: {times[every][-1]:.1f} s", flush=True)
    ratio = statistics.median(times[1]) / statistics.median(times[0])
    print(f"with / without checkpoints: {ratio:.3f} (median of {args.studies} each)")


if __name__ == "__main__":
    sys.exit(main())
