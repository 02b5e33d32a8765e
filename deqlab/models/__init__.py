"""The model zoo by name, and the contract of your own: `build(name, input_shape, classes, deq, **options)`.

`deqlab.models.catalog` (names, options, which models hold a DEQ layer) imports
no torch; the models load on first use. `DEQModel` (injection -> `self.deq` ->
readout) and `Model` (without a DEQ layer) are what a researcher's own model
subclasses (`model: {name: "package.module:Class"}`, docs/reference.md).
`DEQ` is re-exported from deqlab.layers.
"""

from .._lazy import lazy_exports
from .catalog import DEQ_MODELS, MODELS

__getattr__ = lazy_exports(__name__, {
    "build": "factory", "MLPDEQ": "zoo", "ConvDEQ": "zoo", "MultiscaleDEQ": "zoo", "count_parameters": "zoo",
    "NeuralODE": "node", "DEQ": "base", "DEQInfo": "base", "DEQModel": "base", "Model": "base", "ZooModel": "base",
})

__all__ = ["build", "DEQ", "DEQInfo", "DEQModel", "Model", "MODELS", "DEQ_MODELS", "MLPDEQ", "ConvDEQ", "MultiscaleDEQ", "NeuralODE",
           "count_parameters"]
