"""The training loop keeps its sums on the device: the same numbers as per-batch reads, O(1) host syncs per epoch.

On CPU nothing waits for a queue, so the syncs a GPU would pay are counted instead: every read of a tensor
into Python (`item`, `float`, `int`, `bool`, `tolist`, ...) made by the loop itself (run/loop.py, run/tally.py;
the solver's own stopping reads are not the loop's) and every `sync(device)` (a `torch.cuda.synchronize` on
CUDA). The loop before this change (commit 77f4541, kept below as `_main_train_epoch` / `_main_evaluate`)
made O(batches) of them: 3 syncs, one `bool` and one `float` per training batch, 3 reads per test batch.
"""

import math
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext

import pandas as pd
import pytest
import torch
from torch import nn

import deqlab.run.loop as loop
from deqlab.results import TrialWriter, load
from deqlab.run import TrainConfig, train
from deqlab.run.tally import CHECK_EVERY, StageClock, Sums

MEASURED = ("fwd_time_s", "bwd_time_s", "epoch_time_s", "infer_time_s", "peak_mem_bytes")  # clocks, RSS
TRAIN = 300  # digits training samples: 19 batches of 16 (one mid-epoch non-finite check), 10 test batches


def config(**over) -> TrainConfig:
    return TrainConfig(**{"seed": 0, "epochs": 1, "pretrain_epochs": 1,  # a fixed-depth epoch, then a DEQ one
                          "data": {"name": "digits", "subset": TRAIN, "test_subset": 150, "batch_size": 16},
                          "model": {"name": "mlp", "options": {"width": 16, "inner": 32}},
                          "deq": {"tol": 1e-3, "max_iter": 20}, "optim": {"lr": 3e-3}, **over})


