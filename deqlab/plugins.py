"""The one resolver of names that are not built in: a researcher's own model or data set.

A name is built in (the models' catalogue, the data sets' table), an import path `"package.module:Attr"`,
or a name an installed package registers under the entry-point group `deqlab.models` / `deqlab.datasets`
(as pytest and Optuna plugins do). Modules are looked up in the folders of the study files read so far
(`add_folder`: a module beside its study is found from any working directory), then on `sys.path`.
Everything that goes wrong is one `UserCodeError` line naming the module and what is wrong.

This module imports nothing from deqlab and no torch: the model and data rooms check what they get
(`deqlab.models.user`, `deqlab.data.sources`), the study ships the modules to Ray's workers
(`ship_paths`: Ray's `runtime_env` `py_modules`), the run records `source_hash` with its results.
Reading results never comes here: their rows hold names and hashes, never code.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Optional

MODELS_GROUP, DATASETS_GROUP = "deqlab.models", "deqlab.datasets"
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FOLDERS: list[str] = []


class UserCodeError(ValueError):
    """The user's module or attribute cannot be used; the message is one line that says why."""


def is_import_path(name: str) -> bool:
    return isinstance(name, str) and ":" in name


def add_folder(folder) -> None:
    """Look for user modules in `folder` (a study file's folder) before `sys.path`."""
    folder = str(Path(folder).resolve())
    if folder not in _FOLDERS:
        _FOLDERS.insert(0, folder)


def folders() -> tuple[str, ...]:
    """The folders searched before sys.path, most recent first."""
    return tuple(_FOLDERS)


def entry_points(group: str) -> dict[str, str]:
    """{name: "package.module:Attr"} registered by installed packages (read from their metadata, not imported)."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=group)}


def target(name: str, group: str) -> Optional[str]:
    """The import path a (non-built-in) name stands for: itself, or its entry point's; None if neither."""
    if is_import_path(name):
        return name
    return entry_points(group).get(name)


def load(path: str, what: str):
    """The object an import path names; `what` ("model 'x'") starts every error line."""
    if not _IMPORT_PATH.match(path):
        raise UserCodeError(f"{what}: {path!r} is not an import path; write 'package.module:Attr'")
    module_name, attr = path.split(":")
    module = import_module(module_name, what)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserCodeError(f"{what}: module {module_name!r} ({_where(module)}) has no attribute "
                                f"{attr!r}") from None
    return obj


def import_module(module_name: str, what: str):
    """Import `module_name` with the study folders first on the path; any failure is one line."""
    for folder in reversed(_FOLDERS):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    importlib.invalidate_caches()  # a module written since the last import is found
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[: len(exc.name.split("."))] == exc.name.split("."):
            looked = f"the study's folder {_FOLDERS[0]} and sys.path" if _FOLDERS else "sys.path"
            raise UserCodeError(f"{what}: no module named {exc.name!r} (looked in {looked})") from None
        raise UserCodeError(f"{what}: importing {module_name!r} raised {_describe(exc)}") from exc
    except Exception as exc:  # the user's module may raise anything at import
        raise UserCodeError(f"{what}: importing {module_name!r} raised {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """`Type: message (file, line n)`, the line being the innermost one of the user's own code (not of torch
    or deqlab), else the innermost: where the user's code failed."""
    text = " ".join(str(exc).split()) or "(no message)"
    here = str(Path(__file__).resolve().parent) + os.sep
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    own = [f for f in frames if not f[0].startswith(here) and not f[0].startswith("<")
           and not _installed(Path(f[0]))]
    file, line = (own or frames or [(None, None)])[-1]
    return f"{type(exc).__name__}: {text}" + (f" ({file}, line {line})" if file else "")


def describe_error(exc: BaseException) -> str:
    return _describe(exc)


def _where(module) -> str:
    return getattr(module, "__file__", None) or "a namespace package"


def _top_level(path: str):
    """The imported top-level module of an import path: what Ray ships and the source hash covers."""
    return sys.modules.get(path.split(":")[0].split(".")[0])


def _sources(module) -> list[Path]:
    """The source files of a top-level module: its .py file, or every .py file of its package."""
    if module is None:
        return []
    paths = getattr(module, "__path__", None)
    if paths:
        return sorted(p for root in paths for p in Path(root).rglob("*.py") if "__pycache__" not in p.parts)
    file = getattr(module, "__file__", None)
    return [Path(file)] if file else []


def source_hash(path: str) -> Optional[str]:
    """sha256 (16 hex digits) of the source of the import path's top-level module, once imported."""
    files = _sources(_top_level(path))
    if not files:
        return None
    h = hashlib.sha256()
    root = files[0].parent if len(files) == 1 else Path(os.path.commonpath(files))
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def file_hash(path) -> str:
    """sha256 (16 hex digits) of a data file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _installed(file: Path) -> bool:
    """Whether a file belongs to the Python installation (site-packages, the standard library)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(part in ("site-packages", "dist-packages") for part in file.parts) or any(
        str(file).startswith(str(Path(r).resolve()) + os.sep) for r in roots)


def ship_paths(paths) -> list[str]:
    """The local files and folders Ray must ship (`runtime_env` `py_modules`) so every worker imports the
    import paths' top-level modules: those not installed (a module beside the study, a checkout)."""
    out = []
    for path in paths:
        module = _top_level(path)
        file = getattr(module, "__file__", None)
        if module is None or file is None or module.__name__ == "deqlab" or _installed(Path(file).resolve()):
            continue
        paths_ = list(getattr(module, "__path__", []) or [])
        local = str(Path(paths_[0]).resolve()) if len(paths_) == 1 else str(Path(file).resolve())
        if local not in out:
            out.append(local)
    return out


__all__ = ["UserCodeError", "MODELS_GROUP", "DATASETS_GROUP", "is_import_path", "add_folder", "folders", "entry_points",
           "target", "load", "import_module", "source_hash", "file_hash", "ship_paths", "describe_error"]
