"""What a study needs from a Ray cluster that Ray does not check: importable code and shared storage.

Ray puts the driver's working directory on every worker's `sys.path`. Started
from a folder holding a checkout named `deqlab/` (the cluster recipe runs
`deqlab run deqlab/studies/...` from the home directory), that checkout's root,
which has no `__init__.py`, is found as an empty namespace package before the
editable install's import hook is consulted, and every trial fails with
`cannot import name '__version__' from 'deqlab' (unknown location)`. The driver
therefore joins Ray from the folder that holds the real package, which resolves
to deqlab itself wherever it is on a worker's path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def package_parent() -> str:
    """The folder holding the `deqlab` package this process imported (site-packages or a checkout root)."""
    import deqlab

    return str(Path(deqlab.__file__).resolve().parent.parent)


@contextlib.contextmanager
def code_path_for_workers():
    """Run `ray.init` from the package's parent folder, so that is what Ray adds to the workers' paths."""
    before = os.getcwd()
    os.chdir(package_parent())
    try:
        yield
    finally:
        os.chdir(before)


__all__ = ["code_path_for_workers", "package_parent"]
