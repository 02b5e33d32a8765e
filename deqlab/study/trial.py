"""What runs inside one Ray Tune trial: the training loop, reported to Tune, written to Parquet.

`num_workers == 0`: the loop runs in the Tune trial itself (no Train start-up).
`num_workers >= 1`: the trial is a small driver that fits a Ray Train
TorchTrainer; Ray 2.60's Train V2 refuses a Trainer as a Tune trainable, so
the Trainer is built and fitted inside a function trial and its workers'
reports reach Tune through `TuneReportCallback` (docs/design.md "Ray"). Either
way the same `deqlab.run.one.run_one` runs; only the reporter differs. Rank 0
writes the trial's Parquet files.

The driver validated the study once; a trial gets the StudySpec object itself
(`tune.with_parameters`), builds its one TrainConfig from the base and its
assignment (a combination the probes missed fails the trial here, with the
validation message), and a Train worker gets that TrainConfig object, pickled
by Ray: nothing is parsed twice.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..results import FINAL_STATUSES, METRICS, StudyStore, absolute
from ..run.one import run_one
from .spec import StudySpec
from .space import to_paths

GRID_KEY = "point"  # the grid algorithm hands each trial its whole point under this key


def threads_for(cpus: float) -> int:
    """Torch threads for a worker holding `cpus` Ray CPUs (0.9 -> 1, 1.9 -> 2: the driver's 0.1 rounds away)."""
    return max(1, math.ceil(cpus - 1e-9))


def assignment_of(config: dict) -> dict:
    """Tune config -> {config path: value}, for Optuna's flat names and for grid points alike."""
    if GRID_KEY in config and isinstance(config[GRID_KEY], dict):
        return dict(config[GRID_KEY])
    return to_paths(config)


def tune_metrics(epoch: int, metrics: dict) -> dict:
    """What Tune (and through it Optuna and ASHA) sees: every numeric metric plus the epoch."""
    out = {k: float(v) for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["epoch"] = epoch
    # Optuna refuses NaN objectives; +-inf sorts a broken trial last instead of crashing the searcher.
    return {k: (v if not math.isnan(v) else math.inf) for k, v in out.items()}


def _node_id() -> Optional[str]:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (unit tests)
        return None


def run_trial(config: dict, *, spec: StudySpec, storage: str) -> None:
    """The Tune trainable: one trial of `spec` (validated by the driver), `config` its Tune config."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    stored = stored_result(storage, spec.name, trial_id)
    if stored is not None:  # (a retry of a trial that had finished): nothing trains twice under one id
        if stored:
            tune.report(stored)
        return
    train_config = spec.train_config(assignment_of(config))
    if spec.trainer.num_workers == 0:
        _train_here(spec, train_config, trial_id, storage)
    else:
        _fit_trainer(spec, train_config, trial_id, storage)


def stored_result(storage: str, study: str, trial_id: str) -> Optional[dict]:
    """What Tune saw last of a trial whose file already holds a final status ({} if it has no epoch), or
    None when the trial still has to train."""
    try:
        frame = StudyStore.of(storage, study).read_trial_file("trials", trial_id)
    except ValueError:  # torn or unreadable: train again, rewriting it
        return None
    if frame is None or frame.empty or frame["status"].iloc[-1] not in FINAL_STATUSES:
        return None
    last = frame.sort_values("epoch", kind="stable").iloc[-1]
    if last["epoch"] < 0:
        return {}
    return tune_metrics(int(last["epoch"]), {k: float(last[k]) for k in METRICS if k in last and last[k] == last[k]
                                             and last[k] is not None})


def _train_here(spec: StudySpec, train_config, trial_id: str, storage: str) -> None:
    from ray import tune

    torch.set_num_threads(threads_for(spec.trainer.cpus_per_worker))
    run_one(train_config, study=spec.name, trial_id=trial_id, storage=storage, node_id=_node_id(),
            reporter=lambda epoch, m: tune.report(tune_metrics(epoch, m)))


def _fit_trainer(spec: StudySpec, train_config, trial_id: str, storage: str) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    t = spec.trainer
    per_worker = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"train_config": train_config, "study": spec.name,
                           "trial_id": trial_id, "storage": storage,
                           "threads": threads_for(t.cpus_per_worker)},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"train-{trial_id}", storage_path=f"{absolute(storage)}/{spec.name}/train",
            callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=t.max_failures),
        ),
    )
    trainer.fit()


def worker_loop(cfg: dict) -> None:
    """One Ray Train worker: a replica of the training loop in the process group Ray Train set up;
    `cfg["train_config"]` is the trial's TrainConfig itself (Ray pickles it), not a dump to rebuild."""
    import ray.train
    import ray.train.torch

    from ..run.parallel import Replicas

    torch.set_num_threads(cfg["threads"])
    train_config = cfg["train_config"]
    device = ray.train.torch.get_device() if train_config.device != "cpu" else torch.device("cpu")
    run_one(train_config, study=cfg["study"], trial_id=cfg["trial_id"], storage=cfg["storage"],
            replicas=Replicas.from_process_group(), device=device, node_id=_node_id(),
            reporter=lambda epoch, m: ray.train.report(tune_metrics(epoch, m)))


__all__ = ["run_trial", "worker_loop", "assignment_of", "tune_metrics", "GRID_KEY"]
