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
CONTINUES = "deqlab_continues"  # a resumed study's Tune config names the trial (id) it continues, if any


def threads_for(cpus: float) -> int:
    """Torch threads for a worker holding `cpus` Ray CPUs (0.9 -> 1, 1.9 -> 2: the driver's 0.1 rounds away)."""
    return max(1, math.ceil(cpus - 1e-9))


def assignment_of(config: dict) -> dict:
    """Tune config -> {config path: value}, for Optuna's flat names and for grid points alike."""
    config = tune_config_of(config)
    if GRID_KEY in config and isinstance(config[GRID_KEY], dict):
        return dict(config[GRID_KEY])
    return to_paths(config)


def continued_id(config: dict) -> Optional[str]:
    """The id of the unfinished trial this Tune trial continues (a resumed study), or None."""
    point = config.get(GRID_KEY)
    if isinstance(point, dict) and CONTINUES in point:
        return point[CONTINUES]
    return config.get(CONTINUES)


def trial_id_of(config: dict, tune_id: str) -> str:
    """The trial's id in the study's files: the one it continues, else Tune's."""
    return continued_id(config) or tune_id


def tune_config_of(config: dict) -> dict:
    """A Tune config without the continuation mark: what a trial of these hyperparameters is given."""
    point = config.get(GRID_KEY)
    if isinstance(point, dict) and CONTINUES in point:
        return {**config, GRID_KEY: {k: v for k, v in point.items() if k != CONTINUES}}
    return {k: v for k, v in config.items() if k != CONTINUES}


def with_continues(tune_config: dict, trial_id: str) -> dict:
    """A trial's Tune config marked to continue `trial_id` (grid: inside its point)."""
    if isinstance(tune_config.get(GRID_KEY), dict):
        return {**tune_config, GRID_KEY: {**tune_config[GRID_KEY], CONTINUES: trial_id}}
    return {**tune_config, CONTINUES: trial_id}


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

    trial_id = trial_id_of(config, tune.get_context().get_trial_id())
    stored = stored_result(storage, spec.name, trial_id)
    if stored is not None:  # (a retry of a trial that had finished): nothing trains twice under one id
        if stored:
            tune.report(stored)
        return
    train_config = spec.train_config(assignment_of(config))
    resumes = continued_id(config) is not None
    if spec.trainer.num_workers == 0:
        _train_here(spec, train_config, trial_id, storage, config, resumes)
    else:
        _fit_trainer(spec, train_config, trial_id, storage, config, resumes)


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


def _checkpointing(spec: StudySpec, config: dict, storage: str, trial_id: str, ray_checkpoint, scan: bool,
                   run: str, writes: bool = True):
    """The trial's checkpoint policy and the state it starts from: Ray's latest checkpoint of this trial (a
    retry after a crash, a PBT exploit), else, when it continues a trial of an earlier driver (`scan`) or
    Ray's was not whole, that trial's newest whole checkpoint in the study (None: epoch 0). `run` (the Tune
    trial writing) is recorded in each checkpoint's meta.json."""
    from ..run.checkpoint import Checkpointing, from_ray, newest_state

    if not spec.checkpoint.enabled:
        return None
    start = from_ray(ray_checkpoint)
    if start is None and (scan or ray_checkpoint is not None):
        start = newest_state(StudyStore.of(storage, spec.name), trial_id)
    return Checkpointing(spec.checkpoint, {"tune_config": tune_config_of(config), "run": run}, writes=writes,
                         start=start)


def _reporter(report, checkpoint_cls, after_first_checkpoint=None):
    """Tune's or Ray Train's `report`, handed a checkpoint folder as that library's `Checkpoint` (Ray copies
    it into the study's storage before `report` returns, and keeps the newest `checkpoint.keep`);
    `after_first_checkpoint` runs once, after the first checkpoint is stored."""
    pending = [after_first_checkpoint] if after_first_checkpoint is not None else []

    def reporter(epoch: int, metrics: dict, checkpoint: Optional[str] = None) -> None:
        report(tune_metrics(epoch, metrics),
               checkpoint=checkpoint_cls.from_directory(checkpoint) if checkpoint is not None else None)
        if checkpoint is not None and pending:
            pending.pop()()

    return reporter


