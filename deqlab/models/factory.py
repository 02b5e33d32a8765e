"""`build(name, input_shape, classes, deq, **options)`: the one way a run (and loading a model) gets one.

A built-in name is a zoo class; any other name is resolved by `deqlab.plugins` and checked by
`deqlab.models.user`, so validation, the run loop and model loading build a user's model the same way.
"""

from __future__ import annotations

from typing import Optional

from ..layers.config import DEQConfig
from .base import Model
from .catalog import MODELS, check_model
from .node import NeuralODE
from .zoo import ConvDEQ, MLPDEQ, MultiscaleDEQ

CLASSES: dict[str, type[Model]] = {"mlp": MLPDEQ, "conv": ConvDEQ, "multiscale": MultiscaleDEQ,
                                      "neural_ode": NeuralODE}
assert set(CLASSES) == set(MODELS), "models/catalog.py and the classes name the same models"


def build(name: str, input_shape: tuple, classes: int, deq: Optional[DEQConfig] = None, **options) -> Model:
    """The model `name` for inputs shaped `input_shape` (one sample) and `classes` classes.

    Options are checked as a configuration's are (unknown names and values list the valid ones); DEQ
    settings other than the defaults for a model without a DEQ layer are an error, never dropped.
    """
    deq = deq if deq is not None else DEQConfig()
    check_model(name, options)  # an unknown name lists the valid ones
    if name not in CLASSES:
        from .user import build as build_user

        return build_user(name, tuple(input_shape), classes, deq, **options)
    if not MODELS[name].deq and deq.changed():
        raise ValueError(f"model {name!r} has no DEQ layer: its deq settings would be ignored")
    return CLASSES[name].for_data(tuple(input_shape), classes, deq, **options)
