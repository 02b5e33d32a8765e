"""The one assembly of a training run, shared by `deqlab train`, a Tune trial and a Ray Train worker.

A run is a TrainConfig, where its files go (a study *name* and a results root: a run never knows the
study's spec) and who hears its epochs (the reporter). `run_one` builds the trial's writer from the
config's flat params and the run's provenance, trains, and returns how the run ended; the callers differ
only in their reporter and in the process group they run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..results import TrialWriter
from .env import provenance, select_device
from .loop import TrainResult, train


@dataclass(frozen=True)
class RunOutcome:
    result: TrainResult
    path: Optional[str]  # the study directory holding the run's files (None on a rank that writes none)


def run_one(config, *, study: str, trial_id: str, storage: str, reporter=None, progress: bool = False,
            replicas=None, device=None, node_id: Optional[str] = None,
            save_config_as: Optional[str] = None, checkpointing=None,
            local_checkpoints: bool = False, row_extras: Optional[dict] = None) -> RunOutcome:
    """Train `config` as trial `trial_id` of the study named `study` under `storage`.

    With `replicas` (a Ray Train process group) only rank 0 writes files. `node_id` (the Ray node) is
    recorded with the provenance when given; `save_config_as` also saves the config as YAML under that
    name in the study directory before training (`deqlab train`: a standalone run records what it ran).
    `row_extras` are written on every row from here on (a PBT clone: the trial it was cloned from and the
    hyperparameters that changed).
    `checkpointing` (a `checkpoint.Checkpointing`): the reporter gets a checkpoint folder on the epochs it
    names (Ray's report stores it); `local_checkpoints` stores them itself, in `checkpoints/<trial>/` of the
    study (a run outside Ray).
    """
    device = device if device is not None else select_device(config.device)
    writer = None
    if replicas is None or replicas.rank == 0:
        world = replicas.world_size if replicas is not None else 0
        run = {**provenance(config, device, world), **({"node_id": node_id} if node_id is not None else {}),
               **(row_extras or {})}
        writer = TrialWriter(storage, study, trial_id, config.flat_params(), run)
        if save_config_as:
            import yaml

            writer.store.write_text(save_config_as, yaml.safe_dump(config.model_dump(), sort_keys=False))
    if checkpointing is not None:
        checkpointing.meta = {"study": study, "trial_id": trial_id, **checkpointing.meta,
                              "train_config": config.model_dump(mode="json")}
        if local_checkpoints and writer is not None:
            reporter = _stored_here(reporter, writer.store, trial_id, checkpointing.policy.keep)
    result = train(config, reporter, progress=progress, writer=writer, replicas=replicas, device=device,
                   checkpointing=checkpointing)
    return RunOutcome(result, writer.base if writer is not None else None)


def _stored_here(reporter, store, trial_id: str, keep: int):
    """A reporter that first stores the epoch's checkpoint folder in the study (what Ray does for a trial)."""
    from ..results import checkpoints

    def report(epoch: int, metrics: dict, checkpoint: Optional[str] = None) -> None:
        if checkpoint is not None:
            checkpoints.persist(store, trial_id, checkpoint, epoch, keep)
        if reporter is not None:
            reporter(epoch, metrics)

    return report


__all__ = ["run_one", "RunOutcome"]
