"""One training run, end to end: the loop every study trial runs.

`train(config, reporter)` is seeded, picks the device (CUDA when present),
pretrains at fixed depth for `pretrain_epochs`, then trains the DEQ, and after
every epoch hands the reporter the metrics of the results contract
(docs/design.md). A run that goes non-finite, or whose unconverged fraction passes
`max_unconverged_frac` (default 0.5), ends with status "diverged" and keeps what it measured;
it never raises mid-study.

The reporter is the only thing that differs between a plain run, a Ray Tune
trial and a Ray Train worker.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal, Optional, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from . import __version__
from .data import DATASETS, load_dataset, make_loaders
from .backward import backward_options as validate_backward_options
from .models import DEQ_MODELS, MODELS, build_model
from .models.zoo import MLP_CELLS, WEIGHT_INITS
from .parallel import Replicas
from .solvers import solver_options as validate_solver_options


DEFAULT_MAX_UNCONVERGED = 0.5
FLAT_INPUT_MODELS = ("mlp", "neural_ode")  # fed flattened images; the rest take (C, H, W)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Spec):
    name: str = "digits"
    data_dir: Optional[str] = None
    subset: Optional[int] = Field(None, ge=1, description="training images used (seeded)")
    test_subset: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    normalize: bool = True

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if v not in DATASETS:
            raise ValueError(f"unknown data set {v!r}; valid: {', '.join(DATASETS)}")
        return v


class ModelSpec(_Spec):
    name: str = "mlp"
    options: dict = Field(default_factory=dict, description="zoo constructor arguments (width, inner, channels, ...)")

    @model_validator(mode="after")
    def _known(self):
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; valid: {', '.join(MODELS)}")
        allowed = set(inspect.signature(MODELS[self.name]).parameters) - {"deq", "in_dim", "in_channels",
                                                                           "num_classes", "image_size"}
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for model {self.name!r}; valid: {', '.join(sorted(allowed))}")
        for key, valid in (("cell", MLP_CELLS), ("weight_init", WEIGHT_INITS)):
            if key in self.options and self.options[key] not in valid:
                raise ValueError(f"model.options.{key}: {self.options[key]!r} is not one of {', '.join(valid)}")
        return self


class DEQSpec(_Spec):
    init: Literal["zeros", "skip", "skipreg"] = "zeros"
    solver: str = "anderson"
    solver_options: dict = Field(default_factory=dict)
    tol: float = Field(1e-4, gt=0)
    max_iter: int = Field(30, ge=1)
    stop_mode: Literal["rel", "abs", "batch"] = "rel"
    backward: str = "implicit"
    backward_options: dict = Field(default_factory=dict)
    skip_weight: float = Field(0.01, ge=0)
    skip_norm: Literal["mse", "l1"] = Field("mse", description="skip term: mean squared or mean absolute z0 - z*")
    skip_grad: Literal["z0", "both"] = Field("z0", description="skip term differentiated through z0 only "
                                                               "(z* detached) or through z* as well")
    jac_weight: float = Field(0.0, ge=0)
    jac_probes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _valid(self):
        validate_solver_options(self.solver, self.solver_options)
        validate_backward_options(self.backward, self.backward_options)
        return self


class OptimSpec(_Spec):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(None, gt=0)
    accumulate: int = Field(1, ge=1, description="micro-batches (of data.batch_size) whose gradients are averaged "
                                                 "per optimiser step: effective batch = batch_size x accumulate")


class TrainConfig(_Spec):
    """Everything one run needs; unknown keys are errors, never ignored."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch take seeds in [0, 2**32 - 1]")
    epochs: int = Field(5, ge=1, description="DEQ epochs after pretraining")
    pretrain_epochs: int = Field(0, ge=0)
    pretrain_depth: int = Field(5, ge=1, description="fixed-depth unrolling during pretraining")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # a trial whose solver leaves most test samples short of `tol` did not find the equilibrium it reports on
    max_unconverged_frac: Optional[float] = Field(
        DEFAULT_MAX_UNCONVERGED, gt=0, le=1,
        description=f"diverged when, after a DEQ epoch, more than this fraction of the test samples did not reach "
                    f"tol (default {DEFAULT_MAX_UNCONVERGED}; 1 or null: never)")
    eval_batch: int = Field(128, ge=1, description="fixed test batch for residual traces and depth states")
    depth_states: int = Field(0, ge=0, description="record hidden states after k=0..K applications (0: off)")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    deq: DEQSpec = Field(default_factory=DEQSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)

    @model_validator(mode="after")
    def _honoured(self):
        """A model without a DEQ layer cannot honour deq.* (or pretraining) settings: refuse, never drop them."""
        if self.model.name in DEQ_MODELS:
            return self
        # compared with the defaults, not `model_fields_set`: a dumped config (Ray Train workers) sets every field
        defaults = DEQSpec().model_dump()
        ignored = [f"deq.{k}" for k, v in self.deq.model_dump().items() if v != defaults[k]]
        ignored += [k for k in ("pretrain_epochs", "pretrain_depth", "depth_states") if k in self.model_fields_set
                    and getattr(self, k) != type(self).model_fields[k].default]
        if ignored:
            raise ValueError(f"{', '.join(ignored)}: set, but model {self.model.name!r} has no DEQ layer, so "
                             f"{'they' if len(ignored) > 1 else 'it'} would be ignored; remove "
                             f"{'them' if len(ignored) > 1 else 'it'} (its own settings go in model.options)")
        return self

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def flat_params(self) -> dict:
        """Hyperparameters as flat `section.key` names (the `param.*` columns)."""
        out = {}

        def walk(prefix, value):
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif not isinstance(value, dict):
                out[prefix] = value

        walk("", self.model_dump())
        return out


