"""Data that is not in the table: a researcher's own function, or an .npz file.

``data: {name: "package.module:function", options: {...}}`` (or a name an installed package registers
under the entry-point group ``deqlab.datasets``) calls the function with ``data.options`` as keywords. It
returns four arrays ``(x_train, y_train, x_test, y_test)`` (numpy or torch; integer labels mean
classification with ``max + 1`` classes, float targets regression) or two ``torch.utils.data.Dataset``\\ s
``(train, test)`` of ``(x, y)`` pairs, for data that does not fit in memory. ``data: {name: npz, path:
FILE}`` reads those four arrays from a NumPy ``.npz`` file instead (no code, no pickles). The input shape
and class count are read from the data; ``subset``, ``test_subset`` and ``normalize`` work as for the
table's sets (``loading.load_dataset``).

The check (``check``) imports the user's module but not torch; the arrays become tensors in ``loading``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import numpy as np

from .. import plugins
from .common import DataError
from .table import DATASETS, TABLE

NPZ = "npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
RETURNS = ("a data function returns (x_train, y_train, x_test, y_test) arrays or (train, test) "
           "torch.utils.data.Dataset objects")


def check(name: str, options: dict, path: Optional[str]) -> None:
    """A data set the config can load: a table entry without options, an existing .npz file, or a
    callable taking these options. Errors list what is valid."""
    if name in TABLE or name == NPZ:
        if options:
            raise ValueError(f"data.options: {name!r} takes none (they go to your own data function)")
        if name in TABLE and path is not None:
            raise ValueError(f"data.path: {name!r} is read from the data folder (data_dir); data.path is for "
                             "name: npz")
        if name == NPZ and not path:
            raise ValueError("data.path: name npz reads arrays x_train, y_train, x_test, y_test from a .npz "
                             "file: give its path")
        if name == NPZ and not Path(path).is_file():
            raise ValueError(f"data.path: no such file: {path}")
        return
    if path is not None:
        raise ValueError("data.path: only for name: npz (a data function takes its own options)")
    target = plugins.target(name, plugins.DATASETS_GROUP)
    if target is None:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}, npz (with data.path), an "
                         f"installed plugin ({', '.join(plugins.entry_points(plugins.DATASETS_GROUP)) or 'none'})"
                         " or your own 'package.module:function'")
    _check_options(name, plugins.load(target, f"data {name!r}"), options)


def _check_options(name: str, fn, options: dict) -> None:
    if not callable(fn):
        raise plugins.UserCodeError(f"data {name!r}: a {type(fn).__name__}, not a function; {RETURNS}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - {p.name for p in named})
    if unknown:
        raise plugins.UserCodeError(f"unknown option(s) {unknown} for data {name!r}; valid: "
                                    f"{', '.join(p.name for p in named) or '(none)'}")
    missing = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL,)
               and p.name not in options]
    if missing:
        raise plugins.UserCodeError(f"data {name!r} needs data.options {', '.join(missing)}")


def source_hash(name: str, path: Optional[str]) -> Optional[str]:
    """What the data came from, for provenance: the .npz file's bytes, the function's module source; None
    for a table entry."""
    if name in TABLE:
        return None
    if name == NPZ:
        return plugins.file_hash(path)
    target = plugins.target(name, plugins.DATASETS_GROUP)
    return plugins.source_hash(target) if target else None


def produce(name: str, options: dict, path: Optional[str]):
    """What the source gives: a tuple of four arrays, or of two torch Datasets (checked here)."""
    if name == NPZ:
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in NPZ_KEYS if k not in f.files]
                if missing:
                    raise DataError(f"data.path {path}: missing array(s) {', '.join(missing)}; an .npz for name "
                                    f"npz holds {', '.join(NPZ_KEYS)} (found {', '.join(f.files) or 'none'})")
                return tuple(f[k] for k in NPZ_KEYS)
        except (OSError, ValueError) as exc:
            raise DataError(f"data.path {path}: not a readable .npz file ({exc})") from None
    check(name, options, path)
    what = f"data {name!r}"
    fn = plugins.load(plugins.target(name, plugins.DATASETS_GROUP), what)
    try:
        out = fn(**options)
    except Exception as exc:
        raise plugins.UserCodeError(f"{what}: calling it raised {plugins.describe_error(exc)}") from exc
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 4):
        shown = f"a {type(out).__name__}" + (f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
        raise plugins.UserCodeError(f"{what}: returned {shown}; {RETURNS}")
    return tuple(out)


__all__ = ["NPZ", "NPZ_KEYS", "check", "source_hash", "produce"]
