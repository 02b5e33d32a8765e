"""The zoo by name, without torch: each model's settable options and whether it holds a DEQ layer.

A configuration is checked against this table (`deqlab validate` must not
import torch); tests/test_models.py checks the table against the constructors.
It stays the one list of built-in names: any other name is a researcher's own
model, found by `deqlab.plugins` and checked by `deqlab.models.user`, which
imports the user's module (and with it torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import plugins

MLP_CELLS = ("tanh", "relu_sum")
WEIGHT_INITS = ("glorot", "torch")
ODE_METHODS = ("dopri5", "bosh3", "rk4", "euler")
NORMS = ("none", "weight", "spectral")  # the DEQ cell's weights: as they are, weight norm, spectral norm


@dataclass(frozen=True)
class ModelInfo:
    """`options`: what `model.options` may set (the constructor's keywords, less what `build` derives
    from the data: sizes and classes); `choices`: options with a fixed set of values; `deq`: whether
    the model holds a DEQ layer (and so takes deq.* settings, pretraining and depth states)."""

    options: tuple[str, ...]
    choices: dict = field(default_factory=dict)
    deq: bool = True


MODELS: dict[str, ModelInfo] = {
    "mlp": ModelInfo(("cell", "inner", "norm", "weight_init", "width"),
                     {"cell": MLP_CELLS, "norm": NORMS, "weight_init": WEIGHT_INITS}),
    "conv": ModelInfo(("channels", "groups", "init_std", "norm", "weight_init"),
                      {"norm": NORMS, "weight_init": WEIGHT_INITS}),
    "multiscale": ModelInfo(("channels", "groups", "init_std", "norm"), {"norm": NORMS}),
    "neural_ode": ModelInfo(("adjoint", "atol", "inner", "method", "rtol", "t1", "width"),
                            {"method": ODE_METHODS}, deq=False),
}
DEQ_MODELS = tuple(name for name, info in MODELS.items() if info.deq)


def check_model(name: str, options: dict) -> None:
    """A known model and options it takes, with values from its fixed sets; errors list the valid ones."""
    if name not in MODELS:
        if plugins.target(name, plugins.MODELS_GROUP) is None:
            raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}, an installed plugin "
                             f"({', '.join(plugins.entry_points(plugins.MODELS_GROUP)) or 'none'}) or your own "
                             "'package.module:Class'")
        from .user import check

        check(name, options)
        return
    info = MODELS[name]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid: {', '.join(info.options)}")
    for key, valid in info.choices.items():
        if key in options and options[key] not in valid:
            raise ValueError(f"model.options.{key}: {options[key]!r} is not one of {', '.join(valid)}")


def has_deq(name: str) -> Optional[bool]:
    """Whether the model holds a DEQ layer; None for a user's factory function (known once built)."""
    if name in MODELS:
        return MODELS[name].deq
    from .user import resolve

    return resolve(name).deq
