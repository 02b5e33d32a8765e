"""A researcher's own model, named by import path (`"package.module:Class"`) or by an installed package's
entry point (`deqlab.models`): found by `deqlab.plugins`, checked here against the model contract.

The attribute is a `Model` subclass (usually `DEQModel`: injection -> `self.deq` -> readout), built with
`for_data(input_shape, classes, deq, **options)`, or a factory function with that signature returning
one. `model.options` are checked against the signature: a misspelt option is refused naming the valid
ones, a missing required one is named; `**options` accepts any (the build during validation then
catches a wrong one).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Optional

from .. import plugins
from ..layers.config import DEQConfig
from .base import DEQModel, Model

DATA_ARGS = ("input_shape", "classes", "deq")


@dataclass(frozen=True)
class UserModel:
    name: str                         # as the study writes it
    target: str                       # "package.module:Attr"
    build: Callable                   # (input_shape, classes, deq, **options) -> Model
    options: Optional[tuple]          # the keywords it takes; None: any (**options)
    required: tuple                   # options without a default
    deq: Optional[bool]               # holds a DEQ layer; None: a factory, known once built


def resolve(name: str) -> UserModel:
    what = f"model {name!r}"
    target = plugins.target(name, plugins.MODELS_GROUP)
    if target is None:
        raise plugins.UserCodeError(f"{what}: not a built-in model, an import path or an installed plugin")
    obj = plugins.load(target, what)
    if isinstance(obj, type):
        if not issubclass(obj, Model):
            raise plugins.UserCodeError(
                f"{what}: class {obj.__name__} is not a deqlab.models.Model; subclass DEQModel (injection -> "
                "self.deq -> readout) or Model (a model without a DEQ layer)")
        own = obj.for_data.__func__ is not Model.for_data.__func__
        fn, skip = (obj.for_data, 0) if own else (obj.__init__, 1)
        builder, deq = obj.for_data, issubclass(obj, DEQModel)
    elif callable(obj):
        fn, skip, builder, deq = obj, 0, obj, None
    else:
        raise plugins.UserCodeError(f"{what}: {target} is a {type(obj).__name__}, not a Model subclass or a "
                                    "factory function")
    options, required = _options(fn, skip, what)
    return UserModel(name, target, builder, options, required, deq)


def _options(fn, skip: int, what: str) -> tuple[Optional[tuple], tuple]:
    """The keywords after (input_shape, classes, deq) in `fn`'s signature."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None, ()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < len(DATA_ARGS) and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise plugins.UserCodeError(f"{what}: {getattr(fn, '__qualname__', fn)} must take (input_shape, classes, "
                                    "deq, **options): the data's sample shape and class count and the DEQConfig")
    rest = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][len(DATA_ARGS):]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None, ()
    return tuple(p.name for p in rest), tuple(p.name for p in rest if p.default is p.empty)


def check(name: str, options: dict) -> UserModel:
    """The model exists, has the contract's kind, and takes these options."""
    model = resolve(name)
    if model.options is not None:
        unknown = sorted(set(options) - set(model.options))
        if unknown:
            raise plugins.UserCodeError(f"unknown option(s) {unknown} for model {name!r}; valid: "
                                        f"{', '.join(model.options) or '(none)'}")
    missing = [k for k in model.required if k not in options]
    if missing:
        raise plugins.UserCodeError(f"model {name!r} needs model.options {', '.join(missing)}")
    return model


def build(name: str, input_shape: tuple, classes: int, deq: DEQConfig, **options) -> Model:
    """The user's model for these data; what it returns must honour the contract."""
    model = check(name, options)
    try:
        built = model.build(tuple(input_shape), classes, deq, **options)
    except Exception as exc:  # the user's constructor may raise anything: one line naming it
        raise plugins.UserCodeError(f"model {name!r}: building it for inputs {tuple(input_shape)} and "
                                    f"{classes} classes raised {plugins.describe_error(exc)}") from exc
    if not isinstance(built, Model):
        raise plugins.UserCodeError(f"model {name!r}: {model.target} returned a {type(built).__name__}, not a "
                                    "deqlab.models.Model")
    if not isinstance(built, DEQModel) and deq.changed():
        raise ValueError(f"model {name!r} has no DEQ layer: its deq settings would be ignored")
    return built


__all__ = ["UserModel", "resolve", "check", "build"]
