"""deqlab: deep equilibrium models, their solvers, and studies of them (docs/design.md).

From Python (deqlab/api.py): `run_study(path_or_dict, storage, name, **overrides)` runs a study as
`deqlab run` does and `open_study(study_dir)` opens one, both as a `StudyResult`;
`load_model(study_dir, trial_id=None, *, best=None)` gives a study's trained model back
(docs/checkpoints.md). Every name loads on first use, so `import deqlab` (and `deqlab validate`) stays
torch-free.
"""

from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {"run_study": "api", "open_study": "api", "StudyResult": "api", "load_model": "run.saved"}
__all__ = ["__version__", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
