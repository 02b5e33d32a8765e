"""Why a trial failed, in one line: the exception's type and message.

Tune writes a failed trial's exception to its local trial folder before it
calls the callbacks' `on_trial_error`, but `Trial.get_error()` reads the copy in
the storage folder, which is synced later: read at that moment it is empty
and every trial said only "trial failed". The local pickle holds the
exception itself; Ray wraps it (`RayTaskError`), so the cause is unwrapped.
"""

from __future__ import annotations

from typing import Optional

MAX_CHARS = 500
_NOISE = ("For further information visit",)  # pydantic's help link is not the reason


def describe_exception(exc: BaseException) -> str:
    """`Type: message` of the innermost cause Ray wrapped; a pydantic error as `key: message; ...`."""
    exc = _cause(exc)
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from ..solvers.base import describe_validation_error

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
    """The failed Tune trial's exception, from the files Tune has written locally by `on_trial_error`."""
    import cloudpickle

    path = getattr(trial, "pickled_error_file", None)
    if path:
        try:
            with open(path, "rb") as f:
                return describe_exception(cloudpickle.load(f))
        except Exception:  # unpicklable or missing: fall back to the text Tune wrote
            pass
    path = getattr(trial, "error_file", None)
    if path:
        try:
            with open(path) as f:
                return _last_error_line(f.read())
        except OSError:
            pass
    return None


def _last_error_line(text: str) -> Optional[str]:
    """The last `Type: message` line of a traceback text."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(_NOISE)]
    return _clip(lines[-1]) if lines else None


__all__ = ["describe_exception", "trial_error"]
