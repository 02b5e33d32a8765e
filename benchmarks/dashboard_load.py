"""Dashboard load time on a large study: 10,000 trials x 20 epochs, goal under 2 s.

Generates a study in the results layout with `deqlab.results.TrialWriter` (one
trials file and one traces file per trial, the files a real study writes), then
times what the Compare page does on every (re)load: `deqlab.results.load` of
the trials (traces are read per trial, on the Trial detail page), the final
epoch of each trial, the Pareto front and the grouped comparison table. A
second call with unchanged files goes through the same cache key the app uses
(`deqlab.report.views.signature` + a memo) and shows what a re-run of the page costs.

Then the same with a compaction snapshot (`deqlab.results.compact`, what the
study driver writes when a study finishes): the time to compact, a cold load
from the snapshot (in this process and in a fresh one), a load after 10 trials
rewrote their files (the snapshot plus those 10 files), and compacting again.
Any snapshot left by an earlier run is removed first, so the per-file numbers
are per-file.

    .venv/bin/python benchmarks/dashboard_load.py                     # 10,000 x 20, kept in /tmp
    .venv/bin/python benchmarks/dashboard_load.py --trials 500 --out /tmp/small
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from deqlab.report import views as dd
from deqlab.report import tables as export
from deqlab.results import COMPACT_DIR, TableCache, TrialWriter, compact, load

GOAL_S = 2.0
INITS = ("zeros", "skip", "skipreg")
SOLVERS = ("fixed_point", "anderson", "broyden", "newton_krylov", "continuous")
TRACE_STEPS = 12


def _write_chunk(args) -> int:
    root, study, start, stop, epochs = args
    for t in range(start, stop):
        rng = np.random.default_rng(t)
        init, solver = INITS[t % 3], SOLVERS[(t // 3) % 5]
        params = {"deq.init": init, "deq.solver": solver, "deq.tol": [1e-3, 1e-4][t % 2],
                  "deq.max_iter": 30, "model.name": "mlp", "model.options.width": [64, 128][(t // 15) % 2],
                  "optim.lr": float(10 ** rng.uniform(-4, -2)), "seed": t}
        prov = {"seed": t, "config_hash": f"{t:012x}", "deqlab_version": "0.1.0", "torch_version": "2.13.0",
                "ray_version": "2.60.0", "device": "cpu", "num_workers": 0, "started_at": "2025-01-01T00:00:00+0000"}
        w = TrialWriter(root, study, f"t{t:05d}", params, prov)
        final_status = "completed" if t % 10 else ("pruned" if t % 20 else "running")
        for e in range(epochs):
            acc = 0.9 - 0.5 * np.exp(-e / 4) + rng.normal(0, 0.01)
            nfe = 8 + 10 * rng.random()
            w.add_epoch(e, {"train_loss": 1 - acc, "test_loss": 1.1 - acc, "test_acc": acc, "nfe_fwd": nfe,
                            "nfe_bwd": nfe * 0.8, "fwd_time_s": 0.5, "bwd_time_s": 0.4,
                            "epoch_time_s": 1 + rng.random(),
                            "converged_frac": 1.0, "residual": 1e-4, "infer_time_s": 0.1, "phase": "deq",
                            "lr": params["optim.lr"]}, "running")
            res = np.geomspace(1, 1e-4, TRACE_STEPS)
            w.add_trace(e, "fwd", res, res / 2)
            w.add_trace(e, "bwd", res, res / 2)
        w.set_status(final_status)
        w.flush()
    return stop - start


def generate(root: Path, trials: int, epochs: int, workers: int = 2) -> Path:
    """Write the study once; a finished earlier generation with the same size is reused."""
    study = f"bench{trials}x{epochs}"
    done = root / study / ".generated"
    if done.is_file():
        return root / study
    chunk = 250
    jobs = [(str(root), study, s, min(s + chunk, trials), epochs) for s in range(0, trials, chunk)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(_write_chunk, jobs))
    (root / study / "study.yaml").write_text(
        f"name: {study}\nobjectives:\n- metric: test_acc\n  mode: max\n- metric: epoch_time_s\n  mode: min\n")
    done.write_text("ok\n")
    print(f"generated {written} trials x {epochs} epochs in {time.perf_counter() - start:.1f} s: {root / study}")
    return root / study


def compare_page(paths) -> tuple:
    """The Compare page's work: load trials, final epochs, Pareto front, grouped table."""
    res = load(paths, traces=False)
    final = export.final_epochs(res.trials, statuses=None)
    front = dd.pareto_mask(final, "epoch_time_s", "test_acc", "min", "max")
    table = export.aggregate(res.trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"])
    return res, final, front, table


def timed_loads(paths, repeat: int) -> tuple:
    """`repeat` cold loads (no cache) each followed by the Compare aggregation: (median, best, min CPU, last result).

    Each timing is (load s, aggregation s, both s); median and best by the total.
    """
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = load(paths, traces=False)
        t1 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        final = export.final_epochs(res.trials, statuses=None)
        dd.pareto_mask(final, "epoch_time_s", "test_acc", "min", "max")
        table = export.aggregate(res.trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"])
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t2 - t0))
    times.sort(key=lambda t: t[2])
    return times[len(times) // 2], times[0], min(cpu), res, table


def fresh_process_load(study: Path) -> float:
    """`load(traces=False)` in a new interpreter (imports not counted): what a dashboard start pays."""
    code = ("import sys, time; from deqlab.results import load; t = time.perf_counter(); "
            "load(sys.argv[1], traces=False); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, str(study)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def verdict(seconds: float) -> str:
    return f"goal < {GOAL_S:.0f} s: {'PASS' if seconds < GOAL_S else 'MISS'}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default="/tmp/deqlab_dashboard_bench")
    p.add_argument("--repeat", type=int, default=3, help="timed cold loads (best and median are printed)")
    args = p.parse_args(argv)
    study = generate(Path(args.out), args.trials, args.epochs)
    shutil.rmtree(study / COMPACT_DIR, ignore_errors=True)  # a snapshot from an earlier run: per-file first
    paths = [str(study)]
    n_files = len(os.listdir(study / "trials"))

    median, best, cpu, res, table = timed_loads(paths, args.repeat)
    rows = len(res.trials)

    memo: dict = {}

    def cached():  # what st.cache_data does: hash the key, return the stored value when unchanged
        key = dd.signature(paths)
        if key not in memo:
            memo[key] = compare_page(paths)
        return memo[key]

    cached()
    t0 = time.perf_counter()
    cached()
    warm = time.perf_counter() - t0

    # a running study: a few trials rewrite their files each epoch; the app's TableCache re-reads only those
    table_cache = TableCache()
    load(paths, traces=False, cache=table_cache)
    changed = sorted((study / "trials").iterdir())[:10]
    for f in changed:
        f.write_bytes(f.read_bytes())  # new mtime, same content
    t0 = time.perf_counter()
    res2 = load(paths, traces=False, cache=table_cache)
    export.aggregate(res2.trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"])
    refresh = time.perf_counter() - t0

    t0 = time.perf_counter()
    full = load(paths)
    full_s = time.perf_counter() - t0

    # compaction snapshot: one file per kind, per-trial files still the truth
    t0 = time.perf_counter()
    compacted = compact(study)
    compact_s = time.perf_counter() - t0
    snap_mb = sum(f.stat().st_size for f in (study / COMPACT_DIR).glob("*.parquet")) / 1e6
    s_median, s_best, s_cpu, s_res, _ = timed_loads(paths, args.repeat)
    fresh_s = fresh_process_load(study)
    for f in changed:
        f.write_bytes(f.read_bytes())  # 10 trials rewrote their files after the snapshot
    t0 = time.perf_counter()
    res3 = load(paths, traces=False)
    t1 = time.perf_counter()
    export.aggregate(res3.trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"])
    stale_load, stale_total = t1 - t0, time.perf_counter() - t0
    t0 = time.perf_counter()
    compact(study)
    recompact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_full = load(paths)
    s_full_s = time.perf_counter() - t0
    if len(s_res.trials) != rows or len(res3.trials) != rows or len(s_full.traces) != len(full.traces):
        raise SystemExit(f"snapshot load disagrees with the per-file load: {len(s_res.trials)} / {len(res3.trials)} "
                         f"rows against {rows}, {len(s_full.traces)} trace rows against {len(full.traces)}")

    print(f"study: {n_files} trial files, {rows} epoch rows, {len(full.traces)} trace rows; "
          f"{len(table.frame)} groups in the table; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("per-trial files, no snapshot:")
    print(f"  load (trials only)             best {best[0]:.2f} s  median {median[0]:.2f} s  "
          f"(CPU {cpu:.1f} s: {cpu / n_files * 1e3:.2f} ms per file)")
    print(f"  compare aggregation            best {best[1]:.2f} s  median {median[1]:.2f} s")
    print(f"  load + aggregation             best {best[2]:.2f} s  median {median[2]:.2f} s  {verdict(median[2])}")
    print(f"  cached re-run (signature + memo) {warm * 1000:.0f} ms  {verdict(warm)}")
    print(f"  refresh after {len(changed)} trial files changed (TableCache) {refresh:.2f} s  {verdict(refresh)}")
    print(f"  full load with traces (Trial detail reads one trial's traces instead) {full_s:.2f} s")
    print(f"compaction snapshot ({compacted} trials, {snap_mb:.1f} MB for trials + traces):")
    print(f"  compact() from the per-trial files {compact_s:.2f} s; again after {len(changed)} changed "
          f"{recompact_s:.2f} s")
    print(f"  cold load (trials only)        best {s_best[0]:.2f} s  median {s_median[0]:.2f} s  (CPU {s_cpu:.2f} s)  "
          f"{verdict(s_median[0])}")
    print(f"  cold load in a fresh process   {fresh_s:.2f} s  {verdict(fresh_s)}")
    print(f"  compare aggregation            best {s_best[1]:.2f} s  median {s_median[1]:.2f} s")
    print(f"  load + aggregation             best {s_best[2]:.2f} s  median {s_median[2]:.2f} s  "
          f"{verdict(s_median[2])}")
    print(f"  load after {len(changed)} trials changed  {stale_load:.2f} s (with aggregation {stale_total:.2f} s)  "
          f"{verdict(stale_total)}")
    print(f"  full load with traces          {s_full_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
