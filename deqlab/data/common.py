"""What every part of deqlab.data shares: the error type, the data folder, progress lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class DataError(Exception):
    """A data set is missing, corrupt or refused; the message says how to fix it."""


def default_data_dir() -> Path:
    """The per-user cache, so full data sets are fetched once per machine."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "deqlab" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument, then ``$DEQLAB_DATA``, then :func:`default_data_dir`."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DEQLAB_DATA", "")
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def say(progress: bool, msg: str) -> None:
    """One progress line on stderr, so stdout stays the command's answer."""
    if progress:
        print(f"deqlab data: {msg}", file=sys.stderr, flush=True)
