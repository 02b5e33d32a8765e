"""The study file: what to train, what to search, what to optimise, with what resources.

Everything is checked here, before Ray starts: unknown keys, wrong types,
impossible ranges, unknown solver/model names, and every value the space can
draw is tried against the training config (each choice, both ends of each
range), so a trial never fails an hour in on a typo. Errors name the file, the
key path and the valid choices.

    name: quickstart
    base: {epochs: 3, data: {name: digits}, model: {name: mlp}}   # a `deqlab train` config
    space: {deq.init: {choice: [zeros, skip, skipreg]}, deq.tol: {loguniform: [1e-4, 1e-2]}}
    objectives: [{metric: test_acc, mode: max}, {metric: nfe_fwd, mode: min}]
    search: {algorithm: tpe, num_samples: 8, seed: 0}
    scheduler: {name: asha, grace_period: 1}
    trainer: {num_workers: 0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from ..results import OBJECTIVE_METRICS, check_name
from ..solvers.options import _unknown_key, describe_validation_error
from ..run.config import TrainConfig
from .space import Param, SpaceError, apply, grid_points, parse_space, walk
MULTI_OBJECTIVE_ALGORITHMS = ("tpe", "gp", "nsga2", "random", "grid")
MAX_GRID_POINTS = 10_000
MAX_STUDY_BYTES, MAX_YAML_DEPTH = 1 << 20, 32
MAX_WORKERS, MAX_CPUS_PER_WORKER, MAX_GPUS_PER_WORKER = 4096, 512, 16
MAX_COMBINATIONS = 2048  # combinations of probe values tried together (beyond it: that many, drawn at random)


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


class SchedulerSpec(_Spec):
    name: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be pruned")
    reduction_factor: float = Field(2.0, gt=1)

    def inert(self) -> tuple[str, ...]:
        return ("grace_period", "reduction_factor") if self.name == "none" else ()


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
        if ignored:
            raise ValueError(f"{', '.join(ignored)}: set, but scheduler.name is none: no scheduler stops trials, "
                             f"so {'they' if len(ignored) > 1 else 'it'} would be ignored; set scheduler.name: "
                             "asha, or remove " + ("them" if len(ignored) > 1 else "it"))
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


class StudyError(ValueError):
    """A study file that cannot run; the message names the file and the key."""


def _check_space(spec: StudySpec) -> None:
    """Parse the space and try every value it can draw against the training config."""
    try:
        params = spec.params
    except SpaceError as exc:
        raise StudyError(str(exc)) from None
    if not params:
        raise StudyError("space: empty: nothing to search. Use `deqlab train` for one configuration, "
                         "or search at least the seed, e.g. space: {seed: {grid: [0, 1, 2]}}")
    try:
        base = TrainConfig.model_validate(spec.base)
    except ValidationError as exc:
        raise StudyError(f"base: {describe_validation_error(exc, TrainConfig)}") from None
    except TypeError as exc:
        raise StudyError(f"base: {exc}") from None
    _probe(spec, params, {}, "space")
    _probe_combinations(spec, params)
    if spec.search.algorithm == "grid":
        try:
            points = spec.grid()
        except ValueError as exc:
            raise StudyError(str(exc)) from None
        if len(points) > MAX_GRID_POINTS:
            raise StudyError(f"space: the grid has {len(points)} points (limit {MAX_GRID_POINTS}); narrow it")
    epochs = base.epochs + base.pretrain_epochs
    if spec.scheduler.name == "asha" and spec.scheduler.grace_period >= epochs:
        raise StudyError(f"scheduler.grace_period: {spec.scheduler.grace_period} >= the {epochs} epochs of a "
                         "trial, so ASHA could never prune; lower it or set scheduler.name: none")


def _probe(spec: StudySpec, params: list[Param], given: dict, key: str) -> None:
    for p in params:
        _check_path(p.path, f"{key}.{p.path}")
        if p.path in ("epochs", "pretrain_epochs") and spec.scheduler.name == "asha":
            base = spec.train_config({})
            raise StudyError(f"{key}.{p.path}: searched with scheduler.name asha, whose max_t is the "
                             f"{base.pretrain_epochs + base.epochs} epochs of base (pretrain_epochs "
                             f"{base.pretrain_epochs} + epochs {base.epochs}): longer trials would be cut there and "
                             "shorter ones end before its rungs; set it in base, or use scheduler.name: none")
        for value in p.probe_values():
            assignment = {**given, p.path: value}
            try:
                spec.train_config(assignment)
            except ValidationError as exc:
                raise StudyError(f"{key}.{p.path}: value {value!r} is not valid: {describe_validation_error(exc)}") \
                    from None
            except (TypeError, ValueError) as exc:
                raise StudyError(f"{key}.{p.path}: value {value!r} is not valid: {exc}") from None
            if p.branches:
                _probe(spec, p.branches[str(value)], assignment, f"{key}.{p.path}.choice.{value}")


def _probe_combinations(spec: StudySpec, params: list[Param]) -> None:
    """Values valid one by one can still clash (a solver and another solver's option): try them together,
    every combination of probe values when there are at most MAX_COMBINATIONS, else that many at random."""
    import random

    if _count(params) <= MAX_COMBINATIONS:
        points = _combinations(params)
    else:
        rng = random.Random(0)
        points = (_random_combination(params, rng) for _ in range(MAX_COMBINATIONS))
    for point in points:
        try:
            spec.train_config(point)
        except ValidationError as exc:
            why = describe_validation_error(exc)
        except (TypeError, ValueError) as exc:
            why = str(exc)
        else:
            continue
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise StudyError(f"space: the combination {shown} can be sampled but is not valid: {why}")


def _count(params: list[Param]) -> int:
    n = 1
    for p in params:
        n *= sum(_count(p.branches[str(v)]) if p.branches else 1 for v in p.probe_values())
        if n > MAX_COMBINATIONS:
            return n
    return n


def _combinations(params: list[Param]):
    """Every combination of the params' probe values, a choice's sub-space under its value only."""
    if not params:
        yield {}
        return
    head, rest = params[0], params[1:]
    for value in head.probe_values():
        for sub in _combinations(head.branches[str(value)] if head.branches else []):
            for tail in _combinations(rest):
                yield {head.path: value, **sub, **tail}


def _random_combination(params: list[Param], rng) -> dict:
    out = {}
    for p in params:
        value = rng.choice(p.probe_values())
        out[p.path] = value
        if p.branches:
            out.update(_random_combination(p.branches[str(value)], rng))
    return out


def _check_path(path: str, key: str) -> None:
    """A path must name a TrainConfig field (or a key inside one of its free-form option mappings)."""
    model = TrainConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            raise StudyError(f"{key}: unknown setting {part!r} in {'.'.join(parts[:i]) or 'the config'}; "
                             f"valid: {', '.join(fields)}")
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if annotation is dict or getattr(annotation, "__origin__", None) is dict:
            return  # options mappings: their keys are checked by the probe against the solver/model
        if i != len(parts) - 1:
            raise StudyError(f"{key}: {part!r} is a value, not a section")
        return
    raise StudyError(f"{key}: {path!r} is a section; search one of its settings: {', '.join(model.model_fields)}")


def parse_study(raw, source: str = "<study>") -> StudySpec:
    """Validate a study mapping; every error is prefixed with `source`."""
    if not isinstance(raw, dict):
        raise StudyError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if "objectives" not in raw and raw and set(raw) <= set(TrainConfig.model_fields):
        raise StudyError(f"{source}: this is a single-run training config: run it with `deqlab train {source}`, "
                         "or put it under `base:` of a study with `name`, `space` and `objectives`")
    try:
        spec = StudySpec.model_validate(raw)
        _check_space(spec)
    except ValidationError as exc:
        raise StudyError(f"{source}: {_describe(exc)}") from None
    except StudyError as exc:
        raise StudyError(f"{source}: {exc}") from None
    return spec


def _describe(exc: ValidationError) -> str:
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
    """Read a study YAML with the safe loader and validate it."""
    raw = read_yaml(path)
    if raw is None:
        raise StudyError(f"{path}: the file is empty")
    return parse_study(raw, str(path))


def read_yaml(path):
    """A study or train config file's document, through the safe loader, within size and nesting caps."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no such study file: {path}")
    if path.stat().st_size > MAX_STUDY_BYTES:
        raise StudyError(f"{path}: {path.stat().st_size} bytes; a study file is at most {MAX_STUDY_BYTES}")
    try:
        text = path.read_text()
        _check_depth(text, path)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file") from None
    return raw


def _check_depth(text: str, path) -> None:
    """Refuse deep nesting before the (recursive) composer sees it: 600 `[` would be a RecursionError.
    The parser's events come from a state machine, so counting them cannot recurse."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise StudyError(f"{path}: nested more than {MAX_YAML_DEPTH} levels deep; a study needs a few")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


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
