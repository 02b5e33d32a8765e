"""The study file: what to train, what to search, what to optimise, with what resources.

Everything is checked here, before Ray starts: unknown keys, wrong types,
impossible ranges, unknown solver/model names, and every value the space can
draw is tried against the training config (`probe.check_space`), so a trial
never fails an hour in on a typo. Errors name the file, the key path and the
valid choices. The file itself is read by `yaml_io.read_yaml`.

    name: quickstart
    base: {epochs: 3, data: {name: digits}, model: {name: mlp}}   # a `deqlab train` config
    space: {deq.init: {choice: [zeros, skip, skipreg]}, deq.tol: {loguniform: [1e-4, 1e-2]}}
    objectives: [{metric: test_acc, mode: max}, {metric: nfe_fwd, mode: min}]
    search: {algorithm: tpe, num_samples: 8, seed: 0}
    scheduler: {name: asha, grace_period: 1}
    trainer: {num_workers: 0}
    checkpoint: {every: 1, keep: 2}   # the default: a lost trial resumes from its last epoch
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .. import plugins
from ..results import OBJECTIVE_METRICS, check_name
from ..solvers.options import _unknown_key
from ..run.config import CheckpointSpec, TrainConfig
from .probe import check_space
from .space import Param, apply, grid_points, parse_space, walk
from .yaml_io import StudyError, read_yaml
MULTI_OBJECTIVE_ALGORITHMS = ("tpe", "gp", "nsga2", "random", "grid")
MAX_WORKERS, MAX_CPUS_PER_WORKER, MAX_GPUS_PER_WORKER = 4096, 512, 16


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def inert(self) -> tuple[str, ...]:
        """Fields that have no effect given the others (a study may not set them; dumps leave them out)."""
        return ()

    @model_serializer(mode="wrap")
    def _dump_without_inert(self, handler):
        # a dump (study.yaml, the spec each trial parses, `--name`) parses again and shows only live settings
        out = handler(self)
        for key in self.inert():
            out.pop(key, None)
        return out


class Objective(_Spec):
    metric: str
    mode: Literal["max", "min"]

    @field_validator("metric")
    @classmethod
    def _known(cls, v):
        if v not in OBJECTIVE_METRICS:
            raise ValueError(f"unknown metric {v!r}; valid: {', '.join(OBJECTIVE_METRICS)}")
        return v


class SearchSpec(_Spec):
    algorithm: Literal["tpe", "gp", "cmaes", "nsga2", "random", "grid"] = "tpe"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="the sampler's seed (numpy's range)")
    num_samples: Optional[int] = Field(None, ge=1, description="trials drawn (default 8); grid: repeats of the "
                                                              "whole grid (default 1)")
    max_concurrent_trials: Optional[int] = Field(None, ge=1, description="default: what the cluster's CPUs/GPUs fit")
    time_budget_s: Optional[float] = Field(None, gt=0)

    def inert(self) -> tuple[str, ...]:
        return ("seed",) if self.algorithm == "grid" else ()  # a grid has no randomness

    @property
    def samples(self) -> int:
        return self.num_samples or (1 if self.algorithm == "grid" else 8)


ASHA_KEYS = ("grace_period", "reduction_factor")
PBT_KEYS = ("perturbation_interval", "mutations", "quantile_fraction", "resample_probability")


class SchedulerSpec(_Spec):
    name: Literal["none", "asha", "pbt"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be pruned")
    reduction_factor: float = Field(2.0, gt=1)
    # Population Based Training (Ray Tune's PopulationBasedTraining; docs/checkpoints.md "PBT")
    perturbation_interval: int = Field(2, ge=1, description="pbt: epochs between a trial's exploit/explore steps")
    mutations: dict = Field(default_factory=dict, description="pbt: config path -> a space distribution "
                            "({loguniform: [a, b]}, {uniform: ...}, {int: ...}, {choice: [...]})")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt: the bottom fraction that clones the top")
    resample_probability: float = Field(0.25, ge=0, le=1, description="pbt: chance a mutation redraws instead of "
                                        "perturbing (x0.8 / x1.2, or a neighbour in a choice list)")

    def inert(self) -> tuple[str, ...]:
        return {"none": ASHA_KEYS + PBT_KEYS, "asha": PBT_KEYS, "pbt": ASHA_KEYS}[self.name]


class TrainerSpec(_Spec):
    # upper bounds no machine or cluster reaches: beyond them a run would wait forever for resources
    num_workers: int = Field(0, ge=0, le=MAX_WORKERS,
                             description="0: train inside the Tune trial; >=1: Ray Train data-parallel workers")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, le=MAX_CPUS_PER_WORKER)
    gpus_per_worker: float = Field(1.0, ge=0, le=MAX_GPUS_PER_WORKER,
                                   description="used only with use_gpu; num_workers 0: the GPU share of "
                                   "one trial, a fraction in (0, 1] (0.25: four trials share a GPU) or a whole number; "
                                   "Ray Train workers: a whole number (NCCL needs a GPU of its own per rank)")
    max_failures: int = Field(0, ge=0, description="retries of a failed trial (worker crash) before it is recorded failed")

    def inert(self) -> tuple[str, ...]:
        return () if self.use_gpu else ("gpus_per_worker",)


def _check_gpu_share(t: TrainerSpec) -> None:
    """A trial's GPU share: Ray packs fractions (0, 1] onto one GPU; more than one GPU must be whole GPUs,
    and a Ray Train worker needs a whole GPU (two NCCL ranks on one GPU fail)."""
    g = t.gpus_per_worker
    if g <= 0:
        raise ValueError("trainer.gpus_per_worker: 0 with use_gpu: true: a trial needs a GPU share in (0, 1] "
                         "or whole GPUs")
    if g > 1 and g != int(g):
        raise ValueError(f"trainer.gpus_per_worker: {g:g} is neither a fraction in (0, 1] nor a whole number of "
                         "GPUs; Ray cannot split a trial over part of a second GPU")
    if t.num_workers >= 1 and g != int(g):
        raise ValueError(f"trainer.gpus_per_worker: {g:g} with num_workers {t.num_workers}: each Ray Train worker "
                         "is an NCCL rank and needs whole GPUs; for several trials per GPU use num_workers: 0 "
                         f"with gpus_per_worker: {g:g}")


class StudySpec(_Spec):
    name: str
    description: str = ""
    base: dict = Field(default_factory=dict, description="fixed training settings (a `deqlab train` config)")
    space: dict = Field(default_factory=dict)
    objectives: list[Objective] = Field(min_length=1)
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec,
                                       description="every: epochs between a trial's checkpoints (0: none); "
                                                   "keep: newest kept")

    @field_validator("name")
    @classmethod
    def _safe(cls, v):
        return check_name("study", v)

    @model_validator(mode="after")
    def _consistent(self):
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: a metric is listed twice: {metrics}")
        if len(metrics) > 1 and self.search.algorithm not in MULTI_OBJECTIVE_ALGORITHMS:
            raise ValueError(f"search.algorithm: {self.search.algorithm!r} optimises one objective; "
                             f"for {len(metrics)} objectives use one of {', '.join(MULTI_OBJECTIVE_ALGORITHMS)}")
        # no setting is silently ignored: one that cannot take effect given the others is an error
        t = self.trainer
        if not t.use_gpu and "gpus_per_worker" in t.model_fields_set and t.gpus_per_worker > 0:
            raise ValueError(f"trainer.gpus_per_worker: {t.gpus_per_worker:g} set, but trainer.use_gpu is false: "
                             "the trials train on CPU, so it would be ignored; set use_gpu: true, or remove it")
        if t.use_gpu:
            _check_gpu_share(t)
        sched = self.scheduler
        ignored = [f"scheduler.{key}" for key in sched.inert() if key in sched.model_fields_set]
        if ignored and sched.name == "none":
            wanted = "pbt" if any(k.split(".")[1] in PBT_KEYS for k in ignored) else "asha"
            raise ValueError(f"{', '.join(ignored)}: set, but scheduler.name is none: no scheduler stops trials, "
                             f"so {'they' if len(ignored) > 1 else 'it'} would be ignored; set scheduler.name: "
                             f"{wanted}, or remove " + ("them" if len(ignored) > 1 else "it"))
        if ignored:
            them = "them" if len(ignored) > 1 else "it"
            raise ValueError(f"{', '.join(ignored)}: set, but scheduler.name is {sched.name}, which does not use "
                             f"{them}; remove {them}")
        if "seed" in self.search.inert() and "seed" in self.search.model_fields_set:
            raise ValueError("search.seed: the grid algorithm draws nothing at random, so a seed would be ignored; "
                             "remove it (to repeat each point with other training seeds, search the training "
                             "seed: space: {seed: {grid: [0, 1, 2]}})")
        return self

    # ---------------------------------------------------------------- derived

    @property
    def params(self) -> list[Param]:
        return parse_space(self.space)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def train_config(self, assignment: dict) -> TrainConfig:
        return TrainConfig.model_validate(apply(self.base, assignment))

    def grid(self) -> list[dict]:
        return grid_points(self.params)

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_study(raw, source: str = "<study>") -> StudySpec:
    """Validate a study mapping; every error is prefixed with `source`."""
    if not isinstance(raw, dict):
        raise StudyError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if "objectives" not in raw and raw and set(raw) <= set(TrainConfig.model_fields):
        raise StudyError(f"{source}: this is a single-run training config: run it with `deqlab train {source}`, "
                         "or put it under `base:` of a study with `name`, `space` and `objectives`")
    try:
        spec = StudySpec.model_validate(raw)
        check_space(spec)
    except ValidationError as exc:
        raise StudyError(f"{source}: {_describe_spec_error(exc)}") from None
    except StudyError as exc:
        raise StudyError(f"{source}: {exc}") from None
    return spec


def _describe_spec_error(exc: ValidationError) -> str:
    """Like describe_validation_error, but a study-wide check's message (it names its own key path) is
    given as it is, without pydantic's empty location and "Value error, " prefix."""
    parts = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ") if e["type"] == "value_error" else e["msg"]
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(StudySpec, e["loc"])
        loc = ".".join(map(str, e["loc"]))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def drop_inert(raw: dict) -> dict:
    """A saved study.yaml without the settings that had no effect when it ran.

    Specs saved before dumps left them out recorded every default (search.seed under grid,
    trainer.gpus_per_worker without use_gpu, ...), which the checks above now refuse; dropping
    them changes nothing, since they were ignored.
    """
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for key, model in (("search", SearchSpec), ("scheduler", SchedulerSpec), ("trainer", TrainerSpec)):
        section = out.get(key)
        if not isinstance(section, dict):
            continue
        try:
            inert = model.model_validate(section).inert()
        except ValidationError:
            continue  # parse_study names the mistake
        out[key] = {k: v for k, v in section.items() if k not in inert}
    return out


