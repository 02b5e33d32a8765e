"""Small results directories in the real schema, written with `TrialWriter`, for the export and dashboard tests.

`comparison_study` is the hand-checked data set of the export tests: two init
modes x two solvers x two seeds, two epochs each (the first epoch's values are
decoys: only the final epoch counts), plus a running and a failed trial whose
better numbers must not reach the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deqlab.results import TrialWriter

PROVENANCE = {"config_hash": "abc123", "deqlab_version": "0.1.0", "torch_version": "2.13.0", "ray_version": None,
              "device": "cpu", "num_workers": 0, "started_at": "2025-01-01T00:00:00+0000"}

# (init, solver, seed): final-epoch (test_acc, nfe_fwd, epoch_time_s)
FINAL = {
    ("zeros", "anderson", 0): (0.90, 12.0, 2.0),
    ("zeros", "anderson", 1): (0.92, 14.0, 2.2),
    ("zeros", "broyden", 0): (0.88, 10.0, 3.2),
    ("zeros", "broyden", 1): (0.88, 10.0, 3.2),
    ("skip", "anderson", 0): (0.95, 6.0, 1.0),
    ("skip", "anderson", 1): (0.93, 7.0, 1.2),
    ("skip", "broyden", 0): (0.91, 5.0, 1.5),
    ("skip", "broyden", 1): (0.89, 5.0, 1.7),
}


def params(init: str, solver: str, seed: int, **extra) -> dict:
    out = {"seed": seed, "epochs": 2, "model.name": "mlp", "model.options.width": 64, "deq.init": init,
           "deq.solver": solver, "deq.tol": 1e-3, "deq.max_iter": 30, "optim.lr": 1e-3}
    out.update(extra)
    return out


def metrics(acc: float, nfe: float, time_s: float) -> dict:
    return {"train_loss": 1.0 - acc, "test_loss": 1.1 - acc, "test_acc": acc, "nfe_fwd": nfe, "nfe_bwd": nfe / 2,
            "fwd_time_s": time_s / 2, "bwd_time_s": time_s / 3, "epoch_time_s": time_s, "converged_frac": 1.0,
            "residual": 5e-4, "infer_time_s": time_s / 10, "phase": "deq", "lr": 1e-3}


def write_trial(root, study, trial_id, p: dict, epochs: list[dict], status: str, traces: bool = True) -> TrialWriter:
    w = TrialWriter(str(root), study, trial_id, p, {"seed": p.get("seed", 0), **PROVENANCE})
    for e, m in enumerate(epochs):
        w.add_epoch(e, m, "running")
        if traces:
            res = np.geomspace(1.0, 1e-4, 6 + e)
            w.add_trace(e, "fwd", res, res / 2)
            w.add_trace(e, "bwd", res[:4], res[:4] / 2)
    w.set_status(status)
    w.flush()
    return w


def comparison_study(root, name: str = "cmp", spec: bool = True) -> Path:
    for (init, solver, seed), (acc, nfe, t) in FINAL.items():
        first = metrics(acc - 0.3, nfe * 3, t * 5)  # decoy epoch: must not be used
        write_trial(root, name, f"{init}-{solver}-{seed}", params(init, solver, seed),
                    [first, metrics(acc, nfe, t)], "completed")
    write_trial(root, name, "zeros-anderson-running", params("zeros", "anderson", 2),
                [metrics(0.99, 1.0, 0.1)], "running")
    write_trial(root, name, "skip-broyden-failed", params("skip", "broyden", 2),
                [metrics(0.99, 1.0, 0.1)], "failed")
    if spec:
        (Path(root) / name / "study.yaml").write_text(
            f"name: {name}\nobjectives:\n- metric: test_acc\n  mode: max\n- metric: epoch_time_s\n  mode: min\n")
    return Path(root) / name


def add_depth_states(root, study: str, trial_id: str, steps: int = 3, samples: int = 12, dim: int = 5) -> None:
    """States that separate by class as k grows: class c drifts towards 3*c along one axis."""
    rng = np.random.default_rng(0)
    labels = np.arange(samples) % 3
    z = rng.normal(size=(samples, dim))
    rows = []
    for k in range(steps + 1):
        for i in range(samples):
            rows.append({"epoch": 1, "step": k, "sample": i, "label": int(labels[i]), "state": z[i].tolist()})
        z = 0.5 * z + np.eye(dim)[0] * 3 * labels[:, None]
    w = TrialWriter(str(root), study, trial_id, {}, {})
    w.write_states(pd.DataFrame(rows))


# A training config small enough for real Ray studies in tests (a trial of ~2 s on 2 cores).
TINY = {
    "seed": 0, "epochs": 2,
    "data": {"name": "digits", "subset": 300, "test_subset": 150, "batch_size": 32},
    "model": {"name": "mlp", "options": {"width": 16, "inner": 32}},
    "deq": {"tol": 1e-3, "max_iter": 20},
    "optim": {"lr": 3e-3},
}
