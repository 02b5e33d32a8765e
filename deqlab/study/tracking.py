"""Experiment trackers (MLflow, Weights & Biases, TensorBoard) through Ray Tune's own logger callbacks.

    tracking:
      mlflow: {tracking_uri: file:./mlruns, experiment: solvers}   # one MLflow run per trial
      wandb: {project: deq, mode: offline}                         # one W&B run per trial
      tensorboard: true                                            # event files in <study>/tune/<trial>/

Ray logs what Tune sees: the trial's Tune config as parameters and every
epoch's metrics under the catalogue's names (`MLflowLoggerCallback`,
`WandbLoggerCallback`, `TBXLoggerCallback`). When a trial ends, deqlab adds
what only its Parquet row knows, through the same callback: every flat
training parameter, the status and error, and the provenance (MLflow: params
and tags; W&B: the run's config). A tracker is optional: its package is an
extra (`deqlab[mlflow]`, `deqlab[wandb]`, `deqlab[tensorboard]`), checked when
the study is validated. A tracker that fails while a study runs (an
unwritable store, a lost server) is switched off with one warning: Tune would
end the study on a callback's exception, and the Parquet files are the record.

The spec models are torch- and Ray-free (`deqlab validate` imports them); the
callbacks import Ray when a study builds them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# tracker -> (the module its Ray callback needs, the deqlab extra that installs it)
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"), "tensorboard": ("tensorboardX", "tensorboard")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MLflowTracking(_Section):
    tracking_uri: Optional[str] = Field(None, description="file:./mlruns, http://host:5000, ... (default: "
                                                          "MLflow's, $MLFLOW_TRACKING_URI)")
    experiment: Optional[str] = Field(None, description="default: the study's name")
    tags: dict[str, str] = Field(default_factory=dict, description="set on every run")


class WandbTracking(_Section):
    project: Optional[str] = Field(None, description="default: the study's name")
    entity: Optional[str] = None
    group: Optional[str] = Field(None, description="default: the study's name")
    mode: Literal["online", "offline", "disabled"] = "online"
    dir: Optional[str] = Field(None, description="where W&B keeps its files (default: the study directory)")
    tags: list[str] = Field(default_factory=list)


class TrackingSpec(_Section):
    mlflow: Optional[MLflowTracking] = None
    wandb: Optional[WandbTracking] = None
    tensorboard: bool = False

    @property
    def requested(self) -> list[str]:
        return [name for name in PACKAGES if getattr(self, name)]

    @field_validator("mlflow", "wandb", "tensorboard")
    @classmethod
    def _installed(cls, value, info: ValidationInfo):
        module, extra = PACKAGES[info.field_name]
        if value and importlib.util.find_spec(module) is None:
            raise ValueError(f"the {module} package is not installed; pip install 'deqlab[{extra}]'")
        return value


def tracker_callbacks(spec, storage: str, say: Callable[[str], None]) -> list:
    """Ray Tune's callbacks for the trackers the study's `tracking:` section names (none: [])."""
    tracking = spec.tracking
    if not tracking.requested:
        return []
    from ..results import is_uri, study_path

    classes, path = _classes(), study_path(storage, spec.name)
    callbacks = []
    if tracking.mlflow:
        m = tracking.mlflow
        callbacks.append(classes["mlflow"](say, storage, spec, tracking_uri=m.tracking_uri,
                                           experiment_name=m.experiment or spec.name,
                                           tags={"study": spec.name, **m.tags}))
    if tracking.wandb:
        w = tracking.wandb
        callbacks.append(classes["wandb"](say, storage, spec, project=w.project or spec.name,
                                          group=w.group or spec.name, entity=w.entity, mode=w.mode,
                                          dir=w.dir or (None if is_uri(path) else path),
                                          tags=[spec.name, *w.tags]))
    if tracking.tensorboard:
        callbacks.append(classes["tensorboard"](say, storage, spec))
    return callbacks


# --------------------------------------------------------------------------- the callbacks

HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore", "on_trial_save",
         "on_trial_result", "on_trial_complete", "on_trial_error", "on_trial_recover", "on_checkpoint",
         "on_experiment_end")


def trial_record(storage: str, study: str, trial_id: str) -> Optional[dict]:
    """What a trial's Parquet file knows that Tune does not: {"params", "status", "error", "epoch",
    "provenance"} from its last row; None when it has no readable row."""
    import pandas as pd

    from ..results import PROVENANCE, StudyStore

    try:
        frame = StudyStore.of(storage, study).read_trial_file("trials", trial_id)
    except ValueError:
        return None
    if frame is None or frame.empty:
        return None
    last = frame.sort_values("epoch", kind="stable").iloc[-1]
    present = {k: v for k, v in last.items() if not (pd.api.types.is_scalar(v) and pd.isna(v))}
    return {"params": {k[len("param."):]: v for k, v in present.items() if k.startswith("param.")},
            "status": str(present.get("status", "")), "error": str(present.get("error", "")),
            "epoch": int(present.get("epoch", -1)),
            "provenance": {k: present[k] for k in PROVENANCE if k in present}}


def _guarded(base: type, tracker: str) -> type:
    """`base` with every Tune hook guarded: its first exception prints one warning and switches the
    tracker off for the rest of the study (Tune would otherwise end the study)."""

    def guard(name):
        method = getattr(base, name)

        @functools.wraps(method)
        def hook(self, *args, **kwargs):
            if self._failed:
                return None
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self._failed = True
                self._say(f"warning: {tracker} tracking failed ({type(exc).__name__}: {exc}); it is off for the "
                          "rest of this study, whose Parquet results are complete")
                return None

        return hook

    def __init__(self, say, storage, spec, **kwargs):
        base.__init__(self, **kwargs)
        self._say, self._storage, self._spec, self._failed, self._ended = say, storage, spec, False, set()

    namespace = {name: guard(name) for name in HOOKS if hasattr(base, name)}
    return type(f"Tracked{base.__name__}", (base,), {**namespace, "__init__": __init__})


@functools.lru_cache(maxsize=None)
def _classes() -> dict:
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.result import TRAINING_ITERATION
    from ray.tune.utils import flatten_dict

    from .bookkeeping import _train_config, stopped_status
    from .trial import trial_id_of

    def record_of(callback, trial) -> tuple[str, Optional[dict]]:
        """(the trial's id in the study's files: a continued trial keeps its first id, its Parquet record
        with the status the driver records for it: Tune stops the trials a time budget cuts short without
        telling the callbacks, and the driver settles them after Tune returns)."""
        trial_id = trial_id_of(trial.config or {}, trial.trial_id)
        record = trial_record(callback._storage, callback._spec.name, trial_id)
        if record is not None:
            last = int(record["epoch"])
            record["status"] = str(stopped_status(record["status"] or None, last,
                                                  _train_config(callback._spec, trial.config or {})))
        return trial_id, record

    class EndsEveryRun:
        """Ends at the study's end the runs of trials Tune stopped without `on_trial_complete` (the time
        budget's): left open, MLflow shows them running and W&B's callback waits for them up to its upload
        timeout (30 minutes) before the study can return."""

        def log_trial_end(self, trial, failed: bool = False):
            self._ended.add(trial)
            super().log_trial_end(trial, failed)

        def on_experiment_end(self, trials, **info):
            for trial in trials:
                if trial in self._open() and trial not in self._ended:
                    self.log_trial_end(trial)
            super().on_experiment_end(trials, **info)

    class MLflowWithRecord(EndsEveryRun, MLflowLoggerCallback):
        def _open(self):
            return self._trial_runs

        def log_trial_end(self, trial, failed: bool = False):
            trial_id, record = record_of(self, trial)
            if record is not None and trial in self._trial_runs:
                import mlflow

                run_id = self._trial_runs[trial]
                logged = set(flatten_dict(dict(trial.config), delimiter="/"))  # a param is written once
                self.mlflow_util.log_params(run_id=run_id, params_to_log={
                    k: v for k, v in record["params"].items() if k not in logged})
                tags = {"trial_id": trial_id, "status": record["status"], "error": record["error"][:5000],
                        **{k: str(v) for k, v in record["provenance"].items()}}
                client = mlflow.MlflowClient(self.tracking_uri)
                for key, value in tags.items():
                    if value:
                        client.set_tag(run_id, key, value)
            super().log_trial_end(trial, failed)

    class WandbWithRecord(EndsEveryRun, WandbLoggerCallback):
        def _open(self):
            return self._trial_queues

        def setup(self, *args, **kwargs):
            # Ray asks for an API key unless $WANDB_MODE says offline: the study's `mode` says it here
            mode, before = self.kwargs.get("mode"), os.environ.get("WANDB_MODE")
            if mode in ("offline", "disabled"):
                os.environ["WANDB_MODE"] = mode
            try:
                super().setup(*args, **kwargs)
            finally:
                if before is None:
                    os.environ.pop("WANDB_MODE", None)
                else:
                    os.environ["WANDB_MODE"] = before

        def log_trial_end(self, trial, failed: bool = False):
            trial_id, record = record_of(self, trial)
            if record is not None and trial in self._trial_queues:  # into the run's config, before it ends
                config = {**record["params"], "trial_id": trial_id, "status": record["status"],
                          "error": record["error"], **record["provenance"]}
                self._trial_queues[trial].put((_QueueItem.RESULT, {
                    "config": config, TRAINING_ITERATION: trial.last_result.get(TRAINING_ITERATION)}))
            super().log_trial_end(trial, failed)

    return {"mlflow": _guarded(MLflowWithRecord, "mlflow"), "wandb": _guarded(WandbWithRecord, "wandb"),
            "tensorboard": _guarded(TBXLoggerCallback, "tensorboard")}


__all__ = ["TrackingSpec", "MLflowTracking", "WandbTracking", "tracker_callbacks", "trial_record", "PACKAGES"]