def _superseded(spec: StudySpec, storage: str, trial_id: str, run: str, resumes: bool):
    """For a trial continuing an earlier driver's: delete that driver's checkpoints of it once this run has
    stored one (a long study resumed many times keeps `keep` checkpoints per trial, not `keep` per resume)."""
    if not resumes:
        return None
    from ..results import checkpoints

    return lambda: checkpoints.prune_superseded(StudyStore.of(storage, spec.name), trial_id, run)


def _train_here(spec: StudySpec, train_config, trial_id: str, storage: str, config: dict, resumes: bool) -> None:
    from ray import tune

    torch.set_num_threads(threads_for(spec.trainer.cpus_per_worker))
    ray_checkpoint, run = tune.get_checkpoint(), tune.get_context().get_trial_id()
    checkpointing = _checkpointing(spec, config, storage, trial_id, ray_checkpoint, resumes, run)
    clone = pbt_clone(spec, ray_checkpoint, trial_id, config) if checkpointing is not None else {}
    if clone:
        checkpointing.meta["pbt"] = clone  # its checkpoints carry it: a retry keeps writing it
    reporter = _reporter(tune.report, tune.Checkpoint, _superseded(spec, storage, trial_id, run, resumes))
    run_one(train_config, study=spec.name, trial_id=trial_id, storage=storage, node_id=_node_id(),
            reporter=reporter, checkpointing=checkpointing, row_extras=clone)


def pbt_clone(spec: StudySpec, ray_checkpoint, trial_id: str, config: dict) -> dict:
    """The row columns of a PBT clone: `pbt_source` (the trial whose checkpoint this one continues),
    `pbt_source_epoch` (that checkpoint's epoch) and `pbt_changes` (`optim.lr: 0.001 -> 0.0012; ...`, the
    mutated settings against the source's). {} for a trial that was never cloned."""
    from ..results import checkpoints

    if ray_checkpoint is None or spec.scheduler.name != "pbt":
        return {}
    try:
        meta = checkpoints.read_meta(ray_checkpoint.filesystem, ray_checkpoint.path)
    except checkpoints.CheckpointError:
        return {}
    if meta["trial_id"] == trial_id:  # its own checkpoint (a retry): what it was cloned from, if anything
        return dict(meta.get("pbt") or {})
    source, now = meta.get("tune_config") or {}, tune_config_of(config)
    changes = [f"{k}: {source.get(k)!r} -> {now.get(k)!r}" for k in spec.scheduler.mutations
               if source.get(k) != now.get(k)]
    return {"pbt_source": meta["trial_id"], "pbt_source_epoch": int(meta["epoch"]), "pbt_changes": "; ".join(changes)}


def _fit_trainer(spec: StudySpec, train_config, trial_id: str, storage: str, config: dict, resumes: bool) -> None:
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    t = spec.trainer
    run = tune.get_context().get_trial_id()
    per_worker = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"train_config": train_config, "study": spec.name,
                           "trial_id": trial_id, "storage": storage, "spec": spec, "tune_config": config,
                           "resumes": resumes, "run": run, "threads": threads_for(t.cpus_per_worker)},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            # a continued trial's run gets a name of its own: the earlier driver's run folder keeps its files
            name=f"train-{trial_id}" + (f"-{run}" if resumes else ""),
            storage_path=f"{absolute(storage)}/{spec.name}/train",
            callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
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
    replicas = Replicas.from_process_group()
    # every rank loads the same checkpoint (a retried worker group, a continued trial); rank 0 writes
    spec, trial_id, storage = cfg["spec"], cfg["trial_id"], cfg["storage"]
    checkpointing = _checkpointing(spec, cfg["tune_config"], storage, trial_id, ray.train.get_checkpoint(),
                                   cfg["resumes"], cfg["run"], writes=replicas.rank == 0)
    prune = _superseded(spec, storage, trial_id, cfg["run"], cfg["resumes"] and replicas.rank == 0)
    run_one(train_config, study=cfg["study"], trial_id=trial_id, storage=storage, replicas=replicas, device=device,
            node_id=_node_id(), reporter=_reporter(ray.train.report, ray.train.Checkpoint, prune),
            checkpointing=checkpointing)


__all__ = ["run_trial", "worker_loop", "assignment_of", "tune_metrics", "GRID_KEY", "CONTINUES", "continued_id",
           "trial_id_of", "tune_config_of", "with_continues"]
