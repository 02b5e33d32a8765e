"""One training run: its configuration (`TrainConfig`, torch-free), the loop, diagnostics, provenance, and
`one.run_one`, the assembly every caller shares.

`deqlab.run.config` imports no torch; the loop loads on first use.
"""

from .._lazy import lazy_exports
from .config import DEFAULT_MAX_UNCONVERGED, TrainConfig

__getattr__ = lazy_exports(__name__, {
    "train": "loop", "TrainResult": "loop", "evaluate": "loop", "provenance": "env", "select_device": "env",
    "run_one": "one",
})

__all__ = ["TrainConfig", "DEFAULT_MAX_UNCONVERGED", "TrainResult", "train", "evaluate", "provenance",
           "select_device", "run_one"]