class Reporter(Protocol):
    def __call__(self, epoch: int, metrics: dict) -> None: ...


@dataclass
class TrainResult:
    status: str
    history: list = field(default_factory=list)
    error: Optional[str] = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: TrainConfig, splits) -> nn.Module:
    name = config.model.name
    derived = {}
    if name in FLAT_INPUT_MODELS:
        derived["in_dim"] = int(math.prod(splits.input_shape))
    else:
        derived["in_channels"] = splits.input_shape[0]
        if name == "multiscale":
            derived["image_size"] = splits.input_shape[-1]
    if splits.num_classes:
        derived["num_classes"] = splits.num_classes
    deq = config.deq.model_dump() if name in DEQ_MODELS else {}
    return build_model(name, **derived, **config.model.options, **deq)


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
          device: Optional[torch.device] = None) -> TrainResult:
    """Run one configuration; report after every epoch; return the status and per-epoch metrics.

    With `replicas` (data-parallel workers in a process group) each replica
    trains on its shard with batch `data.batch_size // world_size`, so the
    global batch, and with it the optimisation, does not depend on the number
    of workers; gradients are averaged every step. Give the writer to one rank.
    """
    torch.manual_seed(config.seed)
    device = device if device is not None else select_device(config.device)
    splits = data if data is not None else load_dataset(
        config.data.name, data_dir=config.data.data_dir, subset=config.data.subset,
        test_subset=config.data.test_subset, normalize=config.data.normalize, seed=config.seed,
        flatten=config.model.name in FLAT_INPUT_MODELS)
    if splits.task != "classification":
        raise ValueError(f"train() fits classifiers; data set {splits.name!r} is a {splits.task} task")
    batch_size, shard = config.data.batch_size, None
    if replicas is not None:
        batch_size, shard = config.data.batch_size // replicas.world_size, (replicas.rank, replicas.world_size)
        if batch_size < 1:
            raise ValueError(f"data.batch_size {config.data.batch_size} is smaller than the {replicas.world_size} "
                             "workers; it is the global batch, split between them")
    train_loader, test_loader = make_loaders(splits, batch_size, seed=config.seed, shard=shard,
                                             pin_memory=device.type == "cuda")  # async host-to-GPU copies
    model = build(config, splits).to(device)
    if replicas is not None:
        replicas.broadcast_parameters(model)
    total_epochs = config.pretrain_epochs + config.epochs
    steps_per_epoch = math.ceil(len(train_loader) / config.optim.accumulate)
    opt, sched = _make_optimizer(config, model, total_epochs * steps_per_epoch)
    eval_x, eval_y = next(iter(make_loaders(splits, config.eval_batch, seed=config.seed, shuffle=False)[1]))
    eval_x, eval_y = eval_x.to(device), eval_y.to(device)
    result = TrainResult(status="running")
    bar = _ProgressBar(total_epochs) if progress else None
    for epoch in range(total_epochs):
        pretraining = epoch < config.pretrain_epochs
        if hasattr(model, "deq"):
            model.deq.fixed_depth = config.pretrain_depth if pretraining else None
        if shard is not None:
            train_loader.sampler.set_epoch(epoch)
        try:
            metrics = _train_epoch(model, train_loader, opt, sched, config, device, replicas)
            metrics.update(evaluate(model, test_loader, device))
        except FloatingPointError as exc:
            result.status, result.error = "diverged", str(exc)
            break
        if replicas is not None:
            metrics.update(replicas.mean({k: metrics[k] for k in ("train_loss", "train_nfe_fwd", "nfe_bwd", "nfe_jac",
                                                                  "nfe_train_total")}))
            metrics["replica_weight_spread"] = replicas.weight_spread(model)
        metrics["phase"] = "pretrain" if pretraining else "deq"
        metrics["lr"] = opt.param_groups[0]["lr"]
        diverged = _diverged(metrics, config, pretraining)
        if writer is not None:
            fwd, bwd = residual_traces(model, eval_x, eval_y)
            writer.add_trace(epoch, "fwd", *fwd)
            if bwd is not None:
                writer.add_trace(epoch, "bwd", *bwd)
            if config.depth_states and hasattr(model, "deq"):
                writer.write_states(depth_states(model, eval_x, eval_y, config.depth_states, epoch))
            writer.add_epoch(epoch, metrics, "diverged" if diverged else "running")
            writer.flush()
        result.history.append(metrics)
        if reporter is not None:
            reporter(epoch, metrics)
        if bar is not None:
            bar.update(epoch, metrics)
        if diverged:
            result.status, result.error = "diverged", diverged
            break
    else:
        result.status = "completed"
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.set_status(result.status)
        writer.flush()
    return result


