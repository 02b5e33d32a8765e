"""deqlab: deep equilibrium models and their solvers, compared in studies on Ray Tune.

From Python (deqlab/api.py): `run_study(path_or_dict, storage, name, **overrides)` runs a study as
`deqlab run` does, `open_study(study_dir)` opens one; both return a `StudyResult`. The names load on
first use, so `import deqlab` (and `deqlab validate`) stays light.
"""

from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {"run_study": "api", "open_study": "api", "StudyResult": "api"}
__all__ = ["__version__", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
