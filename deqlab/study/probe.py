"""Trying a study's space against the training config before Ray starts: every value it can draw (each
choice, both ends of each range), one by one and in combination, so a trial never fails an hour in on a
typo or on two settings that clash."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from ..solvers.options import describe_validation_error
from ..run.config import TrainConfig
from .space import Param, SpaceError, grid_size, parse_space, walk
from .yaml_io import StudyError

MAX_GRID_POINTS = 10_000
MAX_SPACE_VALUES = 2048  # values listed in the whole space: each is tried alone (~0.5 ms apiece)
MAX_COMBINATIONS = 2048  # combinations of probe values tried together (beyond it: that many, drawn at random)


def check_space(spec) -> None:
    """Parse the space and try every value it can draw against the training config."""
    try:
        params = spec.params
    except SpaceError as exc:
        raise StudyError(str(exc)) from None
    if not params:
        raise StudyError("space: empty: nothing to search. Use `deqlab train` for one configuration, "
                         "or search at least the seed, e.g. space: {seed: {grid: [0, 1, 2]}}")
    listed = sum(len(p.values) for p in walk(params) if p.kind in ("choice", "grid"))
    if listed > MAX_SPACE_VALUES:
        raise StudyError(f"space: lists {listed} values in all (limit {MAX_SPACE_VALUES}), and each is tried before "
                         "the study runs; search a range instead ({int: [low, high]}, {uniform: [low, high]})")
    if spec.search.algorithm == "grid":
        _check_grid_size(spec, params)
    try:
        base = TrainConfig.model_validate(spec.base)
    except ValidationError as exc:
        raise StudyError(f"base: {describe_validation_error(exc, TrainConfig)}") from None
    except TypeError as exc:
        raise StudyError(f"base: {exc}") from None
    _probe(spec, params, {}, "space")
    _probe_combinations(spec, params)
    epochs = base.epochs + base.pretrain_epochs
    if spec.scheduler.name == "asha" and spec.scheduler.grace_period >= epochs:
        raise StudyError(f"scheduler.grace_period: {spec.scheduler.grace_period} >= the {epochs} epochs of a "
                         "trial, so ASHA could never prune; lower it or set scheduler.name: none")
    if spec.scheduler.name == "pbt":
        check_pbt(spec, params, epochs)


PBT_KINDS = ("choice", "grid", "uniform", "loguniform", "int")


def check_pbt(spec, params: list[Param], epochs: int) -> None:
    """Population Based Training, refused before Ray starts when Ray's PBT could not run it as written: a
    search algorithm (PBT takes none), a conditional space, a mutation of a setting neither the space nor
    the base has, a value the config refuses, or checkpoints that do not fall on the perturbation steps."""
    sched = spec.scheduler
    if spec.search.algorithm != "random":
        raise StudyError(f"scheduler.name: pbt with search.algorithm {spec.search.algorithm}: Ray Tune's "
                         "PopulationBasedTraining takes no search algorithm; use search.algorithm: random "
                         "(it draws the first population; PBT then exploits and explores)")
    if any(p.branches for p in params):
        raise StudyError("scheduler.name: pbt needs a space without conditional choices (a choice whose values "
                         "open sub-spaces); Tune's random generator draws a flat space")
    if not sched.mutations:
        raise StudyError("scheduler.mutations: empty: PBT needs at least one setting to mutate, e.g. "
                         "{optim.lr: {loguniform: [1.0e-4, 1.0e-2]}}")
    try:
        mutations = parse_space(sched.mutations, "scheduler.mutations")
    except SpaceError as exc:
        raise StudyError(str(exc)) from None
    searched = {p.path for p in params}
    for m in mutations:
        key = f"scheduler.mutations.{m.path}"
        if m.kind not in PBT_KINDS or m.branches:
            raise StudyError(f"{key}: PBT mutates with {{choice: [...]}}, {{uniform: ...}}, {{loguniform: ...}} or "
                             f"{{int: ...}}, not {m.kind}" + (" with sub-spaces" if m.branches else ""))
        if m.path not in searched and not _in_base(spec.base, m.path):
            raise StudyError(f"{key}: neither the space nor the base sets {m.path}: a trial's config has no such "
                             f"key to mutate; add it to base (its starting value) or to the space")
        _check_path(m.path, key)
        for value in m.probe_values():
            try:
                spec.train_config({m.path: value})
            except (ValidationError, TypeError, ValueError) as exc:
                why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                raise StudyError(f"{key}: value {value!r} is not valid: {why}") from None
    every = spec.checkpoint.every
    if every == 0 or sched.perturbation_interval % every:
        raise StudyError(f"scheduler.perturbation_interval: {sched.perturbation_interval} with checkpoint.every "
                         f"{every}: PBT clones a trial from its checkpoint at each perturbation, so checkpoints must "
                         "fall on them (checkpoint.every a divisor of perturbation_interval, not 0)")
    if spec.checkpoint.keep < 3:
        raise StudyError(f"checkpoint.keep: {spec.checkpoint.keep} with scheduler.name pbt: a trial may delete the "
                         "checkpoint another is about to clone (Ray warns at <= 2); keep at least 3")
    if sched.perturbation_interval >= epochs:
        raise StudyError(f"scheduler.perturbation_interval: {sched.perturbation_interval} >= the {epochs} epochs of "
                         "a trial, so PBT would never perturb; lower it")


def _in_base(base: dict, path: str) -> bool:
    node = base
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_grid_size(spec, params: list[Param]) -> None:
    """The grid is counted (the product of the value counts), never built, before it is refused: a 1 kB
    file of five 60-value lists is 778 million points."""
    try:
        points = grid_size(params, MAX_GRID_POINTS)
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    trials = points * spec.search.samples  # each point runs num_samples times
    if trials > MAX_GRID_POINTS:
        counted = (f"{points} points" if points <= MAX_GRID_POINTS else f"more than {MAX_GRID_POINTS} points")
        repeats = f" x num_samples {spec.search.samples}" if spec.search.samples > 1 else ""
        raise StudyError(f"space: the grid has {counted}{repeats} (limit {MAX_GRID_POINTS} trials); narrow it")


def _probe(spec, params: list[Param], given: dict, key: str) -> None:
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


def _probe_combinations(spec, params: list[Param]) -> None:
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
        optional = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
        if getattr(annotation, "__origin__", None) is not dict and len(optional) == 1:
            annotation = optional[0]  # an optional section (deq.correction): searchable like any section
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if annotation is dict or getattr(annotation, "__origin__", None) is dict:
            return  # options mappings: their keys are checked by the probe against the solver/model
        if i != len(parts) - 1:
            raise StudyError(f"{key}: {part!r} is a value, not a section")
        return
    raise StudyError(f"{key}: {path!r} is a section; search one of its settings: {', '.join(model.model_fields)}")


__all__ = ["check_space", "check_pbt"]
