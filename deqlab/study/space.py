"""Search spaces over training-config paths, sampled define-by-run by Optuna.

A space maps dotted paths of `TrainConfig` (``deq.solver``, ``deq.tol``,
``model.options.width``) to a distribution:

    deq.tol:   {loguniform: [1.0e-5, 1.0e-2]}
    optim.lr:  {uniform: [1.0e-4, 3.0e-3]}
    model.options.width: {int: [32, 128], step: 32}
    deq.init:  {choice: [zeros, skip, skipreg]}
    deq.solver:                      # a choice whose values open sub-spaces
      choice:
        anderson: {deq.solver_options.m: {int: [2, 8]}}
        broyden:  {deq.solver_options.line_search: {choice: [false, true]}}
        continuous: {}
    seed: {grid: [0, 1, 2]}          # an explicit list (exhaustive under `grid`)
    deq.max_iter: 30                 # a plain value is fixed (use {fixed: {...}} for a mapping)

Conditional parameters are what define-by-run exists for: the sub-space of a
choice is sampled only when that value is drawn, so Optuna never learns from
options that had no effect. A conditional parameter's Optuna name carries its
condition (``deq.solver_options.m|deq.solver=anderson``) so two branches may
give the same path different distributions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "int", "fixed")
_RANGE_KEYS = {"uniform": set(), "loguniform": set(), "int": {"step", "log"}}
CONDITION_SEP = "|"


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) value at a config path; `branches` only for a conditional choice."""

    path: str
    kind: str
    values: tuple = ()
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[int] = None
    log: bool = False
    branches: dict = field(default_factory=dict)  # choice value (as text) -> list[Param]
    condition: str = ""  # "parent.path=value" for conditional params

    @property
    def name(self) -> str:
        return f"{self.path}{CONDITION_SEP}{self.condition}" if self.condition else self.path

    def probe_values(self) -> list:
        """Values that validation tries: every choice, both ends of a range."""
        if self.kind in ("choice", "grid", "fixed"):
            return list(self.values)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def grid_values(self) -> list:
        return list(self._grid_range())

    def grid_count(self) -> int:
        """len(grid_values()), without building the list (an int range counts in O(1))."""
        return len(self._grid_range())

    def _grid_range(self):
        if self.kind in ("choice", "grid", "fixed"):
            return self.values
        if self.kind == "int" and self.step:
            return range(int(self.low), int(self.high) + 1, int(self.step))
        what = "an int range without step" if self.kind == "int" else f"a {self.kind} range"
        raise ValueError(
            f"space: {self.name}: {what} has no finite grid; "
            f"give it as {{grid: [...]}} or {{choice: [...]}} for the grid algorithm"
        )


class SpaceError(ValueError):
    """A space entry that cannot be parsed; `key` is the dotted location in the study file."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _number(key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpaceError(key, f"expected a number, got {v!r}")
    if not math.isfinite(v):
        raise SpaceError(key, f"expected a finite number, got {v!r}")
    return v


def parse_space(raw: Any, key: str = "space", condition: str = "") -> list[Param]:
    """Parse the YAML mapping; errors name the key path in the study file."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise SpaceError(key, f"expected a mapping of config paths to distributions, got {type(raw).__name__}")
    params = []
    for path, spec in raw.items():
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise SpaceError(key, f"invalid config path {path!r}")
        params.append(_parse_param(path, spec, f"{key}.{path}", condition))
    return params


