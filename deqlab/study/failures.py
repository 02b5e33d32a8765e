"""Why a trial failed, in one line: the exception's type and message.

Tune writes a failed trial's exception to its local trial folder before it
calls the callbacks' `on_trial_error`, but `Trial.get_error()` reads the copy in
the storage folder, which is synced later: read at that moment it is empty
and every trial said only "trial failed". So the local `error.txt` is read: its
traceback ends with the trial's own exception (Ray's `RayTaskError` prints the
cause last). Tune's pickled copy is never loaded: unpickling a file from a
results folder would run whatever code it names.
"""

from __future__ import annotations

import re

from typing import Optional

MAX_CHARS = 500
_NOISE = ("For further information visit",)  # pydantic's help link is not the reason


def describe_exception(exc: BaseException) -> str:
    """`Type: message` of the innermost cause Ray wrapped; a pydantic error as `key: message; ...`."""
    exc = _cause(exc)
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from ..solvers.options import describe_validation_error

            return _clip(f"ValidationError: {exc.title}: {describe_validation_error(exc)}")
    except ImportError:  # pragma: no cover - pydantic is a dependency
        pass
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.strip().startswith(_NOISE)]
    message = " ".join(lines)
    return _clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)  # RayTaskError(...).cause: the trial's own exception
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 3] + "..."


def trial_error(trial) -> Optional[str]:
    """The failed Tune trial's exception, from the text Tune has written locally by `on_trial_error`."""
    path = getattr(trial, "error_file", None)
    if path:
        try:
            with open(path) as f:
                return _last_error_line(f.read())
        except OSError:
            pass
    return None


_HEADER = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Warning))(?::\s*(.*))?$")


def _last_error_line(text: str) -> Optional[str]:
    """`Type: message` of the last exception in a traceback text, its message's lines joined."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(_NOISE)]
    for i in range(len(lines) - 1, -1, -1):
        match = _HEADER.match(lines[i])
        if match and not lines[i].startswith("ray.exceptions.RayTaskError"):
            name, first = match.groups()
            message = " ".join([first or "", *lines[i + 1:]]).strip()
            return _clip(f"{name}: {message}" if message else name)
    return _clip(lines[-1]) if lines else None


__all__ = ["describe_exception", "trial_error"]
