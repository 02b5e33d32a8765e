"""One training run, end to end: the loop every study trial runs.

`train(config, reporter)` is seeded, picks the device (CUDA when present),
pretrains at fixed depth for `pretrain_epochs`, then trains the DEQ, and after
every epoch hands the reporter the metrics of the results contract
(docs/design.md). A run that goes non-finite, or whose unconverged fraction passes
`max_unconverged_frac` (default 0.5), ends with status "diverged" and keeps what it measured;
it never raises mid-study.

The reporter is the only thing that differs between a plain run, a Ray Tune
trial and a Ray Train worker. The loop asks the model only what every zoo
model answers (deqlab.models.base): built from the data's shape, switched to
fixed depth, its states over depth.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
from torch import nn

from ..data import load_dataset, make_loaders
from ..models import build
from .parallel import Replicas
from ..results.schema import Status
from . import checkpoint
from .config import TrainConfig
from .diagnostics import depth_states, residual_traces
from .env import select_device, sync
from .memory import PeakMemory
from .reuse import Reuse
from .tally import CHECK_EVERY, StageClock, Sums


class Reporter(Protocol):
    """Hears every epoch; on a checkpoint epoch also gets `checkpoint=<local folder>` (Ray's report copies
    it to the study's storage; the folder is deleted when the call returns)."""

    def __call__(self, epoch: int, metrics: dict, **checkpoint) -> None: ...


@dataclass
class TrainResult:
    status: Status
    history: list = field(default_factory=list)
    error: Optional[str] = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def model_for(config: TrainConfig, splits) -> nn.Module:
    """The configured model for these data (its DEQ layer gets `config.deq` as it is)."""
    return model_of_shape(config, splits.input_shape, splits.num_classes)


def dataset_of(config: TrainConfig, name: Optional[str] = None):
    """The run's data set as its config describes it; `name`: another data set's, with the same subsets,
    normalisation and seed (its own options and path, when it has any, are not the run's)."""
    d = config.data
    own = name is None or name == d.name
    return load_dataset(d.name if own else name, data_dir=d.data_dir, subset=d.subset, test_subset=d.test_subset,
                        normalize=d.normalize, seed=config.seed, options=d.options if own else None,
                        path=d.path if own else None)


def model_of_shape(config: TrainConfig, input_shape, num_classes: int) -> nn.Module:
    """The configured model for inputs of this shape and these classes (a saved model's rebuild, no data)."""
    return build(config.model.name, tuple(input_shape), num_classes, config.deq, **config.model.options)


def _make_optimizer(config: TrainConfig, model: nn.Module, steps_total: int):
    o = config.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = None
    if o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps_total, 1), eta_min=o.min_lr)
    return opt, sched


def train(config: TrainConfig, reporter: Optional[Reporter] = None, *, progress: bool = False,
          writer=None, data=None, replicas: Optional[Replicas] = None,
          device: Optional[torch.device] = None, checkpointing=None) -> TrainResult:
    """Run one configuration; report after every epoch; return the status and per-epoch metrics.

    With `replicas` (data-parallel workers in a process group) each replica
    trains on its shard with batch `data.batch_size // world_size`, so the
    global batch, and with it the optimisation, does not depend on the number
    of workers; gradients are averaged every step. Give the writer to one rank.

    With `checkpointing` (a `checkpoint.Checkpointing`) the reporter gets a checkpoint folder on the epochs
    its policy names, and a run given a start state continues after that state's epoch: the writer keeps its
    rows up to that epoch, and on CPU the run ends as if it had never stopped.
    """
    torch.manual_seed(config.seed)
    run = _Run.prepare(config, data, replicas, device if device is not None else select_device(config.device))
    result = TrainResult(status=Status.RUNNING)
    first = 0
    if checkpointing is not None and checkpointing.start is not None:
        first = checkpoint.restore(run, checkpointing.start)
        if writer is not None:
            writer.keep_until(first - 1)
    bar = _ProgressBar(run.epochs) if progress else None
    for epoch in range(first, run.epochs):
        pretraining = epoch < config.pretrain_epochs
        run.model.set_fixed_depth(config.pretrain_depth if pretraining else None)
        if run.shard is not None:
            run.train_loader.sampler.set_epoch(epoch)
        run.memory.start()
        try:
            metrics = _train_epoch(run.model, run.train_loader, run.opt, run.sched, config, run.device, replicas,
                                   reuse=None if pretraining else run.reuse_train)
            metrics.update(evaluate(run.model, run.test_loader, run.device, reuse=run.reuse_test))
        except FloatingPointError as exc:
            result.status, result.error = Status.DIVERGED, str(exc)
            break
        metrics["peak_mem_bytes"] = run.memory.read()  # this process's (on Ray Train: this replica's)
        if run.reuse_train is not None:
            metrics["reuse_buffer_bytes"] = float(sum(r.buffer.nbytes for r in (run.reuse_train, run.reuse_test)
                                                      if r is not None))
        if replicas is not None:
            metrics.update(replicas.mean({k: metrics[k] for k in ("train_loss", "train_nfe_fwd", "nfe_bwd", "nfe_jac",
                                                                  "nfe_train_total", "train_reuse_frac")
                                          if k in metrics}))
            metrics["replica_weight_spread"] = replicas.weight_spread(run.model)
        metrics["phase"] = "pretrain" if pretraining else "deq"
        metrics["lr"] = run.opt.param_groups[0]["lr"]
        diverged = _diverged(metrics, config, pretraining)
        if writer is not None:
            run.write(writer, epoch, metrics, Status.DIVERGED if diverged else Status.RUNNING)
        result.history.append(metrics)
        if reporter is not None:
            _report(reporter, run, epoch, metrics, None if diverged else checkpointing)
        if bar is not None:
            bar.update(epoch, metrics)
        if diverged:
            result.status, result.error = Status.DIVERGED, diverged
            break
    else:
        result.status = Status.COMPLETED
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.set_status(result.status)
        writer.flush()
    return result