def _parse_param(path: str, spec: Any, key: str, condition: str) -> Param:
    if not isinstance(spec, dict):
        return Param(path, "fixed", values=(spec,), condition=condition)
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    if len(kinds) != 1:
        raise SpaceError(
            key,
            f"expected exactly one of {', '.join(DISTRIBUTIONS)} (a fixed mapping is written {{fixed: {{...}}}}); "
            f"got keys {sorted(map(str, spec))}",
        )
    kind = kinds[0]
    extra = set(spec) - {kind} - _RANGE_KEYS.get(kind, set())
    if extra:
        valid = sorted(_RANGE_KEYS.get(kind, set()))
        raise SpaceError(key, f"unknown key(s) {sorted(map(str, extra))} for {kind}; valid: {valid or 'none'}")
    arg = spec[kind]
    if kind == "fixed":
        return Param(path, "fixed", values=(arg,), condition=condition)
    if kind in ("choice", "grid"):
        if isinstance(arg, dict) and kind == "choice":
            if not arg:
                raise SpaceError(key, "choice needs at least one value")
            branches = {}
            for value, sub in arg.items():
                branches[str(value)] = parse_space(
                    sub or {}, f"{key}.choice.{value}",
                    condition=f"{path}={value}")
            return Param(path, "choice", values=tuple(arg), branches=branches, condition=condition)
        if not isinstance(arg, list) or not arg:
            raise SpaceError(key, f"{kind} needs a non-empty list of values, got {arg!r}")
        if any(isinstance(v, (dict, list)) for v in arg) and kind == "choice":
            raise SpaceError(key, "choice values must be scalars (use a mapping value -> sub-space for conditions)")
        if len({repr(v) for v in arg}) != len(arg):
            raise SpaceError(key, f"{kind} lists a value twice: {arg!r}")
        return Param(path, kind, values=tuple(arg), condition=condition)
    if not isinstance(arg, list) or len(arg) != 2:
        raise SpaceError(key, f"{kind} needs [low, high], got {arg!r}")
    low, high = (_number(key, v) for v in arg)
    if not low < high:
        raise SpaceError(key, f"{kind} needs low < high, got [{low}, {high}]")
    log = kind == "loguniform" or bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(key, f"a log-scaled range needs low > 0, got {low}")
    step = None
    if kind == "int":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SpaceError(key, f"int needs integer bounds, got [{low}, {high}]")
        step = spec.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise SpaceError(key, f"step must be an integer >= 1, got {step!r}")
        if step is not None and log:
            raise SpaceError(key, "int takes step or log, not both (Optuna's rule)")
        low, high = int(low), int(high)
    return Param(path, kind, low=low, high=high, step=step, log=log, condition=condition)


def walk(params: list[Param]):
    """Every param, branches included (depth first)."""
    for p in params:
        yield p
        for sub in p.branches.values():
            yield from walk(sub)


# --------------------------------------------------------------------------- sampling


def suggest(trial, params: list[Param]) -> dict:
    """Define-by-run: draw every active param from an Optuna trial; returns {path: value}."""
    out = {}
    for p in params:
        if p.kind == "fixed":
            out[p.path] = p.values[0]
            continue
        if p.kind in ("choice", "grid"):
            value = trial.suggest_categorical(p.name, list(p.values))
        elif p.kind == "int":
            value = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1, log=p.log)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        out[p.path] = value
        if p.branches:
            out.update(suggest(trial, p.branches[str(value)]))
    return out


def grid_size(params: list[Param], limit: int) -> int:
    """How many points `grid_points` would build, counted without building them: the product of the value
    counts, a choice's sub-spaces summed under it. Counting stops once past `limit` (then the count is a
    lower bound): a hostile file's huge products never become huge integers."""
    n = 1
    for p in params:
        n *= sum(grid_size(p.branches[str(v)], limit) for v in p.values) if p.branches else p.grid_count()
        if n > limit:
            return n
    return n


def grid_points(params: list[Param]) -> list[dict]:
    """Every combination, conditional sub-spaces expanded under their value only."""
    points = [{}]
    for p in params:
        expanded = []
        for value in p.grid_values():
            subs = grid_points(p.branches[str(value)]) if p.branches else [{}]
            expanded += [{p.path: value, **s} for s in subs]
        points = [{**a, **b} for a, b in itertools.product(points, expanded)]
    return points


def to_paths(sampled: dict) -> dict:
    """Tune hands back Optuna names (`path|condition`): strip the condition."""
    return {name.split(CONDITION_SEP, 1)[0]: v for name, v in sampled.items()}


def apply(base: dict, assignment: dict) -> dict:
    """A copy of the nested config `base` with each dotted path set."""
    import copy

    out = copy.deepcopy(base)
    for path, value in assignment.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"{path}: {part!r} is a value, not a section")
            node = child
        node[leaf] = value
    return out


__all__ = ["Param", "SpaceError", "parse_space", "walk", "suggest", "grid_points", "grid_size", "to_paths", "apply",
           "DISTRIBUTIONS"]
