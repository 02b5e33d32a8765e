"""DEQ layer, the model zoo, and the neural ODE baseline, by name."""

from torch import nn

from .deq import DEQ, INIT_MODES, DEQInfo
from .node import NeuralODE
from .zoo import ConvDEQ, MLPDEQ, MultiscaleDEQ, count_parameters

MODELS = {"mlp": MLPDEQ, "conv": ConvDEQ, "multiscale": MultiscaleDEQ, "neural_ode": NeuralODE}
DEQ_MODELS = ("mlp", "conv", "multiscale")


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a model by name; unknown names list the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["DEQ", "DEQInfo", "INIT_MODES", "MODELS", "DEQ_MODELS", "MLPDEQ", "ConvDEQ", "MultiscaleDEQ",
           "NeuralODE", "build_model", "count_parameters"]
