"""deqlab: deep equilibrium models, their solvers, and studies of them (docs/design.md).

`deqlab.load_model(study_dir, trial_id=None, *, best=None)` gives a study's trained model back
(docs/checkpoints.md); it loads torch on first use.
"""

from ._lazy import lazy_exports

__version__ = "0.2.0"
__getattr__ = lazy_exports(__name__, {"load_model": "run.saved"})
__all__ = ["load_model", "__version__"]