def _report(reporter: Reporter, run: "_Run", epoch: int, metrics: dict, checkpointing) -> None:
    """Hand the epoch to the reporter, with a checkpoint folder when one is due (a diverged epoch gets none)."""
    if checkpointing is None or not checkpointing.due(epoch, run.epochs - 1):
        reporter(epoch, metrics)
    elif not checkpointing.writes:  # a Ray Train rank other than 0: rank 0's checkpoint is the trial's
        reporter(epoch, metrics)
    else:
        with checkpoint.written(run, epoch, checkpointing.meta) as folder:
            reporter(epoch, metrics, checkpoint=folder)


@dataclass
class _Run:
    """What a run trains with: the model, its loaders, optimiser and fixed evaluation batch."""

    config: TrainConfig
    device: torch.device
    model: nn.Module
    train_loader: object
    test_loader: object
    opt: torch.optim.Optimizer
    sched: object
    shard: Optional[tuple[int, int]]
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    input_shape: tuple = ()
    num_classes: int = 0
    reuse_train: Optional[Reuse] = None  # deq.reuse: epoch (reuse_test: with deq.reuse_eval)
    reuse_test: Optional[Reuse] = None
    memory: Optional[PeakMemory] = None

    @property
    def epochs(self) -> int:
        return self.config.pretrain_epochs + self.config.epochs

    @classmethod
    def prepare(cls, config: TrainConfig, data, replicas: Optional[Replicas], device: torch.device) -> "_Run":
        splits = data if data is not None else dataset_of(config)
        if splits.task != "classification":
            raise ValueError(f"train() fits classifiers; data set {splits.name!r} is a {splits.task} task")
        batch_size, shard = config.data.batch_size, None
        if replicas is not None:
            batch_size, shard = config.data.batch_size // replicas.world_size, (replicas.rank, replicas.world_size)
            if batch_size < 1:
                raise ValueError(f"data.batch_size {config.data.batch_size} is smaller than the "
                                 f"{replicas.world_size} workers; it is the global batch, split between them")
        reusing = config.deq.reuse != "none"
        train_loader, test_loader = make_loaders(splits, batch_size, seed=config.seed, shard=shard,
                                                 pin_memory=device.type == "cuda",  # async host-to-GPU copies
                                                 indexed=reusing)  # batches carry sample indices for reuse
        model = model_for(config, splits).to(device)
        reuse_train = reuse_test = None
        if reusing:
            own = train_loader.sampler.indices if shard is not None else None  # a replica keeps its shard only
            reuse_train = Reuse(model, len(splits.train), device, own)
            reuse_test = Reuse(model, len(splits.test), device) if config.deq.reuse_eval else None
        if replicas is not None:
            replicas.broadcast_parameters(model)
        steps_per_epoch = math.ceil(len(train_loader) / config.optim.accumulate)
        opt, sched = _make_optimizer(config, model, (config.pretrain_epochs + config.epochs) * steps_per_epoch)
        eval_x, eval_y = next(iter(make_loaders(splits, config.eval_batch, seed=config.seed, shuffle=False)[1]))
        return cls(config, device, model, train_loader, test_loader, opt, sched, shard, eval_x.to(device),
                   eval_y.to(device), tuple(splits.input_shape), int(splits.num_classes), reuse_train, reuse_test,
                   PeakMemory(device))

    def write(self, writer, epoch: int, metrics: dict, status: str) -> None:
        """The epoch's row, the fixed batch's residual traces and (if asked) its states over depth."""
        fwd, bwd = residual_traces(self.model, self.eval_x, self.eval_y)
        writer.add_trace(epoch, "fwd", *fwd)
        if bwd is not None:
            writer.add_trace(epoch, "bwd", *bwd)
        if self.config.depth_states:
            writer.write_states(depth_states(self.model, self.eval_x, self.eval_y, self.config.depth_states, epoch))
        writer.add_epoch(epoch, metrics, status)
        writer.flush()


