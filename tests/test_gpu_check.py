"""benchmarks/gpu_check.py on a machine without CUDA: it refuses clearly, and its CPU-side pieces work."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_exits_2_and_says_why(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: no CUDA device visible to torch") and "Nothing was run." in err


def test_solver_timing_and_table_on_cpu(gpu_check):
    cpu = torch.device("cpu")
    out = gpu_check.time_solver("anderson", cpu, repeats=1, dim=32, batch=8)
    assert out["converged"] and 1 < out["nfe"] <= 100 and out["time_s"] > 0
    f, z0 = gpu_check.make_layer(cpu, dim=32, batch=8)
    a, b = torch.randn_like(z0), torch.randn_like(z0)  # a contraction: tanh is 1-Lipschitz, ||W||_2 = 0.9
    assert ((f(a) - f(b)).norm(dim=1) <= 0.9 * (a - b).norm(dim=1) + 1e-5).all()
    text = gpu_check.render([gpu_check.row("a", True, "1 ms"), gpu_check.row("longer check", False, "x", "why")])
    assert text.splitlines() == ["check         ok    value  detail", "------------  ----  -----  ------",
                                 "a             ok    1 ms", "longer check  FAIL  x      why"]


def test_training_time_and_pinning_on_cpu(gpu_check):
    base = {**gpu_check.TINY, "data": {"name": "digits", "batch_size": 64, "subset": 128, "test_subset": 64}}
    times = gpu_check.epoch_times(torch.device("cpu"), 2, base)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert gpu_check.pinned_batches(torch.device("cpu")) is False  # pinned only when training on CUDA


def test_overlap_counts_trials_running_at_once(gpu_check):
    rows = pd.DataFrame({"trial_id": ["a", "a", "b", "c"], "epoch": [0, 1, 0, 0],
                         "started_at": ["2026-01-01T00:00:00+0000"] * 2 + ["2026-01-01T00:00:05+0000",
                                                                          "2026-01-01T00:00:20+0000"],
                         "epoch_time_s": [4.0, 4.0, 2.0, 1.0]})
    assert gpu_check.overlap(rows) == 2  # a: 0..8 s, b: 5..7 s, c: 20..21 s