# ------------------------------------------------------------------ main's per-batch accounting, verbatim
def _main_train_epoch(model, loader, opt, sched, config, device, replicas=None, *, reuse=None) -> dict:
    model.train()
    accumulate = config.optim.accumulate
    loss_sum = n = 0
    nfe = {"train_nfe_fwd": 0.0, "nfe_bwd": 0.0, "nfe_jac": 0.0}
    fwd_t = bwd_t = reused = 0.0
    batches = 0
    n_batches = len(loader)
    loop.sync(device)
    t_epoch = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for xb, yb, *index in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loop.sync(device)
        t0 = time.perf_counter()
        with reuse.starts(index[0]) if reuse is not None else nullcontext():
            task, loss, info = loop.forward_loss(model, xb, yb)
        if reuse is not None:
            reuse.keep(index[0], info)
            reused += info.reused_frac * len(yb)
        loop.sync(device)
        t1 = time.perf_counter()
        if replicas is None and not torch.isfinite(loss):
            raise FloatingPointError("non-finite training loss")
        batches += 1
        group = min(accumulate, n_batches - (batches - 1) // accumulate * accumulate)
        (loss / group if group > 1 else loss).backward()
        if batches % accumulate == 0 or batches == n_batches:
            loop._step(model, opt, sched, config, replicas, loss)
        loop.sync(device)
        t2 = time.perf_counter()
        fwd_t += t1 - t0
        bwd_t += t2 - t1
        loss_sum += float(task.detach()) * len(yb)
        n += len(yb)
        nfe["train_nfe_fwd"] += info.nfe_fwd_per_sample
        nfe["nfe_bwd"] += info.nfe_bwd
        nfe["nfe_jac"] += info.nfe_jac
    loop.sync(device)
    out = {k: v / max(batches, 1) for k, v in nfe.items()}
    out["nfe_train_total"] = sum(out.values())
    if reuse is not None:
        out["train_reuse_frac"] = reused / max(n, 1)
    return {"train_loss": loss_sum / max(n, 1), **out, "fwd_time_s": fwd_t, "bwd_time_s": bwd_t,
            "epoch_time_s": time.perf_counter() - t_epoch}


@torch.no_grad()
def _main_evaluate(model, loader, device, *, reuse=None) -> dict:
    model.eval()
    loss_sum = correct = n = 0
    nfe = conv = res = paper = 0.0
    loop.sync(device)
    t0 = time.perf_counter()
    for xb, yb, *index in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with reuse.starts(index[0]) if reuse is not None else nullcontext():
            logits, info = model(xb)
        if reuse is not None:
            reuse.keep(index[0], info)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
        k = len(yb)
        n += k
        nfe += info.nfe_fwd_per_sample * k
        solver = info.nfe_solver_per_sample
        paper += (solver + 2 if solver is not None else math.nan) * k
        conv += info.converged_frac * k
        res += float(info.residual.mean()) * k
    loop.sync(device)
    elapsed = time.perf_counter() - t0
    model.train()
    n = max(n, 1)
    return {"test_loss": loss_sum / n, "test_acc": correct / n, "nfe_fwd": nfe / n, "nfe_test_total": nfe / n,
            "nfe_fwd_paper": paper / n, "converged_frac": conv / n, "residual": res / n,
            "infer_time_s": elapsed / n}


def _run(folder, cfg: TrainConfig, main: bool, monkeypatch):
    """One training run written to Parquet (study "s", trial "t1" in `folder`), with main's accounting or ours."""
    with monkeypatch.context() as m:
        if main:
            m.setattr(loop, "_train_epoch", _main_train_epoch)
            m.setattr(loop, "evaluate", _main_evaluate)
        writer = TrialWriter(str(folder), "s", "t1", cfg.flat_params(), {})
        result = train(cfg, writer=writer)
    return result, load(folder / "s").trials.drop(columns=list(MEASURED))


@pytest.mark.parametrize("deq", [{}, {"reuse": "epoch", "reuse_eval": True}], ids=["plain", "reuse"])
def test_device_sums_equal_main_per_batch_reads_value_for_value(tmp_path, monkeypatch, deq):
    cfg = config(deq={"tol": 1e-3, "max_iter": 20, **deq})
    before, rows_before = _run(tmp_path / "before", cfg, True, monkeypatch)
    after, rows_after = _run(tmp_path / "after", cfg, False, monkeypatch)
    assert before.status == after.status == "completed" and len(after.history) == 2
    for b, a in zip(before.history, after.history):  # every non-time metric, exactly (==, NaN-free here)
        assert {k: v for k, v in a.items() if k not in MEASURED} == {k: v for k, v in b.items() if k not in MEASURED}
    assert after.history[1]["nfe_fwd"] > 1 and after.history[1]["test_acc"] > 0.3  # a real DEQ epoch
    assert len(rows_after.columns) > 20
    pd.testing.assert_frame_equal(rows_after.reset_index(drop=True), rows_before.reset_index(drop=True),
                                  check_exact=True)


# ------------------------------------------------------------------ host syncs, counted
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu")


def _count_syncs(monkeypatch) -> Counter:
    """Count the loop's own reads of tensors into Python, and its sync(device) calls."""
    counts = Counter()
    own = {os.path.abspath(loop.__file__), os.path.join(os.path.dirname(os.path.abspath(loop.__file__)), "tally.py")}

    def counted(name, real):
        def read(self, *args, **kwargs):
            if os.path.abspath(sys._getframe(1).f_code.co_filename) in own:
                counts[name] += 1
            return real(self, *args, **kwargs)
        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    real_sync = loop.sync
    monkeypatch.setattr(loop, "sync", lambda device: counts.update(["sync"]) or real_sync(device))
    return counts


def test_an_epoch_makes_a_constant_number_of_host_syncs_not_one_per_batch(monkeypatch):
    counts = _count_syncs(monkeypatch)
    per_epoch = []
    result = train(config(), reporter=lambda epoch, metrics: per_epoch.append(Counter(counts)))
    assert result.status == "completed"
    batches = math.ceil(TRAIN / 16)
    assert batches == 19 > CHECK_EVERY
    # train: sync before and after, one read of the sums, one non-finite check after batch 16;
    # evaluate: sync before and after, one read of the sums. Main's loop: 3 * 19 + 2 + 2 * 19 + 2 + 3 * 10.
    expected = Counter({"sync": 4, "tolist": 2, "item": (batches - 1) // CHECK_EVERY})
    assert per_epoch[0] == expected  # the fixed-depth epoch
    assert per_epoch[1] - per_epoch[0] == expected  # the DEQ epoch


def test_a_non_finite_loss_stops_the_run_within_check_every_batches(tmp_path, monkeypatch):
    models, calls = [], Counter()
    real_build, real_forward = loop.model_for, loop.forward_loss
    monkeypatch.setattr(loop, "model_for", lambda c, s: models.append(real_build(c, s)) or models[-1])
    monkeypatch.setattr(loop, "forward_loss", lambda *a: calls.update(["batch"]) or real_forward(*a))

    def blow_up(epoch, metrics):  # the weights go NaN after the first epoch
        calls.clear()
        with torch.no_grad():
            next(models[0].parameters()).fill_(math.nan)

    cfg = config(pretrain_epochs=0, epochs=2)
    writer = TrialWriter(str(tmp_path), "nan", "t1", cfg.flat_params(), {})
    result = train(cfg, reporter=blow_up, writer=writer)
    assert result.status == "diverged" and result.error == "non-finite training loss"
    assert calls["batch"] == CHECK_EVERY  # the first batch was already NaN: the check after batch 16 stops it
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    rows = load(tmp_path / "nan").trials
    assert list(rows["epoch"]) == [0] and list(rows["status"]) == ["diverged"]


# ------------------------------------------------------------------ the pieces
def test_sums_add_in_float64_like_python_floats_and_read_in_one_transfer(monkeypatch):
    values = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 1e-8, 3.3, 7e5)]
    sums = Sums(torch.device("cpu"), ("x",))
    python = 0
    for v in values:
        sums.add("x", v, 16)
        python += float(v) * 16
    reads = Counter()
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.update(["tolist"]) or real(t))
    assert sums.read() == {"x": python} and reads == Counter(tolist=1)
    assert python != float(torch.stack(values).mul(16).sum())  # a float32 sum would not have matched


class _FakeEvent:
    """A CUDA event's interface on the host: a recorded time, and how often the host waited on it."""

    waits = 0

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        _FakeEvent.waits += 1

    def elapsed_time(self, end) -> float:
        return (end.t - self.t) * 1000.0


def test_stage_clock_reads_cuda_style_events_once_at_the_end():
    clock = StageClock(torch.device("cpu"), ("fwd", "bwd"), event=_FakeEvent)
    spans = []
    for _ in range(5):
        t0 = clock.mark()
        time.sleep(0.002)
        t1 = clock.mark()
        clock.add("fwd", t0, t1)
        t2 = clock.mark()
        clock.add("bwd", t1, t2)
        spans.append((t1.t - t0.t, t2.t - t1.t))
    assert _FakeEvent.waits == 0  # nothing waited while the epoch ran
    totals = clock.read()
    assert _FakeEvent.waits == 1
    assert totals["fwd"] == pytest.approx(sum(s[0] for s in spans), rel=1e-9) and totals["fwd"] >= 0.01
    assert totals["bwd"] == pytest.approx(sum(s[1] for s in spans), rel=1e-9)
    cpu = StageClock(torch.device("cpu"), ("fwd",))
    start = cpu.mark()
    assert isinstance(start, float)  # perf_counter on CPU