def _diverged(metrics: dict, config: TrainConfig, pretraining: bool) -> Optional[str]:
    for key in ("train_loss", "test_loss"):
        if not math.isfinite(metrics[key]):
            return f"non-finite {key}"
    limit = config.max_unconverged_frac
    if limit is not None and not pretraining and 1 - metrics["converged_frac"] > limit:
        return f"unconverged fraction {1 - metrics['converged_frac']:.3f} > {limit}"
    return None


def _train_epoch(model, loader, opt, sched, config: TrainConfig, device, replicas: Optional[Replicas] = None, *,
                 reuse: Optional[Reuse] = None) -> dict:
    """One pass over the training data; NFE columns are means per micro-batch (per sample, see evaluate).
    With `reuse` (batches of (x, y, index)) each sample starts from its kept z* and keeps its new one.

    The loss and the non-finite count stay on the device (`tally.Sums`) and fwd/bwd are timed by
    `StageClock`, so a batch adds no host sync of its own; the NFE counts are host numbers the solver
    already produced. A non-finite loss is read every `CHECK_EVERY` batches and at the epoch's end: the run
    stops as diverged with the same error, up to CHECK_EVERY - 1 batches (on weights already ruined) later
    than a per-batch check would, and that epoch is reported by neither."""
    model.train()
    accumulate = config.optim.accumulate
    sums = Sums(device, ("loss", "nonfinite"))
    clock = StageClock(device, ("fwd", "bwd"))
    n = 0
    nfe = {"train_nfe_fwd": 0.0, "nfe_bwd": 0.0, "nfe_jac": 0.0}
    reused = 0.0
    batches = 0
    n_batches = len(loader)
    sync(device)
    t_epoch = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for xb, yb, *index in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        t0 = clock.mark()
        with reuse.starts(index[0]) if reuse is not None else nullcontext():
            task, loss, info = forward_loss(model, xb, yb)
        if reuse is not None:
            reuse.keep(index[0], info)
            reused += info.reused_frac * len(yb)
        t1 = clock.mark()
        if replicas is None:
            sums.add("nonfinite", ~torch.isfinite(loss.detach()))
        batches += 1
        # the last group of an epoch may be short: average over the micro-batches it has
        group = min(accumulate, n_batches - (batches - 1) // accumulate * accumulate)
        (loss / group if group > 1 else loss).backward()
        if batches % accumulate == 0 or batches == n_batches:
            _step(model, opt, sched, config, replicas, loss)
        clock.add("fwd", t0, t1)
        clock.add("bwd", t1, clock.mark())
        sums.add("loss", task, len(yb))
        n += len(yb)
        nfe["train_nfe_fwd"] += info.nfe_fwd_per_sample
        nfe["nfe_bwd"] += info.nfe_bwd
        nfe["nfe_jac"] += info.nfe_jac
        if batches % CHECK_EVERY == 0 and batches < n_batches and sums.peek("nonfinite"):
            raise FloatingPointError("non-finite training loss")
    sync(device)
    epoch_time = time.perf_counter() - t_epoch
    totals, times = sums.read(), clock.read()
    if totals["nonfinite"]:
        raise FloatingPointError("non-finite training loss")
    out = {k: v / max(batches, 1) for k, v in nfe.items()}
    out["nfe_train_total"] = sum(out.values())
    if reuse is not None:
        out["train_reuse_frac"] = reused / max(n, 1)
    return {
        "train_loss": totals["loss"] / max(n, 1), **out,
        "fwd_time_s": times["fwd"],
        "bwd_time_s": times["bwd"],
        "epoch_time_s": epoch_time,
    }


def forward_loss(model, xb, yb):
    """(task loss, training loss, DEQInfo) of one batch: cross-entropy plus the model's regularisers
    (skip term, Jacobian penalty) and the fixed-point correction terms (the cross-entropy of each kept
    iterate's readout, weighted), the loss every training step (and `deqlab bench`'s) backpropagates."""
    logits, info = model(xb)
    task = nn.functional.cross_entropy(logits, yb)
    return task, task + info.reg_loss + correction_loss(model, info, yb), info


def correction_loss(model, info, yb):
    """The fixed-point correction terms (`deq.correction`): each kept state through the model's readout, weighted."""
    if not info.correction:
        return 0.0
    readout = getattr(model, "readout", None)
    if readout is None:
        raise ValueError(f"deq.correction needs a DEQModel: {type(model).__name__} has no readout(z) to turn "
                         "each kept iterate into logits")
    return sum(weight * nn.functional.cross_entropy(readout(state), yb) for weight, state in info.correction)


def _step(model, opt, sched, config: TrainConfig, replicas: Optional[Replicas], loss) -> None:
    """Average the replicas' gradients (if any), clip, step the optimiser and the schedule."""
    if replicas is not None and not math.isfinite(replicas.average_gradients(model, loss)):
        raise FloatingPointError("non-finite training loss")  # on some replica: all stop together
    if config.optim.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model, loader, device, *, reuse: Optional[Reuse] = None) -> dict:
    """Test loss/accuracy, per-sample forward NFE, convergence and inference time per sample.

    `nfe_test_total` is everything a prediction costs per sample (forward only:
    no backward, no regulariser at test time). `nfe_fwd_paper` is the published
    code's convention: the solver's batched calls plus one residual call and one
    final call (3 when the initial guess already passes the stop test; the
    published Broyden always updates once, so its minimum is 4); it leaves out
    skipreg's f(0, x), as that code did not count it.
    `reuse` (deq.reuse_eval) starts each test sample from its z* of the previous evaluation.
    """
    model.eval()
    sums = Sums(device, ("loss", "correct", "residual"))  # on the device, read once (see _train_epoch)
    n = 0
    nfe = conv = paper = 0.0
    sync(device)
    t0 = time.perf_counter()
    for xb, yb, *index in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with reuse.starts(index[0]) if reuse is not None else nullcontext():
            logits, info = model(xb)
        if reuse is not None:
            reuse.keep(index[0], info)
        sums.add("loss", nn.functional.cross_entropy(logits, yb, reduction="sum"))
        sums.add("correct", (logits.argmax(dim=1) == yb).sum())
        k = len(yb)
        n += k
        nfe += info.nfe_fwd_per_sample * k
        solver = info.nfe_solver_per_sample
        paper += (solver + 2 if solver is not None else math.nan) * k
        conv += info.converged_frac * k
        sums.add("residual", info.residual.mean(), k)  # inf if a sample never got a finite iterate; NaN: no solver
    sync(device)
    elapsed = time.perf_counter() - t0
    totals = sums.read()
    loss_sum, correct, res = totals["loss"], totals["correct"], totals["residual"]
    model.train()
    n = max(n, 1)
    return {"test_loss": loss_sum / n, "test_acc": correct / n, "nfe_fwd": nfe / n, "nfe_test_total": nfe / n,
            "nfe_fwd_paper": paper / n, "converged_frac": conv / n, "residual": res / n,
            "infer_time_s": elapsed / n}


class _ProgressBar:
    """A rich progress bar over epochs, for interactive runs."""

    def __init__(self, total: int):
        from rich.progress import Progress

        self.p = Progress(transient=False)
        self.p.start()
        self.total = total
        self.task = self.p.add_task("training", total=total)

    def update(self, epoch: int, m: dict) -> None:
        # labelled, and accuracy in % as in every table
        desc = (f"epoch {epoch + 1}/{self.total}  test acc {100 * m['test_acc']:.1f}%  "
                f"NFE fwd {m['nfe_fwd']:.1f}  NFE bwd {m['nfe_bwd']:.1f}")
        self.p.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        self.p.stop()


__all__ = ["TrainResult", "train", "evaluate", "model_for", "model_of_shape", "dataset_of"]
