"""DEQ layer and the model zoo."""

from .deq import DEQ, INIT_MODES, DEQInfo
from .zoo import MODELS, ConvDEQ, MLPDEQ, MultiscaleDEQ, build_model, count_parameters

__all__ = ["DEQ", "DEQInfo", "INIT_MODES", "MODELS", "MLPDEQ", "ConvDEQ", "MultiscaleDEQ", "build_model", "count_parameters"]