def load_study(path) -> StudySpec:
    """Read a study YAML with the safe loader and validate it. Your own modules are looked up beside it
    first, and a relative `data.path` is relative to its folder."""
    raw = read_yaml(path)
    if raw is None:
        raise StudyError(f"{path}: the file is empty")
    folder = Path(path).resolve().parent
    plugins.add_folder(folder)
    if isinstance(raw, dict) and isinstance(raw.get("base"), dict):
        raw = {**raw, "base": anchor_data_path(raw["base"], folder)}
    return parse_study(raw, str(path))


def anchor_data_path(config: dict, folder: Path) -> dict:
    """A train config whose relative `data.path` is made absolute against `folder` (the file's own), so the
    run finds it from any working directory and the saved spec says which file it read."""
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and not Path(data["path"]).expanduser().is_absolute():
        return {**config, "data": {**data, "path": str(folder / data["path"])}}
    return config


def describe(spec: StudySpec) -> str:
    """A few lines for `deqlab validate`: what will run."""
    params = list(walk(spec.params))
    searched = [p.name for p in params if p.kind != "fixed"]
    base = spec.train_config({})
    lines = [
        f"study {spec.name}: {base.data.name} / {base.model.name}, {base.pretrain_epochs}+{base.epochs} epochs per trial",
        f"  searched ({len(searched)}): {', '.join(searched) or '-'}",
        f"  objectives: {', '.join(f'{o.mode} {o.metric}' for o in spec.objectives)}",
        f"  search: {spec.search.algorithm}, "
        + (f"{len(spec.grid())} grid points x {spec.search.samples}" if spec.search.algorithm == "grid"
           else f"seed {spec.search.seed}, {spec.search.samples} trials"),
        f"  scheduler: {spec.scheduler.name}; workers per trial: {spec.trainer.num_workers}"
        + (" (GPU)" if spec.trainer.use_gpu else ""),
    ]
    return "\n".join(lines)


__all__ = ["StudySpec", "StudyError", "Objective", "load_study", "parse_study", "describe", "drop_inert",
           "OBJECTIVE_METRICS"]
