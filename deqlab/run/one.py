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
            save_config_as: Optional[str] = None) -> RunOutcome:
    """Train `config` as trial `trial_id` of the study named `study` under `storage`.

    With `replicas` (a Ray Train process group) only rank 0 writes files. `node_id` (the Ray node) is
    recorded with the provenance when given; `save_config_as` also saves the config as YAML under that
    name in the study directory before training (`deqlab train`: a standalone run records what it ran).
    """
    device = device if device is not None else select_device(config.device)
    writer = None
    if replicas is None or replicas.rank == 0:
        world = replicas.world_size if replicas is not None else 0
        run = {**provenance(config, device, world), **({"node_id": node_id} if node_id is not None else {})}
        writer = TrialWriter(storage, study, trial_id, config.flat_params(), run)
        if save_config_as:
            import yaml

            writer.store.write_text(save_config_as, yaml.safe_dump(config.model_dump(), sort_keys=False))
    result = train(config, reporter, progress=progress, writer=writer, replicas=replicas, device=device)
    return RunOutcome(result, writer.base if writer is not None else None)


__all__ = ["run_one", "RunOutcome"]
