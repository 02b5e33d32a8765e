"""What every command shares: exit codes, the command registry, argument types, one-line messages."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand; a name is registered once (no silent overwrite)."""
    if name in COMMANDS:
        raise ValueError(f"command {name!r} is already registered")
    COMMANDS[name] = Command(name, help, configure, run)


def csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("DEQLAB_STORAGE", "results"),
                   help="results root: a local path or s3://, gs:// URI (default: $DEQLAB_STORAGE or ./results)")


def results_dirs(paths: Sequence[str]) -> list[str]:
    from ..report.views import study_dirs
    from ..results import is_uri

    missing = [p for p in paths if not is_uri(p) and not Path(p).is_dir()]
    if missing:
        raise ValueError(f"no such results directory: {', '.join(missing)}")
    return study_dirs(paths)


def one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def say(line: str) -> None:
    """A progress line: text from results (a trial's error) may hold control characters, escaped here."""
    from ..results.schema import printable

    print(printable(line), flush=True)