def _diverged(metrics: dict, config: TrainConfig, pretraining: bool) -> Optional[str]:
    for key in ("train_loss", "test_loss"):
        if not math.isfinite(metrics[key]):
            return f"non-finite {key}"
    limit = config.max_unconverged_frac
    if limit is not None and not pretraining and 1 - metrics["converged_frac"] > limit:
        return f"unconverged fraction {1 - metrics['converged_frac']:.3f} > {limit}"
    return None


def _train_epoch(model, loader, opt, sched, config: TrainConfig, device, replicas: Optional[Replicas] = None) -> dict:
    """One pass over the training data; NFE columns are means per micro-batch (per sample, see evaluate)."""
    model.train()
    accumulate = config.optim.accumulate
    loss_sum = n = 0
    nfe = {"train_nfe_fwd": 0.0, "nfe_bwd": 0.0, "nfe_jac": 0.0}
    fwd_t = bwd_t = 0.0
    batches = 0
    n_batches = len(loader)
    _sync(device)
    t_epoch = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        _sync(device)
        t0 = time.perf_counter()
        logits, info = model(xb)
        task = nn.functional.cross_entropy(logits, yb)
        loss = task + info.reg_loss
        _sync(device)
        t1 = time.perf_counter()
        if replicas is None and not torch.isfinite(loss):
            raise FloatingPointError("non-finite training loss")
        batches += 1
        # the last group of an epoch may be short: average over the micro-batches it has
        group = min(accumulate, n_batches - (batches - 1) // accumulate * accumulate)
        (loss / group if group > 1 else loss).backward()
        if batches % accumulate == 0 or batches == n_batches:
            _step(model, opt, sched, config, replicas, loss)
        _sync(device)
        t2 = time.perf_counter()
        fwd_t += t1 - t0
        bwd_t += t2 - t1
        loss_sum += float(task.detach()) * len(yb)
        n += len(yb)
        nfe["train_nfe_fwd"] += info.nfe_fwd_per_sample
        nfe["nfe_bwd"] += info.nfe_bwd
        nfe["nfe_jac"] += info.nfe_jac
    _sync(device)
    out = {k: v / max(batches, 1) for k, v in nfe.items()}
    out["nfe_train_total"] = sum(out.values())
    return {
        "train_loss": loss_sum / max(n, 1), **out,
        "fwd_time_s": fwd_t,
        "bwd_time_s": bwd_t,
        "epoch_time_s": time.perf_counter() - t_epoch,
    }


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
def evaluate(model, loader, device) -> dict:
    """Test loss/accuracy, per-sample forward NFE, convergence and inference time per sample.

    `nfe_test_total` is everything a prediction costs per sample (forward only:
    no backward, no regulariser at test time). `nfe_fwd_paper` is the published
    code's convention: the solver's batched calls plus one residual call and one
    final call (minimum 4 for Broyden: initial evaluation, one update, residual,
    final); it leaves out skipreg's f(0, x), as that code did not count it.
    """
    model.eval()
    loss_sum = correct = n = 0
    nfe = conv = res = paper = 0.0
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        logits, info = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
        k = len(yb)
        n += k
        nfe += info.nfe_fwd_per_sample * k
        solver = info.nfe_solver_per_sample
        paper += (solver + 2 if solver is not None else math.nan) * k
        conv += info.converged_frac * k
        res += float(info.residual.mean()) * k  # inf if a sample never got a finite iterate; NaN: no solver
    _sync(device)
    elapsed = time.perf_counter() - t0
    model.train()
    n = max(n, 1)
    return {"test_loss": loss_sum / n, "test_acc": correct / n, "nfe_fwd": nfe / n, "nfe_test_total": nfe / n,
            "nfe_fwd_paper": paper / n, "converged_frac": conv / n, "residual": res / n,
            "infer_time_s": elapsed / n}


def residual_traces(model, x, y):
    """Forward residual after each solver step on a fixed batch, and the adjoint's (implicit mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits, info = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    model.zero_grad(set_to_none=True)
    fwd = (info.trace, info.trace_mean)
    rec = info.backward
    bwd = (rec.trace, rec.trace_mean) if rec.trace else None
    return fwd, bwd


@torch.no_grad()
def depth_states(model, x, y, k_max: int, epoch: int):
    """Hidden states after k = 0..K plain applications of the cell from the model's z0 (depth view)."""
    import pandas as pd

    deq = model.deq
    captured = {}
    handle = deq.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
        model.train()
    inj = captured["x"]
    z = deq.initial_state(inj, lambda: None)
    rows = []
    for k in range(k_max + 1):
        flat = z.flatten(1).float().cpu()
        for i in range(flat.shape[0]):
            rows.append({"epoch": epoch, "step": k, "sample": i, "label": int(y[i]), "state": flat[i].tolist()})
        z = deq.f(z, inj)
    return pd.DataFrame(rows)


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


def provenance(config: TrainConfig, device: torch.device, num_workers: int = 0) -> dict:
    try:
        ray_version = metadata.version("ray")  # without importing it (seconds)
    except metadata.PackageNotFoundError:
        ray_version = None
    from .provenance import environment

    return {
        "seed": config.seed, "config_hash": config.config_hash(), "deqlab_version": __version__,
        "torch_version": torch.__version__, "ray_version": ray_version, "device": str(device),
        "num_workers": num_workers, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment(),
    }


__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "provenance"]
