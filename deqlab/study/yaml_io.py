"""Reading a study (or train config) YAML file safely: the safe loader, within size and nesting caps
(`results.safe_yaml`, which reads a results folder's study.yaml with the same caps)."""

from __future__ import annotations

from pathlib import Path

from ..results.safe_yaml import MAX_YAML_BYTES as MAX_STUDY_BYTES, MAX_YAML_DEPTH, load_capped, too_big


class StudyError(ValueError):
    """A study file that cannot run; the message names the file and the key."""


def read_yaml(path):
    """A study or train config file's document, through the safe loader, within size and nesting caps."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no such study file: {path}")
    big = too_big(path.stat().st_size, path)
    if big:
        raise StudyError(big)
    try:
        return load_capped(path.read_text(), path)
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file") from None
    except ValueError as exc:
        raise StudyError(str(exc)) from None


__all__ = ["StudyError", "read_yaml", "MAX_STUDY_BYTES", "MAX_YAML_DEPTH"]
