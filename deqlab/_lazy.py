"""Lazy package exports (PEP 562), so a torch-free submodule can be imported without its torch siblings.

`deqlab validate` reads configurations only: importing `deqlab.solvers.options`
must not run `deqlab/solvers/__init__.py`'s torch imports, so each package
names its exports here and loads a submodule on first access.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that resolves `exports[name]` (a submodule of `package`) on first use."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
