"""The DEQ layer: its configuration (`DEQConfig`, torch-free), the layer itself, and its gradients.

`deqlab.layers.config` imports no torch; `DEQ`, `DEQInfo` and the backward
modes load on first use.
"""

from .._lazy import lazy_exports
from .config import BACKWARD_MODES, INIT_MODES, DEQConfig, backward_options

__getattr__ = lazy_exports(__name__, {"DEQ": "deq", "DEQInfo": "deq", "BackwardRecord": "backward",
                                      "jacobian_penalty": "backward"})

__all__ = ["DEQ", "DEQConfig", "DEQInfo", "INIT_MODES", "BACKWARD_MODES", "BackwardRecord", "backward_options",
           "jacobian_penalty"]
